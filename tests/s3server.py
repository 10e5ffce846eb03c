"""A real S3 endpoint for tests: moto's server mode on loopback (no in-process patching).

Fixtures (re-export them from conftest.py, or import them into a test module):

* ``s3_server`` (session): starts ``ThreadedMotoServer`` on 127.0.0.1 (a free port), points the
  AWS environment at it (fake credentials, ``AWS_DEFAULT_REGION=us-east-1``,
  ``AWS_ENDPOINT_URL_S3``, no config files, no proxy for loopback), creates ``S3_BUCKET``
  through plain boto3 and yields the endpoint URL. Everything is undone at the end.
* ``s3_store_url`` (function): ``s3://mora-test/t/<random>``, a fresh prefix per test.

The server is started once per process even if this module's fixtures are registered twice
(conftest re-export plus a test module import).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import uuid

import pytest

# One module object under either import name ("s3server" from conftest/test modules under
# pytest's default rootdir-less import, "tests.s3server" when tests/ is a package), so the
# server below is started once however this module is reached.
for _alias in ("s3server", "tests.s3server"):
    sys.modules.setdefault(_alias, sys.modules[__name__])

S3_BUCKET = "mora-test"

_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_UNSET = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
          "AWS_ENDPOINT_URL", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_CA_BUNDLE")

_lock = threading.Lock()
_state: dict = {"users": 0}


def _start() -> str:
    from moto.server import ThreadedMotoServer

    # werkzeug logs every request at INFO; keep test output readable.
    werkzeug_log = logging.getLogger("werkzeug")
    _state["log_level"] = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"

    saved = {name: os.environ.get(name) for name in (*_ENV, *_UNSET, "AWS_ENDPOINT_URL_S3",
                                                      "AWS_CONFIG_FILE",
                                                      "AWS_SHARED_CREDENTIALS_FILE",
                                                      "NO_PROXY", "no_proxy")}
    for name in _UNSET:
        os.environ.pop(name, None)
    os.environ.update(_ENV)
    # No ~/.aws files: they could carry another endpoint, region or profile.
    empty = os.path.join(tempfile.gettempdir(), f"mora-test-no-aws-config-{uuid.uuid4().hex}")
    os.environ["AWS_CONFIG_FILE"] = empty
    os.environ["AWS_SHARED_CREDENTIALS_FILE"] = empty
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in (os.environ.get(name) or "").split(",") if h]
        os.environ[name] = ",".join(dict.fromkeys([*hosts, "127.0.0.1", "localhost"]))

    import boto3

    boto3.session.Session().client("s3", endpoint_url=endpoint).create_bucket(Bucket=S3_BUCKET)
    _state.update(server=server, endpoint=endpoint, saved=saved)
    return endpoint


def _stop() -> None:
    server = _state.pop("server")
    saved = _state.pop("saved")
    _state.pop("endpoint", None)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    server.stop()
    logging.getLogger("werkzeug").setLevel(_state.pop("log_level", logging.NOTSET))


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint URL of a loopback moto S3 server with bucket ``S3_BUCKET``."""
    with _lock:
        if _state["users"] == 0:
            _start()
        _state["users"] += 1
        endpoint = _state["endpoint"]
    try:
        yield endpoint
    finally:
        with _lock:
            _state["users"] -= 1
            if _state["users"] == 0:
                _stop()


@pytest.fixture
def s3_store_url(s3_server):
    """``s3://mora-test/t/<random>``: an S3 store URL with a prefix of its own."""
    return f"s3://{S3_BUCKET}/t/{uuid.uuid4().hex[:12]}"
