"""Judges (paper §4.2, A.6): rank the C candidate videos of one prompt under one criterion.

The training loop draws one of the paper's ten evaluation criteria (:data:`CRITERIA`) per
candidate set and asks two judges for a ranking; when both put the same video first it is
accepted, otherwise a human decides.  Every judge answers with a :class:`Judgement`: the raw
answer, and the parsed ranking (candidate indices, best first) or ``None`` when the answer is not
a full ranking of all C candidates (which the loop treats as a disagreement).

Backends (``configs.judges.JudgeSpec``):

* :class:`MetricJudge` (agents/judges/metric.py) — a weighted sum of weight-free video metrics; deterministic.  Two of them
  with different weightings are the default (``tiny``) judges.  Metric values are cached by
  video content in a :class:`MetricCache` that both judges of a round can share.
* :class:`OpenAIVisionJudge` (agents/judges/vision.py) — an OpenAI-compatible ``/chat/completions`` vision endpoint (vLLM
  serving Qwen2-VL or LLaVA-OneVision; vLLM needs ``--limit-mm-per-prompt`` to allow C x
  ``frames_per_video`` images).
* :class:`TransformersVisionJudge` (agents/judges/local_vision.py) — ``Qwen2VLForConditionalGeneration`` /
  ``LlavaOnevisionForConditionalGeneration`` from local weights, loaded once per process.
* :class:`WorldJudge` (agents/judges/world.py) — adherence to a caption of the `shapes` world,
  read back from the frames; deterministic.

Vision judges see each candidate as ``frames_per_video`` evenly spaced frames, passed as images
(video inputs would need torchvision's video processors).  Criteria, ``Judgement`` and the
candidates' checks: agents/judges/base.py; answer parsing: agents/judges/parsing.py; the
architectures' model classes: agents/judges/architectures.py.  No Prefect here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from agents.cache import MODEL_CACHE, ModelCache
from agents.judges.architectures import image_only_processor_class
from agents.judges.base import (
    CRITERIA,
    Judgement,
    check_candidates,
    criterion_text,
    draw_criterion,
    sample_frame_indices,
    video_digest,
)
from agents.judges.local_vision import TransformersVisionJudge, resolve_judge_weights
from agents.judges.metric import MetricCache, MetricJudge
from agents.judges.parsing import parse_ranking
from agents.judges.vision import SYSTEM_PROMPT, OpenAIVisionJudge
from agents.judges.world import WorldJudge
from configs.judges import JudgeSpec

if TYPE_CHECKING:
    from agents.loading import Runtime


class Judge(Protocol):
    name: str
    spec: JudgeSpec

    def rank(self, candidates: list[np.ndarray], fps: float, prompt: str, criterion_id: int,
             metric_cache: MetricCache | None = None) -> Judgement: ...


def rank_all(judges: list[Judge] | tuple[Judge, ...], candidates: list[np.ndarray], fps: float, prompt: str,
             criterion_id: int, metric_cache: MetricCache | None = None) -> list[Judgement]:
    """Every judge's judgement of one candidate set under one criterion (metric values computed once)."""
    cache = metric_cache if metric_cache is not None else MetricCache()
    return [judge.rank(candidates, fps, prompt, criterion_id, metric_cache=cache) for judge in judges]


def common_best(judgements: list[Judgement]) -> int | None:
    """The candidate every judge ranked first, or None (no judgements, an unparsed answer, or a split)."""
    bests = {j.best for j in judgements}
    return bests.pop() if len(bests) == 1 and None not in bests and judgements else None


def make_judge(spec: JudgeSpec, runtime: "Runtime | None" = None, cache: ModelCache = MODEL_CACHE) -> Judge:
    if spec.backend == "metrics":
        return MetricJudge(spec)
    if spec.backend == "openai":
        return OpenAIVisionJudge(spec)
    if spec.backend == "world":
        return WorldJudge(spec)
    return TransformersVisionJudge(spec, runtime, cache)


__all__ = [
    "CRITERIA",
    "Judge",
    "Judgement",
    "MetricCache",
    "MetricJudge",
    "OpenAIVisionJudge",
    "SYSTEM_PROMPT",
    "TransformersVisionJudge",
    "WorldJudge",
    "check_candidates",
    "common_best",
    "criterion_text",
    "draw_criterion",
    "image_only_processor_class",
    "make_judge",
    "parse_ranking",
    "rank_all",
    "resolve_judge_weights",
    "sample_frame_indices",
    "video_digest",
]
