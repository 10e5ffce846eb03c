"""Weight-free per-frame and per-video features standing in for DINO / CLIP / ViCLIP.

Two descriptors, both computed on small thumbnails so a 16-frame video costs a few ms:

* **structure** (stands in for DINO, used for subject consistency): histograms of oriented
  gradients — 9 unsigned orientation bins, magnitude-weighted, square-rooted — in an 8x8 and a
  4x4 grid of cells on a 64x64 greyscale thumbnail.  The cells make it tolerant to shifts of a
  few pixels (an 8 px shift at 256 px is 1/8 of a fine cell) and sensitive to changes of shape
  and texture layout.
* **colour layout** (stands in for CLIP, used for background consistency): a 16x16 thumbnail in
  CIE Lab, each channel minus its frame mean, plus the frame's mean colour (relative to
  mid-grey) at a quarter weight.  It sees mostly where colours and brightness sit in the frame,
  and to a lesser degree global colour / exposure changes.

Both vectors are centred (so frames without structure correlate near 0, not near 1 as any
non-negative histogram would) and carry one constant "bias" component of a fixed, small
magnitude: two featureless (flat) frames then compare as identical instead of undefined, while
for textured frames the bias is negligible.  Cosine similarity of these vectors is therefore a
Pearson-style correlation of the frames' structure or layout.
"""

from __future__ import annotations

import cv2
import numpy as np

STRUCTURE_SIZE = 64
STRUCTURE_BINS = 9
STRUCTURE_GRIDS = (8, 4)
LAYOUT_SIZE = 16
# Bias magnitudes, in the units of one feature component (RMS over the vector):
# gradient-histogram sqrt units and Lab units respectively.
_STRUCTURE_BIAS_RMS = 0.1
_LAYOUT_BIAS_RMS = 1.0
_LAYOUT_GLOBAL_WEIGHT = 0.25

STRUCTURE_DESCRIPTION = (
    "HOG-style structure features (9-bin gradient-orientation histograms in 8x8 and 4x4 cells "
    "of a 64x64 grey thumbnail, centred)"
)
LAYOUT_DESCRIPTION = (
    "colour-layout features (16x16 CIE Lab thumbnail centred on its frame mean, plus the mean colour "
    "at quarter weight)"
)


def _with_bias(vec: np.ndarray, rms: float) -> np.ndarray:
    bias = rms * np.sqrt(vec.size)
    return np.concatenate([vec, np.array([bias], dtype=vec.dtype)])


def structure_feature(frame: np.ndarray, bias: bool = True) -> np.ndarray:
    """HOG-style feature of one RGB uint8 frame (1D float64; with the bias component if ``bias``)."""
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    s = STRUCTURE_SIZE
    thumb = cv2.resize(gray, (s, s), interpolation=cv2.INTER_AREA).astype(np.float32)
    gx = cv2.Sobel(thumb, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(thumb, cv2.CV_32F, 0, 1, ksize=3)
    mag, ang = cv2.cartToPolar(gx, gy)  # angle in [0, 2*pi)
    ang = np.mod(ang, np.pi)  # unsigned orientation
    bins = np.minimum((ang * (STRUCTURE_BINS / np.pi)).astype(np.int64), STRUCTURE_BINS - 1)
    weights = mag.astype(np.float64).ravel()
    parts = []
    for grid in STRUCTURE_GRIDS:
        cell = s // grid
        cell_of = np.arange(s) // cell
        index = (cell_of[:, None] * grid + cell_of[None, :]) * STRUCTURE_BINS + bins
        hist = np.bincount(index.ravel(), weights=weights, minlength=grid * grid * STRUCTURE_BINS)
        parts.append(np.sqrt(hist / (cell * cell)))
    vec = np.concatenate(parts)
    vec = vec - vec.mean()
    return _with_bias(vec, _STRUCTURE_BIAS_RMS) if bias else vec


def layout_feature(frame: np.ndarray, bias: bool = True) -> np.ndarray:
    """Colour-layout feature of one RGB uint8 frame (1D float64; with the bias component if ``bias``).

    16x16x3 centred Lab cells, then the frame's mean Lab colour relative to mid-grey
    ``(L-50, a, b)`` weighted by ``_LAYOUT_GLOBAL_WEIGHT * 16`` (so it weighs like a quarter of
    the colour deviation spread over all cells): a global colour or exposure change lowers the
    similarity, but the spatial layout dominates.
    """
    thumb = cv2.resize(frame, (LAYOUT_SIZE, LAYOUT_SIZE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(thumb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab).astype(np.float64).reshape(-1, 3)
    mean = lab.mean(axis=0)
    centred = (lab - mean).ravel()
    glob = (mean - np.array([50.0, 0.0, 0.0])) * (_LAYOUT_GLOBAL_WEIGHT * LAYOUT_SIZE)
    vec = np.concatenate([centred, glob])
    return _with_bias(vec, _LAYOUT_BIAS_RMS) if bias else vec


def structure_features(frames: np.ndarray, bias: bool = True) -> np.ndarray:
    return np.stack([structure_feature(f, bias) for f in frames])


def layout_features(frames: np.ndarray, bias: bool = True) -> np.ndarray:
    return np.stack([layout_feature(f, bias) for f in frames])


def video_feature(frames: np.ndarray) -> np.ndarray:
    """Video-level feature (stands in for a ViCLIP video embedding).

    The temporal mean of the unit-normalised structure features (without bias) concatenated with
    the temporal mean of the unit-normalised colour-layout features (without bias), each half
    rescaled to unit length so both weigh the same.  A featureless (flat) half stays zero.
    Frame noise that changes from frame to frame averages out; what persists is kept.
    """
    s = np.mean([_unit(v) for v in structure_features(frames, bias=False)], axis=0)
    c = np.mean([_unit(v) for v in layout_features(frames, bias=False)], axis=0)
    return np.concatenate([_unit(s), _unit(c)])


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.zeros_like(v)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity; two zero vectors count as identical (1.0), one zero vector as 0.0."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-9 and nb < 1e-9:
        return 1.0
    if na < 1e-9 or nb < 1e-9:
        return 0.0
    return float(np.dot(a, b) / (na * nb))
