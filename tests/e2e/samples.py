"""Samples as the e2e tests compare them: label sets, float64 bit patterns, stored data.

Stored data is read back either from a stopped server's data directory or through a
running server's remote read (SAMPLES answers). Values are compared as their 64 bits
(`values.view(np.uint64)`), never as floats: NaN payloads, the staleness marker and -0.0
must come back exactly.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import snappy

from proto import remote_pb2, types_pb2
from tests.support.values import STALE_NAN

LabelSet = tuple[tuple[str, str], ...]
"""A series' labels as (name, value) pairs sorted by name, `__name__` included."""

Stored = dict[LabelSet, tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]]
"""One tenant's series -> (timestamps in ms, value bits), as read back from a data dir."""

STALE_NAN_BITS = STALE_NAN
"""Prometheus's staleness marker: a NaN with this exact payload."""

_DOUBLE = struct.Struct("<d")
_UINT64 = struct.Struct("<Q")


def float_bits(value: float) -> int:
    """The 64 bits of a float64."""
    bits: int = _UINT64.unpack(_DOUBLE.pack(value))[0]
    return bits


def bits_float(bits: int) -> float:
    """The float64 with these 64 bits (NaN payloads kept)."""
    value: float = _DOUBLE.unpack(_UINT64.pack(bits))[0]
    return value


def labelset(labels: dict[str, str]) -> LabelSet:
    """A label dict as a LabelSet."""
    return tuple(sorted(labels.items()))


def read_stored(data_dir: Path) -> dict[str, Stored]:
    """tenant -> series of a stopped server's data dir, replayed as a restart would."""
    from gateway.inspect import read_samples

    out: dict[str, Stored] = {}
    for tenant, series in read_samples(data_dir).items():
        out[tenant] = {
            labels: (
                np.asarray(ts, dtype=np.int64),
                np.asarray(values, dtype=np.float64).view(np.uint64),
            )
            for labels, (ts, values) in series.items()
        }
    return out


def count_samples(stored: Stored) -> int:
    """Samples across all series of one tenant."""
    return sum(len(ts) for ts, _ in stored.values())


READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}
# Every timestamp a test writes lies well inside this range (Strata refuses none of it).
ALL_TIME_MS = (-(1 << 62), 1 << 62)
EQ = types_pb2.LabelMatcher.EQ
RE = types_pb2.LabelMatcher.RE
NRE = types_pb2.LabelMatcher.NRE

Matcher = tuple[int, str, str]
"""(types_pb2.LabelMatcher type, label name, value)."""


class RemoteReadFailed(Exception):
    """Remote read answered something other than 200 (or not at all)."""


def read_request(queries: Sequence[Sequence[Matcher]], start_ms: int, end_ms: int) -> bytes:
    """A snappy ReadRequest asking for SAMPLES answers, one query per matcher list."""
    request = remote_pb2.ReadRequest(
        queries=[
            remote_pb2.Query(
                start_timestamp_ms=start_ms,
                end_timestamp_ms=end_ms,
                matchers=[
                    types_pb2.LabelMatcher(type=kind, name=name, value=value)  # type: ignore[arg-type]
                    for kind, name, value in matchers
                ],
            )
            for matchers in queries
        ]
    )
    return bytes(snappy.compress(request.SerializeToString()))


def read_remote(
    client: httpx.Client,
    read_url: str,
    tenant_header: str | None,
    queries: Sequence[Sequence[Matcher]],
    time_range_ms: tuple[int, int] = ALL_TIME_MS,
) -> Stored:
    """Every series the queries select, as one tenant's Stored; RemoteReadFailed if the
    server does not answer 200. A series two queries both select is a test bug."""
    headers = dict(READ_HEADERS)
    if tenant_header is not None:
        headers["X-Scope-OrgID"] = tenant_header
    body = read_request(queries, *time_range_ms)
    try:
        answer = client.post(read_url, content=body, headers=headers)
    except httpx.TransportError as exc:
        raise RemoteReadFailed(f"remote read failed: {exc!r}") from exc
    if answer.status_code != 200:
        raise RemoteReadFailed(f"remote read answered {answer.status_code}: {answer.text[:200]}")
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.content))
    stored: Stored = {}
    for result in response.results:
        for series in result.timeseries:
            labels = labelset({label.name: label.value for label in series.labels})
            if labels in stored:
                raise AssertionError(f"two queries selected {labels}")
            stored[labels] = (
                np.fromiter((s.timestamp for s in series.samples), np.int64, len(series.samples)),
                np.fromiter(
                    (s.value for s in series.samples), np.float64, len(series.samples)
                ).view(np.uint64),
            )
    return stored
