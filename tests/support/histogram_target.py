"""A scrape target that exposes native histograms in Prometheus's protobuf exposition format.

Each scrape answers the next step of a script (one list of histograms a step); once the
script is played out it answers 503, so that Prometheus marks its series stale. The
exposition messages (`io.prometheus.client.MetricFamily`, length-delimited) are written
here from their field numbers: they are few, and a generated module is not needed.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from querier.histogram_chunk import spans_of
from querier.varint import uvarint

HOST = "127.0.0.1"
CONTENT_TYPE = (
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
)
# MetricFamily.type values.
TYPE_HISTOGRAM = 4
TYPE_GAUGE_HISTOGRAM = 5
# Protobuf wire types.
_VARINT, _FIXED64, _BYTES = 0, 1, 2


@dataclass(frozen=True, slots=True)
class ExposedHistogram:
    """One native histogram as the target exposes it: absolute counts by bucket index.

    Zero counts are left out of `positive`/`negative` (Prometheus drops empty buckets when
    it scrapes), and `zero_threshold` must be above 0, which is how Prometheus 2.42 tells a
    native histogram without integer buckets from a classic one."""

    name: str
    gauge: bool
    is_float: bool
    count: float
    sum: float
    schema: int
    zero_threshold: float
    zero_count: float
    positive: dict[int, float]
    negative: dict[int, float]


def _tag(number: int, wire_type: int) -> bytes:
    return uvarint(number << 3 | wire_type)


def _varint_field(number: int, value: int) -> bytes:
    return _tag(number, _VARINT) + uvarint(value & ((1 << 64) - 1))


def _sint_field(number: int, value: int) -> bytes:
    return _varint_field(number, (value << 1) ^ (value >> 63))


def _double_field(number: int, value: float) -> bytes:
    return _tag(number, _FIXED64) + struct.pack("<d", value)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _tag(number, _BYTES) + uvarint(len(value)) + value


def _buckets(h: ExposedHistogram, counts: dict[int, float], span_f: int, value_f: int) -> bytes:
    """Spans (field span_f) and deltas or counts (field value_f) of one side."""
    indices = sorted(counts)
    out = [
        _bytes_field(span_f, _sint_field(1, offset) + _varint_field(2, length))
        for offset, length in spans_of(indices)
    ]
    previous = 0
    for i in indices:
        if h.is_float:  # negative_count 11 / positive_count 14: absolute doubles
            out.append(_double_field(value_f + 1, counts[i]))
        else:  # negative_delta 10 / positive_delta 13: differences, sint64
            out.append(_sint_field(value_f, int(counts[i]) - previous))
            previous = int(counts[i])
    return b"".join(out)


def histogram_message(h: ExposedHistogram) -> bytes:
    """io.prometheus.client.Histogram (native part) of one exposed histogram."""
    fields = [
        _varint_field(1, int(h.count)) if not h.is_float else _double_field(4, h.count),
        _double_field(2, h.sum),  # sample_sum
        _sint_field(5, h.schema),
        _double_field(6, h.zero_threshold),
        _varint_field(7, int(h.zero_count)) if not h.is_float else _double_field(8, h.zero_count),
        _buckets(h, h.negative, 9, 10),  # negative_span 9, negative_delta 10, _count 11
        _buckets(h, h.positive, 12, 13),  # positive_span 12, positive_delta 13, _count 14
    ]
    return b"".join(fields)


def metric_family(h: ExposedHistogram) -> bytes:
    """A MetricFamily (name 1, type 3, metric 4) with one Metric (histogram 7)."""
    kind = TYPE_GAUGE_HISTOGRAM if h.gauge else TYPE_HISTOGRAM
    metric = _bytes_field(7, histogram_message(h))
    return _bytes_field(1, h.name.encode()) + _varint_field(3, kind) + _bytes_field(4, metric)


def exposition(step: Sequence[ExposedHistogram]) -> bytes:
    """A scrape's body: each family length-delimited."""
    families = [metric_family(h) for h in step]
    return b"".join(uvarint(len(f)) + f for f in families)


class HistogramTarget:
    """The HTTP server, in a thread of the test process, on a free loopback port."""

    def __init__(self, script: Sequence[Sequence[ExposedHistogram]]) -> None:
        self.script = list(script)
        self.served = 0
        self.refused = 0
        self._lock = threading.Lock()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = target._next_body()
                if body is None:
                    self.send_response(503)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # a scrape every 200 ms would flood the test output

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        """HOST:PORT, as a scrape target."""
        return f"{HOST}:{self._server.server_address[1]}"

    def _next_body(self) -> bytes | None:
        with self._lock:
            if self.served >= len(self.script):
                self.refused += 1
                return None
            step = self.script[self.served]
            self.served += 1
        return exposition(step)

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread.start()

    def wait_until_refused(self, timeout_s: float) -> bool:
        """Until the script is played out and one more scrape was refused (bounded)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.refused:
                    return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
