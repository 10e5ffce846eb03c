"""``mora`` run in the test's own process, for tests of what the command says and returns where
the process boundary itself is not what is tested (each subprocess pays ~1 s of imports)."""

from __future__ import annotations

import contextlib
import io
import sys


def run_cli(argv: list[str], session_server: bool = False) -> tuple[int, str, str]:
    """``mora ARGV`` in this process: (exit code, stdout, stderr). An exception that escapes
    ``main`` (a traceback for the user) fails the test with that exception. With
    ``session_server``, flows run on the session's Prefect server (no temporary one)."""
    from mora import cli

    # Not capsys: a log handler made during the call would keep capsys's stream, closed after
    # the test, and fail every later log line.
    from prefect.settings import PREFECT_API_URL, temporary_settings

    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.argv
    sys.argv = ["mora", *argv]
    try:
        # as in a user's shell without a Prefect server, whatever server earlier tests started
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), \
                temporary_settings({} if session_server else {PREFECT_API_URL: None}):
            cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = saved
    return code, stdout.getvalue(), stderr.getvalue()
