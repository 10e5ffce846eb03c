"""Which weights a model name stands for, as a short string that changes when they do: the part
of a cache key (tasks/cache.py) that says "the same model".

- a hub id: the commit its local Hugging Face cache snapshot resolves to (the hub names every
  snapshot by its commit, and every blob by its hash); not cached yet: the id and revision;
- a local folder, ``tiny:`` models and the real-size random builds (both are local folders):
  a hash of every file's content, remembered under the files' names, sizes and mtimes
  (``<MORA_HOME>/fingerprints.json``), so a folder is read once and then only stat-ed;
- anything else (an API model's name): the name itself.

Plain Python: nothing is loaded, nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path

from configs.settings import mora_home

TINY_PREFIX = "tiny:"  # a model of the offline tiny zoo (agents/tiny/zoo.py)
SHAPES_PREFIX = "shapes:"  # a trained model of the shapes zoo (agents/shapes/zoo.py)
_COMMIT_RE = re.compile(r"[0-9a-f]{40}")
_HUB_ID_RE = re.compile(r"[\w.-]+/[\w.-]+")
_LOCK = threading.Lock()
_REMEMBERED: dict[str, tuple[str, str]] = {}  # folder -> (stat signature, content hash)
_FILE = "fingerprints.json"
_CHUNK = 8 << 20


def model_identity(model: str, revision: str | None = None) -> str:
    """The identity of the weights ``model`` (a profile's ``model:`` value) names."""
    if model.startswith(TINY_PREFIX):
        from agents.tiny import ensure_tiny_model

        return TINY_PREFIX + folder_fingerprint(ensure_tiny_model(model[len(TINY_PREFIX):]))
    if model.startswith(SHAPES_PREFIX):
        from agents.shapes import shapes_model_dir

        return SHAPES_PREFIX + folder_fingerprint(shapes_model_dir(model[len(SHAPES_PREFIX):]))
    path = Path(model).expanduser()
    if path.is_dir():
        return "folder:" + folder_fingerprint(path)
    if model.startswith((".", "/", "~")):
        return f"missing:{path}"  # loading it fails with its own message
    if _HUB_ID_RE.fullmatch(model):
        return "hub:" + model + "@" + (hub_commit(model, revision) or (revision or "main"))
    return "name:" + model


def hub_commit(model: str, revision: str | None) -> str | None:
    """The commit of ``model``'s snapshot in the local Hugging Face cache, or None."""
    if revision and _COMMIT_RE.fullmatch(revision):
        return revision
    from huggingface_hub import try_to_load_from_cache

    for index in ("model_index.json", "config.json"):
        found = try_to_load_from_cache(model, index, revision=revision)
        if isinstance(found, str):
            return Path(found).parent.name  # .../snapshots/<commit>/<index>
    return None


def folder_fingerprint(folder: Path) -> str:
    """A hash of the names and contents of every file under ``folder``; the files' contents are
    read only when their names, sizes or mtimes differ from the last time (in any process)."""
    folder = folder.resolve()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    stats = [(p.relative_to(folder).as_posix(), p.stat()) for p in files]
    signature = hashlib.sha256(json.dumps(
        [(name, s.st_size, s.st_mtime_ns, s.st_ino) for name, s in stats]).encode()).hexdigest()
    with _LOCK:
        known = _REMEMBERED.get(str(folder)) or _on_disk().get(str(folder))
        if known and known[0] == signature:
            _REMEMBERED[str(folder)] = known
            return known[1]
    digest = hashlib.sha256()
    for path, (name, _) in zip(files, stats):
        digest.update(name.encode() + b"\0" + _file_sha256(path).encode() + b"\n")
    content = digest.hexdigest()[:32]
    with _LOCK:
        _REMEMBERED[str(folder)] = (signature, content)
        _remember(str(folder), signature, content)
    return content


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _on_disk() -> dict[str, tuple[str, str]]:
    try:
        data = json.loads((mora_home() / _FILE).read_text())
        return {k: tuple(v) for k, v in data.items() if isinstance(v, list) and len(v) == 2}
    except (OSError, ValueError, AttributeError):
        return {}


def _remember(folder: str, signature: str, content: str) -> None:
    """Add one folder to ``fingerprints.json`` (atomically replaced: readers never see half a
    file; a lost race only costs the loser's entry a rehash next time)."""
    path = mora_home() / _FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {k: list(v) for k, v in _on_disk().items()}
        data[folder] = [signature, content]
        tmp = path.with_name(f".{_FILE}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # remembering is an optimisation: an unwritable MORA_HOME rehashes next time
