"""Batched candidate sampling (P3): C candidates of one prompt from one pipeline call per
agent vs one call per seed, same seeds, on the tiny profiles; the frames must be identical.

Each measurement is the chain text-to-image → image-to-video for all C seeds, warm (models
loaded), best of ``--reps``. "batched" is what `sample_candidates` does (the denoiser and VAE run
sample by sample inside the batched call, so frames are bit-identical); "batched, exact=false"
(`sampling.exact: false`) runs the denoiser and VAE on the whole batch: faster, its frames differ
from the sequential ones by float rounding (the check line says how many uint8 values do).

    .venv/bin/python benchmarks/bench_batched_sampling.py --candidates 4 --reps 3
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "a red fox running through fresh snow"


def chain(agents, prompt: str, seeds: list[int], batched: bool, exact: bool = True):
    t2i, i2v = agents.text_to_image, agents.image_to_video
    if batched:
        return i2v.batch(t2i.batch(prompt, seeds, exact), prompt, seeds, exact)
    return [i2v(t2i(prompt, seed), prompt, seed) for seed in seeds]


def best_of(reps: int, fn):
    times, result = [], None
    for _ in range(reps):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def differing_values(a, b) -> int:
    import numpy as np

    return sum(int((np.stack(x).astype(int) != np.stack(y)).sum()) for x, y in zip(a, b))


def bench(profile_name: str, candidates: int, reps: int) -> None:
    from agents.registry import agents_for
    from configs import load_profile

    agents = agents_for(load_profile(profile_name))
    prompt = agents.enhancer.enhance(PROMPT)
    seeds = list(range(100, 100 + candidates))
    chain(agents, prompt, seeds[:2], batched=True)  # warm-up: loads, batch views
    chain(agents, prompt, seeds[:1], batched=False)
    sequential, reference = best_of(reps, lambda: chain(agents, prompt, seeds, False))
    batched, frames = best_of(reps, lambda: chain(agents, prompt, seeds, True))
    identical = differing_values(reference, frames) == 0
    import torch

    print(f"\n## profile {profile_name}: {candidates} candidates, "
          f"{agents.profile.text_to_image.pipeline} → {agents.profile.image_to_video.pipeline}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"sequential (one call per seed): {sequential:.3f} s")
    print(f"batched (one call per agent)  : {batched:.3f} s   speed-up {sequential / batched:.2f}x"
          f"   frames identical: {identical}")
    fast, fused_frames = best_of(reps, lambda: chain(agents, prompt, seeds, True, exact=False))
    print(f"batched, exact=false          : {fast:.3f} s   speed-up {sequential / fast:.2f}x"
          f"   uint8 values differing: {differing_values(reference, fused_frames)}")
    if not identical:
        raise SystemExit("batched frames differ from sequential ones")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", default=["tiny-wan", "tiny"])
    args = parser.parse_args()

    from agents.tiny import build_tiny_zoo

    build_tiny_zoo()
    print(f"# batched vs sequential candidate sampling, warm, best of {args.reps}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    for name in args.profiles:
        bench(name, args.candidates, args.reps)
    print(f"\npeak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"reproduce: .venv/bin/python benchmarks/bench_batched_sampling.py --candidates "
          f"{args.candidates} --reps {args.reps} --profiles {' '.join(args.profiles)}")


if __name__ == "__main__":
    main()
