"""What a `mora` subprocess of the test suite costs fresh, and forked from a parent that has
already imported the generation stack (the next cut for issue 23, sized before it is built).

Every Python that imports torch, diffusers, transformers and prefect spends ~8 CPU-s before its
first line of work (benchmarks/README.md, "The test suite"), and the suite starts 30–40 such
`mora` processes whose process is what a test checks. Here the same `mora t2v` (tiny profile,
fixed seed, the task cache off) runs alternately as ``python -m mora.cli`` and as a ``fork()`` of
this process after it imported the stack once; each child's CPU is its own (``RUSAGE_CHILDREN``
before and after), and the two must write the same mp4 bytes.

    .venv/bin/python benchmarks/bench_fork_launch.py --reps 2

The forked child does what a fresh interpreter would have done with the settings it reads at
import: Prefect's global settings context is rebuilt from the child's environment
(``prefect.context.refresh_global_settings_context``) and its logging set up again
(``prefect/logging/configuration.py``). Uses a `mora server start` of its own on a free port
and its own MORA_HOME (the tiny models linked in).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def forked(argv: list[str], env: dict, log: Path) -> int:
    """``mora ARGV`` in a fork of this process, in a session of its own, output to ``log``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            os.setsid()
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.environ.clear()
            os.environ.update(env)
            import prefect.context
            from prefect.logging import configuration

            prefect.context.refresh_global_settings_context()
            configuration.PROCESS_LOGGING_CONFIG.clear()
            configuration.setup_logging()
            from mora import cli

            sys.argv = ["mora", *argv]
            try:
                cli.main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=2)
    opts = parser.parse_args()

    from configs.settings import mora_home
    from tests.prefect_server import free_port

    work = Path(tempfile.mkdtemp(prefix="bench-fork-"))
    home = work / "mora-home"
    home.mkdir()
    (home / "tiny").symlink_to(mora_home() / "tiny")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(MORA_HOME=str(home), HF_HUB_OFFLINE="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               MORA_CACHE="off")
    command = [sys.executable, "-m", "mora.cli"]
    port = str(free_port())
    subprocess.run([*command, "server", "start", "--no-ui", "--port", port], env=env, check=True,
                   timeout=300, capture_output=True)
    env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    try:
        t0 = time.process_time()
        import diffusers  # noqa: F401  (the stack a `mora t2v` imports, once, here)
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from diffusers import StableDiffusion3Pipeline, StableVideoDiffusionPipeline  # noqa: F401

        import agents.loading  # noqa: F401
        import flows.text_to_video  # noqa: F401
        import mora.cli  # noqa: F401
        import tasks.generate  # noqa: F401
        print(f"imports in the parent, once: {time.process_time() - t0:.1f} CPU-s", flush=True)

        cpu: dict[str, list[float]] = {"fresh": [], "forked": []}
        digests = set()
        for rep in range(opts.reps):
            for how in ("fresh", "forked"):
                out, log = work / f"{how}-{rep}.mp4", work / f"{how}-{rep}.log"
                argv = ["t2v", "a koi pond", "--seed", "3", "--store", str(work / f"store-{how}-"
                        f"{rep}"), "--out", str(out)]
                before = children_cpu()
                if how == "fresh":
                    with open(log, "wb") as sink:
                        code = subprocess.run([*command, *argv], env=env, stdout=sink,
                                              stderr=subprocess.STDOUT).returncode
                else:
                    code = forked(argv, env, log)
                cpu[how].append(children_cpu() - before)
                if code != 0:
                    sys.exit(f"{how} `mora t2v` exited {code}: see {log}")
                digests.add(hashlib.sha256(out.read_bytes()).hexdigest()[:12])
                print(f"rep {rep + 1}: {how} `mora t2v` {cpu[how][-1]:.1f} CPU-s", flush=True)
        fresh, fork = statistics.median(cpu["fresh"]), statistics.median(cpu["forked"])
        print(f"\nfresh `python -m mora.cli t2v`: median {fresh:.1f} CPU-s; forked from the "
              f"parent: median {fork:.1f} CPU-s ({fresh - fork:.1f} CPU-s less a process)")
        print(f"same mp4 from both: {len(digests) == 1} ({', '.join(sorted(digests))})")
        print(f"load average: {os.getloadavg()}")
        print(f"reproduce: {sys.executable} benchmarks/bench_fork_launch.py --reps {opts.reps}")
    finally:
        subprocess.run([*command, "server", "stop"], env=env, timeout=120, capture_output=True)
    shutil.rmtree(work, ignore_errors=True)  # on success only: a failure names a log in it


if __name__ == "__main__":
    main()
