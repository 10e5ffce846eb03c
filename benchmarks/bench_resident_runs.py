"""P2b: deployed `text-to-video` runs, one after another, whose GPU tasks go to one resident
`mora worker` (MORA_GPU_TASKS=task-workers on the flows' process worker): models loaded per run
(read from provenance `params.worker.model_loads`) and wall time per run (trigger to Completed).

A server, a process worker, the deployment and one `mora worker`, each a subprocess with its own
Prefect home (tests/prefect_server.py), all stopped at the end.

    .venv/bin/python benchmarks/bench_resident_runs.py --runs 3 --segments 2
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
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--segments", type=int, default=2)
    opts = parser.parse_args()

    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from agents.tiny import build_tiny_zoo
    from storage import open_store
    from tests.prefect_server import running_prefect_server

    build_tiny_zoo()
    root = Path(tempfile.mkdtemp(prefix="bench-resident-"))
    store = str(root / "store")
    with running_prefect_server(root, timeout=180) as server:
        server.cli("work-pool", "create", "gpu", "--type", "process")
        server.start_worker("gpu", extra_env={"MORA_GPU_TASKS": "task-workers"})
        server.cli("deploy", "--name", "text-to-video")
        worker = server.start_process("mora-worker", [sys.executable, "-m", "mora.cli", "worker"])
        while "Subscribing to runs of task(s)" not in worker.tail(200):
            time.sleep(0.3)
        rows = []
        for run in range(opts.runs):
            t0 = time.monotonic()
            with server.api_settings():
                flow_run = run_deployment(name="text-to-video/text-to-video", timeout=600,
                                          parameters={"prompt": "a koi pond", "store": store,
                                                      "seed": 100 + run,
                                                      "segments": opts.segments})
                with get_client(sync_client=True) as client:
                    flow_run = client.read_flow_run(flow_run.id)
            wall = time.monotonic() - t0
            assert flow_run.state.is_completed(), flow_run.state
            opened = open_store(store)
            loads = [opened.read_provenance(k).params["worker"]["model_loads"]
                     for k in opened.list("") if not k.endswith(".prov.json")
                     and opened.read_provenance(k).flow_run_id == str(flow_run.id)
                     and "worker" in opened.read_provenance(k).params]
            before = rows[-1][2] if rows else 0
            rows.append((run + 1, wall, max(loads)))
            print(f"run {run + 1}: {wall:.1f} s trigger→Completed, models loaded in this run: "
                  f"{max(loads) - before} (worker total {max(loads)})", flush=True)
    first = rows[0][1]
    for run, wall, _ in rows[1:]:
        print(f"run {run}: {wall / first:.2f}× the 1st run's wall time")
    print(f"load average: {os.getloadavg()}")
    print(f"reproduce: {sys.executable} benchmarks/bench_resident_runs.py --runs {opts.runs} "
          f"--segments {opts.segments}")


if __name__ == "__main__":
    main()
