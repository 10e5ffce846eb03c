"""Video metrics for Mora (paper A.2; the twelve: metrics/suite.py) on frame arrays, no weights.

Input everywhere: ``frames``, a ``T x H x W x 3`` uint8 RGB ``numpy`` array (and ``fps`` where
the rule needs it).  Output: :class:`MetricResult` — ``metric``, ``value`` (None when n/a),
``method`` (what was computed, in words) and ``kind``: ``"vbench"`` (VBench's own computation),
``"proxy"`` (VBench's or the paper's rule around a weight-free stand-in for its network) or
``"n/a"``.  Heavy libraries (brisque, torch/transformers) are imported only when a metric that
needs them runs.  No Prefect here.
"""

from .base import METRIC_NAMES, MetricResult, check_frames
from .suite import (
    aesthetic_quality,
    appearance_style,
    background_consistency,
    dynamic_degree,
    evaluate_video,
    imaging_quality,
    motion_smoothness,
    subject_consistency,
    tcon,
    temporal_flickering,
    temporal_style,
    tmean,
    video_text_integration,
)
from .vbench_rules import dynamic_degree_details

__all__ = [
    "METRIC_NAMES",
    "MetricResult",
    "aesthetic_quality",
    "appearance_style",
    "background_consistency",
    "check_frames",
    "dynamic_degree",
    "dynamic_degree_details",
    "evaluate_video",
    "imaging_quality",
    "motion_smoothness",
    "subject_consistency",
    "tcon",
    "temporal_flickering",
    "temporal_style",
    "tmean",
    "video_text_integration",
]
