"""What a store key, listing prefix, bucket name and S3 prefix may be, and the content type a
key's suffix implies: the rules both backends (storage/local.py, storage/s3.py) and the store
interface (storage/store.py) check against. No I/O here."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path

SIDECAR_SUFFIX = ".prov.json"
TMP_SUFFIX = ".mora-tmp"  # local temp files; never a valid key segment
MAX_KEY_BYTES = 900  # S3 allows 1024 for prefix + key

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# ``Store.new_key``'s keys: {kind}/{YYYYMMDD}/{uuid4hex}{suffix}.
KIND_RE = re.compile(r"[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*")
SUFFIX_RE = re.compile(r"(\.[a-z0-9]+(\.[a-z0-9]+)?)?")
_GENERATED_RE = re.compile(KIND_RE.pattern + r"/\d{8}/[0-9a-f]{32}" + SUFFIX_RE.pattern)
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


def show(text: str) -> str:
    """A value fit for a one-line message: control characters escaped."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def has_control(text: str) -> bool:
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
    if has_control(key):
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
    if has_control(prefix):
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
            f"bucket name '{show(bucket)}' is invalid (3-63 characters: lowercase letters, "
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
    if has_control(prefix):
        return "prefix contains a control character"
    if "\\" in prefix:
        return "prefix contains a backslash"
    if any(s in ("", ".", "..") for s in prefix.split("/")):
        return "prefix has an empty, '.' or '..' path segment"
    if len(prefix.encode("utf-8")) > 1024 - MAX_KEY_BYTES - 1:
        return "prefix is too long"
    return None


def generated_keys(value: object) -> list[str]:
    """Every string in ``value`` (nested in lists, tuples, dicts and pydantic models) that has
    the shape of a key ``Store.new_key`` makes: the artifacts a task's result points at."""
    found: list[str] = []

    def walk(item: object) -> None:
        if isinstance(item, str):
            if _GENERATED_RE.fullmatch(item):
                found.append(item)
        elif isinstance(item, dict):
            for v in item.values():
                walk(v)
        elif isinstance(item, (list, tuple, set, frozenset)):
            for v in item:
                walk(v)
        elif hasattr(item, "model_fields"):  # a pydantic model
            for name in type(item).model_fields:
                walk(getattr(item, name))

    walk(value)
    return list(dict.fromkeys(found))
