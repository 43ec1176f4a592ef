"""The bad-input catalogue's vocabulary: a case, the gateway it runs against, answers read.

A case is one request and what it must get: a status, a piece of the one-line reason,
the samples it is refused for (by metrics reason) and the samples it stores. Cases are
written so that running the table again gives every case the same answer: writes that
store resend the same samples, refusals refuse again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import snappy

from gateway.config import GatewayConfig
from proto import remote_pb2, types_pb2
from tests.support.asgi import Answer

Labels = tuple[tuple[str, str], ...]
Points = tuple[tuple[int, int], ...]  # (timestamp ms, value bits)
# tenant -> labels -> samples
Stored = Mapping[str, Mapping[Labels, Points]]

WRITE_PATH = "/api/v1/write"
READ_PATH = "/api/v1/read"
DEFAULT_TENANT = "default"
MIB = 1 << 20
HOUR_MS = 3_600_000
YEAR_MS = 365 * 24 * HOUR_MS
# Fixed for the whole run, so that every pass of the table writes the same samples.
NOW_MS = int(time.time() * 1000)
INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# Smaller than the defaults so that the large cases stay cheap; the rules are the same.
MAX_REQUEST_BYTES = 1 * MIB
MAX_DECOMPRESSED_BYTES = 4 * MIB
QUERY_MAX_SERIES = 6
QUERY_MAX_SAMPLES = 50_000
QUERY_MAX_RANGE_MS = 10 * YEAR_MS

WRITE_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}


def catalogue_config(data_dir: Path) -> GatewayConfig:
    """The settings of the one gateway the whole table runs against."""
    return GatewayConfig(
        data_dir=data_dir,
        max_request_bytes=MAX_REQUEST_BYTES,
        max_decompressed_bytes=MAX_DECOMPRESSED_BYTES,
        query_max_series=QUERY_MAX_SERIES,
        query_max_samples=QUERY_MAX_SAMPLES,
        query_max_range_ms=QUERY_MAX_RANGE_MS,
        # Cuts happen when the test flushes, not in the middle of a pass (the fixture
        # also keeps writes from waking the shipper: some cases store samples of 1970).
        cut_interval_s=3600.0,
    )


@dataclass(frozen=True, slots=True)
class Case:
    """One request of the catalogue and everything it must get."""

    name: str
    path: str
    body: bytes
    status: int
    reason: str  # a piece of the answer's one line ("" for answers without a body)
    headers: Sequence[tuple[bytes, bytes]] = ()
    method: str = "POST"
    # Samples refused per run, by the reason label of strata_samples_rejected_total.
    rejected: Mapping[str, int] = field(default_factory=dict)
    stores: Stored = field(default_factory=dict)
    tenant: str = DEFAULT_TENANT
    limit: str = ""  # the limit label of strata_read_refused_total a 422 counts under
    counted: bool = True  # answered by Strata (counted in /metrics), not by the framework
    check: Callable[[Answer], None] | None = None  # more about a 2xx answer


def raw_headers(headers: Mapping[str, str], **extra: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """Header pairs as bytes; `extra` adds raw values (`x_scope_orgid=b"..."`)."""
    pairs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    pairs += [(k.replace("_", "-").encode(), v) for k, v in extra.items()]
    return tuple(pairs)


def labels_of(**pairs: str) -> Labels:
    """A label set, sorted by name as Strata stores it; `name` is the metric name."""
    items = [("__name__" if k == "name" else k, v) for k, v in pairs.items()]
    return tuple(sorted(items, key=lambda p: p[0].encode()))


def matcher(name: str, value: str, kind: int = types_pb2.LabelMatcher.EQ) -> types_pb2.LabelMatcher:
    """One LabelMatcher (EQ unless told)."""
    return types_pb2.LabelMatcher(type=kind, name=name, value=value)  # type: ignore[arg-type]


def exact(labels: Labels) -> list[types_pb2.LabelMatcher]:
    """Equality matchers selecting exactly this label set's series."""
    return [matcher(n, v) for n, v in labels]


def read_body(
    queries: Sequence[tuple[int, int, Sequence[types_pb2.LabelMatcher]]],
    accepted: Sequence[int] = (),
    hints: types_pb2.ReadHints | None = None,
) -> bytes:
    """A snappy-compressed ReadRequest."""
    request = remote_pb2.ReadRequest(accepted_response_types=list(accepted))  # type: ignore[arg-type]
    for start, end, matchers in queries:
        query = request.queries.add(start_timestamp_ms=start, end_timestamp_ms=end)
        query.matchers.extend(matchers)
        if hints is not None:
            query.hints.CopyFrom(hints)
    return bytes(snappy.compress(request.SerializeToString()))


def samples_answer(answer: Answer) -> list[dict[Labels, Points]]:
    """A SAMPLES answer: per query, labels -> samples as value bits."""
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.body))
    out = []
    for result in response.results:
        series = {}
        for ts in result.timeseries:
            labels = tuple((label.name, label.value) for label in ts.labels)
            bits = np.array([s.value for s in ts.samples], dtype=np.float64).view(np.uint64)
            series[labels] = tuple(
                zip([s.timestamp for s in ts.samples], bits.tolist(), strict=True)
            )
        out.append(series)
    return out


def expect_samples(*expected: Mapping[Labels, Points]) -> Callable[[Answer], None]:
    """A check that a SAMPLES answer holds exactly these series, query by query."""

    def check(answer: Answer) -> None:
        assert answer.headers.get("content-encoding") == "snappy"
        assert samples_answer(answer) == list(expected)

    return check
