"""The test suite's wall time, quiet and loaded: what a contributor waits for `make test`.

    .venv/bin/python benchmarks/bench_suite.py              # one suite on a quiet machine
    .venv/bin/python benchmarks/bench_suite.py --loaded     # two suites side by side
    .venv/bin/python benchmarks/bench_suite.py --fast       # `make test-fast` instead

"Loaded" is the second suite as the load: both start together and both are timed, as on a
machine where CI and a developer (or two CI jobs) share two cores. Each suite is `make test`'s
command (pytest-xdist workers, `--dist loadgroup`; `--workers` changes their number). Prints the
wall time, the CPU time of each suite's process tree and its closing line.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def suite_command(workers: int, fast: bool) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers),
               "--dist", "loadgroup"]
    return [*command, "-m", "not integration"] if fast else command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loaded", action="store_true", help="two suites side by side")
    parser.add_argument("--fast", action="store_true", help="skip integration tests")
    parser.add_argument("--workers", type=int, default=3)
    args = parser.parse_args()

    copies = 2 if args.loaded else 1
    command = suite_command(args.workers, args.fast)
    logs = [open(f"/tmp/mora-bench-suite-{i}.log", "w+") for i in range(copies)]
    started = time.monotonic()
    procs = [subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                                   "HF_HUB_OFFLINE": "1"}) for log in logs]
    ended = {}
    while len(ended) < copies:
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.monotonic() - started
        time.sleep(1)
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{'loaded (2 suites at once)' if args.loaded else 'quiet'}, "
          f"{'test-fast' if args.fast else 'test'}, {args.workers} xdist workers, "
          f"{os.cpu_count()} cores")
    for i, (proc, log) in enumerate(zip(procs, logs)):
        log.seek(0)
        closing = [line for line in log.read().splitlines() if " in " in line and
                   ("passed" in line or "failed" in line)]
        print(f"  suite {i + 1}: {ended[i] / 60:.1f} min wall, exit {proc.returncode}: "
              f"{closing[-1] if closing else '(no closing line)'}")
    print(f"  CPU of all suites: {(cpu.ru_utime + cpu.ru_stime) / 60:.1f} min")
    print(f"command: {' '.join([sys.executable, *sys.argv])}")


if __name__ == "__main__":
    main()
