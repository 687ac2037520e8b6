"""A fault-injecting HTTP proxy on loopback, put in front of the S3 endpoint (moto) to make it
fail a fraction of requests the way object stores do under load.

Each request that matches the filter (methods, a path prefix, or any predicate) fails with
probability ``fail_rate``, drawn from a seeded generator, in one of these ways:

- ``"500"`` / ``"503"``: an S3 error document (InternalError / SlowDown); clients retry these;
- ``"drop"``: the connection is closed after the request was read and never forwarded;
- ``"reset"``: the connection is closed half-way through reading the request body (an upload
  cut mid-way);
- ``"lost_reply"``: the request reaches the server (the write happens) but the reply is dropped.

Everything else is forwarded unchanged (bodies re-framed with a Content-Length). ``stats`` counts
requests, forwarded ones and each fault; ``events`` lists ``(method, path, fault)`` of the faults.
Faults can be changed while the proxy runs (``configure``).
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

FAULT_KINDS = ("500", "503", "drop", "reset", "lost_reply")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
               "upgrade", "expect", "content-length"}
_S3_ERRORS = {"500": ("Internal Server Error", "InternalError", "We encountered an internal error."),
              "503": ("Service Unavailable", "SlowDown", "Please reduce your request rate.")}


class FaultyProxy:
    """``FaultyProxy(upstream_url, fail_rate=0.2, seed=0, methods={"PUT"}, path_prefix="/b/x/")``;
    ``start()``/``stop()`` or a ``with`` block; ``url`` is what clients use instead of upstream."""

    def __init__(self, upstream: str, fail_rate: float = 0.0, seed: int = 0,
                 methods: Iterable[str] | None = None, path_prefix: str | None = None,
                 kinds: Iterable[str] = ("500", "503", "drop"),
                 match: Callable[[str, str], bool] | None = None) -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname, parsed.port or 80)
        self._lock = threading.Lock()
        self.stats: Counter = Counter()
        self.events: list[tuple[str, str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self.configure(fail_rate, seed, methods, path_prefix, kinds, match)

    def configure(self, fail_rate: float = 0.0, seed: int = 0, methods: Iterable[str] | None = None,
                  path_prefix: str | None = None, kinds: Iterable[str] = ("500", "503", "drop"),
                  match: Callable[[str, str], bool] | None = None) -> None:
        kinds = tuple(kinds)
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        with self._lock:
            self.fail_rate, self.kinds = float(fail_rate), kinds
            self.methods = {m.upper() for m in methods} if methods else None
            self.path_prefix, self.match = path_prefix, match
            self._rng = random.Random(seed)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the proxy first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FaultyProxy:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="faulty-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultyProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def faults(self) -> int:
        return sum(self.stats[k] for k in FAULT_KINDS)

    def _decide(self, method: str, path: str) -> str | None:
        with self._lock:
            self.stats["requests"] += 1
            if self.fail_rate <= 0:
                return None
            if self.methods is not None and method not in self.methods:
                return None
            if self.path_prefix is not None and not path.startswith(self.path_prefix):
                return None
            if self.match is not None and not self.match(method, path):
                return None
            if self._rng.random() >= self.fail_rate:
                return None
            fault = self._rng.choice(self.kinds)
            self.stats[fault] += 1
            self.events.append((method, path, fault))
            return fault

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

            def log_message(self, *args) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                self.upstream: http.client.HTTPConnection | None = None

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    if self.upstream is not None:
                        self.upstream.close()

            def _read_body(self, limit: int | None = None) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length if limit is None else min(limit, length))

            def _cut(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _proxy(self) -> None:
                method, path = self.command, self.path
                fault = proxy._decide(method, path)
                if fault == "reset":
                    self._read_body(limit=int(self.headers.get("Content-Length") or 0) // 2)
                    return self._cut()
                body = self._read_body()
                if fault == "drop":
                    return self._cut()
                if fault in _S3_ERRORS:
                    reason, code, message = _S3_ERRORS[fault]
                    doc = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                           f"<Message>{message}</Message><Resource>{path}</Resource>"
                           "<RequestId>faulty-proxy</RequestId></Error>").encode()
                    self.send_response_only(int(fault), reason)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(doc)))
                    self.end_headers()
                    self.wfile.write(doc)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or method in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                try:
                    if self.upstream is None:
                        self.upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                    self.upstream.request(method, path, body=body, headers=headers)
                    reply = self.upstream.getresponse()
                    data = reply.read()
                except (OSError, http.client.HTTPException):
                    if self.upstream is not None:
                        self.upstream.close()
                        self.upstream = None
                    self.send_error(502, "upstream unreachable")
                    return
                with proxy._lock:
                    proxy.stats["forwarded"] += 1
                if fault == "lost_reply":
                    return self._cut()
                self.send_response_only(reply.status, reply.reason)
                for key, value in reply.getheaders():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                if method == "HEAD":
                    length = reply.getheader("Content-Length")
                    if length is not None:
                        self.send_header("Content-Length", length)
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

        for verb in ("GET", "PUT", "POST", "DELETE", "HEAD"):
            setattr(Handler, f"do_{verb}", Handler._proxy)
        return Handler
