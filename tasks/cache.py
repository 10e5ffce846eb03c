"""The cache policy of every cached task (``MORA_CACHE``): a rerun is served from Prefect's result
cache only when nothing that decides the output changed, and only while the artifacts the cached
result points at are still in the store.

The key covers (Bazel and Nix put every input of an action in its key, tools included):
  - the task's inputs (Prefect's ``INPUTS``) and the task itself (its module and name);
  - the code: every source and data file of the project's packages, and the versions of the
    libraries that compute outputs (:data:`LIBRARIES`): Prefect's ``TASK_SOURCE`` hashes the
    task function's own text only, not the agents it calls (PrefectHQ/prefect#7056);
  - every model the inputs name (a ``model:`` field of a profile or a training config), by the
    identity of its weights (agents/identity.py: hub commit, or the content of a local folder);
  - the store (``Store.identity``: a folder, or an S3 endpoint, bucket and prefix).

A hit is checked before it is used: every store key in the cached result must be in the store
at the size its sidecar records (metadata only: ``Store.verify``). When one is not, the record is
expired (Prefect's own result-record expiration, so ``ResultStore.exists`` says no), the run's
log says so in one INFO line, and the task runs again and writes a new record under the same
key (DVC reruns a stage whose output is missing; Hamilton drops a record that fails to load).

Switches: ``MORA_CACHE=off`` (configs/settings.py; no key, so Prefect neither reads nor writes a
record) in the environment of the process that runs the tasks; a flow's ``refresh`` parameter
(flows/params.py ``Refresh``; ``--refresh`` on the CLI): each cached task of that run expires its
record once and runs again, replacing it. The policy reads it from the flow run's parameters,
which Prefect hands to a ``mora worker`` with the task; Prefect's own
``PREFECT_TASKS_REFRESH_CACHE`` works too.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from prefect.cache_policies import INPUTS, CachePolicy
from prefect.locking.protocol import LockManager

from configs.errors import MoraError
from configs.settings import cache_enabled
from storage import Store, open_store

# The project's packages (the folders of the repository's layout), whose files are the code.
PACKAGES = ("agents", "configs", "flows", "metrics", "mora", "storage", "tasks")
_CODE_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".txt"}
# Cache records' names in Prefect's result storage (`mora cache ls` tells them from other results).
RECORD_PREFIX = "mora-cache-"
# Libraries whose version can change what a task makes.
LIBRARIES = ("torch", "diffusers", "transformers", "peft", "numpy", "pillow", "imageio",
             "imageio-ffmpeg", "safetensors")


@functools.cache
def code_fingerprint() -> str:
    """A hash of every source and data file under the project's packages, and of the versions
    of :data:`LIBRARIES`; computed once per process (the files are read, not imported)."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            root = Path(folder)
            for path in sorted(root.rglob("*")):
                if path.suffix in _CODE_SUFFIXES and "__pycache__" not in path.parts \
                        and path.is_file():
                    name = f"{package}/{path.relative_to(root).as_posix()}"
                    digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    for library in LIBRARIES:
        try:
            version = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{library}=={version}\n".encode())
    return digest.hexdigest()[:32]


def named_models(value: Any) -> list[tuple[str, str | None]]:
    """Every ``(model, revision)`` a pydantic input names in a ``model`` field, at any depth
    (a profile's pipelines and text towers, its enhancer, a training config's judges)."""
    found: list[tuple[str, str | None]] = []

    def walk(item: Any) -> None:
        if isinstance(item, (list, tuple)):
            for v in item:
                walk(v)
        elif isinstance(item, dict):
            for v in item.values():
                walk(v)
        elif hasattr(item, "model_fields"):
            model = getattr(item, "model", None)
            if isinstance(model, str):
                found.append((model, getattr(item, "revision", None)))
            for name in type(item).model_fields:
                if name != "model":
                    walk(getattr(item, name))

    walk(value)
    return sorted(set(found), key=lambda m: (m[0], m[1] or ""))


def dependencies(inputs: dict[str, Any], store: Store | None = None) -> dict[str, Any]:
    """What besides the inputs' values decides the output: the models they name, by their
    weights' identity, and the identity of ``store`` (the one the task writes to)."""
    from agents.identity import model_identity

    deps: dict[str, Any] = {"models": [model_identity(m, r) for m, r in named_models(inputs)]}
    if store is not None:
        deps["store"] = store.identity
    return deps


