"""Test session set-up: an isolated MORA_HOME and Prefect home, one Prefect test server for all.

The tiny model zoo is built once per session into a temporary MORA_HOME; flows run against a
single `prefect_test_harness` server per test process. Every Prefect server the tests start
begins from one migrated database the controller builds (tests/prefect_template.py).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mora-tests-"))
os.environ["MORA_HOME"] = str(_SESSION_DIR / "mora-home")
# One tiny zoo for the run: the controller names a folder (its xdist workers inherit the
# variable) that every process's MORA_HOME/tiny links to. The zoo's lock and atomic rename
# (agents/tiny/built.py) let the first worker build each model while the others wait: each
# worker built its own before, 5.5 s of CPU each at the busiest moment of the run.
_TINY_ZOO = Path(os.environ.setdefault("MORA_TESTS_TINY_ZOO", str(_SESSION_DIR / "tiny-zoo")))
_TINY_ZOO.mkdir(parents=True, exist_ok=True)
(_SESSION_DIR / "mora-home").mkdir()
(_SESSION_DIR / "mora-home" / "tiny").symlink_to(_TINY_ZOO, target_is_directory=True)
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect-home")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
# Subprocesses (crash tests, CLI runs) start temporary servers; 20 s is short on a busy 2-core box.
os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
# Tests only: the task-run recorder's SQLite writes and the heartbeat thread cost seconds per run.
os.environ["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("MORA_STORE", None)

from tests.s3server import s3_server, s3_store_url  # noqa: E402,F401  (re-exported fixtures)


_TEMPLATE_BUILDER = None


def pytest_configure(config):
    """The controller (or the only process, without xdist) builds the session's migrated Prefect
    database in the background; the xdist workers it starts next inherit its path."""
    global _TEMPLATE_BUILDER
    if not hasattr(config, "workerinput"):
        from tests.prefect_template import start_building

        _TEMPLATE_BUILDER = start_building(_SESSION_DIR)


@pytest.hookimpl(trylast=True)  # after pytest-xdist's, which adds the group to each node id
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup`` an ``xdist_group`` mark must reach the scheduler as the node
    id's ``@group`` suffix; pytest 9.2 dropped that suffix without a word (pyproject.toml), and
    every worker then started its own copy of the browser tests' server. Refuse to run so."""
    if not getattr(config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in items
            if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        message = (f"--dist loadgroup lost the xdist_group of {lost[0]} (and {len(lost) - 1} "
                   f"more): pytest {pytest.__version__} with this pytest-xdist does not group "
                   "tests")
        # An xdist worker's exception reaches the terminal as an INTERNALERROR without its
        # text; its own stderr does reach it.
        print(f"error: {message}", file=sys.__stderr__)
        raise pytest.UsageError(message)


def pytest_runtest_setup(item):
    """Temporary servers that CLI subprocesses start use PREFECT_HOME's database: seeded with
    the template once it is built, never waiting for it (the first tests need no server; a
    temporary server that comes before the template migrates its own database)."""
    from tests.prefect_template import seed

    seed(Path(os.environ["PREFECT_HOME"]) / "prefect.db", wait=False)


@pytest.hookimpl(trylast=True)  # after pytest-xdist's, which shuts the workers down
def pytest_sessionfinish(session, exitstatus):
    """The suite fails if any process it started outlives it (after the session fixtures, the
    Prefect test server included, were torn down). Every process the tests start inherits this
    session's folder in its environment (MORA_HOME, PREFECT_HOME), which is how they are found;
    each is reported, then ended."""
    from tests.prefect_server import processes_with_env, stop_leftovers

    if _TEMPLATE_BUILDER is not None:
        _TEMPLATE_BUILDER.wait()
    controller = not hasattr(session.config, "workerinput")
    _wait_for_exits(lambda: [pid for pid in processes_with_env(str(_SESSION_DIR))
                             if _exiting_now(pid, controller)], timeout=60)
    leftovers = stop_leftovers([pid for pid in processes_with_env(str(_SESSION_DIR))
                                if not _ends_with_this_process(pid)])
    if leftovers:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write("\n")  # after the progress line's "[100%]"
            reporter.write_line("processes the tests started outlived them (now ended):",
                                red=True)
            for line in leftovers:
                reporter.write_line(f"  {line}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    # This process's MORA_HOME and PREFECT_HOME (the controller's also holds the run's tiny zoo,
    # which its workers, finished by now, linked to). A test's own files stay in pytest's
    # basetemp for a look after a failure.
    shutil.rmtree(_SESSION_DIR, ignore_errors=True)


def _exiting_now(pid: int, controller: bool) -> bool:
    """A process that ends on its own once the session's workers have: in the controller, an
    xdist worker of this run (pytest-xdist's own sessionfinish shut it down just before this
    hook); anywhere, another process's multiprocessing resource tracker (it reads a pipe from its
    parent and exits at EOF, multiprocessing/resource_tracker.py). Either may still be on its
    way out when this hook runs: the check waits for that event instead of betting on it (a
    worker's tracker, a second late, once failed a green suite)."""
    from tests.prefect_server import cmdline, proc_stat

    fields = proc_stat(pid)
    if len(fields) < 2 or _ends_with_this_process(pid):
        return False
    return ((controller and fields[1] == str(os.getpid()))
            or "multiprocessing.resource_tracker" in cmdline(pid))


def _wait_for_exits(pending, timeout: float) -> None:
    """Poll until ``pending()`` is empty or ``timeout`` seconds have passed."""
    import time

    deadline = time.monotonic() + timeout
    while pending() and time.monotonic() < deadline:
        time.sleep(0.2)


def _ends_with_this_process(pid: int) -> bool:
    """Python's multiprocessing resource tracker started by this (pytest) process: it reads a pipe
    from its parent and exits when the parent does (multiprocessing/resource_tracker.py), so it
    cannot outlive the suite."""
    from tests.prefect_server import cmdline, proc_stat

    fields = proc_stat(pid)
    return (len(fields) > 1 and fields[1] == str(os.getpid())
            and "multiprocessing.resource_tracker" in cmdline(pid))


@pytest.fixture(scope="session")
def prefect_server():
    """One temporary Prefect server for the whole session (of each xdist worker), on a copy of
    the migrated database (tests/prefect_template.py)."""
    from unittest import mock

    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing import utilities
    from tests.prefect_template import seed

    def seeded_mkdtemp():
        # prefect_test_harness puts its database at <mkdtemp()>/prefect-test.db
        folder = tempfile.mkdtemp()
        seed(Path(folder) / "prefect-test.db")
        return folder

    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}), \
            mock.patch.object(utilities, "mkdtemp", seeded_mkdtemp), \
            utilities.prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def session_server_env(prefect_server) -> dict:
    """The environment for a subprocess whose flows run on this session's Prefect server.

    Without PREFECT_API_URL every such process starts a temporary server of its own, ~7 s of
    CPU each (the suite's biggest avoidable cost on 2 cores). Tests whose subject is the
    temporary server (tests/test_local_server.py, the quick start in tests/test_cli.py, the
    credential search in tests/test_security.py) keep it."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "COLUMNS": "200"}
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


@pytest.fixture(scope="session")
def tiny_zoo():
    from agents.tiny import build_tiny_zoo

    return build_tiny_zoo()


@pytest.fixture
def local_store(tmp_path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def real_server(tmp_path_factory):
    """A `prefect server start` of its own (not yet started: call ``.start()``), stopped with
    everything it started at the end of the test."""
    from tests.prefect_server import PrefectServer, free_port

    server = PrefectServer(root=tmp_path_factory.mktemp("prefect-server"), port=free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def generation_calls(monkeypatch):
    """Counts calls into every generation agent (the work a cached rerun must skip)."""
    from agents.connector import ConnectorAgent
    from agents.image_to_image import ImageToImageAgent
    from agents.image_to_video import ImageToVideoAgent
    from agents.text_to_image import TextToImageAgent

    calls = []
    for cls in (TextToImageAgent, ImageToImageAgent, ImageToVideoAgent, ConnectorAgent):
        original = cls.__call__

        def spy(self, *args, _original=original, _name=cls.__name__, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", spy)
    return calls
