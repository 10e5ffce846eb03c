"""The S3 client of one store and the translation of botocore's failures into one-line
MoraErrors, mixed into ``S3Store`` (storage/s3.py), which holds the bucket and the settings.

boto3 is imported on first use only. The endpoint comes from boto3's own configuration
(``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, profiles), credentials from the standard
chain; retries are botocore's ("standard" mode).
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import urlsplit, urlunsplit

from configs.errors import MoraError

DEFAULT_MAX_ATTEMPTS = 5

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


def code_and_status(exc: Any) -> tuple[str, int | None]:
    code = str((exc.response.get("Error") or {}).get("Code") or "")
    return code, (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")


def is_missing(exc: Any) -> bool:
    code, status = code_and_status(exc)
    return status == 404 or code in _MISSING_KEY_CODES


class S3Connection:
    """A lazily made boto3 client and error mapping for a store with ``bucket``, ``url`` and
    ``_missing(key)`` (``S3Store``: storage/s3.py, storage/store.py)."""

    bucket: str
    url: str

    def _init_connection(self, endpoint_url: str | None, max_attempts: int | None,
                         connect_timeout: float, read_timeout: float) -> None:
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
            signature_version="s3v4",  # presigned links too: SigV4, whose lifetime S3 caps at 7 days
            retries={"mode": "standard", "total_max_attempts": self._max_attempts},  # incl. the first
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
