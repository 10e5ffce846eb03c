"""Read a `shapes` clip back (configs/world/): its background, the shape's colour and form, and
where the shape's centroid goes; and score how well a clip obeys a caption of the world's
grammar. Weight-free and deterministic: the stand-in for the paper's MLLM judges that, in this
world, has a right answer. These are this world's measures, never VBench numbers.

Frames are ``T x H x W x 3`` uint8 RGB (metrics/base.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from configs.world import BACKGROUNDS, COLOURS, PACES, Scene, parse

FOREGROUND_DISTANCE = 60.0  # RGB distance from the background that makes a pixel the shape's
STILL_SPEED = 0.4  # px per frame below which the shape counts as standing still
MIN_PIXELS = 12  # fewer foreground pixels in a frame: no shape in it
# Fill ratio (shape pixels / bounding box pixels): square ~1.0, circle ~0.79, triangle ~0.5.
SQUARE_FILL, CIRCLE_FILL = 0.9, 0.64


@dataclass(frozen=True)
class Reading:
    """What a clip shows, as measured; None where it could not be told."""

    background: str | None
    colour: str | None
    shape: str | None
    motion: str | None
    pace: str | None
    speed: float | None  # px per frame
    colour_distance: float | None  # RGB distance of the measured colour from the named one

    def scene(self) -> Scene | None:
        """The world's scene this reading names, when every attribute was told."""
        try:
            return Scene(self.colour, self.shape, self.motion, self.background,
                         None if self.motion == "still" else self.pace)
        except ValueError:
            return None


def _nearest(rgb: np.ndarray, names: dict[str, tuple[int, int, int]]) -> tuple[str, float]:
    distances = {name: float(np.linalg.norm(rgb - np.array(value, dtype=np.float64)))
                 for name, value in names.items()}
    name = min(distances, key=distances.get)
    return name, distances[name]


def read_clip(frames: np.ndarray) -> Reading:
    """Measure ``frames``: the background from the border pixels, the shape from the pixels far
    from it, the motion from the shape's centroid path (least-squares velocity)."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be T x H x W x 3, got {frames.shape}")
    clip = frames.astype(np.float64)
    border = np.concatenate([clip[:, 0], clip[:, -1], clip[:, :, 0], clip[:, :, -1]], axis=1)
    background_rgb = np.median(border.reshape(-1, 3), axis=0)
    background, _ = _nearest(background_rgb, BACKGROUNDS)

    mask = np.linalg.norm(clip - background_rgb, axis=-1) > FOREGROUND_DISTANCE
    centroids, fills, times = [], [], []
    for t, frame_mask in enumerate(mask):
        ys, xs = np.nonzero(frame_mask)
        if len(xs) < MIN_PIXELS:
            continue
        times.append(t)
        centroids.append((xs.mean(), ys.mean()))
        box = (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
        fills.append(len(xs) / box)
    if not times:
        return Reading(background, None, None, None, None, None, None)

    colour, distance = _nearest(np.median(clip[mask], axis=0), COLOURS)
    fill = float(np.median(fills))
    shape = "square" if fill >= SQUARE_FILL else "circle" if fill >= CIRCLE_FILL else "triangle"
    motion = pace = speed = None
    if len(times) >= 2:
        path = np.array(centroids)
        t = np.array(times, dtype=np.float64)
        vx, vy = (np.polyfit(t, path[:, i], 1)[0] for i in (0, 1))
        speed = float(np.hypot(vx, vy))
        if speed < STILL_SPEED:
            motion = "still"
        else:
            motion = (("right" if vx > 0 else "left") if abs(vx) >= abs(vy)
                      else ("down" if vy > 0 else "up"))
            pace = min(PACES, key=lambda p: abs(PACES[p] - speed))
    return Reading(background, colour, shape, motion, pace, speed, distance)


@dataclass(frozen=True)
class AdherenceWeights:
    """How much each attribute of the caption counts; two judges weigh them differently (as the
    paper's two MLLM judges differ), so they sometimes rank two clips the other way round."""

    colour: float
    shape: float
    motion: float
    background: float

    def total(self) -> float:
        return self.colour + self.shape + self.motion + self.background


# Judge "look": what a still frame shows first; judge "move": the motion first.
LOOK = AdherenceWeights(colour=0.4, shape=0.3, motion=0.2, background=0.1)
MOVE = AdherenceWeights(colour=0.2, shape=0.15, motion=0.5, background=0.15)


def attribute_matches(caption: str, reading: Reading) -> dict[str, bool] | None:
    """Which of the caption's attributes the clip shows; None when the caption is not one of the
    world's grammar (then there is nothing to check it against)."""
    scene = parse(caption)
    if scene is None:
        return None
    return {"colour": reading.colour == scene.colour, "shape": reading.shape == scene.shape,
            "motion": reading.motion == scene.motion,
            "background": reading.background == scene.background}


def adherence(caption: str, frames: np.ndarray,
              weights: AdherenceWeights = LOOK) -> float | None:
    """How well ``frames`` obey ``caption``, in [0, 1]: the weighted share of its attributes
    (colour, shape, motion, background) that the clip shows. None for a caption outside the
    world's grammar."""
    matches = attribute_matches(caption, read_clip(frames))
    if matches is None:
        return None
    got = sum(getattr(weights, name) for name, ok in matches.items() if ok)
    return got / weights.total()
