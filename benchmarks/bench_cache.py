"""What the cache policy's key costs (tasks/cache.py): the code fingerprint, a model folder's
identity at real size (first time: every file read and hashed; warm: remembered, a stat per
file; in a new process: read back from MORA_HOME/fingerprints.json), and the whole key of one
task (inputs, code, models, store) on the tiny profile.

The real-size folder is a random build at a published architecture (`mora models
build-random`; here SVD-XT, ~4 GB in float16), made once under MORA_HOME.

    .venv/bin/python benchmarks/bench_cache.py [--profile sd3-svd] [--max-gb 6]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _timed(fn, reps: int = 1) -> tuple[float, object]:
    start = time.perf_counter()
    for _ in range(reps):
        value = fn()
    return (time.perf_counter() - start) / reps, value


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", default="sd3-svd", help="GPU profile whose random build "
                        "gives the real-size folder")
    parser.add_argument("--max-gb", type=float, default=6.0, help="build only models below this")
    args = parser.parse_args()

    from agents import identity
    from agents.random_weights import build_random_profile
    from agents.tiny import build_tiny_zoo
    from configs import load_profile
    from tasks.cache import code_fingerprint, dependencies

    print(f"# cache key costs; reproduce: .venv/bin/python benchmarks/bench_cache.py "
          f"--profile {args.profile} --max-gb {args.max_gb:g}")
    seconds, _ = _timed(code_fingerprint)
    print(f"code fingerprint (project files + library versions), once per process: "
          f"{seconds * 1000:.1f} ms")

    build_tiny_zoo()
    inputs = {"profile": load_profile("tiny"), "store_url": "/tmp/mora-bench-store"}
    dependencies(inputs)
    seconds, _ = _timed(lambda: dependencies(inputs), reps=20)
    print(f"models + store of a tiny-profile task, warm: {seconds * 1000:.2f} ms per task")

    print(f"building (or reusing) the random real-size models of {args.profile} "
          f"under {args.max_gb:g} GB …", flush=True)
    _, results = build_random_profile(args.profile, max_gb=args.max_gb)
    for result in results:
        if result.folder is None:
            print(f"  {result.model}: {result.status}")
            continue
        folder = result.folder
        gib = _size(folder) / 1024**3
        files = sum(1 for p in folder.rglob("*") if p.is_file())
        identity._REMEMBERED.clear()
        _forget(folder)
        first, _ = _timed(lambda: identity.folder_fingerprint(folder))
        warm, _ = _timed(lambda: identity.folder_fingerprint(folder), reps=20)
        fresh = _new_process_seconds(folder)
        print(f"  {result.model}: {gib:.2f} GiB in {files} files; first time {first:.2f} s "
              f"({gib / first:.2f} GiB/s), warm {warm * 1000:.2f} ms, in a new process "
              f"{fresh * 1000:.1f} ms")


def _forget(folder: Path) -> None:
    """Drop ``folder`` from fingerprints.json, so the next fingerprint reads every file."""
    import json

    from agents import identity
    from configs.settings import mora_home

    path = mora_home() / "fingerprints.json"
    data = {k: list(v) for k, v in identity._on_disk().items() if k != str(folder.resolve())}
    path.write_text(json.dumps(data))


def _new_process_seconds(folder: Path) -> float:
    code = ("import sys, time; sys.path.insert(0, %r); from pathlib import Path; "
            "from agents.identity import folder_fingerprint; t = time.perf_counter(); "
            "folder_fingerprint(Path(%r)); print(time.perf_counter() - t)"
            % (str(Path(__file__).resolve().parents[1]), str(folder)))
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout.strip())


if __name__ == "__main__":
    main()
