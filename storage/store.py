"""The artifact store interface and ``open_store(url)``.

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
import mimetypes
import os
import re
import uuid
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError
from pydantic_core import PydanticSerializationError

from configs.errors import MoraError
from storage.provenance import Provenance

SIDECAR_SUFFIX = ".prov.json"
TMP_SUFFIX = ".mora-tmp"  # local temp files; never a valid key segment
MAX_KEY_BYTES = 900  # S3 allows 1024 for prefix + key
CHUNK = 1024 * 1024

_KIND_RE = re.compile(r"[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*")
_SUFFIX_RE = re.compile(r"(\.[a-z0-9]+(\.[a-z0-9]+)?)?")
_URL_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")

# A fixed table first, so the content type does not depend on the host's /etc/mime.types.
_CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".parquet": "application/vnd.apache.parquet",
    ".npz": "application/x-npz",
    ".npy": "application/x-npy",
    ".safetensors": "application/octet-stream",
    ".pt": "application/octet-stream",
    ".bin": "application/octet-stream",
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".html": "text/html",
    ".csv": "text/csv",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".gz": "application/gzip",
    ".tar": "application/x-tar",
    ".zip": "application/zip",
}


def _show(text: str) -> str:
    """A value fit for a one-line message: control characters escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _has_control(text: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def guess_content_type(key: str) -> str:
    name = key.rsplit("/", 1)[-1].lower()
    for suffix in (name[name.find(".", 1):] if "." in name[1:] else "", Path(name).suffix):
        if suffix in _CONTENT_TYPES:
            return _CONTENT_TYPES[suffix]
    return mimetypes.guess_type(name, strict=True)[0] or "application/octet-stream"


def sidecar_key(key: str) -> str:
    return key + SIDECAR_SUFFIX


def key_problem(key: object) -> str | None:
    """Why ``key`` is not a valid data key, or None when it is."""
    if not isinstance(key, str) or not key:
        return "empty"
    if _has_control(key):
        return "contains a control character"
    if "\\" in key:
        return "contains a backslash"
    if key.startswith("/"):
        return "is absolute"
    if key.endswith("/"):
        return "ends with '/'"
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            return f"has a {'empty' if not segment else repr(segment)} path segment"
        if segment.endswith(TMP_SUFFIX):
            return f"uses the reserved suffix {TMP_SUFFIX!r}"
    if key.endswith(SIDECAR_SUFFIX):
        return f"uses the reserved suffix {SIDECAR_SUFFIX!r} (provenance sidecars are not data)"
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return f"is longer than {MAX_KEY_BYTES} bytes"
    return None


def prefix_problem(prefix: object) -> str | None:
    """Why ``prefix`` cannot be a listing prefix (a key prefix; may end with '/')."""
    if not isinstance(prefix, str):
        return "not a string"
    if not prefix:
        return None
    if _has_control(prefix):
        return "contains a control character"
    if "\\" in prefix:
        return "contains a backslash"
    if prefix.startswith("/"):
        return "is absolute"
    segments = prefix.split("/")
    if prefix.endswith("/"):
        segments = segments[:-1]
    if any(s in ("", ".", "..") for s in segments):
        return "has an empty, '.' or '..' path segment"
    return None


def bucket_problem(bucket: str) -> str | None:
    """Why ``bucket`` is not a valid S3 (general purpose) bucket name, or None."""
    if not bucket:
        return "no bucket name"
    if not _BUCKET_RE.fullmatch(bucket):
        return (
            f"bucket name '{_show(bucket)}' is invalid (3-63 characters: lowercase letters, "
            "digits, '.' and '-', starting and ending with a letter or digit)"
        )
    if ".." in bucket or ".-" in bucket or "-." in bucket:
        return f"bucket name '{bucket}' is invalid (adjacent '.' or '-.' / '.-')"
    if _IPV4_RE.fullmatch(bucket):
        return f"bucket name '{bucket}' is invalid (looks like an IP address)"
    for reserved in ("xn--", "sthree-", "amzn-s3-demo-"):
        if bucket.startswith(reserved):
            return f"bucket name '{bucket}' is invalid (reserved prefix '{reserved}')"
    for reserved in ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"):
        if bucket.endswith(reserved):
            return f"bucket name '{bucket}' is invalid (reserved suffix '{reserved}')"
    return None


def s3_prefix_problem(prefix: str) -> str | None:
    if not prefix:
        return None
    if _has_control(prefix):
        return "prefix contains a control character"
    if "\\" in prefix:
        return "prefix contains a backslash"
    if any(s in ("", ".", "..") for s in prefix.split("/")):
        return "prefix has an empty, '.' or '..' path segment"
    if len(prefix.encode("utf-8")) > 1024 - MAX_KEY_BYTES - 1:
        return "prefix is too long"
    return None


class Store(ABC):
    """Artifacts under generated keys, each with a provenance sidecar.

    Every method validates its key (``MoraError("invalid store key ...")``); reading a key
    that is not there raises ``MoraError`` naming the key and the store.
    """

    url: str

    # ---- keys -------------------------------------------------------------------------------
    def new_key(self, kind: str, suffix: str = "") -> str:
        """A fresh key ``{kind}/{YYYYMMDD}/{uuid4hex}{suffix}`` (UTC date)."""
        if not isinstance(kind, str) or not _KIND_RE.fullmatch(kind):
            raise MoraError(
                f"invalid artifact kind {kind!r}: use lowercase letters, digits, '_' and '-', "
                "in '/'-separated parts"
            )
        if not isinstance(suffix, str) or not _SUFFIX_RE.fullmatch(suffix):
            raise MoraError(f"invalid key suffix {suffix!r}: use '' or e.g. '.mp4', '.tar.gz'")
        day = datetime.now(timezone.utc).strftime("%Y%m%d")
        key = f"{kind}/{day}/{uuid.uuid4().hex}{suffix}"
        return self._check_key(key)

    def _check_key(self, key: object) -> str:
        problem = key_problem(key)
        if problem:
            shown = _show(key) if isinstance(key, str) else repr(key)
            raise MoraError(f"invalid store key '{shown}': {problem}")
        return key  # type: ignore[return-value]

    def _check_prefix(self, prefix: object) -> str:
        problem = prefix_problem(prefix)
        if problem:
            shown = _show(prefix) if isinstance(prefix, str) else repr(prefix)
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


def _download_target(key: str, dest: str | os.PathLike) -> Path:
    dest = Path(dest).expanduser()
    if dest.is_dir():
        dest = dest / key.rsplit("/", 1)[-1]
    return dest


def _redact(url: str) -> str:
    """The URL with any user:password@ part hidden."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    rest = url[scheme_end + 3:]
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return url[: scheme_end + 3] + netloc + slash + path


def parse_store_url(url: object) -> tuple[str, dict]:
    """``("local", {"root": ...})`` or ``("s3", {"bucket": ..., "prefix": ...})``."""
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise MoraError(f"store URL {url!r} does not parse: not a string")
    shown = _show(_redact(url))

    def bad(why: str) -> MoraError:
        return MoraError(f"store URL '{shown}' does not parse: {why}")

    if not url.strip():
        raise bad("empty")
    if "\x00" in url:
        raise bad("contains a NUL character")
    if _has_control(url):
        raise bad("contains a control character")
    match = _URL_SCHEME_RE.match(url)
    lowered = url.lower()
    if match:
        scheme = match.group(1).lower()
    elif lowered.startswith("file:"):
        scheme = "file"
    elif lowered.startswith("s3:"):
        raise bad("write S3 stores as s3://bucket/prefix")
    else:
        return "local", {"root": os.path.abspath(os.path.expanduser(url))}

    parts = urlsplit(url)
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise bad("query strings and fragments are not supported")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise bad("a file URL needs an absolute path: file:///path/to/store")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise bad("a file URL needs an absolute path: file:///path/to/store")
        if "\x00" in path or _has_control(path):
            raise bad("contains a control character")
        return "local", {"root": os.path.abspath(path)}
    if scheme == "s3":
        netloc = parts.netloc
        if "@" in netloc:
            raise bad("credentials do not belong in the store URL (use the AWS_* environment)")
        if ":" in netloc:
            raise bad("no port in an s3:// URL (set AWS_ENDPOINT_URL_S3 for the endpoint)")
        problem = bucket_problem(netloc)
        if problem:
            raise bad(problem)
        # Taken literally, as the AWS CLI does: s3://b/a%20b is the prefix "a%20b".
        prefix = parts.path.strip("/")
        problem = s3_prefix_problem(prefix)
        if problem:
            raise bad(problem)
        return "s3", {"bucket": netloc, "prefix": prefix}
    raise bad(f"unknown scheme '{scheme}://' (use a folder path, file:///path or s3://bucket/prefix)")


def open_store(url: str | os.PathLike | None = None) -> Store:
    """The store at ``url``: a folder path or ``file://`` URL, or ``s3://bucket[/prefix]``.

    ``None`` means ``MORA_STORE`` or ``./mora-store``. Nothing is created or contacted here.
    """
    if url is None:
        from configs.settings import default_store_url

        url = default_store_url()
    kind, args = parse_store_url(url)
    if kind == "local":
        from storage.local import LocalStore

        return LocalStore(args["root"])
    from storage.s3 import S3Store

    return S3Store(args["bucket"], args["prefix"])
