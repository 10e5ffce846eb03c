"""The held-out evaluation of the training loop (paper A.7): fresh samples of the config's
fixed held-out prompts × seeds, each scored by the config's own judges. No Prefect, no store:
tasks/training.py's `held_out_score` stores each sample as it is made and reports the scores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from configs.training import TrainingConfig

# (video, prompt, enhanced prompt, seed, criterion): what the caller keeps of each sample.
Keep = Callable[[np.ndarray, str, str, int, int], None]


def held_out_scores(cfg: TrainingConfig, enhancer: Any, agents: tuple[Any, Any],
                    base: tuple[Any, Any] | None, fps: float, keep: Keep) -> list[float]:
    """One score in [0, 1] per (held-out prompt, seed) sample, prompt-major within each seed:
    the mean of the judges' scores (:func:`judge_score`). ``agents`` are the (text-to-image,
    image-to-video) agents sampled; ``base`` the base weights' agents, which ranking-only judges
    compare against (None when ``agents`` are the base weights themselves).

    What the loop optimises is the judges' preference under criteria drawn from the paper's
    ten, so sample k is judged under criterion ``k mod 10 + 1`` (the same draws for every
    weights)."""
    from agents.judges import MetricCache, make_judge

    text_to_image, image_to_video = agents
    judges = [make_judge(spec) for spec in cfg.judges]
    ranking_only = any(spec.backend != "metrics" for spec in cfg.judges)
    scores: list[float] = []
    for j in range(cfg.held_out_seeds):
        for i, prompt in enumerate(cfg.held_out_prompts):
            enhanced = enhancer.enhance(prompt)
            seed, criterion = cfg.held_out_seed + i + 1000 * j, len(scores) % 10 + 1
            video = _frames(image_to_video(text_to_image(enhanced, seed), enhanced, seed))
            keep(video, prompt, enhanced, seed, criterion)
            against = None
            if base is not None and ranking_only:
                against = _frames(base[1](base[0](enhanced, seed), enhanced, seed))
            cache = MetricCache()
            scores.append(float(np.nanmean([
                judge_score(spec, judge, video, against, fps, enhanced, criterion, cache)
                for spec, judge in zip(cfg.judges, judges)])))
    return scores


def judge_score(spec, judge, video: np.ndarray, base: np.ndarray | None, fps: float,
                prompt: str, criterion: int, cache) -> float:
    """One judge's score in [0, 1] of ``video``. A judge with scores (metrics) gives its score
    of the sample; a judge that only ranks (an MLLM) gives its preference against the base
    weights' sample of the same prompt and seed: 1 when it ranks this one first, 0 when the
    base's, 0.5 without a ranking (and 0.5 for the base weights themselves, ``base`` None,
    where both are the same video)."""
    if spec.backend == "metrics":
        scores = judge.rank([video], fps, prompt, criterion, metric_cache=cache).scores
        return float(scores[0]) if scores else float("nan")
    if base is None:
        return 0.5
    best = judge.rank([video, base], fps, prompt, criterion, metric_cache=cache).best
    return 0.5 if best is None else float(best == 0)


def _frames(images: list) -> np.ndarray:
    """An agent's PIL frames → T×H×W×3 uint8, what the judges take."""
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
