"""P5: wall time of `mora --help` (goal <= 0.5 s): the CLI imports no torch, diffusers,
transformers or Prefect until a command runs.

    .venv/bin/python benchmarks/bench_cli_help.py [--reps 10]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

MORA = Path(sys.executable).parent / "mora"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    subprocess.run([str(MORA), "--help"], capture_output=True, check=True)  # warm the disk cache
    walls = []
    for _ in range(args.reps):
        start = time.perf_counter()
        subprocess.run([str(MORA), "--help"], capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
    heavy = subprocess.run([sys.executable, "-c", "import sys, mora.cli; print(sorted(m for m in "
                            "('torch', 'diffusers', 'transformers', 'prefect') if m in "
                            "sys.modules))"], capture_output=True, text=True, check=True)
    print(f"\n# P5: mora --help, {args.reps} runs")
    print(f"median {statistics.median(walls):.3f} s, min {min(walls):.3f} s, "
          f"max {max(walls):.3f} s (goal <= 0.5 s)")
    print(f"heavy modules imported by mora.cli: {heavy.stdout.strip()}")
    print(f"peak RSS of one run: {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f} MiB")
    print(f"reproduce: .venv/bin/python benchmarks/bench_cli_help.py --reps {args.reps}")


if __name__ == "__main__":
    main()
