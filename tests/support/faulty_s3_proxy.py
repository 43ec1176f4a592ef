"""A fault-injecting HTTP proxy in front of an S3 server, on loopback, for tests.

Every request is forwarded to the upstream server with its headers (Host included, so
SigV4 signatures still hold) and body bytes unchanged. While faults are on, a seeded
random generator picks for each request: a delay before forwarding; a 503 SlowDown
before forwarding (the request never happened); a 500 InternalError after forwarding
(it happened, its answer is lost); or a dropped connection. An outage answers 503 to
everything, for a while or for the next n requests (enough to outlast a client's
retries). What it did is counted, so a test can show the faults were really met.
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOST = "127.0.0.1"
UPSTREAM_TIMEOUT_S = 60.0
# Not forwarded: they describe this hop, not the request (the proxy handles 100-continue
# itself, and each forwarded request gets a connection of its own).
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "proxy-connection", "expect", "te", "upgrade"}
)
_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    "<Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
)


@dataclass(frozen=True, slots=True)
class Faults:
    """Shares of requests (0-1) that meet each fault."""

    delay_share: float = 0.0
    delay_s: tuple[float, float] = (0.1, 1.0)
    refuse_share: float = 0.0  # 503 SlowDown, not forwarded
    lose_answer_share: float = 0.0  # forwarded, then 500 InternalError
    drop_share: float = 0.0  # connection closed without an answer, not forwarded


NO_FAULTS = Faults()


class FaultyS3Proxy:
    """Listens on a free loopback port; forwards to `upstream` (http://host:port)."""

    def __init__(self, upstream: str, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream needs a host and a port: {upstream!r}")
        self.upstream = (parts.hostname, parts.port)
        self.faults = NO_FAULTS
        self.outage = False
        self.counts: Counter[str] = Counter()
        self._refuse_next = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._server = _Server((HOST, 0), _Handler)
        self._server.proxy = self
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """The URL clients use instead of the upstream's."""
        return f"http://{HOST}:{self._server.server_address[1]}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="faulty-s3-proxy", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> FaultyS3Proxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def refuse_next(self, requests: int) -> None:
        """Answer 503 to the next `requests` requests, whatever the faults say."""
        with self._lock:
            self._refuse_next = requests

    def decide(self) -> tuple[str, float, bool]:
        """For one request: (what to do first, delay before forwarding, lose the answer)."""
        with self._lock:
            faults = self.faults
            if self.outage or self._refuse_next:
                self._refuse_next = max(0, self._refuse_next - 1)
                return "outage", 0.0, False
            r = self._rng.random()
            if r < faults.drop_share:
                return "drop", 0.0, False
            if r < faults.drop_share + faults.refuse_share:
                return "refuse", 0.0, False
            delay = 0.0
            if self._rng.random() < faults.delay_share:
                delay = self._rng.uniform(*faults.delay_s)
            lose = self._rng.random() < faults.lose_answer_share
            return "forward", delay, lose

    def count(self, what: str) -> None:
        """Count one thing done (thread-safe)."""
        with self._lock:
            self.counts[what] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: FaultyS3Proxy


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test counts what happened instead."""

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._read_body()
        action, delay_s, lose_answer = proxy.decide()
        if action == "drop":
            proxy.count("dropped")
            self.close_connection = True
            return
        if action in ("refuse", "outage"):
            proxy.count("refused" if action == "refuse" else "outage")
            self._answer_error(503, "SlowDown")
            return
        if delay_s:
            proxy.count("delayed")
            time.sleep(delay_s)
        status, headers, answer = self._forward(body)
        proxy.count("forwarded")
        if lose_answer:
            proxy.count("answer_lost")
            self._answer_error(500, "InternalError")
            return
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_HEADERS | {"transfer-encoding", "content-length"}:
                self.send_header(name, value)
        length = len(answer)
        if self.command == "HEAD":
            length = int(dict((k.lower(), v) for k, v in headers).get("content-length", "0"))
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)

    def _read_body(self) -> bytes:
        """The request body exactly as sent (chunked framing kept, to forward unchanged)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raw = bytearray()
            while True:
                size_line = self.rfile.readline()
                raw += size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, up to the empty line
                        line = self.rfile.readline()
                        raw += line
                        if line in (b"\r\n", b"\n", b""):
                            return bytes(raw)
                raw += self.rfile.read(size + 2)  # the chunk and its CRLF
        length = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(length) if length else b""

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        host, port = self.server.proxy.upstream
        conn = http.client.HTTPConnection(host, port, timeout=UPSTREAM_TIMEOUT_S)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_HEADERS:
                    conn.putheader(name, value)
            conn.endheaders()
            if body:
                conn.send(body)
            response = conn.getresponse()
            answer = response.read()
            return response.status, response.getheaders(), answer
        finally:
            conn.close()

    def _answer_error(self, status: int, code: str) -> None:
        payload = _ERROR_XML.format(code=code).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
