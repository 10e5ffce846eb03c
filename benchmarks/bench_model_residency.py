"""Model residency (P2): model loads during a second SOP run in the same worker process
(goal 0), with the process-wide cache's budget, resident bytes and evictions.

Runs the `text-to-video` Prefect flow twice in one process (the second with another prompt and
seed, so no cached task result short-cuts the work) and prints the cache's load counter for
each run. Set MORA_MODEL_BUDGET_GB to watch eviction (a budget below the profile's models makes
the second run load again).

    .venv/bin/python benchmarks/bench_model_residency.py --segments 2
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--profile", default="tiny")
    args = parser.parse_args()

    from agents.cache import MODEL_CACHE
    from agents.tiny import build_tiny_zoo
    from flows.text_to_video import text_to_video

    build_tiny_zoo()
    store_url = tempfile.mkdtemp(prefix="mora-bench-store-")
    runs = [("a red fox running through fresh snow", 1), ("a heron over a misty lake", 2)]
    print(f"# text-to-video twice in one process, profile {args.profile}, "
          f"{args.segments} segments")
    budget = MODEL_CACHE.budget_bytes
    print(f"model budget: {'none' if budget is None else f'{budget / 1024**2:.1f} MiB'}")
    for number, (prompt, seed) in enumerate(runs, start=1):
        loads, hits = MODEL_CACHE.stats.loads, MODEL_CACHE.stats.hits
        start = time.perf_counter()
        text_to_video(prompt=prompt, segments=args.segments, store=store_url, seed=seed,
                      profile=args.profile)
        print(f"run {number}: {time.perf_counter() - start:.2f} s, model loads "
              f"{MODEL_CACHE.stats.loads - loads}, cache hits {MODEL_CACHE.stats.hits - hits}")
    stats = MODEL_CACHE.stats
    print(f"resident models: {len(MODEL_CACHE.keys())} ({MODEL_CACHE.total_bytes() / 1024**2:.1f} "
          f"MiB of weights), pipelines built on shared components: {stats.shared}, "
          f"evictions: {stats.evictions}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"reproduce: .venv/bin/python benchmarks/bench_model_residency.py --segments "
          f"{args.segments} --profile {args.profile}")


if __name__ == "__main__":
    main()
