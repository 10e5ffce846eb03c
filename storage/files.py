"""File helpers both backends share: hashing copies, atomic writes beside the target, and where
a download lands. A write goes through a temp file in the target's folder (fill, fsync, chmod,
then rename or link), so a reader never sees a half-written file."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from storage.keys import TMP_SUFFIX

CHUNK = 1024 * 1024
FILE_MODE = 0o644


class Mismatch(Exception):
    """Data read does not match its sidecar (raised inside a copy so the temp file is dropped)."""


def copy_hashing(src: BinaryIO, dst: BinaryIO) -> tuple[str, int]:
    """Copy ``src`` to ``dst``; the sha256 and size of what was copied."""
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        dst.write(chunk)
    return digest.hexdigest(), size


def download_target(key: str, dest: str | os.PathLike) -> Path:
    """The file a download of ``key`` to ``dest`` writes: ``dest``, or the key's name inside it."""
    dest = Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / key.rsplit("/", 1)[-1]
    return dest


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_temp(final: Path, fill: Callable[[BinaryIO], object]) -> tuple[Path, object]:
    """A temp file beside ``final``, filled, fsynced and chmodded; the caller commits it."""
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=TMP_SUFFIX)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            result = fill(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, result


def write_atomic(final: Path, fill: Callable[[BinaryIO], object]) -> object:
    """Write ``final`` through a temp file in its folder: fill, fsync, chmod, rename."""
    tmp, result = write_temp(final, fill)
    try:
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return result
