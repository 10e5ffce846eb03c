"""``mora`` run in the test's own process, for tests of what the command says and returns where
the process boundary itself is not what is tested (each subprocess pays ~1 s of imports)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path


def mora(*args: str, cwd: str | Path | None = None,
         session_server: bool = False) -> subprocess.CompletedProcess:
    """``mora ARGS`` in this process (in ``cwd``), answered as ``subprocess.run`` would: for
    tests that read what a command prints and returns, where the process is not the subject."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:  # contextlib.chdir is Python 3.11+
        if cwd is not None:
            patch.chdir(cwd)
        # COLUMNS as the subprocess runs had it: rich reads it at each print when it was unset
        # at import, so tables are not cut at 80 columns.
        patch.setenv("COLUMNS", "200")
        code, stdout, stderr = run_cli(list(args), session_server=session_server)
    return subprocess.CompletedProcess(["mora", *args], code, stdout, stderr)


def run_cli(argv: list[str], session_server: bool = False) -> tuple[int, str, str]:
    """``mora ARGV`` in this process: (exit code, stdout, stderr). An exception that escapes
    ``main`` (a traceback for the user) fails the test with that exception. With
    ``session_server``, flows run on the session's Prefect server (no temporary one) or on the
    server of the caller's ``PrefectServer.api_settings()``."""
    from mora import cli

    # Not capsys: a log handler made during the call would keep capsys's stream, closed after
    # the test, and fail every later log line.
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["mora", *argv]
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                (contextlib.nullcontext() if session_server else _no_api_url()):
            cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
    return code, stdout.getvalue(), stderr.getvalue()


_WITHOUT_API_URL: dict[int, tuple] = {}  # id(settings) -> (settings, the same without API URL)


@contextlib.contextmanager
def _no_api_url():
    """As in a user's shell without a Prefect server, whatever server earlier tests started:
    ``prefect.settings.temporary_settings({PREFECT_API_URL: None})``, with the derived settings
    made once per settings object. Prefect builds them anew at every call (pydantic-settings
    reads every source, ~50 ms): a tenth of the CPU of tests/test_bad_input.py and test_cli.py."""
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import PREFECT_API_URL

    context = get_settings_context()
    if context.settings.api.url is None:
        yield
        return
    key = id(context.settings)
    if key not in _WITHOUT_API_URL:  # the source is kept too: its id stays unique
        _WITHOUT_API_URL[key] = (context.settings, context.settings.copy_with_update(
            updates={PREFECT_API_URL: None}))
    with SettingsContext(profile=context.profile, settings=_WITHOUT_API_URL[key][1]):
        yield
