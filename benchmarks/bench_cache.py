"""What the cache policy's key costs (tasks/cache.py): the code fingerprint, a model folder's
identity at real size (first time: every file read and hashed; warm: remembered, a stat per
file; in a new process: read back from MORA_HOME/fingerprints.json), and the whole key of one
task (inputs, code, models, store) on the tiny profile.

The real-size folder is a random build at a published architecture (`mora models
build-random`; here SVD-XT, ~4 GB in float16), made once under MORA_HOME.

    .venv/bin/python benchmarks/bench_cache.py [--profile sd3-svd] [--max-gb 6]
    .venv/bin/python benchmarks/bench_cache.py --hits [--code DIR]   # a rerun served from the cache
    .venv/bin/python benchmarks/bench_cache.py --concurrent   # two identical runs at once

``--hits`` times a text-to-video rerun whose every stage is a cache hit (hits are checked against
the store now): run it with ``--code`` naming another checkout to compare with that code.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

_code = sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv else None
sys.path.insert(0, _code or str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


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
    parser.add_argument("--hits", action="store_true", help="time a rerun served from the cache")
    parser.add_argument("--code", help="the checkout whose code runs (default: this one)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--concurrent", action="store_true", help="two identical `mora t2v` "
                        "at once, with the cache and with MORA_CACHE=off")
    args = parser.parse_args()
    if args.hits:
        return hits(args.reps)
    if args.concurrent:
        return concurrent()

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
    from storage import open_store

    inputs = {"profile": load_profile("tiny")}
    store = open_store("/tmp/mora-bench-store")
    dependencies(inputs, store)
    seconds, _ = _timed(lambda: dependencies(inputs, store), reps=20)
    print(f"models + store of a tiny-profile task, warm: {seconds * 1000:.2f} ms per task")

    print(f"building (or reusing) the random real-size models of {args.profile} "
          f"under {args.max_gb:g} GB …", flush=True)
    _, results = build_random_profile(args.profile, max_gb=args.max_gb)
    for result in results:
        if result.folder is None:
            print(f"  {result.model}: {result.reason}")
            continue
        folder = result.folder
        gib = _size(folder) / 1024**3
        files = sum(1 for p in folder.rglob("*") if p.is_file())
        identity._REMEMBERED.clear()
        _forget(folder)
        _drop_page_cache(folder)
        first, _ = _timed(lambda: identity.folder_fingerprint(folder))
        warm, _ = _timed(lambda: identity.folder_fingerprint(folder), reps=20)
        fresh = _new_process_seconds(folder)
        print(f"  {result.model}: {gib:.2f} GiB in {files} files; first time {first:.2f} s "
              f"({gib / first:.2f} GiB/s), warm {warm * 1000:.2f} ms, in a new process "
              f"{fresh * 1000:.1f} ms")


def hits(reps: int) -> None:
    """A 2-segment text-to-video run, then ``reps`` reruns of it, every stage a cache hit."""
    import statistics
    import tempfile

    from agents.tiny import build_tiny_zoo
    from flows.text_to_video import text_to_video
    from mora.cli_common import local_run_settings
    from prefect.settings import temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    build_tiny_zoo()
    store = tempfile.mkdtemp(prefix="mora-bench-hits-")
    with prefect_test_harness(server_startup_timeout=120), temporary_settings(local_run_settings()):
        text_to_video(prompt="a heron over a misty lake", segments=2, store=store, seed=3)
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            text_to_video(prompt="a heron over a misty lake", segments=2, store=store, seed=3)
            times.append(time.perf_counter() - start)
    print(f"rerun served from the cache (2 segments, code {sys.path[0]}): median "
          f"{statistics.median(times):.3f} s of {reps} ({min(times):.3f}-{max(times):.3f})")
    print(f"reproduce: .venv/bin/python benchmarks/bench_cache.py --hits --reps {reps}")


def _drop_page_cache(folder: Path) -> None:
    """Ask the kernel to forget the folder's pages (POSIX_FADV_DONTNEED), so "first time" reads
    from disk as after a reboot or a copy, where it can."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd) if os.access(path, os.W_OK) else None
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def concurrent() -> None:
    """One `mora t2v` alone, then two identical ones started together (cache on, then off):
    wall times and how many first frames and clips the store ends up with."""
    import tempfile

    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    from storage import open_store

    def t2v(store: str, seed: int, copies: int, cache: str) -> list[float]:
        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "MORA_CACHE": cache}
        argv = [sys.executable, "-c", "import mora.cli; mora.cli.main()", "t2v",
                "a heron over a misty lake", "--seed", str(seed), "--store", store]
        start = time.perf_counter()
        procs = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(copies)]
        walls = []
        for proc in procs:
            assert proc.wait() == 0
            walls.append(time.perf_counter() - start)
        return walls

    def made(store: str) -> str:
        opened = open_store(store)
        stages = [opened.read_provenance(k).params.get("stage") for k in opened.list()
                  if not k.endswith(".npz")]
        return f"{stages.count('first_frame')} first frame(s), {stages.count('clip')} clip(s)"

    print("# two identical `mora t2v` (1 segment, tiny) at once; reproduce: "
          ".venv/bin/python benchmarks/bench_cache.py --concurrent")
    with prefect_test_harness(server_startup_timeout=120):
        t2v(tempfile.mkdtemp(), 1, 1, "on")  # warm the disk cache and the server
        store = tempfile.mkdtemp()
        print(f"one run alone: {t2v(store, 2, 1, 'on')[0]:.1f} s; {made(store)}")
        for cache, seed in (("on", 3), ("off", 4)):
            store = tempfile.mkdtemp()
            walls = t2v(store, seed, 2, cache)
            print(f"two at once, MORA_CACHE={cache}: {walls[0]:.1f} s and {walls[1]:.1f} s; "
                  f"{made(store)}")


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
