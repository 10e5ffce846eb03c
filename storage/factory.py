"""``open_store(url)``: the store a URL names (a folder, ``file://`` or ``s3://``).

The factory sits above both backends (storage/local.py, storage/s3.py) and the interface they
implement (storage/store.py), so none of those imports another's module back.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from configs.errors import MoraError
from storage.keys import bucket_problem, has_control, s3_prefix_problem, show
from storage.store import Store

_URL_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


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
    shown = show(_redact(url))

    def bad(why: str) -> MoraError:
        return MoraError(f"store URL '{shown}' does not parse: {why}")

    if not url.strip():
        raise bad("empty")
    if "\x00" in url:
        raise bad("contains a NUL character")
    if has_control(url):
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
        if "\x00" in path or has_control(path):
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
