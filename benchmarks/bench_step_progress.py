"""What step progress costs the steps: warm tiny pipeline calls with nobody listening (no
callback passed at all), under the CLI's former spinner (a redraw thread, no callback), with the
CLI's bars listening, and with the run page's throttled progress artifact listening as well (its
API calls happen at most once a second per stage, so a tiny call makes none; the figure is the
per-step bookkeeping).

    .venv/bin/python benchmarks/bench_step_progress.py --reps 20
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20)
    opts = parser.parse_args()

    from rich.console import Console

    from agents.progress import listening
    from agents.registry import agents_for
    from agents.tiny import build_tiny_zoo
    from configs import load_profile
    from mora.cli_progress import step_bars
    from tasks.report import StepProgress

    build_tiny_zoo()
    agents = agents_for(load_profile("tiny"))
    image = agents.text_to_image("a fox", 0)
    calls = {"text-to-image (2 steps)": lambda s: agents.text_to_image("a fox", s),
             "image-to-video (2 steps)": lambda s: agents.image_to_video(image, "a fox", s)}
    for call in calls.values():
        call(0)  # warm

    def nobody():
        return contextlib.nullcontext()

    def spinner():  # what the CLI showed before: a status line, redrawn by its own thread
        return Console(file=io.StringIO(), force_terminal=True).status("bench…")

    def bars():
        return step_bars(Console(file=io.StringIO(), force_terminal=True), "bench")

    @contextlib.contextmanager
    def bars_and_artifact():
        with bars(), listening(StepProgress()):
            yield

    variants = {"no listener": nobody, "CLI spinner (before)": spinner, "CLI bars": bars,
                "CLI bars + run page": bars_and_artifact}
    for name, call in calls.items():
        times = {v: [] for v in variants}
        for rep in range(opts.reps):  # interleaved, so load changes hit every variant alike
            for variant, context in variants.items():
                with context():
                    start = time.perf_counter()
                    call(rep + 1)
                    times[variant].append(time.perf_counter() - start)
        base = statistics.median(times["no listener"])
        print(f"{name}: " + ", ".join(
            f"{v} {statistics.median(t) * 1000:.1f} ms ({statistics.median(t) / base:.3f}×)"
            for v, t in times.items()))
    print(f"load average: {os.getloadavg()}")
    print(f"reproduce: {sys.executable} benchmarks/bench_step_progress.py --reps {opts.reps}")


if __name__ == "__main__":
    main()
