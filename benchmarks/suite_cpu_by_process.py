"""Where the test suite's CPU goes, by process: run a command (by default `make test`'s pytest)
while sampling /proc, then sum each process's CPU by what it runs.

    .venv/bin/python benchmarks/suite_cpu_by_process.py              # the whole suite
    .venv/bin/python benchmarks/suite_cpu_by_process.py --fast       # `make test-fast`
    .venv/bin/python benchmarks/suite_cpu_by_process.py -- pytest -q tests/test_cli.py

Linux only. Every 0.5 s it reads /proc/<pid>/stat of every process started after it began and
keeps each one's last user+sys CPU; a process that lives less than a sample is missed (ffmpeg
runs of a few ms: their share is a lower bound). The table is printed as markdown
(benchmarks/README.md, "Where the CPU goes, by process").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")

# (label, substring of the command line); the first match wins.
KINDS = [
    ("pytest-xdist workers (the tests, in-process)", "exec(eval(sys.stdin"),
    ("Prefect harness and temporary servers (uvicorn)", "uvicorn"),
    ("`prefect worker start`", "worker start"),
    ("other `mora` subprocesses", "mora.cli server"),
    ("`prefect server start`", "server start --host"),
    ("flow-run processes of process workers", "prefect.runner._workspace"),
    ("flow-run processes of process workers", "prefect.engine"),
    ("Chromium", "chrom"),
    ("ffmpeg", "ffmpeg"),
    ("multiprocessing children (Dask, store races)", "multiprocessing"),
    ("`mora worker`", "mora.cli worker"),
    ("`mora t2v`", " t2v "),
    ("`mora t2v`", "text_to_video"),
    ("`mora train` / `ablate` / round subprocesses", "training_round"),
    ("`mora train` / `ablate` / round subprocesses", "mora.cli train"),
    ("`mora train` / `ablate` / round subprocesses", "mora.cli ablate"),
    ("other `mora` subprocesses", "mora.cli"),
    ("`prefect` CLI calls", "prefect --no-prompt"),
    ("the migrated-database template", "prefect_template"),
    ("pytest controller", "pytest"),
]


def kind(cmdline: str) -> str:
    return next((label for label, needle in KINDS if needle in cmdline), "other")


def _boot_ticks_now() -> float:
    return float(Path("/proc/uptime").read_text().split()[0]) * TICK


def sample(seen: dict, since: float, stop: threading.Event) -> None:
    """``seen[(pid, starttime)] = [cmdline, cpu_seconds]`` for processes started after ``since``
    (clock ticks since boot)."""
    while not stop.is_set():
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                raw = Path(f"/proc/{entry.name}/stat").read_text()
                fields = raw[raw.rindex(")") + 2:].split()
                start = int(fields[19])
                if start < since:
                    continue
                key = (entry.name, start)
                cpu = (int(fields[11]) + int(fields[12])) / TICK
                if key not in seen:
                    cmd = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                    seen[key] = [cmd.replace(b"\0", b" ").decode(errors="replace"), cpu]
                else:
                    seen[key][1] = max(seen[key][1], cpu)
            except (OSError, ValueError, IndexError):
                continue  # exited between listing and reading
        stop.wait(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="skip integration tests")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("command", nargs="*", help="what to run instead (after --)")
    args = parser.parse_args()
    command = args.command or [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-n", str(args.workers), "--dist", "loadgroup",
                               *(["-m", "not integration"] if args.fast else [])]

    seen: dict = {}
    stop = threading.Event()
    sampler = threading.Thread(target=sample, args=(seen, _boot_ticks_now(), stop), daemon=True)
    sampler.start()
    t0 = time.monotonic()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - t0
    stop.set()
    sampler.join()

    cpu, count = Counter(), Counter()
    for cmdline, seconds in seen.values():
        if "suite_cpu_by_process" in cmdline:
            continue
        label = kind(cmdline)
        cpu[label] += seconds
        count[label] += 1
    total = sum(cpu.values())
    closing = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"{' '.join(command)}\n  {wall / 60:.1f} min wall, exit {result.returncode}: {closing}")
    print(f"  {total:.0f} CPU-s in {sum(count.values())} processes\n")
    print("| processes | count | CPU | share |\n|---|---|---|---|")
    for label, seconds in cpu.most_common():
        print(f"| {label} | {count[label]} | {seconds:.0f} s | {100 * seconds / total:.0f} % |")
    print(f"\ncommand: {sys.executable} benchmarks/suite_cpu_by_process.py "
          f"{' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