class ProcessLocks(LockManager):
    """Locks for Prefect's SERIALIZABLE isolation that the kernel drops when their process dies:
    ``fcntl.flock`` on a file per key in ``<records folder>/.locks``.

    With them, two runs asking for one stage at once do it once: one makes it, the other waits
    for its lock and then finds the record (Prefect's transaction checks for a record after it
    holds the lock). Prefect's ``FileSystemLockManager`` would do the same, but its lock has no
    expiry unless a hold timeout is given, and a transaction gives none: a run killed mid-stage
    would leave the stage locked for ever, and the rerun that should resume it would wait.
    Locks coordinate the processes of one machine (or of a filesystem whose flock works across
    machines, as the result storage must be shared between them anyway)."""

    def __init__(self) -> None:
        self._held: dict[str, tuple[str, int]] = {}  # key -> (holder, open file descriptor)
        self._guard = threading.Lock()

    def __reduce__(self):
        # Pickled with a task handed to another process (Prefect ships the result store along),
        # it arrives as that process's own instance: locks belong to the process that holds them.
        return (_process_locks, ())

    @staticmethod
    def _path(key: str) -> Path:
        return records_folder() / ".locks" / f"{key}.lock"

    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool:
        with self._guard:
            if key in self._held and self._held[key][0] == holder:
                return True
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)  # here only: polls do not write
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() > deadline:
                    os.close(fd)
                    return False
                time.sleep(0.1)
        with self._guard:
            self._held[key] = (holder, fd)
        return True

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                            hold_timeout: float | None = None) -> bool:
        from anyio import to_thread

        return await to_thread.run_sync(self.acquire_lock, key, holder, acquire_timeout,
                                        hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        with self._guard:
            if self._held.get(key, ("",))[0] != holder:
                raise ValueError(f"No lock held by {holder} for transaction with key {key}")
            _, fd = self._held.pop(key)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def is_locked(self, key: str) -> bool:
        with self._guard:
            if key in self._held:
                return True
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def is_lock_holder(self, key: str, holder: str) -> bool:
        with self._guard:
            return self._held.get(key, ("",))[0] == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        from anyio import to_thread

        return await to_thread.run_sync(self.wait_for_lock, key, timeout)


LOCKS = ProcessLocks()  # one per process: it knows which locks this process holds


def _process_locks() -> ProcessLocks:
    return LOCKS


@dataclass
class MoraCache(CachePolicy):
    """Prefect's INPUTS (or ``inputs_key(inputs)``, for a task cached on what its inputs hold
    rather than on how they are named), plus the task, the code, the models and the store; a
    hit whose artifacts are gone from the store is expired, so the task runs again. Two runs
    asking for one stage at once make it once (SERIALIZABLE, with :class:`ProcessLocks`)."""

    inputs_key: Callable[[dict[str, Any]], str | None] | None = None
    isolation_level: Literal["READ_COMMITTED", "SERIALIZABLE"] | None = "SERIALIZABLE"
    lock_manager: LockManager | None = field(default_factory=lambda: LOCKS)

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        from prefect.utilities.hashing import hash_objects

        if not cache_enabled():
            return None
        values = (self.inputs_key(inputs) if self.inputs_key is not None
                  else INPUTS.compute_key(task_ctx, inputs, flow_parameters, **kwargs))
        if values is None:
            return None
        fn = task_ctx.task.fn
        url = inputs.get("store_url")
        store = open_store(url) if isinstance(url, str) else None
        key = RECORD_PREFIX + hash_objects(values, f"{fn.__module__}.{fn.__qualname__}",
                                           code_fingerprint(), dependencies(inputs, store),
                                           raise_on_failure=True)
        if flow_parameters.get("refresh") is True:
            _expire_for_refresh(task_ctx, key)
        elif store is not None:
            _expire_if_gone(task_ctx, key, store)
        return key


_REFRESHED: set[tuple[str, str]] = set()  # (flow run, key): made anew by this run already


def _expire_for_refresh(task_ctx: Any, key: str) -> None:
    """A refreshing run makes each stage anew once (the same stage asked twice in the run is
    the one it just made)."""
    from prefect.runtime import flow_run

    if (str(flow_run.id), key) in _REFRESHED:
        return
    _REFRESHED.add((str(flow_run.id), key))
    if task_ctx.result_store.exists(key):
        _expire(task_ctx, key, "refresh asked")


def _expire_if_gone(task_ctx: Any, key: str, store: Store) -> None:
    """Expire the cached record under ``key`` when an artifact its result names is not in
    ``store`` as recorded; on a good hit, say which run made what is reused."""
    from prefect.logging import get_run_logger
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE
    from storage.keys import generated_keys

    result_store = task_ctx.result_store
    if PREFECT_TASKS_REFRESH_CACHE.value() or task_ctx.task.refresh_cache \
            or not result_store.exists(key):
        return
    makers = set()
    try:
        keys = generated_keys(result_store.read(key).result)
        for stored in keys:
            makers.add(store.verify(stored).flow_run_id)
    except Exception as exc:  # a missing or changed artifact, or a record that no longer loads
        _expire(task_ctx, key, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return
    if keys:
        made_by = ", ".join(sorted(str(m) for m in makers))
        get_run_logger().info(f"reused from the cache: {', '.join(keys)} (made by flow run "
                              f"{made_by})")


def _expire(task_ctx: Any, key: str, reason: str) -> None:
    """Overwrite the record under ``key`` with an expired one: Prefect's ``ResultStore.exists``
    then says no, the task runs, and its result is written under ``key`` again."""
    from prefect.logging import get_run_logger

    try:
        task_ctx.result_store.write(obj=None, key=key, expiration=_LONG_AGO)
    except RuntimeError:  # locked: another run is making this stage anew right now
        return
    get_run_logger().info(f"cached result of {task_ctx.task.name} not reused ({reason}): "
                          "making it again")


_LONG_AGO = datetime(2000, 1, 1, tzinfo=timezone.utc)
CACHED = dict(cache_policy=MoraCache(), persist_result=True)


# ---- the records, as `mora cache ls / clear` show and remove them ------------------------------


@dataclass(frozen=True)
class CacheRecord:
    """One cache record in Prefect's local result storage."""

    name: str
    written: datetime
    size: int
    expired: bool
    artifacts: tuple[str, ...]  # the store keys its result points at (none: unreadable or none)


def records_folder() -> Path:
    """Where Prefect keeps task results, cache records among them: the local result storage
    (``PREFECT_LOCAL_STORAGE_PATH``). A storage block configured for results is not read here."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK

    block = PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK.value()
    if block:
        raise MoraError(f"results are kept in the storage block '{block}' "
                        "(PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK): manage its mora-cache-* "
                        "records there")
    return Path(PREFECT_LOCAL_STORAGE_PATH.value()).expanduser()


def cache_records() -> list[CacheRecord]:
    """Every cache record, oldest first."""
    from prefect.results import ResultRecord

    from storage.keys import generated_keys

    folder = records_folder()
    found = []
    for path in folder.glob(RECORD_PREFIX + "*") if folder.is_dir() else ():
        try:
            stat = path.stat()
        except FileNotFoundError:  # cleared meanwhile
            continue
        try:
            record = ResultRecord.deserialize(path.read_bytes())
            expiration = record.metadata.expiration
            expired = expiration is not None and expiration < datetime.now(timezone.utc)
            artifacts = tuple(generated_keys(record.result))
        except Exception:  # written by other code, or its classes are gone: unreadable
            expired, artifacts = True, ()
        found.append(CacheRecord(path.name, datetime.fromtimestamp(stat.st_mtime, timezone.utc),
                                 stat.st_size, expired, artifacts))
    return sorted(found, key=lambda r: (r.written, r.name))


def clear_cache(older_than_s: float | None = None) -> list[CacheRecord]:
    """Remove the cache records written more than ``older_than_s`` seconds ago (None: all);
    returns them. The artifacts stay in the store; the next run makes what it needs anew."""
    now, folder = datetime.now(timezone.utc), records_folder()
    removed = []
    for record in cache_records():
        if older_than_s is None or (now - record.written).total_seconds() > older_than_s:
            (folder / record.name).unlink(missing_ok=True)
            removed.append(record)
    return removed
