"""Metric judges: a weighted sum of weight-free video metrics, with the metric values cached
by video content so both judges of a round compute each one once."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Callable

import numpy as np

from agents.judges.base import Judgement, check_candidates, criterion_text, video_digest
from configs.errors import MoraError
from configs.judges import JudgeSpec

if TYPE_CHECKING:
    from metrics.base import MetricResult



def _metric_functions() -> dict[str, Callable[[np.ndarray, float, str | None], "MetricResult"]]:
    import metrics as m

    return {
        "subject_consistency": lambda f, fps, p: m.subject_consistency(f),
        "background_consistency": lambda f, fps, p: m.background_consistency(f),
        "motion_smoothness": lambda f, fps, p: m.motion_smoothness(f),
        "dynamic_degree": lambda f, fps, p: m.dynamic_degree(f, fps),
        "aesthetic_quality": lambda f, fps, p: m.aesthetic_quality(f),
        "imaging_quality": lambda f, fps, p: m.imaging_quality(f),
        "temporal_flickering": lambda f, fps, p: m.temporal_flickering(f),
        "temporal_style": lambda f, fps, p: m.temporal_style(f, p),
        "appearance_style": lambda f, fps, p: m.appearance_style(f, p),
        # the judge has no caption of a candidate: n/a until a captioner is configured
        "video_text_integration": lambda f, fps, p: m.video_text_integration(p, None),
    }


_PROMPT_METRICS = frozenset({"temporal_style", "appearance_style", "video_text_integration"})
_FPS_METRICS = frozenset({"dynamic_degree"})


class MetricCache:
    """Metric results keyed by video content: computed once, shared by every judge given this cache.

    Pass one instance to both judges of a round (``rank(..., metric_cache=cache)``): the second
    judge reuses what the first computed.  ``computed`` counts metric evaluations, ``hits`` reuses.
    """

    def __init__(self) -> None:
        self._results: dict[tuple, MetricResult] = {}
        self._lock = threading.Lock()
        self.computed = 0
        self.hits = 0

    def result(self, frames: np.ndarray, fps: float, prompt: str | None, metric: str,
               digest: str | None = None) -> "MetricResult":
        digest = digest or video_digest(frames)
        key = (digest, metric,
               float(fps) if metric in _FPS_METRICS else None,
               prompt if metric in _PROMPT_METRICS else None)
        with self._lock:
            if key in self._results:
                self.hits += 1
                return self._results[key]
        value = _metric_functions()[metric](frames, fps, prompt)
        with self._lock:
            self._results.setdefault(key, value)
            self.computed += 1
        return value

    def __len__(self) -> int:
        return len(self._results)


_DECIMALS = 9


class MetricJudge:
    """Rank by a weighted sum of weight-free metrics (weights: the spec's, tilted by the criterion).

    Only metrics available for every candidate count; their weights are renormalised to sum to 1.
    Metric values and scores are rounded to 1e-9 (float noise in a metric backend -- BRISQUE
    varies by ~1e-14 between runs -- must not reorder candidates) and ties keep candidate order,
    so the ranking is deterministic.  ``raw`` is a JSON string of
    the per-candidate scores and metric values.
    """

    def __init__(self, spec: JudgeSpec):
        if spec.backend != "metrics":
            raise MoraError(f"judge {spec.name!r} is a {spec.backend} judge, not a metrics judge")
        self.spec = spec
        self.name = spec.name

    def rank(self, candidates: list[np.ndarray], fps: float, prompt: str = "", criterion_id: int = 1,
             metric_cache: MetricCache | None = None) -> Judgement:
        from metrics.base import check_fps

        criterion = criterion_text(criterion_id)
        videos = check_candidates(candidates)
        try:
            fps = check_fps(fps)
        except ValueError as exc:
            raise MoraError(str(exc)) from None
        cache = metric_cache if metric_cache is not None else MetricCache()
        weights = self.spec.weights_for(int(criterion_id))
        table = []
        for video in videos:
            digest = video_digest(video)
            table.append({m: cache.result(video, fps, prompt or None, m, digest) for m in weights})
        usable = [m for m in weights if all(row[m].value is not None for row in table)]
        skipped = {m: table[0][m].method if table[0][m].value is None else "n/a for some candidates"
                   for m in weights if m not in usable}
        total = sum(weights[m] for m in usable)
        if not usable or total <= 0:
            raw = json.dumps({"error": "no metric of this judge is available for every candidate",
                              "skipped": skipped}, sort_keys=True)
            return self._judgement(criterion_id, criterion, raw, None, None)
        norm = {m: weights[m] / total for m in usable}
        values = [{m: round(float(row[m].value), _DECIMALS) for m in usable} for row in table]
        scores = [round(sum(norm[m] * vals[m] for m in usable), _DECIMALS) for vals in values]
        ranking = sorted(range(len(videos)), key=lambda i: (-scores[i], i))
        raw = json.dumps({
            "weights": norm,
            "skipped": sorted(skipped),
            "candidates": [{"video": i + 1, "score": scores[i],
                            "metrics": values[i]} for i in range(len(videos))],
            "ranking": [i + 1 for i in ranking],
        }, sort_keys=True)
        return self._judgement(criterion_id, criterion, raw, ranking, scores)

    def _judgement(self, criterion_id, criterion, raw, ranking, scores) -> Judgement:
        return Judgement(judge=self.name, backend="metrics", criterion_id=int(criterion_id),
                         criterion=criterion, raw=raw, ranking=ranking, scores=scores)
