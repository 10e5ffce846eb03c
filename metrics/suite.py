"""The metric functions and the per-video suite.

Every function takes frames as ``T x H x W x 3`` uint8 RGB arrays and returns a
:class:`~metrics.base.MetricResult`.  Nothing here loads a network with random weights: a
metric whose model is missing reports ``kind="n/a"`` with ``value=None``.
"""

from __future__ import annotations

import numpy as np

from .base import METRIC_NAMES, MetricResult, check_fps, check_frames, not_available
from .features import (
    LAYOUT_DESCRIPTION,
    STRUCTURE_DESCRIPTION,
    cosine,
    layout_features,
    structure_features,
    video_feature,
)
from .flow import DIS_NAME
from .vbench_rules import (
    consistency_score,
    dynamic_degree_details,
    motion_smoothness_score,
    temporal_flickering_score,
)

_CONSISTENCY_RULE = "VBench aggregation, mean over frames i>=1 of (max(0,cos(f0,fi)) + max(0,cos(fi-1,fi)))/2"
_NO_WEIGHTS = "no local weights are configured for it, and no weight-free stand-in is used"


# --------------------------------------------------------------------------- VBench dimensions

def subject_consistency(frames: np.ndarray) -> MetricResult:
    frames = check_frames(frames)
    value = consistency_score(structure_features(frames))
    return MetricResult(
        "subject_consistency", value,
        f"{_CONSISTENCY_RULE}, over {STRUCTURE_DESCRIPTION} instead of DINO ViT-B/16 features", "proxy")


def background_consistency(frames: np.ndarray) -> MetricResult:
    frames = check_frames(frames)
    value = consistency_score(layout_features(frames))
    return MetricResult(
        "background_consistency", value,
        f"{_CONSISTENCY_RULE}, over {LAYOUT_DESCRIPTION} instead of CLIP ViT-B/32 features", "proxy")


def motion_smoothness(frames: np.ndarray) -> MetricResult:
    frames = check_frames(frames)
    if frames.shape[0] < 3:
        return not_available("motion_smoothness", f"needs at least 3 frames, got {frames.shape[0]}")
    value = motion_smoothness_score(frames)
    return MetricResult(
        "motion_smoothness", value,
        "VBench rule (keep even frames, interpolate the odd ones back, (255 - mean abs error)/255) with a "
        f"flow-warp interpolator ({DIS_NAME} both ways + remap) instead of AMT-S (AMT not configured)",
        "proxy")


def dynamic_degree(frames: np.ndarray, fps: float) -> MetricResult:
    frames = check_frames(frames)
    fps = check_fps(fps)
    d = dynamic_degree_details(frames, fps)
    return MetricResult(
        "dynamic_degree", 1.0 if d.dynamic else 0.0,
        f"VBench rule (one frame in {d.interval} at {fps:g} fps -> {len(d.sample_indices)} frames; dynamic if "
        f"the mean of the top 5% flow magnitudes exceeds {d.threshold:.2f} px in >= {d.count_num} of "
        f"{len(d.pair_scores)} pairs: {d.moving_pairs} did) with {DIS_NAME} instead of RAFT "
        "(RAFT not configured)",
        "proxy")


def temporal_flickering(frames: np.ndarray) -> MetricResult:
    frames = check_frames(frames)
    if frames.shape[0] < 2:
        return not_available("temporal_flickering", f"needs at least 2 frames, got {frames.shape[0]}")
    value = temporal_flickering_score(frames)
    return MetricResult(
        "temporal_flickering", value,
        "VBench computation, model-free: (255 - mean abs difference of consecutive frames)/255 over all "
        "frames (VBench applies it to static-scene prompts)",
        "vbench")


def imaging_quality(frames: np.ndarray) -> MetricResult:
    frames = check_frames(frames)
    from .quality import brisque_available, brisque_score, brisque_to_unit, frame_sample

    ok, why = brisque_available()
    if not ok:
        return not_available(
            "imaging_quality",
            f"needs MUSIQ (SPAQ) weights, not configured; the BRISQUE stand-in is unavailable ({why}); "
            "pip install brisque")
    indices = frame_sample(frames.shape[0])
    scores = [brisque_score(frames[i]) for i in indices]
    finite = [s for s in scores if np.isfinite(s)]
    if not finite:
        return not_available("imaging_quality", "BRISQUE is undefined on these frames (no texture at all)")
    value = float(np.mean([brisque_to_unit(s) for s in finite]))
    return MetricResult(
        "imaging_quality", value,
        f"BRISQUE (brisque wheel, bundled SVR model) on {len(finite)} of {frames.shape[0]} frames, "
        "mapped to clip(1 - score/100, 0, 1) and averaged, instead of MUSIQ-SPAQ score/100 (MUSIQ not configured)",
        "proxy")


def aesthetic_quality(frames: np.ndarray) -> MetricResult:
    check_frames(frames)
    return not_available(
        "aesthetic_quality",
        "needs CLIP ViT-L/14 image features and the LAION aesthetic predictor head (VBench: mean per-frame "
        f"score/10); {_NO_WEIGHTS}")


def temporal_style(frames: np.ndarray, prompt: str | None = None) -> MetricResult:
    check_frames(frames)
    return not_available(
        "temporal_style",
        "needs ViCLIP (InternVid) video-text similarity between the video and the prompt's temporal-style "
        f"description; {_NO_WEIGHTS}")


