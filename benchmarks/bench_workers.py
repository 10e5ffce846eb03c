"""P6: a training round's sampling on 1 vs 2 local workers (a local Dask cluster through the
config's `sampling.engine: dask`), same prompts and seeds; and peak RSS.

Each worker is its own process with its own model cache, so the sampling stage includes the
cluster's start (processes, imports, one model load per worker). On a 2-core machine the
speed-up stays below 2: the two workers share the cores.

    .venv/bin/python benchmarks/bench_workers.py [--config tiny] [--prompts 4]
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
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--prompts", type=int, default=8)
    args = parser.parse_args()

    import yaml

    from agents.tiny import build_tiny_zoo
    from configs import load_training_config
    from flows.training import training_round

    build_tiny_zoo()
    work = Path(tempfile.mkdtemp(prefix="mora-p6-"))
    base = load_training_config(args.config).model_dump(mode="json")
    base.pop("name")
    # Warm-up: the round process's own imports and models (judges, held-out scoring).
    training_round(round_id="p6-warm", config=args.config, store=str(work / "warm"), seed=1,
                   prompts=1)
    figures = {}
    for workers in (2, 1):
        config = work / f"workers-{workers}.yaml"
        config.write_text(yaml.safe_dump({**base, "prompts": args.prompts, "sampling": {
            **base["sampling"], "engine": "dask", "dask_workers": workers}}))
        start = time.perf_counter()
        result = training_round(round_id=f"p6-{workers}", config=str(config),
                                store=str(work / f"store-{workers}"), seed=1)
        figures[workers] = (time.perf_counter() - start, result.report.stage_seconds["sampling"])
    (w1, s1), (w2, s2) = figures[1], figures[2]
    print(f"\n# P6: one round ({args.config}, {args.prompts} prompts), sampling on a local Dask "
          f"cluster, {os.cpu_count()} cores")
    print(f"1 worker : sampling {s1:.1f} s, round {w1:.1f} s")
    print(f"2 workers: sampling {s2:.1f} s, round {w2:.1f} s")
    print(f"speed-up : sampling {s1 / s2:.2f}x, round {w1 / w2:.2f}x")
    print(f"peak RSS of the round process: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    print(f"reproduce: .venv/bin/python benchmarks/bench_workers.py --config {args.config} "
          f"--prompts {args.prompts}")


if __name__ == "__main__":
    main()
