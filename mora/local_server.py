"""The Prefect server a `mora` command talks to: the shared local one (`mora server start`) when
it runs, else a temporary one that dies with the command, however the command dies.

No heavy imports at module level: ``use_running_server()`` runs before every command.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from configs.errors import MoraError
from configs.settings import mora_home

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"  # what the server checks
CLIENT_AUTH_ENV = "PREFECT_API_AUTH_STRING"  # what clients send


def server_dir() -> Path:
    """Everything of the local server: its pid file, its log, its Prefect home (the database)."""
    return mora_home() / "server"


def pid_file() -> Path:
    return server_dir() / "server.json"


def log_file() -> Path:
    return server_dir() / "server.log"


@dataclass
class ServerInfo:
    pid: int
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        # A server on every interface is reached on loopback from this machine.
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return ServerInfo(self.pid, host, self.port).url + "/api"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process reusing the id: not our server
        return False
    try:  # a zombie is dead, only not yet reaped
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def read_pid_file() -> ServerInfo | None:
    try:
        return ServerInfo(**json.loads(pid_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running_server() -> ServerInfo | None:
    """The local server, if its pid file names a live process (health is not checked: this runs
    before every command and must cost nothing)."""
    info = read_pid_file()
    return info if info is not None and _pid_alive(info.pid) else None


def use_running_server() -> None:
    """Point this process's Prefect client at the local server when it runs and nothing else is
    configured (``PREFECT_API_URL`` in the environment wins)."""
    if os.environ.get("PREFECT_API_URL"):
        return
    info = running_server()
    if info is not None:
        os.environ["PREFECT_API_URL"] = info.api_url


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:  # /health answers without the auth string
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _check_port_free(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise MoraError(f"--host '{host}' is not an address of this machine") from None
    family, socktype, proto, _, addr = infos[0]
    with socket.socket(family, socktype, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError:
            raise MoraError(f"port {port} on {host} is in use (another server?): stop it or "
                            "pick another --port") from None


def start(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, ui: bool = True,
          timeout: float = 120.0) -> tuple[ServerInfo, list[str]]:
    """Start ``prefect server start`` in the background (its own session, output to the log,
    database under ``MORA_HOME``); return it once healthy, with notes for the user."""
    notes = []
    if not 1 <= port <= 65535:
        raise MoraError(f"--port must be between 1 and 65535, got {port}")
    if not is_loopback(host) and not os.environ.get(AUTH_ENV):
        raise MoraError(f"--host {host} serves beyond this machine: anyone who reaches it can "
                        f"run flows and read artifacts. Set {AUTH_ENV} to a secret first "
                        f"(clients then send it as {CLIENT_AUTH_ENV})")
    running = running_server()
    if running is not None:
        raise MoraError(f"a Mora server is already running (pid {running.pid}, {running.url}); "
                        "`mora server stop` first")
    stale = read_pid_file()
    if stale is not None or pid_file().exists():
        pid_file().unlink(missing_ok=True)
        notes.append(f"removed a stale pid file ({pid_file()}: pid "
                     f"{stale.pid if stale else '?'} is not running)")
    _check_port_free(host, port)

    home = server_dir() / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_UI_ENABLED="true" if ui else "false")
    prefect = Path(sys.executable).parent / "prefect"
    with open(log_file(), "ab") as log:
        popen = subprocess.Popen(
            [str(prefect) if prefect.exists() else "prefect", "server", "start", "--host", host,
             "--port", str(port)], env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)  # outlives this command
    info = ServerInfo(popen.pid, host, port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise MoraError(f"the Prefect server exited during start-up (code {popen.returncode});"
                            f" see {log_file()}")
        if healthy(info.api_url):
            tmp = pid_file().with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(info)))
            tmp.replace(pid_file())
            return info, notes
        time.sleep(0.25)
    _stop_group(popen.pid, 10.0)
    raise MoraError(f"the Prefect server did not answer within {timeout:g} s; see {log_file()}")


def _stop_group(pid: int, timeout: float) -> bool:
    """SIGTERM the server's session, SIGKILL it after ``timeout``; True if it had to be killed."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if not _pid_alive(pid):
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return True


def stop(timeout: float = 20.0) -> str:
    """Stop the local server; one line saying what happened."""
    info = read_pid_file()
    if info is None and not pid_file().exists():
        return "no Mora server is running"
    pid_file().unlink(missing_ok=True)
    if info is None or not _pid_alive(info.pid):
        return f"no Mora server was running (removed a stale pid file for pid " \
               f"{info.pid if info else '?'})"
    killed = _stop_group(info.pid, timeout)
    return f"stopped the Mora server (pid {info.pid}{', killed' if killed else ''})"


def status() -> tuple[bool, str]:
    info = read_pid_file()
    if info is None:
        return False, "no Mora server is running"
    if not _pid_alive(info.pid):
        return False, f"no Mora server is running (stale pid file for pid {info.pid})"
    state = "running" if healthy(info.api_url) else "starting or not answering"
    return True, (f"{state}: pid {info.pid}, UI {info.url}, API {info.api_url}, "
                  f"database and log under {server_dir()}")


# --- the temporary server of a command run without any server --------------------------------

def _dying_with(parent: int):
    """A ``preexec_fn`` (runs in the child between fork and exec): SIGTERM when ``parent`` ends."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def arm() -> None:
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above armed the signal
            os._exit(1)

    return arm


def start_temporary_server() -> None:
    """Start Prefect's temporary server now, from this (main) thread, so that the kernel ends it
    when this process ends, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``; it fires when the
    *thread* that started the child exits, hence the main thread).

    Prefect would start the same server lazily on the first API call; it looks its instance up
    under the key ``None`` (as ``prefect.testing.utilities.prefect_test_harness`` does), so it
    finds this one and starts nothing else. Elsewhere than Linux, Prefect's own start is kept
    (it stops the server at a normal exit only)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if (sys.platform != "linux" or PREFECT_API_URL.value()
            or not PREFECT_SERVER_EPHEMERAL_ENABLED.value()):
        return
    from prefect.server.api import server as prefect_server

    if prefect_server.SubprocessASGIServer._instances.get(None) is not None:
        return  # already started (or registered by a test harness)

    class DyingWithParent:  # the `subprocess` module as Prefect's server module sees it
        Popen = staticmethod(lambda *a, **kw: subprocess.Popen(
            *a, preexec_fn=_dying_with(os.getpid()), **kw))

    real = prefect_server.subprocess
    prefect_server.subprocess = DyingWithParent
    try:
        prefect_server.SubprocessASGIServer().start()
    finally:
        prefect_server.subprocess = real
