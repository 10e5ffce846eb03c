"""The artifact store interface (``open_store(url)`` in storage/factory.py picks a backend).

A store holds artifacts under generated keys (``new_key``); each artifact has a JSON provenance
sidecar at ``<key>.prov.json`` that is written before the artifact itself, so any artifact a
reader can see has its sidecar. Writes never replace an existing key unless asked to
(``overwrite=True``): the sidecar is created only if absent, so of two writers racing for one
key exactly one wins and the other gets "already exists". Reads check the data against the
sha256 and size its sidecar records, so a truncated or corrupt object is never returned.
Backends: ``LocalStore`` (a folder) and ``S3Store``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from configs.errors import MoraError
from storage.keys import KIND_RE, SUFFIX_RE, guess_content_type, key_problem, prefix_problem, show
from storage.provenance import Provenance



class Store(ABC):
    """Artifacts under generated keys, each with a provenance sidecar.

    Every method validates its key (``MoraError("invalid store key ...")``); reading a key
    that is not there raises ``MoraError`` naming the key and the store.
    """

    url: str

    # ---- keys -------------------------------------------------------------------------------
    def new_key(self, kind: str, suffix: str = "") -> str:
        """A fresh key ``{kind}/{YYYYMMDD}/{uuid4hex}{suffix}`` (UTC date)."""
        if not isinstance(kind, str) or not KIND_RE.fullmatch(kind):
            raise MoraError(
                f"invalid artifact kind {kind!r}: use lowercase letters, digits, '_' and '-', "
                "in '/'-separated parts"
            )
        if not isinstance(suffix, str) or not SUFFIX_RE.fullmatch(suffix):
            raise MoraError(f"invalid key suffix {suffix!r}: use '' or e.g. '.mp4', '.tar.gz'")
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        key = f"{kind}/{day}/{uuid.uuid4().hex}{suffix}"
        return self._check_key(key)

    def _check_key(self, key: object) -> str:
        problem = key_problem(key)
        if problem:
            shown = show(key) if isinstance(key, str) else repr(key)
            raise MoraError(f"invalid store key '{shown}': {problem}")
        return key  # type: ignore[return-value]

    def _check_prefix(self, prefix: object) -> str:
        problem = prefix_problem(prefix)
        if problem:
            shown = show(prefix) if isinstance(prefix, str) else repr(prefix)
            raise MoraError(f"invalid store prefix '{shown}': {problem}")
        return prefix  # type: ignore[return-value]

    def _missing(self, key: str) -> MoraError:
        return MoraError(f"no artifact '{key}' in store {self.url}")

    def _already_exists(self, key: str) -> MoraError:
        return MoraError(f"cannot write '{key}' to store {self.url}: it already exists "
                         "(artifacts are never overwritten unless overwrite=True)")

    def _content_problem(self, key: str, raw_sidecar: bytes | None, data_sha256: str,
                         size: int) -> str | None:
        """Why data with this sha256 and size is not what the sidecar records, or None.

        No sidecar (a stray object; ``read_provenance`` reports it) means nothing to check.
        """
        if raw_sidecar is None:
            return None
        recorded = self._parse_provenance(key, raw_sidecar)
        if recorded.size is not None and recorded.size != size:
            return f"read {size} bytes, its provenance records {recorded.size}"
        if recorded.sha256 and recorded.sha256 != data_sha256:
            return f"sha256 {data_sha256[:16]}… differs from the {recorded.sha256[:16]}… recorded"
        return None

    def _corrupt(self, key: str, problem: str) -> MoraError:
        return MoraError(f"artifact '{key}' in store {self.url} is truncated or corrupt: {problem}")

    # ---- provenance -------------------------------------------------------------------------
    def _sidecar_bytes(self, key: str, provenance: Provenance, sha256: str, size: int) -> tuple[bytes, str]:
        """The sidecar's JSON with sha256/size (and content_type when empty) filled in."""
        if not isinstance(provenance, Provenance):
            raise TypeError(f"provenance must be a storage.Provenance, not {type(provenance).__name__}")
        content_type = provenance.content_type or guess_content_type(key)
        filled = provenance.model_copy(
            update={"sha256": sha256, "size": size, "content_type": content_type}
        )
        try:
            text = filled.model_dump_json(indent=2)
        except PydanticSerializationError as exc:
            raise MoraError(f"provenance of '{key}' is not JSON-serialisable: {exc}") from None
        # Validate the round trip now, not when someone reads it back.
        self._parse_provenance(key, text.encode("utf-8"))
        return (text + "\n").encode("utf-8"), content_type

    def _parse_provenance(self, key: str, raw: bytes) -> Provenance:
        try:
            return Provenance.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise MoraError(
                f"provenance sidecar of '{key}' in store {self.url} is invalid: "
                f"{where}: {first.get('msg')}"
            ) from None

    # ---- public API -------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, provenance: Provenance, *,
                  overwrite: bool = False) -> str:
        """Store ``data`` under ``key`` (sidecar first, then the data, each atomically).

        An existing ``key`` raises ``MoraError("... already exists")`` unless ``overwrite``.
        """
        key = self._check_key(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        sidecar, content_type = self._sidecar_bytes(
            key, provenance, hashlib.sha256(data).hexdigest(), len(data)
        )
        self._put_bytes(key, data, sidecar, content_type, overwrite)
        return key

    def put_file(self, key: str, path: str | os.PathLike, provenance: Provenance, *,
                 overwrite: bool = False) -> str:
        """Store the local file ``path`` under ``key`` (sidecar first, then the data).

        An existing ``key`` raises ``MoraError("... already exists")`` unless ``overwrite``.
        """
        key = self._check_key(key)
        if not isinstance(provenance, Provenance):
            raise TypeError(f"provenance must be a storage.Provenance, not {type(provenance).__name__}")
        path = Path(path)
        if not path.is_file():
            raise MoraError(f"cannot store '{path}': no such file")
        self._put_file(key, path, provenance, overwrite)
        return key

    @abstractmethod
    def _put_bytes(self, key: str, data: bytes, sidecar: bytes, content_type: str,
                   overwrite: bool) -> None: ...

    @abstractmethod
    def _put_file(self, key: str, path: Path, provenance: Provenance, overwrite: bool) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def download(self, key: str, dest: str | os.PathLike) -> Path:
        """Copy the artifact to the local file ``dest`` atomically (into it, if a folder)."""

    @abstractmethod
    def local_path(self, key: str) -> AbstractContextManager[Path]:
        """A readable local path for the artifact, valid inside the ``with`` block."""

    @abstractmethod
    def read_provenance(self, key: str) -> Provenance: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def _raw_sidecar(self, key: str) -> bytes | None:
        """The sidecar's bytes, or None when there is none."""

    @abstractmethod
    def _stored_size(self, key: str) -> int | None:
        """The artifact's size in bytes from metadata alone (a stat, a HEAD), or None when
        it is not there."""

    def verify(self, key: str) -> Provenance:
        """The provenance of ``key`` once metadata alone (a stat or HEAD, and the sidecar) shows
        it is there at the size its sidecar records; no data is read. Raises ``MoraError``
        saying what is wrong: what a cached result is checked with before it is reused
        (tasks/cache.py)."""
        key = self._check_key(key)
        size = self._stored_size(key)
        if size is None:
            raise self._missing(key)
        raw = self._raw_sidecar(key)
        if raw is None:
            raise MoraError(f"artifact '{key}' in store {self.url} has no provenance sidecar")
        recorded = self._parse_provenance(key, raw)
        if recorded.size is not None and recorded.size != size:
            raise self._corrupt(key, f"{size} bytes, its provenance records {recorded.size}")
        return recorded

    @property
    @abstractmethod
    def identity(self) -> str:
        """Which store this is, as a cache key sees it: where its bytes live (a folder; an S3
        endpoint, bucket and prefix), never credentials. The same ``s3://`` URL on another
        endpoint is another store."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Data keys starting with ``prefix``, sorted; never sidecars or temp files."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the artifact, then its sidecar."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    def share_url(self, key: str, expires_s: int) -> str | None:
        """An HTTPS link that lets a browser GET ``key`` for ``expires_s`` seconds, or None
        when the store has no such thing (a local folder: ``uri`` is its path)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __str__(self) -> str:
        return self.url
