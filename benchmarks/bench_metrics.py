"""Time the weight-free metric suite on one core.

Reproduce with:
    cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_metrics.py [--runs 5] [--vti]

Prints the mean time per 16-frame 256x256 video of ``metrics.evaluate_video`` (all twelve
records; the weight-free metrics are the ones that cost anything) and of each metric alone,
with OpenCV, BLAS and torch limited to one thread.  ``--vti`` also times Video-Text
Integration (MiniLM, after its one-off load).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

cv2.setNumThreads(1)

import metrics  # noqa: E402
from metrics import suite  # noqa: E402

COMMAND = "cd /work/main && HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_metrics.py"


def make_video(t: int = 16, size: int = 256, seed: int = 0) -> np.ndarray:
    """A textured square moving 8 px/frame over a smooth colour gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    bg = np.stack([60 + 100 * xx / size, 80 + 80 * yy / size, 140 - 60 * xx / size], -1).astype(np.uint8)
    side = size * 3 // 8
    tex = cv2.GaussianBlur(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), (0, 0), 2.0)
    frames = []
    for i in range(t):
        f = bg.copy()
        x0 = size // 16 + 8 * i
        y0 = size // 2 - side // 2
        f[y0:y0 + side, x0:x0 + side] = tex
        frames.append(f)
    return np.stack(frames)


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.mean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--vti", action="store_true", help="also time video_text_integration (loads MiniLM)")
    args = parser.parse_args()

    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass

    frames = make_video()
    fps = 8.0
    metrics.evaluate_video(frames, fps)  # warm-up: loads BRISQUE's model, OpenCV tables

    per_metric = {
        "subject_consistency": lambda: suite.subject_consistency(frames),
        "background_consistency": lambda: suite.background_consistency(frames),
        "motion_smoothness": lambda: suite.motion_smoothness(frames),
        "dynamic_degree": lambda: suite.dynamic_degree(frames, fps),
        "imaging_quality": lambda: suite.imaging_quality(frames),
        "temporal_flickering": lambda: suite.temporal_flickering(frames),
        "aesthetic_quality (n/a)": lambda: suite.aesthetic_quality(frames),
        "temporal_style (n/a)": lambda: suite.temporal_style(frames),
        "appearance_style (n/a)": lambda: suite.appearance_style(frames),
    }
    prompt = "A red car drives along a coastal road at sunset."
    caption = "A red car is driving on a road next to the sea in the evening."
    if args.vti:
        suite.video_text_integration(prompt, caption)  # load MiniLM outside the timing
        per_metric["video_text_integration (MiniLM)"] = lambda: suite.video_text_integration(prompt, caption)

    print(f"metrics suite, {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]} @ {fps:g} fps, "
          f"1 thread (cv2, BLAS, torch), mean of {args.runs} runs")
    total = timed(lambda: metrics.evaluate_video(frames, fps), args.runs)
    print(f"  {'evaluate_video (weight-free suite)':<36} {total * 1000:8.1f} ms")
    for name, fn in per_metric.items():
        print(f"  {name:<36} {timed(fn, args.runs) * 1000:8.1f} ms")
    print(f"goal: < 1000 ms per video -> {'met' if total < 1.0 else 'NOT met'}")
    print(f"reproduce: {COMMAND} --runs {args.runs}{' --vti' if args.vti else ''}")


if __name__ == "__main__":
    main()
