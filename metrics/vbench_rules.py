"""VBench's per-video rules (Vchitect/VBench at commit 45e79ec), on arrays.

The rules — frame sampling, thresholds, aggregation — follow VBench's code; the networks VBench
runs inside them (RAFT, AMT, DINO, CLIP) are replaced by weight-free stand-ins elsewhere in this
package, and callers label those results ``proxy``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .flow import dis_flow, interpolate_midpoint, to_gray


# --------------------------------------------------------------------------- dynamic degree

def dynamic_degree_interval(fps: float) -> int:
    """VBench's frame step for dynamic degree: ``max(1, round(fps / 8))`` (Python's round)."""
    return max(1, round(fps / 8))


def dynamic_degree_sample_indices(num_frames: int, fps: float) -> list[int]:
    """Indices VBench keeps for dynamic degree: every ``interval``-th frame from frame 0."""
    return list(range(0, num_frames, dynamic_degree_interval(fps)))


def dynamic_degree_threshold(height: int, width: int) -> float:
    """Per-pair motion threshold: ``6 * min(H, W) / 256`` pixels."""
    return 6.0 * (min(height, width) / 256.0)


def dynamic_degree_count_num(num_sampled: int) -> int:
    """Pairs that must exceed the threshold: ``round(4 * T / 16)``, T = number of sampled frames.

    Python's round (half to even), as VBench uses it: T=2 gives 0, T=6 gives 2, T=10 gives 2.
    """
    return round(4 * (num_sampled / 16.0))


def top5_mean_magnitude(flow: np.ndarray) -> float:
    """Mean of the largest 5 % (``int(h*w*0.05)`` values) of the flow magnitudes."""
    h, w = flow.shape[:2]
    rad = np.sqrt(np.square(flow[..., 0], dtype=np.float64) + np.square(flow[..., 1], dtype=np.float64)).ravel()
    cut = int(h * w * 0.05)
    if cut <= 0:
        return float(rad.max())
    top = np.partition(rad, rad.size - cut)[rad.size - cut:]
    return float(top.mean())


def check_move(scores: list[float], threshold: float, count_num: int) -> bool:
    """VBench's decision: scan the pairs in order, dynamic once ``count_num`` exceeded ``threshold``.

    Equivalent to ``len(scores) > 0 and sum(s > threshold) >= count_num``.
    """
    count = 0
    for score in scores:
        if score > threshold:
            count += 1
        if count >= count_num:
            return True
    return False


@dataclass(frozen=True)
class DynamicDegreeDetails:
    interval: int
    sample_indices: tuple[int, ...]
    threshold: float
    count_num: int
    pair_scores: tuple[float, ...]
    moving_pairs: int
    dynamic: bool


def dynamic_degree_details(frames: np.ndarray, fps: float, flow_fn=None) -> DynamicDegreeDetails:
    """Run VBench's dynamic-degree rule with ``flow_fn(gray0, gray1)`` (default: DIS)."""
    flow_fn = dis_flow if flow_fn is None else flow_fn
    interval = dynamic_degree_interval(fps)
    indices = tuple(range(0, frames.shape[0], interval))
    threshold = dynamic_degree_threshold(frames.shape[1], frames.shape[2])
    count_num = dynamic_degree_count_num(len(indices))
    grays = [to_gray(frames[i]) for i in indices]
    scores = tuple(top5_mean_magnitude(flow_fn(a, b)) for a, b in zip(grays[:-1], grays[1:]))
    moving = sum(1 for s in scores if s > threshold)
    return DynamicDegreeDetails(
        interval=interval,
        sample_indices=indices,
        threshold=threshold,
        count_num=count_num,
        pair_scores=scores,
        moving_pairs=moving,
        dynamic=check_move(list(scores), threshold, count_num),
    )


# --------------------------------------------------------------------------- motion smoothness

def motion_smoothness_score(frames: np.ndarray, interpolate=None) -> float:
    """VBench's motion smoothness with ``interpolate(frame_a, frame_b) -> middle frame``.

    Keep frames 0, 2, 4, …; interpolate a frame between each consecutive kept pair; compare the
    interpolated frames with the dropped originals 1, 3, 5, … (as many as were interpolated) by
    mean absolute difference of uint8 pixels; score ``(255 - mean) / 255``.  Needs T >= 3.
    """
    interpolate = interpolate_midpoint if interpolate is None else interpolate
    kept = frames[0::2]
    if len(kept) < 2:
        raise ValueError("motion smoothness needs at least 3 frames")
    dropped = frames[1::2]
    diffs = []
    for i in range(len(kept) - 1):
        middle = interpolate(kept[i], kept[i + 1])
        diffs.append(float(np.mean(cv2.absdiff(dropped[i], middle))))
    return (255.0 - float(np.mean(diffs))) / 255.0


# --------------------------------------------------------------------------- temporal flickering

def temporal_flickering_score(frames: np.ndarray) -> float:
    """VBench's temporal flickering: ``(255 - mean over consecutive pairs of MAE) / 255``.

    MAE is the mean of ``cv2.absdiff`` over all pixels and channels, in float32, all frames.
    Needs T >= 2.
    """
    if frames.shape[0] < 2:
        raise ValueError("temporal flickering needs at least 2 frames")
    maes = [float(np.mean(cv2.absdiff(frames[i].astype(np.float32), frames[i + 1].astype(np.float32))))
            for i in range(frames.shape[0] - 1)]
    return (255.0 - float(np.mean(np.array(maes)))) / 255.0


# --------------------------------------------------------------------------- consistency

def consistency_score(features: np.ndarray) -> float:
    """VBench's subject/background consistency aggregation over per-frame feature vectors.

    Features are L2-normalised; for each frame i >= 1 the score is
    ``(max(0, cos(f[i-1], f[i])) + max(0, cos(f[0], f[i]))) / 2``; the video's value is the mean
    over i >= 1 (1.0 for a single frame, as VBench's background consistency returns).
    """
    feats = np.asarray(features, dtype=np.float64)
    if feats.shape[0] < 2:
        return 1.0
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    feats = feats / np.maximum(norms, 1e-12)
    sim_prev = np.maximum(0.0, np.sum(feats[:-1] * feats[1:], axis=1))
    sim_first = np.maximum(0.0, feats[1:] @ feats[0])
    return float(np.mean((sim_prev + sim_first) / 2.0))
