"""What an mp4 write and read cost in a process that holds the generation stack, with
imageio-ffmpeg's Ctrl-C guard on (its default) and off (storage/media.py sets it off).

imageio-ffmpeg starts each ffmpeg with ``preexec_fn=os.setpgrp`` unless
``IMAGEIO_FFMPEG_NO_PREVENT_SIGINT`` is set (imageio_ffmpeg/_utils.py, ``_popen_kwargs``); any
``preexec_fn`` makes Python fork() the calling process instead of vfork()-ing it, and a fork
copies the page tables of everything the process maps: torch, the models, their activations.
This process imports the stack, loads the tiny SD3 pipeline and keeps ``--resident-mb`` of
tensors (a stand-in for a bigger model), then alternates the two settings over the same calls
(`media.encode_mp4` of a 9-frame 64×64 clip, `media.decode_video` of its bytes), timing each
pair: wall, this process's CPU, and ffmpeg's (RUSAGE_CHILDREN).

    .venv/bin/python benchmarks/bench_ffmpeg_spawn.py --reps 20 --resident-mb 1000
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SWITCH = "IMAGEIO_FFMPEG_NO_PREVENT_SIGINT"


def cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--resident-mb", type=int, default=1000)
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from agents.loading import Runtime, load_pipeline
    from agents.tiny import build_tiny_zoo
    from configs import load_profile
    from storage import media

    build_tiny_zoo()
    profile = load_profile("tiny")
    pipe = load_pipeline(profile.text_to_image, Runtime.for_profile(profile))  # as a worker holds it
    resident = torch.ones(args.resident_mb * (1 << 20) // 4)  # touched: really resident
    frames = (np.random.default_rng(0).random((9, 64, 64, 3)) * 255).astype(np.uint8)

    results = {"on (imageio's default)": [], "off (storage/media.py)": []}
    for _ in range(args.reps):
        for label, value in (("on (imageio's default)", "0"), ("off (storage/media.py)", "1")):
            os.environ[SWITCH] = value  # read at every Popen
            w0, s0, c0 = time.perf_counter(), cpu(resource.RUSAGE_SELF), \
                cpu(resource.RUSAGE_CHILDREN)
            data = media.encode_mp4(frames, 8.0)
            media.decode_video(data, ".mp4")
            results[label].append((time.perf_counter() - w0, cpu(resource.RUSAGE_SELF) - s0,
                                   cpu(resource.RUSAGE_CHILDREN) - c0))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"mp4 write + read of a 9x64x64 clip, medians of {args.reps}, in a process of "
          f"{rss:.0f} MiB peak RSS ({type(pipe).__name__} loaded, {args.resident_mb} MB held, "
          f"{resident.numel() * 4 >> 20} MiB)")
    print(f"{'Ctrl-C guard':26} {'wall ms':>8} {'self CPU ms':>12} {'ffmpeg CPU ms':>14}")
    for label, rows in results.items():
        wall, own, kids = (statistics.median(col) * 1000 for col in zip(*rows))
        print(f"{label:26} {wall:8.1f} {own:12.1f} {kids:14.1f}")
    print(f"command: .venv/bin/python benchmarks/bench_ffmpeg_spawn.py --reps {args.reps} "
          f"--resident-mb {args.resident_mb}")


if __name__ == "__main__":
    main()
