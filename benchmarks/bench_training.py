"""Three rounds of the data-free training loop on the tiny profile: per round the held-out mean
judge score before/after, the judges' agreement rate, the training loss and each stage's wall time.

    .venv/bin/python benchmarks/bench_training.py --rounds 3 [--config tiny]

Tiny models have random weights: the figures show that the loop runs and learns something
(the loss), not that the videos get better.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from agents.tiny import build_tiny_zoo
    from flows.training import train

    build_tiny_zoo()
    store = tempfile.mkdtemp(prefix="mora-bench-train-")
    start = time.perf_counter()
    result = train(rounds=args.rounds, config=args.config, store=store, seed=args.seed,
                   name="bench")
    wall = time.perf_counter() - start

    stages = list(result.rounds[0].report.stage_seconds)
    print(f"\n# training loop, config '{args.config}', {args.rounds} rounds, seed {args.seed}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print("| round | held-out before | held-out after | agreement | accepted | loss first→last | "
          + " | ".join(f"{s} s" for s in stages) + " |")
    print("|---" * (6 + len(stages)) + "|")
    for r in result.rounds:
        rep = r.report
        loss = f"{rep.losses[0]:.3f}→{rep.losses[-1]:.3f}" if rep.losses else "-"
        print(f"| {r.round_id} | {rep.held_out_before:.4f} | {rep.held_out_after:.4f} | "
              f"{rep.agreement_rate:.2f} | {rep.accepted}/{len(rep.prompts)} | {loss} | "
              + " | ".join(f"{rep.stage_seconds[s]:.1f}" for s in stages) + " |")
    first, last = result.rounds[0].report, result.rounds[-1].report
    print(f"held-out score: {first.held_out_before:.4f} (base) → {last.held_out_after:.4f} "
          f"after {args.rounds} rounds ({'rose' if last.held_out_after > first.held_out_before else 'did not rise'})")
    print(f"total wall: {wall:.1f} s; peak RSS: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"reproduce: .venv/bin/python benchmarks/bench_training.py --rounds {args.rounds} "
          f"--config {args.config} --seed {args.seed}")


if __name__ == "__main__":
    main()
