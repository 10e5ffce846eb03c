"""Render a `shapes` scene (configs/world/__init__.py) as frames: ``T x 64 x 64 x 3`` uint8 RGB,
the layout every metric and store function reads. Seeded and deterministic: the same scene,
seed and frame count give the same bytes on any machine (no antialiasing, no floating-point
order effects beyond numpy's elementwise arithmetic)."""

from __future__ import annotations

import random

import numpy as np

from configs.world import BACKGROUNDS, COLOURS, FRAMES, SIZE, VELOCITY, Scene

RADIUS = 8  # half the shape's extent in pixels: the fastest clip (2.5 px x 16 frames) fits in 64
# How far (px, each axis) a clip's path may sit from the frame's centre. Small on purpose: the
# first frame's place follows from the caption (a shape moving left starts right of centre),
# so a 64x64 text-to-image model trained for minutes on 2 cores learns to draw one shape in one
# place instead of fragments of it everywhere (benchmarks/README.md, "The shapes zoo": 2000
# training steps each, the same everything else, uniform starts against these).
JITTER = 4.0


def start_and_step(scene: Scene, seed: int, frames: int, size: int = SIZE
                   ) -> tuple[tuple[float, float], tuple[float, float]]:
    """The shape's first centre and its move per frame: the path centred on the frame, moved by
    a seeded offset of up to :data:`JITTER` px, and kept inside the frame."""
    rng = random.Random(f"mora-shapes-start-{scene.caption}-{seed}-{frames}")
    dx, dy = VELOCITY[scene.motion]
    step = (dx * scene.speed, dy * scene.speed)
    low, high = RADIUS + 1, size - 2 - RADIUS  # the shape never touches the border
    centre = []
    for move in step:
        travel = move * (frames - 1)
        lo, hi = (low - min(travel, 0), high - max(travel, 0))
        start = (size - 1) / 2 - travel / 2 + rng.uniform(-JITTER, JITTER)
        centre.append(min(max(start, lo), hi))
    return (centre[0], centre[1]), step


def shape_mask(shape: str, cx: float, cy: float, size: int = SIZE) -> np.ndarray:
    """Pixels (by their centres) inside ``shape`` centred at (cx, cy): bool ``size x size``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    if shape == "circle":
        return (x - cx) ** 2 + (y - cy) ** 2 <= RADIUS ** 2
    if shape == "square":
        half = RADIUS * 0.85  # about the circle's area
        return (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    if shape == "triangle":  # pointing up: apex at the top, base at the bottom
        top, bottom = cy - RADIUS, cy + RADIUS
        half_width = RADIUS * (y - top) / (bottom - top)
        return (y >= top) & (y <= bottom) & (np.abs(x - cx) <= half_width)
    raise ValueError(f"unknown shape {shape!r}")


def render(scene: Scene, seed: int = 0, frames: int = 9, size: int = SIZE) -> np.ndarray:
    """The clip of ``scene``: ``frames`` frames (9-17 in the world's clips)."""
    if not FRAMES[0] <= frames <= FRAMES[1]:
        raise ValueError(f"frames must be between {FRAMES[0]} and {FRAMES[1]}, got {frames}")
    (cx, cy), (sx, sy) = start_and_step(scene, seed, frames, size)
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    out[:] = np.array(BACKGROUNDS[scene.background], dtype=np.uint8)
    colour = np.array(COLOURS[scene.colour], dtype=np.uint8)
    for t in range(frames):
        out[t][shape_mask(scene.shape, cx + sx * t, cy + sy * t, size)] = colour
    return out


def render_pair(first: Scene, second: Scene, seed: int = 0, frames: int = 9,
                size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Two clips for the connector: ``first`` then ``second``, each from its own seeded start."""
    return render(first, seed, frames, size), render(second, seed + 1, frames, size)
