"""Shared types and input checks for the video metrics.

Every metric takes frames as a ``numpy.ndarray`` of shape ``T x H x W x 3``, ``uint8``, RGB,
and returns a :class:`MetricResult`.  Nothing here reads files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from configs.metric_names import METRIC_NAMES, WORLD_METRIC_NAMES

MetricKind = Literal["vbench", "proxy", "n/a", "world"]
_KINDS = ("vbench", "proxy", "n/a", "world")


@dataclass(frozen=True)
class MetricResult:
    """One metric's value for one video.

    ``kind`` says how far the number can be compared with published VBench numbers:
    ``"vbench"`` — VBench's own computation; ``"proxy"`` — VBench's (or the paper's) rule with a
    weight-free stand-in for the network it uses; ``"n/a"`` — not computed (``value`` is None);
    ``"world"`` — a measure of the `shapes` world (metrics/world.py), comparable with nothing
    published.
    ``method`` says in words what was done, and what would be needed where nothing was.
    """

    metric: str
    value: float | None
    method: str
    kind: MetricKind

    def __post_init__(self) -> None:
        if self.metric not in METRIC_NAMES + WORLD_METRIC_NAMES:
            raise ValueError(f"unknown metric name {self.metric!r}")
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if (self.kind == "world") != (self.metric in WORLD_METRIC_NAMES):
            raise ValueError(f"{self.metric}: kind 'world' is for the shapes world's measures only")
        if self.kind == "n/a":
            if self.value is not None:
                raise ValueError("an n/a metric carries no value")
        elif self.value is None:
            raise ValueError(f"a {self.kind} metric needs a value")
        else:
            value = float(self.value)
            if not np.isfinite(value):
                raise ValueError(f"{self.metric}: non-finite value {value}")
            object.__setattr__(self, "value", value)

    def as_dict(self) -> dict[str, Any]:
        """``{"metric", "value", "method", "kind"}``: add ``"video"`` for a record
        (:meth:`as_record`)."""
        return asdict(self)

    def as_record(self, video: str) -> dict[str, Any]:
        """This result as one record of ``mora eval --format json`` and of the evaluation tables
        (tasks/evaluate.py)."""
        return {"video": video, **self.as_dict()}


def not_available(metric: str, method: str) -> MetricResult:
    return MetricResult(metric=metric, value=None, method=method, kind="n/a")


def check_frames(frames: Any, name: str = "frames", min_frames: int = 1) -> np.ndarray:
    """Validate a ``T x H x W x 3`` uint8 RGB array; raise ``ValueError`` with a one-line reason."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of shape T x H x W x 3, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name} must have shape T x H x W x 3, got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got {frames.dtype}")
    if frames.shape[0] < min_frames:
        raise ValueError(f"{name} needs at least {min_frames} frame(s), got {frames.shape[0]}")
    if frames.shape[1] < 8 or frames.shape[2] < 8:
        raise ValueError(f"{name} frames are too small ({frames.shape[1]}x{frames.shape[2]}); need at least 8x8")
    return np.ascontiguousarray(frames)


def check_fps(fps: Any) -> float:
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a number, got {fps!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return value