def appearance_style(frames: np.ndarray, prompt: str | None = None) -> MetricResult:
    check_frames(frames)
    return not_available(
        "appearance_style",
        "needs CLIP ViT-B/32 frame-text similarity with the prompt's appearance-style description; "
        f"{_NO_WEIGHTS}")


# --------------------------------------------------------------------------- the paper's own

def video_text_integration(prompt: str | None = None, caption: str | None = None) -> MetricResult:
    """Cosine similarity of sentence embeddings of the (augmented) prompt and a caption of the video.

    The paper captions the video with Video-LLaMA (and the input image with LLaVA, prepended to the
    instruction); captioning is the caller's job: without ``caption`` this is n/a.
    """
    if not (caption and caption.strip()):
        return not_available(
            "video_text_integration",
            "needs a caption of the video from a captioner (paper: Video-LLaMA; input image described by "
            "LLaVA and prepended to the prompt); pass caption= to compute it")
    if not (prompt and prompt.strip()):
        return not_available("video_text_integration", "needs the prompt the video was made from")
    from .text import MINILM_PACKAGE, text_similarity

    try:
        value = text_similarity(prompt, caption)
    except ImportError as exc:
        return not_available("video_text_integration", f"needs a sentence encoder: {exc}")
    return MetricResult(
        "video_text_integration", value,
        f"cosine similarity of prompt and caption sentence embeddings from all-MiniLM-L6-v2 ({MINILM_PACKAGE}, "
        "mean pooling) instead of BERT",
        "proxy")


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return cosine(a - a.mean(), b - b.mean())


_VIDEO_FEATURE = ("video-level weight-free features (temporal means of per-frame HOG-style structure and "
                  "colour-layout features)")


def tcon(input_frames: np.ndarray, output_frames: np.ndarray) -> MetricResult:
    """Temporal consistency of an extension: cosine similarity of input and extended video features."""
    a = check_frames(input_frames, "input_frames")
    b = check_frames(output_frames, "output_frames")
    value = cosine(video_feature(a), video_feature(b))
    return MetricResult(
        "tcon", value,
        f"cosine similarity of input and extended videos' {_VIDEO_FEATURE} instead of ViCLIP video features",
        "proxy")


def tmean(prev_frames: np.ndarray, transition_frames: np.ndarray, next_frames: np.ndarray) -> MetricResult:
    """Temporal coherence of a transition: mean of its correlation with the preceding and following clips."""
    p = video_feature(check_frames(prev_frames, "prev_frames"))
    t = video_feature(check_frames(transition_frames, "transition_frames"))
    n = video_feature(check_frames(next_frames, "next_frames"))
    value = (_pearson(p, t) + _pearson(t, n)) / 2.0
    return MetricResult(
        "tmean", value,
        f"mean of the Pearson correlations of the transition's {_VIDEO_FEATURE} with the preceding and "
        "following clips' (weight-free stand-in for learned video features)",
        "proxy")


# --------------------------------------------------------------------------- suite

def evaluate_video(
    frames: np.ndarray,
    fps: float,
    prompt: str | None = None,
    caption: str | None = None,
    *,
    input_frames: np.ndarray | None = None,
    prev_frames: np.ndarray | None = None,
    next_frames: np.ndarray | None = None,
) -> list[MetricResult]:
    """All twelve metrics for one video, in :data:`METRIC_NAMES` order (configs/metric_names.py),
    and, for a prompt of the `shapes` world's grammar, that world's adherence (kind "world").

    ``tcon`` is computed when ``input_frames`` (the video that ``frames`` extends) is given, and
    ``tmean`` when ``frames`` is a transition and both ``prev_frames`` and ``next_frames`` are
    given; otherwise they are n/a.
    """
    frames = check_frames(frames)
    fps = check_fps(fps)
    results = {
        "subject_consistency": subject_consistency(frames),
        "background_consistency": background_consistency(frames),
        "motion_smoothness": motion_smoothness(frames),
        "dynamic_degree": dynamic_degree(frames, fps),
        "aesthetic_quality": aesthetic_quality(frames),
        "imaging_quality": imaging_quality(frames),
        "temporal_flickering": temporal_flickering(frames),
        "temporal_style": temporal_style(frames, prompt),
        "appearance_style": appearance_style(frames, prompt),
        "video_text_integration": video_text_integration(prompt, caption),
        "tcon": (tcon(input_frames, frames) if input_frames is not None else not_available(
            "tcon", "needs the input video an extension was made from (input_frames=)")),
        "tmean": (tmean(prev_frames, frames, next_frames)
                  if prev_frames is not None and next_frames is not None else not_available(
                      "tmean", "needs the clips before and after a transition (prev_frames=, next_frames=)")),
    }
    found = [results[name] for name in METRIC_NAMES]
    if prompt is not None and (world := shapes_adherence(frames, prompt)) is not None:
        found.append(world)
    return found


def shapes_adherence(frames: np.ndarray, prompt: str) -> MetricResult | None:
    """How well ``frames`` obey ``prompt`` when it is a caption of the `shapes` world's grammar
    (configs/world/); None for any other prompt."""
    from .world import LOOK, adherence

    value = adherence(prompt, frames, LOOK)
    if value is None:
        return None
    return MetricResult("shapes_adherence", value, "shapes world: the share of the caption's "
                        "colour, shape, motion and background read back from the frames "
                        "(metrics/world.py, weighting 'look'); this world's measure, not VBench's",
                        "world")
