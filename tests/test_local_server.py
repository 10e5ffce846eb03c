"""The Prefect server behind `mora` commands: the temporary one dies with its command however the
command dies, and `mora server start|status|stop` runs a shared one every command uses by itself.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.prefect_server import cmdline, free_port, processes_with_env, stop_leftovers
from tests.prefect_template import seed

MORA = [sys.executable, "-m", "mora.cli"]
pytestmark = pytest.mark.integration


def _env(tmp_path: Path, **extra: str) -> dict:
    """A `mora` user's shell: no PREFECT_API_URL; ``tmp_path`` in the environment marks every
    process started from it (found again with ``processes_with_env``)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL",
                                                            "PREFECT_API_AUTH_STRING")}
    env.update(COLUMNS="200", MORA_TEST_MARK=str(tmp_path), **extra)
    return env


def _mora(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*MORA, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _wait(condition, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.timeout(600)
def test_sigkilled_t2v_leaves_no_temporary_server(tmp_path, tiny_zoo):
    """`kill -9` of the command alone (not its process group) still ends its temporary server."""
    mark = str(tmp_path)
    env = _env(tmp_path, PREFECT_HOME=str(tmp_path / "prefect-home"))
    seed(tmp_path / "prefect-home" / "prefect.db")  # a migrated database: a quicker start
    proc = subprocess.Popen([*MORA, "t2v", "a fox", "--segments", "3", "--store",
                             str(tmp_path / "store")], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        def server():
            return [p for p in processes_with_env(mark) if "uvicorn" in cmdline(p)]

        _wait(server, 180, "the temporary server to start")
        # Mid-run: once the flow has written its first artifact (or a few seconds on).
        _wait(lambda: proc.poll() is not None or (tmp_path / "store").exists(), 300,
              "the flow to write", poll=0.1)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _wait(lambda: not processes_with_env(mark), 30, "the temporary server to end")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        stop_leftovers(processes_with_env(mark))


def _post(url: str, auth: str | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.timeout(900)
def test_server_start_status_stop_serves_every_command(tmp_path, tiny_zoo):
    """One server start for all of: its refusals, status, a `mora t2v` on it without
    PREFECT_API_URL, a client without the auth string rejected, and a paused review answered by
    `mora review approve` from another process. The server runs with an auth string (as it
    must beyond loopback) on loopback, so the test serves nothing to the network."""
    secret = "s3cret-for-tests"
    home = tmp_path / "mora-home"
    # The tiny models stay where the session built them; the server's files go to `home`.
    (home / "tiny").parent.mkdir(parents=True)
    (home / "tiny").symlink_to(Path(os.environ["MORA_HOME"]) / "tiny")
    env = _env(tmp_path, MORA_HOME=str(home))
    client_env = {**env, "PREFECT_API_AUTH_STRING": secret}
    seed(home / "server" / "prefect-home" / "prefect.db")  # a migrated database: a quicker start
    port = free_port()
    store = str(tmp_path / "store")
    try:
        res = _mora(env, "server", "status")
        assert (res.returncode, res.stdout.strip()) == (1, "no Mora server is running")
        res = _mora(env, "server", "start", "--host", "0.0.0.0", "--port", str(port))
        assert res.returncode == 2 and "PREFECT_SERVER_API_AUTH_STRING" in res.stderr
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            res = _mora(env, "server", "start", "--port", str(taken))
        assert res.returncode == 2
        assert res.stderr.strip().startswith(f"error: port {taken} on 127.0.0.1 is in use")
        assert len(res.stderr.strip().splitlines()) == 1

        (home / "server").mkdir(exist_ok=True)
        dead = subprocess.Popen(["true"])
        dead.wait()
        (home / "server" / "server.json").write_text(json.dumps(
            {"pid": dead.pid, "host": "127.0.0.1", "port": port}))
        res = _mora({**env, "PREFECT_SERVER_API_AUTH_STRING": secret}, "server", "start",
                    "--port", str(port), "--no-ui", timeout=200)
        assert res.returncode == 0, res.stderr
        assert f"removed a stale pid file ({home / 'server' / 'server.json'}: pid {dead.pid}" \
               in res.stdout
        assert f"API http://127.0.0.1:{port}/api" in res.stdout
        res = _mora(env, "server", "start", "--port", str(free_port()))
        assert res.returncode == 2
        assert res.stderr.startswith("error: a Mora server is already running (pid ")
        res = _mora(env, "server", "status")
        assert res.returncode == 0 and res.stdout.startswith("running: pid ")

        api = f"http://127.0.0.1:{port}/api"
        assert _post(f"{api}/flow_runs/filter") == 401
        assert _post(f"{api}/flow_runs/filter", auth="wrong") == 401
        assert _post(f"{api}/flow_runs/filter", auth=secret) == 200

        # A plain `mora t2v`: no PREFECT_API_URL, no temporary server, its run on the server.
        res = _mora(client_env, "t2v", "a fox", "--store", store, timeout=300)
        assert res.returncode == 0, res.stderr
        assert not [p for p in processes_with_env(str(tmp_path)) if "uvicorn" in cmdline(p)]
        runs = _runs(api, secret)
        assert [r["name"] for r in runs if r["state_type"] == "COMPLETED"]

        # A review paused on the server, answered from another process.
        waiting = subprocess.Popen([*MORA, "t2v", "a heron", "--review", "ask", "--store",
                                    store, "--seed", "5"], env=client_env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        try:
            answered = 0
            deadline = time.monotonic() + 300
            while waiting.poll() is None and time.monotonic() < deadline:
                run = _paused_run(api, secret)  # first frame, then the clip
                if run:  # a resume takes the run out of Paused before `approve` returns
                    if not answered:  # the CLI lists it too (polled by HTTP: no process each)
                        assert _paused(client_env) == run
                    res = _mora(client_env, "review", "approve", run)
                    assert res.returncode == 0, res.stderr
                    answered += 1
                else:
                    time.sleep(0.3)
            stdout, stderr = waiting.communicate(timeout=180)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
        assert waiting.returncode == 0, stderr
        assert "video:" in stdout and answered == 2

        res = _mora(env, "server", "stop")
        assert res.returncode == 0 and res.stdout.startswith("stopped the Mora server (pid ")
        res = _mora(env, "server", "status")
        assert (res.returncode, res.stdout.strip()) == (1, "no Mora server is running")
        _wait(lambda: not processes_with_env(str(tmp_path)), 30, "every process to end")
    finally:
        _mora(env, "server", "stop")
        stop_leftovers(processes_with_env(str(tmp_path)))


def _paused(env: dict) -> str | None:
    """The id of the run `mora review list` shows waiting, if any."""
    res = _mora(env, "review", "list", timeout=60)
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line and not line.startswith("no ")]
    return lines[0].split()[0] if lines else None


def _paused_run(api: str, secret: str) -> str | None:
    """The id of a paused run on the server, if any."""
    runs = _runs(api, secret, {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}})
    return runs[0]["id"] if runs else None


def _runs(api: str, secret: str, body: dict | None = None) -> list[dict]:
    request = urllib.request.Request(
        f"{api}/flow_runs/filter", data=json.dumps(body or {}).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Basic " + base64.b64encode(secret.encode()).decode()})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())
