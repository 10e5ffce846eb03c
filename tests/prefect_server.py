"""A real `prefect server start` and process workers as subprocesses, for integration tests.

Unlike the session's in-process ``prefect_test_harness`` (``conftest.prefect_server``), this
starts the same commands a user types: ``prefect server start`` on a free loopback port with its
own ``PREFECT_HOME``, ``prefect work-pool create``, ``prefect deploy``, ``prefect worker start``.
Nothing here touches ``os.environ``: every subprocess gets its own environment (``env()``), and
in-process API calls go through ``api_settings()`` (a ``temporary_settings`` context).

Each subprocess runs in its own session (process group), so stopping it also stops what it
started (uvicorn, flow-run processes): SIGTERM to the group, SIGKILL after a timeout, and
``stop()`` checks that nothing of the group is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from tests.prefect_template import seed

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect") if (BIN / "prefect").exists() else "prefect"

# Settings that must not leak from the test process (or the user's shell) into a subprocess.
_DROP = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_PROFILE", "PREFECT_SERVER_API_PORT",
         "PREFECT_SERVER_API_HOST", "PREFECT_UI_API_URL", "PREFECT__WORKER_NAME",
         "PREFECT__WORKER_ID", "PREFECT__FLOW_RUN_ID", "PYTEST_CURRENT_TEST")


_events_url: str | None = None


def events_follow(api_url: str | None) -> None:
    """Send this process's Prefect events to ``api_url`` from now on.

    Prefect keeps one ``EventsWorker`` per process for a running server, keyed without the URL
    (prefect/events/worker.py ``EventsWorker.instance``), and opens its client on the API URL of
    the first event. A test that moves to another server (or after the last one stopped) must
    drain it, or its events (``mora.review.waiting``, tasks/review.py) go to the old one."""
    global _events_url
    if api_url == _events_url:
        return
    from concurrent.futures import ThreadPoolExecutor

    from prefect.events.worker import EventsWorker

    # From a thread without an event loop, drain_all waits (in one it returns a coroutine).
    with ThreadPoolExecutor(1) as pool:
        pool.submit(EventsWorker.drain_all, timeout=10, at_exit=False).result()
    _events_url = api_url


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a reused id owned by someone else: not ours
        return False
    return True


@dataclass
class Proc:
    """A subprocess started in its own process group, its output in a log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the group, SIGKILL it after ``timeout``; assert nothing of it is left."""
        pgid = self.popen.pid  # start_new_session: the group id is the leader's pid
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout  # one deadline for the leader and its group
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=timeout)
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pgid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        deadline = time.monotonic() + 5
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _group_alive(pgid) or self.popen.poll() is None:
            raise RuntimeError(f"{self.name} (pid {pgid}) left processes behind")


# `prefect worker start` answers SIGTERM by sending itself SIGINT and then, after some runs
# (a submission aborted because another worker took the run, a cancelled run), never prints
# "Worker ... stopped!": tests/test_workers.py's fan-out and tests/test_review_cancel.py waited
# the full 15 + 15 s per worker in two quiet fresh-clone runs (61 s and 31 s teardowns,
# benchmarks/README.md "Session 12"). A test's workers hold nothing it reads after it, so they
# get a short grace, then SIGKILL.
WORKER_GRACE = 3.0


@dataclass
class PrefectServer:
    """A running ``prefect server start`` on loopback, with its own PREFECT_HOME."""

    root: Path
    port: int
    proc: Proc | None = None
    workers: list[Proc] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def home(self) -> Path:
        return self.root / "server-home"

    @property
    def client_home(self) -> Path:
        """PREFECT_HOME of CLI calls and workers (and of flow runs: local results live here)."""
        return self.root / "client-home"

    def env(self, extra: Mapping[str, str] | None = None, *, server: bool = False) -> dict:
        env = {k: v for k, v in os.environ.items() if k not in _DROP}
        env.update(PREFECT_HOME=str(self.home if server else self.client_home),
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_CLI_PROMPT="false",
                   PREFECT_CLI_COLORS="false", PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1",
                   COLUMNS="200")
        if not server:
            env["PREFECT_API_URL"] = self.api_url
        env.update(extra or {})
        return env

    def _popen(self, name: str, args: list[str], env: dict) -> Proc:
        log = self.root / f"{name}.log"
        out = open(log, "wb")
        try:
            popen = subprocess.Popen(args, cwd=REPO_ROOT, env=env, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        finally:
            out.close()
        return Proc(name, popen, log)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def start(self, timeout: float = 90.0, ui: bool = False,
              extra_env: Mapping[str, str] | None = None) -> "PrefectServer":
        t0 = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        self.client_home.mkdir(parents=True, exist_ok=True)
        seed(self.home / "prefect.db")  # a copy of the session's migrated database
        env = self.env({"PREFECT_UI_ENABLED": "true" if ui else "false", **(extra_env or {})},
                       server=True)
        self.proc = self._popen("server", [PREFECT, "server", "start", "--host", "127.0.0.1",
                                           "--port", str(self.port)], env)
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if not self.proc.alive():
                raise RuntimeError(f"prefect server exited:\n{self.proc.tail()}")
            if self.healthy():
                self.timings["server_start"] = time.monotonic() - t0
                return self
            time.sleep(0.25)
        raise TimeoutError(f"prefect server not healthy after {timeout} s:\n{self.proc.tail()}")

    def cli(self, *args: str, timeout: float = 180.0, check: bool = True,
            extra_env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``prefect --no-prompt ARGS`` against this server, from the repo root."""
        res = subprocess.run([PREFECT, "--no-prompt", *args], cwd=REPO_ROOT,
                             env=self.env(extra_env), capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        if check and res.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed ({res.returncode}):\n"
                               f"{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
        return res

    def start_worker(self, pool: str, *, limit: int = 1, name: str | None = None,
                     extra_env: Mapping[str, str] | None = None) -> Proc:
        """``prefect worker start --pool POOL --limit N``, polling every second."""
        name = name or f"worker-{pool}-{len(self.workers)}"
        env = self.env({"PREFECT_WORKER_QUERY_SECONDS": "1",
                        "PREFECT_WORKER_PREFETCH_SECONDS": "2", **(extra_env or {})})
        proc = self._popen(name, [PREFECT, "worker", "start", "--pool", pool, "--limit",
                                  str(limit), "--name", name], env)
        self.workers.append(proc)
        return proc

    def start_process(self, name: str, args: list[str],
                      extra_env: Mapping[str, str] | None = None) -> Proc:
        """Any long-lived client process (e.g. ``mora worker``) against this server, stopped
        with the workers."""
        proc = self._popen(name, args, self.env(extra_env))
        self.workers.append(proc)
        return proc

    @contextlib.contextmanager
    def api_settings(self) -> Iterator[None]:
        """In-process Prefect API calls go to this server inside the block (os.environ untouched)."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: self.api_url}):
            events_follow(self.api_url)
            yield

    def leftover_pids(self) -> list[int]:
        """Processes (not this one) whose environment names this server's root: the server,
        workers, and flow-run processes (a worker starts those in sessions of their own)."""
        return processes_with_env(str(self.root) + os.sep)  # every env path is root/…

    def stop(self, timeout: float = 15.0) -> list[str]:
        """Stop workers (SIGKILL after ``WORKER_GRACE``), then the server (after ``timeout``),
        then any straggler; return what could not be stopped or was left behind.

        Idempotent. An empty list means nothing is left."""
        events_follow(None)
        problems = []
        for proc in [*reversed(self.workers), *([self.proc] if self.proc else [])]:
            try:
                proc.stop(WORKER_GRACE if proc is not self.proc else timeout)
            except RuntimeError as exc:  # keep stopping the others
                problems.append(str(exc))
        self.workers.clear()
        self.proc = None
        problems += stop_leftovers(self.leftover_pids(), timeout)
        problems += [f"still running after SIGKILL: {pid}" for pid in self.leftover_pids()]
        return problems


def stop_leftovers(pids: list[int], timeout: float = 15.0) -> list[str]:
    """End each of ``pids`` (SIGTERM, then SIGKILL); one line per process, naming it."""
    problems = []
    for pid in pids:
        problems.append(f"leftover process {pid}: {cmdline(pid)}")
        _terminate_pid(pid, timeout)
    return problems


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, …); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def cmdline(pid: int) -> str:
    """The command line of ``pid``, arguments joined by spaces ("?" if gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return "?"


def processes_with_env(needle: str) -> list[int]:
    """Pids of this user's processes (not this one) with ``needle`` in their environment."""
    me, found, raw = os.getpid(), [], needle.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            if raw not in (entry / "environ").read_bytes():
                continue
        except OSError:
            continue
        if _pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _pid_alive(pid: int) -> bool:
    """Running: a zombie is gone, only not yet reaped by its parent."""
    fields = proc_stat(pid)
    return bool(fields) and fields[0] != "Z"


def _terminate_pid(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def running_prefect_server(root: Path, **start_kwargs) -> Iterator[PrefectServer]:
    """Start a server (and later workers) under ``root``; stop all of them on exit."""
    server = PrefectServer(root=Path(root), port=free_port())
    try:
        server.start(**start_kwargs)
        yield server
    finally:
        server.stop()  # idempotent: a test that checks for leftovers calls it itself first
