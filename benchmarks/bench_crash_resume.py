"""P4: a training round killed with SIGKILL mid-round, then run again with the same round id.

Three fresh processes on one config: an uninterrupted round (the reference), a round killed
once the store holds half of the reference's objects, and the rerun. Prints the tasks the rerun
executed vs took from the cache (goal: none of the finished work redone), the artifacts the
killed attempt left orphaned, and the extra wall time the kill cost.

    .venv/bin/python benchmarks/bench_crash_resume.py [--config tiny] [--kill-at 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROUND = """
import json, resource, sys
from prefect.client.orchestration import get_client
from flows.training import training_round
state = training_round(round_id="p4", config=sys.argv[1], store=sys.argv[2], seed=3,
                       return_state=True)
with get_client(sync_client=True) as client:
    runs = client.read_task_runs()
run_id = state.state_details.flow_run_id
mine = [r for r in runs if r.flow_run_id == run_id]
print(json.dumps({"ok": state.is_completed(),
                  "states": [r.state.name for r in mine],
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def objects(store: Path) -> int:
    return sum(1 for p in store.rglob("*") if p.is_file() and not p.name.endswith(".prov.json")
               and not p.name.startswith("."))


def run_round(config: str, store: Path, home: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", ROUND, config, str(store)], cwd=ROOT,
                         env={**os.environ, "PREFECT_HOME": str(home)}, capture_output=True,
                         text=True, check=True)
    return time.perf_counter() - start, json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--kill-at", type=float, default=0.5,
                        help="kill once the store holds this fraction of the reference's objects")
    args = parser.parse_args()

    from agents.tiny import build_tiny_zoo

    build_tiny_zoo()
    work = Path(tempfile.mkdtemp(prefix="mora-p4-"))
    ref_wall, ref = run_round(args.config, work / "reference", work / "home-ref")
    total = objects(work / "reference")

    store, home = work / "killed", work / "home-killed"
    threshold = max(1, int(total * args.kill_at))
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", ROUND, args.config, str(store)], cwd=ROOT,
                            env={**os.environ, "PREFECT_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while proc.poll() is None and not (store.is_dir() and objects(store) >= threshold):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_wall, at_kill = time.perf_counter() - start, objects(store)

    rerun_wall, rerun = run_round(args.config, store, home)
    executed = sum(s == "Completed" for s in rerun["states"])
    cached = sum(s == "Cached" for s in rerun["states"])
    orphans = objects(store) - total
    print(f"\n# P4: kill -9 mid-round, rerun (config {args.config}, {os.cpu_count()} cores)")
    print(f"reference round (fresh process)   : {ref_wall:.1f} s, {total} objects, "
          f"{len(ref['states'])} task runs")
    print(f"killed after                      : {killed_wall:.1f} s, {at_kill} objects stored")
    print(f"rerun (fresh process)             : {rerun_wall:.1f} s; task runs executed "
          f"{executed}, from cache {cached}, other {len(rerun['states']) - executed - cached}")
    print(f"work redone (objects rewritten)   : {orphans} (orphans of tasks killed mid-way)")
    print(f"extra wall time (kill + rerun - reference): "
          f"{killed_wall + rerun_wall - ref_wall:+.1f} s")
    print(f"peak RSS: reference {ref['rss_mib']:.0f} MiB, rerun {rerun['rss_mib']:.0f} MiB")
    print(f"reproduce: .venv/bin/python benchmarks/bench_crash_resume.py --config {args.config} "
          f"--kill-at {args.kill_at}")


if __name__ == "__main__":
    main()
