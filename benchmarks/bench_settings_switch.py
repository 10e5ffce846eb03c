"""Where P1's extra seconds fall: warm tiny text-to-video flows in one process, timed back to
back (Prefect's default settings), inside one ``temporary_settings`` block (no flow heartbeats,
as `mora` runs a flow: mora/cli_common.py), and with a block entered per run.

    .venv/bin/python benchmarks/bench_settings_switch.py --reps 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from agents.tiny import build_tiny_zoo
    from flows.text_to_video import text_to_video

    build_tiny_zoo()
    store = tempfile.mkdtemp(prefix="mora-bench-switch-")
    seeds = iter(range(1, 10_000))

    def run() -> None:
        text_to_video(prompt="a red fox running through fresh snow", segments=2, store=store,
                      seed=next(seeds))

    def timed() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    def per_run_block() -> float:
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            return timed()

    run()  # warm-up: loads the models
    rows = {"back to back": [timed() for _ in range(args.reps)]}
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        rows["one block for all runs"] = [timed() for _ in range(args.reps)]
    rows["a block per run"] = [per_run_block() for _ in range(args.reps)]
    print("\n# warm tiny text-to-video flows, 2 segments, seconds per run in order")
    for label, values in rows.items():
        print(f"{label:24s} " + "  ".join(f"{v:.2f}" for v in values))
    print(f"reproduce: .venv/bin/python benchmarks/bench_settings_switch.py --reps {args.reps}")


if __name__ == "__main__":
    main()
