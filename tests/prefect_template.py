"""One migrated Prefect database per test session, copied by every server the tests start.

A Prefect server on a fresh SQLite file spends ~13 s of CPU before it answers: the migrations
and the block types it registers (prefect/server/api/server.py, ``run_migrations`` and
``add_block_types``). The same server on a copy of a database that already has both starts in
about half that. The pytest controller builds that database once, in the background, while the
xdist workers collect (``start_building``); then the session's test harness server
(tests/conftest.py ``prefect_server``), every ``prefect server start`` of tests/prefect_server.py
and the temporary servers that CLI subprocesses start in each worker's PREFECT_HOME begin from a
copy (``seed``). The copy is made by the same Prefect that runs the servers, so it is what the
server would have made itself.

Run as ``python -m tests.prefect_template PATH`` it builds the database at PATH (atomically: a
reader sees the whole file or none) or leaves ``PATH.failed`` with the error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

TEMPLATE_ENV = "MORA_TEST_PREFECT_DB"  # set by the controller; inherited by xdist workers
REPO_ROOT = Path(__file__).resolve().parent.parent


def start_building(folder: Path) -> subprocess.Popen:
    """Start building the template under ``folder`` and name it in ``os.environ`` (so the
    xdist workers started after this see it). The caller waits for the process to end."""
    path = folder / "prefect-template.db"
    os.environ[TEMPLATE_ENV] = str(path)
    env = {**os.environ, "PREFECT_SERVER_DATABASE_CONNECTION_URL":
           f"sqlite+aiosqlite:///{path.with_suffix('.building')}"}
    env.pop("PREFECT_API_URL", None)
    with open(folder / "prefect-template.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "tests.prefect_template", str(path)],
                                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)


def template(timeout: float = 180.0) -> Path | None:
    """The built template, waiting for the builder if it is still at work; None when there is
    none (no controller built one, or it failed): the server then migrates a fresh file."""
    named = os.environ.get(TEMPLATE_ENV)
    if not named:
        return None
    path = Path(named)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if path.with_suffix(".failed").exists() or time.monotonic() > deadline:
            return None
        time.sleep(0.1)
    return path


def seed(target: Path, wait: bool = True) -> bool:
    """Copy the template to ``target`` (a server's database file that does not exist yet).
    False if ``target`` exists or there is no template (``wait=False``: none built yet)."""
    if target.exists():
        return False
    source = template() if wait else template(timeout=0)
    if source is None:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return True


def _build(path: Path) -> None:
    """Migrate and register block types exactly as a starting server does, into
    ``PATH.building`` (named by PREFECT_SERVER_DATABASE_CONNECTION_URL), then rename it."""
    import asyncio

    from prefect.server.database import provide_database_interface
    from prefect.server.models.block_registration import run_block_auto_registration

    async def build() -> None:
        db = provide_database_interface()
        await db.create_db()
        session = await db.session()
        async with session:
            await run_block_auto_registration(session=session)

    asyncio.run(build())
    # Prefect's SQLite runs in WAL mode: SQLite's backup writes one self-contained file.
    import sqlite3

    copy = path.with_suffix(".copy")
    with sqlite3.connect(path.with_suffix(".building")) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    os.replace(copy, path)
    path.with_suffix(".building").unlink()


if __name__ == "__main__":
    target = Path(sys.argv[1])
    try:
        _build(target)
    except BaseException as exc:  # the waiting workers fall back to migrating themselves
        target.with_suffix(".failed").write_text(f"{type(exc).__name__}: {exc}\n")
        raise
