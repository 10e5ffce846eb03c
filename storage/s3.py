"""A store in an S3 (or S3-compatible) bucket under a prefix.

boto3 is imported on first use only. The endpoint comes from boto3's own configuration
(``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, profiles), credentials from the standard
chain; retries are botocore's ("standard" mode). Nothing touches the network until a call.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from mora.errors import MoraError
from storage.local import _write_atomic
from storage.provenance import Provenance
from storage.store import (
    CHUNK,
    Store,
    _download_target,
    bucket_problem,
    key_problem,
    s3_prefix_problem,
    sidecar_key,
)

DEFAULT_MAX_ATTEMPTS = 5
SINGLE_PUT_LIMIT = 64 * 1024 * 1024  # larger files go up as a multipart upload

_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
    "TokenRefreshRequired", "InvalidClientTokenId", "AuthorizationHeaderMalformed",
}
_DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
_MISSING_KEY_CODES = {"NoSuchKey", "404", "NotFound"}


_loader_lock = threading.Lock()
_loader: Any = None


def _shared_loader() -> Any:
    """One botocore data loader (it caches the parsed service models) for all stores."""
    global _loader
    with _loader_lock:
        if _loader is None:
            from botocore.loaders import create_loader

            _loader = create_loader()
        return _loader


def _clean_endpoint(url: str | None) -> str:
    """The endpoint without any user:password@ part (never show credentials)."""
    if not url:
        return "the default AWS endpoint"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "the configured endpoint"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


class S3Store(Store):
    """Artifacts as objects ``<prefix>/<key>``, sidecars as ``<prefix>/<key>.prov.json``.

    ``endpoint_url``, ``max_attempts`` and the timeouts override boto3's configuration (for
    tests and odd setups); by default boto3 reads the endpoint from the environment.
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
    ):
        problem = bucket_problem(bucket)
        prefix = (prefix or "").strip("/")
        problem = problem or s3_prefix_problem(prefix)
        if problem:
            raise MoraError(f"invalid S3 store s3://{bucket}/{prefix}: {problem}")
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._endpoint_url = endpoint_url
        if max_attempts is None:
            max_attempts = int(os.environ.get("AWS_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)
        self._max_attempts = max_attempts
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._client: Any = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # Picklable (Prefect may hash or ship a store): the client and lock are remade.
        state = self.__dict__.copy()
        state["_client"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ---- client and errors ------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The boto3 S3 client, made on first use (thread-safe; clients are thread-safe)."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._make_client()
        return self._client

    def _make_client(self) -> Any:
        import boto3
        import botocore.session
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError

        config = Config(
            retries={"mode": "standard", "max_attempts": self._max_attempts},
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
        )
        try:
            # A session of its own (boto3's default session is not safe to share across
            # threads, and a fresh one reads the environment as it is now), sharing one loader
            # of botocore's model files: that makes a client in ~25 ms instead of ~250 ms.
            core = botocore.session.get_session()
            core.register_component("data_loader", _shared_loader())
            session = boto3.session.Session(botocore_session=core)
            return session.client("s3", endpoint_url=self._endpoint_url, config=config)
        except (BotoCoreError, ValueError) as exc:
            raise MoraError(f"cannot set up S3 for store {self.url}: {exc}") from None

    @property
    def endpoint(self) -> str:
        """Where requests go, fit for messages (no credentials)."""
        return _clean_endpoint(self.client.meta.endpoint_url)

    @contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Map botocore failures to one-line MoraErrors."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, action, key) from None
        except S3UploadFailedError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ClientError):
                raise self._client_error(cause, action, key) from None
            raise MoraError(f"S3 {action} failed at {self.endpoint}: {exc}") from None
        except (NoCredentialsError, PartialCredentialsError):
            raise MoraError(
                f"no S3 credentials for store {self.url}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        except (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError):
            raise MoraError(
                f"S3 endpoint {self.endpoint} is unreachable (store {self.url}); "
                "check AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL"
            ) from None
        except ReadTimeoutError:
            raise MoraError(f"S3 endpoint {self.endpoint} timed out during {action} (store {self.url})") from None
        except BotoCoreError as exc:
            raise MoraError(f"S3 {action} failed at {self.endpoint} (store {self.url}): {exc}") from None

    def _client_error(self, exc: Any, action: str, key: str | None) -> MoraError:
        error = exc.response.get("Error", {}) or {}
        code = str(error.get("Code") or "")
        status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if code == "NoSuchBucket" or (key is None and (code in _MISSING_KEY_CODES or status == 404)):
            return MoraError(f"bucket '{self.bucket}' does not exist at {self.endpoint}")
        if key is not None and (code in _MISSING_KEY_CODES or status == 404):
            return self._missing(key)
        if code in _CREDENTIAL_CODES:
            return MoraError(
                f"S3 credentials rejected by {self.endpoint} ({code}) for bucket '{self.bucket}'"
            )
        if code in _DENIED_CODES or status == 403:
            return MoraError(
                f"S3 credentials rejected or access denied by {self.endpoint} "
                f"for bucket '{self.bucket}' during {action}"
            )
        message = " ".join(str(error.get("Message") or "").split())
        detail = f"{code}: {message}" if message else (code or f"HTTP {status}")
        return MoraError(f"S3 {action} failed at {self.endpoint} (store {self.url}): {detail}")

    def check(self) -> None:
        """Contact the endpoint: the bucket must exist and the credentials must work."""
        with self._errors("head_bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    # ---- helpers ----------------------------------------------------------------------------
    def _full(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _put_object(self, key: str, full: str, body: Any, content_type: str) -> None:
        with self._errors("upload", key):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=body, ContentType=content_type)

    def _undo_sidecar(self, key: str) -> None:
        """After a failed data upload: drop the new sidecar unless older data still needs one."""
        try:
            if not self.exists(key):
                self.client.delete_object(Bucket=self.bucket, Key=self._full(sidecar_key(key)))
        except Exception:  # best effort: an orphan sidecar is invisible to list()
            pass

    def _put_bytes(self, key: str, data: bytes, sidecar: bytes, content_type: str) -> None:
        self._put_object(key, self._full(sidecar_key(key)), sidecar, "application/json")
        try:
            self._put_object(key, self._full(key), data, content_type)
        except BaseException:
            self._undo_sidecar(key)
            raise

    def _put_file(self, key: str, path: Path, provenance: Provenance) -> None:
        try:
            size = path.stat().st_size
            if size <= SINGLE_PUT_LIMIT:
                data = path.read_bytes()
            else:
                data = None
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        digest.update(chunk)
        except OSError as exc:
            raise MoraError(f"cannot store '{path}': {exc.strerror or exc}") from None
        if data is not None:  # one read: what is hashed is what is sent
            sidecar, content_type = self._sidecar_bytes(
                key, provenance, hashlib.sha256(data).hexdigest(), len(data)
            )
            self._put_bytes(key, data, sidecar, content_type)
            return
        from boto3.s3.transfer import TransferConfig

        sidecar, content_type = self._sidecar_bytes(key, provenance, digest.hexdigest(), size)
        self._put_object(key, self._full(sidecar_key(key)), sidecar, "application/json")
        try:
            # A multipart upload becomes visible only when it completes: still atomic.
            with self._errors("upload", key):
                self.client.upload_file(
                    str(path), self.bucket, self._full(key),
                    ExtraArgs={"ContentType": content_type},
                    Config=TransferConfig(multipart_threshold=SINGLE_PUT_LIMIT,
                                          multipart_chunksize=16 * 1024 * 1024),
                )
        except BaseException:
            self._undo_sidecar(key)
            raise

    def _get(self, key: str, full: str) -> Any:
        with self._errors("download", key):
            return self.client.get_object(Bucket=self.bucket, Key=full)

    # ---- reads ------------------------------------------------------------------------------
    def get_bytes(self, key: str) -> bytes:
        key = self._check_key(key)
        response = self._get(key, self._full(key))
        with self._errors("download", key):
            return response["Body"].read()

    def download(self, key: str, dest: str | os.PathLike) -> Path:
        key = self._check_key(key)
        response = self._get(key, self._full(key))
        target = _download_target(key, dest)
        body = response["Body"]
        try:
            with self._errors("download", key):
                target.parent.mkdir(parents=True, exist_ok=True)
                _write_atomic(target, lambda f: shutil.copyfileobj(body, f, CHUNK))
        except OSError as exc:
            raise MoraError(f"cannot download '{key}' to {target}: {exc.strerror or exc}") from None
        finally:
            body.close()
        return target

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
        try:
            response = self._get(key, self._full(sidecar_key(key)))
        except MoraError:
            if self.exists(key):
                raise MoraError(f"artifact '{key}' in store {self.url} has no provenance sidecar") from None
            raise
        with self._errors("download", key):
            raw = response["Body"].read()
        return self._parse_provenance(key, raw)

    def exists(self, key: str) -> bool:
        key = self._check_key(key)
        from botocore.exceptions import ClientError

        with self._errors("head_object", key):
            try:
                self.client.head_object(Bucket=self.bucket, Key=self._full(key))
            except ClientError as exc:
                status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
                code = str((exc.response.get("Error") or {}).get("Code") or "")
                if status == 404 or code in _MISSING_KEY_CODES:
                    return False
                raise
        return True

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
