"""The one build-and-cache mechanism of every offline tiny model (agents/tiny/zoo.py,
agents/tiny/judges.py) and of the real-size random models (agents/random_weights.py).

A model is built into a temporary sibling folder under an exclusive per-model ``fcntl`` lock and
renamed into place; the marker file (written last) is what makes a folder count as built, and
its ``zoo_version`` must match the builder's, so a reader never sees a half-built model and a
changed builder rebuilds old caches.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from configs.settings import mora_home

MARKER = "mora-tiny.json"
SEED = 0


def zoo_root(home: Path | None) -> Path:
    """``<home>/tiny`` (home defaults to ``configs.settings.mora_home()``)."""
    return Path(home if home is not None else mora_home()).expanduser() / "tiny"


def is_built(folder: Path, version: int) -> bool:
    """True when ``folder`` holds a complete build whose marker records ``version``."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("zoo_version") == version


def ensure_built(folder: Path, marker: dict, save: Callable[[Path], None], force: bool = False) -> Path:
    """Build ``folder`` with ``save`` unless it is built at ``marker["zoo_version"]`` (``force``
    rebuilds anyway); return it. Idempotent and safe when processes race: builds are
    serialised by a per-model file lock and land by an atomic rename."""
    version = marker["zoo_version"]
    if not force and is_built(folder, version):
        return folder
    with locked(folder.parent, folder.name):
        if force or not is_built(folder, version):  # another process may have finished while we waited
            install_atomically(folder, folder.name, save, marker)
    return folder


@contextlib.contextmanager
def locked(root: Path, name: str) -> Iterator[None]:
    """An exclusive lock on ``root/.<name>.lock`` for the duration of the block."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def install_atomically(target: Path, name: str, save: Callable[[Path], None],
                       marker: dict) -> None:
    """``save(folder)`` into a temporary sibling, write the marker last, then rename it into
    place: a reader never sees a half-built model (the caller holds the lock)."""
    root = target.parent
    root.mkdir(parents=True, exist_ok=True)
    # Builds only happen under the lock, so any earlier temporary sibling is a leftover of a
    # process that died mid-build: clear it.
    for stale in list(root.glob(f".{name}.build-*")) + list(root.glob(f".{name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.build-", dir=root))
    try:
        save(tmp)
        (tmp / MARKER).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
        _make_readable(tmp)
        old = None
        if target.exists() or target.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=root))
            os.replace(target, old / name)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def quiet_progress_bars() -> Iterator[None]:
    """transformers prints a 'Writing model shards' bar per text/image encoder saved: hide it."""
    from transformers.utils import logging as tlog

    was_enabled = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            tlog.enable_progress_bar()


def _make_readable(folder: Path) -> None:
    """save_pretrained and mkdtemp create 0600/0700 entries: make the tree 0644/0755."""
    os.chmod(folder, 0o755)
    for dirpath, dirnames, filenames in os.walk(folder):
        for d in dirnames:
            os.chmod(os.path.join(dirpath, d), 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
