"""A fault-injecting HTTP proxy in front of the loopback S3 server, for storage reliability tests.

``FaultProxy(upstream, rate=0.2, seed=1)`` listens on 127.0.0.1 (a free port), forwards each
request to ``upstream`` and, for a seeded-random ``rate`` of the requests that ``match``, injects
one of ``modes`` instead of the plain answer:

* ``"500"`` / ``"503"``: an S3-style XML error (InternalError / SlowDown); nothing forwarded.
* ``"drop-before"``: the connection is closed without an answer; nothing forwarded.
* ``"drop-after"``: forwarded (a write takes effect), then closed without an answer.
* ``"truncate"``: forwarded, then the status, the true headers and half the body, then closed.
  A response with no body to cut (a PUT's) is dropped whole instead.
* ``"short"``: forwarded, then half the body with a Content-Length that matches it (a lying
  server or middlebox): only a checksum can tell. GETs with a body only.

``injected`` counts the faults by mode, ``requests`` everything seen, ``log`` lists each request
with its fault. The same seed and the
same sequence of requests give the same faults.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

MODES = ("500", "503", "drop-before", "drop-after", "truncate")

_ERRORS = {
    "500": ("InternalError", "We encountered an internal error. Please try again."),
    "503": ("SlowDown", "Please reduce your request rate."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te"}


def s3_error_body(code: str, message: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>FAULTPROXY</RequestId></Error>").encode()


class FaultProxy:
    """A threaded HTTP/1.1 proxy that injects S3 faults; use as a context manager or ``close()``."""

    def __init__(self, upstream: str, rate: float = 0.2, seed: int = 0,
                 modes: tuple[str, ...] = MODES,
                 match: Callable[[str, str], bool] = lambda method, path: True):
        unknown = set(modes) - {*MODES, "short"}
        if unknown:
            raise ValueError(f"unknown fault modes {sorted(unknown)}")
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.rate = rate
        self.modes = modes
        self.match = match
        self.injected: Counter[str] = Counter()
        self.requests = 0
        self.log: list[tuple[str, str, str | None]] = []  # (method, path, fault)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def total_injected(self) -> int:
        return sum(self.injected.values())

    def choose(self, method: str, path: str) -> str | None:
        """The fault for this request, or None (one draw per request, whatever it is)."""
        with self._lock:
            self.requests += 1
            draw, pick = self._rng.random(), self._rng.choice(self.modes)
            if draw >= self.rate or not self.match(method, path) or \
                    (pick == "short" and method != "GET"):
                pick = None
            else:
                self.injected[pick] += 1
            self.log.append((method, path, pick))
            return pick

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FaultProxy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(_FaultHandler):
        pass

    Handler.proxy = proxy
    return Handler


class _FaultHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: FaultProxy

    def do_GET(self):  # noqa: N802
        self._handle()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_GET  # noqa: N815

    def log_message(self, *args):
        pass

    # ---- one request ------------------------------------------------------------------------
    def _handle(self) -> None:
        body = self._request_body()
        fault = self.proxy.choose(self.command, self.path)
        if fault in _ERRORS:
            self._send_error(*_ERRORS[fault], status=int(fault))
            return
        if fault == "drop-before":
            self._drop()
            return
        status, reason, headers, payload = self._forward(body)
        if fault == "drop-after" or (fault == "truncate" and len(payload) < 2):
            self._drop()
            return
        if fault == "short" and len(payload) >= 2:
            payload = payload[: len(payload) // 2]
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(payload))))
            self._send(status, reason, headers, payload)
            return
        if fault == "truncate":
            self._send(status, reason, headers, payload[: len(payload) // 2])
            self._drop()
            return
        self._send(status, reason, headers, payload)

    def _request_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if self.command not in ("GET", "HEAD", "DELETE") or body:
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(*self.proxy.upstream, timeout=60)
        try:
            # Host stays the proxy's: the request was signed for it.
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            if self.command != "HEAD":
                kept = [(k, v) for k, v in kept if k.lower() != "content-length"]
                kept.append(("Content-Length", str(len(payload))))
            return response.status, response.reason, kept, payload
        finally:
            conn.close()

    # ---- answers ----------------------------------------------------------------------------
    def _send(self, status: int, reason: str, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        self.wfile.flush()

    def _send_error(self, code: str, message: str, status: int) -> None:
        payload = s3_error_body(code, message)
        self._send(status, "Fault", [("Content-Type", "application/xml"),
                                     ("Content-Length", str(len(payload)))], payload)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
