"""A store in an S3 (or S3-compatible) bucket under a prefix.

The client, its settings and the mapping of botocore's failures to one-line errors live in
storage/s3_client.py. Nothing touches the network until a call.

New objects are written with ``If-None-Match: *``, so an existing key is never replaced
(``overwrite=True`` drops the condition). When a retried write finds the object already there,
its ETag tells whether it is this write's own earlier attempt (whose answer was lost) or
someone else's. Reads are retried when the body breaks off or does not match the sha256 and
size in the sidecar: botocore retries a request, but not a body that fails while streaming.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from configs.errors import MoraError
from storage.files import Mismatch, copy_hashing, download_target, write_atomic
from storage.keys import bucket_problem, key_problem, s3_prefix_problem, sidecar_key
from storage.provenance import Provenance
from storage.s3_client import S3Connection, code_and_status, is_missing
from storage.store import Store

SINGLE_PUT_LIMIT = 64 * 1024 * 1024  # larger files go up as a multipart upload
PART_SIZE = 16 * 1024 * 1024  # S3 wants ≥ 5 MiB per part but the last
PRESIGN_MAX_S = 7 * 24 * 3600  # S3's longest presigned-URL lifetime (SigV4)
_T = TypeVar("_T")

_EXISTS_CODES = {"PreconditionFailed", "412"}


def _md5(data: bytes) -> Any:
    """MD5 as S3 computes ETags (not for security)."""
    return hashlib.md5(data, usedforsecurity=False)


def _multipart_etag(part_md5s: list[bytes]) -> str:
    """S3's ETag of a multipart object: the MD5 of the parts' MD5s, then "-<parts>"."""
    return f"{_md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


def _stream_errors() -> tuple[type[BaseException], ...]:
    """What a response body that breaks off raises while it is read."""
    from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError
    from urllib3.exceptions import HTTPError as URLLib3Error

    return (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, URLLib3Error)


class S3Store(S3Connection, Store):
    """Artifacts as objects ``<prefix>/<key>``, sidecars as ``<prefix>/<key>.prov.json``.

    ``endpoint_url``, ``max_attempts`` and the timeouts override boto3's configuration (for
    tests and odd setups); by default boto3 reads the endpoint from the environment. Files over
    ``multipart_threshold`` (default ``SINGLE_PUT_LIMIT``) go up in parts of ``part_size``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        max_attempts: int | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 60,
        multipart_threshold: int | None = None,
        part_size: int = PART_SIZE,
    ):
        problem = bucket_problem(bucket)
        prefix = (prefix or "").strip("/")
        problem = problem or s3_prefix_problem(prefix)
        if problem:
            raise MoraError(f"invalid S3 store s3://{bucket}/{prefix}: {problem}")
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._init_connection(endpoint_url, max_attempts, connect_timeout, read_timeout)
        self._multipart_threshold = multipart_threshold
        self._part_size = part_size

    # ---- helpers ----------------------------------------------------------------------------
    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _etag(self, full: str) -> str | None:
        """The ETag of the object ``full`` (unquoted), or None when there is none."""
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=full)["ETag"].strip('"')
        except ClientError as exc:
            if is_missing(exc):
                return None
            raise

    def _create(self, key: str, full: str, etag: str, send: Callable[[], Any]) -> None:
        """Run the conditional write ``send``. If ``full`` already exists it is this write's
        own earlier attempt when its ETag is ``etag`` (a retry after a lost answer), or else
        someone else's: "already exists"."""
        from botocore.exceptions import ClientError

        with self._errors("upload", key):
            try:
                send()
            except ClientError as exc:
                code, status = code_and_status(exc)
                if code not in _EXISTS_CODES and status != 412:
                    raise
                if self._etag(full) != etag:
                    raise self._already_exists(key) from None

    def _put_object(self, key: str, full: str, body: bytes, content_type: str,
                    overwrite: bool) -> None:
        condition = {} if overwrite else {"IfNoneMatch": "*"}
        self._create(key, full, _md5(body).hexdigest(), lambda: self.client.put_object(
            Bucket=self.bucket, Key=full, Body=body, ContentType=content_type, **condition))

    def _put_sidecar(self, key: str, sidecar: bytes, overwrite: bool) -> None:
        self._put_object(key, self._full(sidecar_key(key)), sidecar, "application/json", overwrite)

    def _undo_sidecar(self, key: str, etag: str | None) -> None:
        """After a failed data upload: drop the new sidecar unless its data landed after all
        (ETag ``etag``; None: when overwriting, any data there keeps it)."""
        try:
            there = self._etag(self._full(key))
            if there is None or (etag is not None and there != etag):
                self.client.delete_object(Bucket=self.bucket, Key=self._full(sidecar_key(key)))
        except Exception:  # best effort: an orphan sidecar is invisible to list()
            pass

    def _put_data(self, key: str, etag: str, overwrite: bool, send: Callable[[], None]) -> None:
        try:
            send()
        except BaseException:
            self._undo_sidecar(key, None if overwrite else etag)
            raise

    def _put_bytes(self, key: str, data: bytes, sidecar: bytes, content_type: str,
                   overwrite: bool) -> None:
        self._put_sidecar(key, sidecar, overwrite)
        self._put_data(key, _md5(data).hexdigest(), overwrite, lambda: self._put_object(
            key, self._full(key), data, content_type, overwrite))

    def _put_file(self, key: str, path: Path, provenance: Provenance, overwrite: bool) -> None:
        limit = self._multipart_threshold or SINGLE_PUT_LIMIT
        try:
            size = path.stat().st_size
            if size <= limit:
                data = path.read_bytes()
            else:
                data = None
                sha256, etag = self._file_digests(path)
        except OSError as exc:
            raise MoraError(f"cannot store '{path}': {exc.strerror or exc}") from None
        if data is not None:  # one read: what is hashed is what is sent
            sidecar, content_type = self._sidecar_bytes(
                key, provenance, hashlib.sha256(data).hexdigest(), len(data)
            )
            self._put_bytes(key, data, sidecar, content_type, overwrite)
            return
        sidecar, content_type = self._sidecar_bytes(key, provenance, sha256, size)
        self._put_sidecar(key, sidecar, overwrite)
        self._put_multipart(key, path, etag, content_type, overwrite)

    # ---- multipart --------------------------------------------------------------------------
    def _file_digests(self, path: Path) -> tuple[str, str]:
        """The file's sha256, and the ETag S3 gives it when uploaded in ``part_size`` parts."""
        digest, part_md5s = hashlib.sha256(), []
        with open(path, "rb") as f:
            while chunk := f.read(self._part_size):
                digest.update(chunk)
                part_md5s.append(_md5(chunk).digest())
        return digest.hexdigest(), _multipart_etag(part_md5s)

    def _put_multipart(self, key: str, path: Path, etag: str, content_type: str,
                       overwrite: bool) -> None:
        """Parts, then a conditional complete: the object appears whole or not at all."""
        full = self._full(key)
        try:
            with self._errors("upload", key):
                upload_id = self.client.create_multipart_upload(
                    Bucket=self.bucket, Key=full, ContentType=content_type)["UploadId"]
        except BaseException:
            self._undo_sidecar(key, None)
            raise

        def send() -> None:
            parts = self._upload_parts(key, full, upload_id, path, etag)
            condition = {} if overwrite else {"IfNoneMatch": "*"}
            self._create(key, full, etag, lambda: self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=full, UploadId=upload_id,
                MultipartUpload={"Parts": parts}, **condition))

        try:
            self._put_data(key, etag, overwrite, send)
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except Exception:  # best effort: an unfinished upload is invisible
                pass
            raise

    def _upload_parts(self, key: str, full: str, upload_id: str, path: Path,
                      etag: str) -> list[dict]:
        """Upload ``path`` in parts; they must add up to ``etag`` (the file hashed before)."""
        parts, part_md5s = [], []
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise MoraError(f"cannot store '{path}': {exc.strerror or exc}") from None
        with f:
            while chunk := f.read(self._part_size):
                number = len(parts) + 1
                with self._errors("upload", key):
                    part = self.client.upload_part(Bucket=self.bucket, Key=full, UploadId=upload_id,
                                                   PartNumber=number, Body=chunk)
                parts.append({"ETag": part["ETag"], "PartNumber": number})
                part_md5s.append(_md5(chunk).digest())
        if _multipart_etag(part_md5s) != etag:
            raise MoraError(f"cannot store '{path}': it changed while it was being uploaded")
        return parts

    # ---- reads ------------------------------------------------------------------------------
    def _get(self, key: str, full: str) -> Any:
        with self._errors("download", key):
            return self.client.get_object(Bucket=self.bucket, Key=full)

    def _raw_sidecar(self, key: str) -> bytes | None:
        """The sidecar's bytes, or None when there is none."""
        from botocore.exceptions import ClientError

        with self._errors("download", key):
            try:
                response = self.client.get_object(Bucket=self.bucket,
                                                  Key=self._full(sidecar_key(key)))
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise
        return response["Body"].read()

    def _read_retrying(self, key: str, attempt: Callable[[], _T]) -> _T:
        """``attempt()``, again with backoff while a body breaks off or fails its check."""
        from botocore.exceptions import FlexibleChecksumError

        broken = _stream_errors()
        attempts = max(1, self._max_attempts)
        for number in range(1, attempts + 1):
            try:
                return attempt()
            except Mismatch as exc:
                failure: BaseException = exc
            except FlexibleChecksumError:  # the body does not match the CRC stored with it
                failure = Mismatch("the body does not match its checksum")
            except broken as exc:
                failure = exc
            if number < attempts:
                time.sleep(random.uniform(0, min(2.0, 0.05 * 2 ** number)))
        if isinstance(failure, Mismatch):
            raise self._corrupt(key, f"{failure} (after {attempts} attempts)")
        raise MoraError(
            f"S3 download of '{key}' from {self.endpoint} broke off {attempts} times "
            f"(store {self.url}): {type(failure).__name__}"
        )

    def get_bytes(self, key: str) -> bytes:
        key = self._check_key(key)

        def attempt() -> bytes:
            raw_sidecar = self._raw_sidecar(key)
            data = self._get(key, self._full(key))["Body"].read()
            problem = self._content_problem(key, raw_sidecar, hashlib.sha256(data).hexdigest(),
                                            len(data))
            if problem:
                raise Mismatch(problem)
            return data

        return self._read_retrying(key, attempt)

    def download(self, key: str, dest: str | os.PathLike) -> Path:
        key = self._check_key(key)
        target = download_target(key, dest)

        def attempt() -> Path:
            raw_sidecar = self._raw_sidecar(key)
            body = self._get(key, self._full(key))["Body"]

            def fill(f: Any) -> None:
                problem = self._content_problem(key, raw_sidecar, *copy_hashing(body, f))
                if problem:
                    raise Mismatch(problem)

            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(target, fill)
            except OSError as exc:
                raise MoraError(f"cannot download '{key}' to {target}: {exc.strerror or exc}") from None
            finally:
                body.close()
            return target

        return self._read_retrying(key, attempt)

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        key = self._check_key(key)
        tmpdir = tempfile.mkdtemp(prefix="mora-s3-")
        try:
            yield self.download(key, Path(tmpdir) / key.rsplit("/", 1)[-1])
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    def read_provenance(self, key: str) -> Provenance:
        key = self._check_key(key)
        raw = self._read_retrying(key, lambda: self._raw_sidecar(key))
        if raw is None:
            if self.exists(key):
                raise MoraError(f"artifact '{key}' in store {self.url} has no provenance sidecar")
            raise self._missing(key)
        return self._parse_provenance(key, raw)

    def exists(self, key: str) -> bool:
        key = self._check_key(key)
        from botocore.exceptions import ClientError

        with self._errors("head_object", key):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            except ClientError as exc:
                if is_missing(exc):
                    return False
                raise
        return True

    def _stored_size(self, key: str) -> int | None:
        from botocore.exceptions import ClientError

        with self._errors("head_object", key):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise
        return int(head["ContentLength"])

    @property
    def identity(self) -> str:
        return f"{self.url} at {self.client.meta.endpoint_url}"

    def list(self, prefix: str = "") -> list[str]:
        prefix = self._check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        keys = []
        with self._errors("list", None):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", ()):
                    key = item["Key"][len(base):]
                    if key_problem(key) is None:
                        keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        key = self._check_key(key)
        existed = self.exists(key)
        with self._errors("delete", key):
            if existed:
                self.client.delete_object(Bucket=self.bucket, Key=self._full(key))
            self.client.delete_object(Bucket=self.bucket, Key=self._full(sidecar_key(key)))
        if not existed:
            raise self._missing(key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(self._check_key(key))}"

    def share_url(self, key: str, expires_s: int) -> str:
        """A presigned GET (boto3 signs it locally: the access key id and a signature are in
        the URL, never the secret key), valid ``expires_s`` seconds, at most S3's seven days."""
        full = self._full(self._check_key(key))
        with self._errors("presign", key):
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": full},
                ExpiresIn=max(1, min(int(expires_s), PRESIGN_MAX_S)))
