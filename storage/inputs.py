"""Reading a user's input file (the ingest step's I/O): a local path or a key in the store.

An SOP's input is named on the command line or as a flow parameter: a local file
(``clip.mp4``, ``~/in/frame.png``), an artifact already in the store (``store://<key>``, or a
bare key that the store holds), or an S3 object (``s3://bucket/key``, read with the store's
credentials and endpoint: how a run started from the dashboard, which cannot upload a file,
gets its image or video). ``read_input`` resolves it, checks it is a readable, non-empty,
not oversized regular file, and returns its bytes; every problem is a one-line ``MoraError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from configs.errors import MoraError
from storage.keys import key_problem, show
from storage.store import Store

STORE_SCHEME = "store://"
S3_SCHEME = "s3://"
MAX_INPUT_BYTES = 1 << 30  # 1 GiB: inputs are read into memory


class InputFile(NamedTuple):
    data: bytes
    suffix: str  # lowercase, with the dot ('' when the name has none)
    source: str  # where it came from, for provenance: the path as given, or store://<key>


def _suffix(name: str) -> str:
    return Path(name).suffix.lower()


def _check_size(what: str, shown: str, size: int) -> None:
    if size == 0:
        raise MoraError(f"{what} '{shown}' is empty (0 bytes)")
    if size > MAX_INPUT_BYTES:
        raise MoraError(f"{what} '{shown}' is {size} bytes; inputs may be at most "
                        f"{MAX_INPUT_BYTES} bytes")


def _read_key(key: str, store: Store, what: str) -> InputFile:
    problem = key_problem(key)
    if problem:
        raise MoraError(f"{what} 'store://{show(key)}' is not a valid store key: {problem}")
    if not store.exists(key):
        raise MoraError(f"{what} 'store://{key}' is not in store {store.url}")
    data = store.get_bytes(key)
    _check_size(what, f"store://{key}", len(data))
    return InputFile(data, _suffix(key), f"{STORE_SCHEME}{key}")


def _read_path(path: Path, shown: str, what: str) -> InputFile:
    if path.is_dir():
        raise MoraError(f"{what} '{shown}' is a folder, not a file")
    if not path.is_file():
        raise MoraError(f"{what} '{shown}' is not a regular file")
    try:
        with open(path, "rb") as f:
            _check_size(what, shown, os.fstat(f.fileno()).st_size)
            data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise MoraError(f"cannot read {what} '{shown}': {exc.strerror or type(exc).__name__}") from None
    _check_size(what, shown, len(data))  # a file that changed size while read
    return InputFile(data, _suffix(path.name), shown)


def _read_s3(source: str, store: Store | None, what: str) -> InputFile:
    """An object any bucket the store's credentials can read, at the store's endpoint."""
    from storage.s3 import S3Store
    from storage.keys import bucket_problem

    shown = show(source)
    bucket, _, key = source[len(S3_SCHEME):].partition("/")
    problem = bucket_problem(bucket) or ("no object key after the bucket" if not key else
                                         key_problem(key))
    if problem:
        raise MoraError(f"{what} '{shown}' is not a valid S3 object: {problem}")
    endpoint = store._endpoint_url if isinstance(store, S3Store) else None
    reader = S3Store(bucket, endpoint_url=endpoint)
    if not reader.exists(key):
        raise MoraError(f"{what} '{shown}' does not exist at {reader.endpoint}")
    data = reader.get_bytes(key)
    _check_size(what, shown, len(data))
    return InputFile(data, _suffix(key), source)


def read_input(source: str, store: Store | None = None, what: str = "input") -> InputFile:
    """The bytes of ``source``: ``store://<key>``, ``s3://bucket/key``, a local path, or a key
    ``store`` holds.

    A local file wins over a store key of the same name. ``what`` names the input in errors
    ("video 'a.mp4' does not exist").
    """
    if not isinstance(source, str) or not source.strip():
        raise MoraError(f"{what} is empty: give a file path or store://<key>")
    shown = show(source)
    if source.startswith(STORE_SCHEME):
        if store is None:
            raise MoraError(f"{what} '{shown}' names a store key, but no store is open")
        return _read_key(source[len(STORE_SCHEME):], store, what)
    if source.startswith(S3_SCHEME):
        return _read_s3(source, store, what)
    if "\x00" in source:
        raise MoraError(f"{what} '{shown}' contains a NUL character")
    path = Path(source).expanduser()
    try:
        if path.is_symlink() and not path.exists():
            raise MoraError(f"{what} '{shown}' is a broken symbolic link")
        if path.exists():
            return _read_path(path, shown, what)
    except OSError as exc:  # a name too long, a loop of links, ...
        raise MoraError(f"cannot read {what} '{shown}': {exc.strerror or type(exc).__name__}") from None
    if store is not None and key_problem(source) is None and store.exists(source):
        return _read_key(source, store, what)
    raise MoraError(f"{what} '{shown}' does not exist")
