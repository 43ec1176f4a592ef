"""The steady-state fast path of 1.0 decoding gives exactly what the general path gives,
and steps aside for every entry it does not fully understand."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.errors import InvalidRequest
from gateway.decode import DecodedWrite, decode_write_request
from gateway.decode_known import decode_known
from proto import remote_pb2, types_pb2
from querier.varint import uvarint

NOW_MS = 1_795_600_000_000
LabelList = list[tuple[str, str]]


def entry(labels: LabelList, samples: list[tuple[int, float]]) -> types_pb2.TimeSeries:
    series = types_pb2.TimeSeries()
    for name, value in labels:
        series.labels.add(name=name, value=value)
    for ts, sample_value in samples:
        series.samples.add(timestamp=ts, value=sample_value)
    return series


def request(*entries: types_pb2.TimeSeries) -> bytes:
    return remote_pb2.WriteRequest(timeseries=list(entries)).SerializeToString()


def known_keys(raw: bytes) -> set[bytes]:
    """What a head knows after the general path stored this request's series."""
    return {k for k in decode_write_request(raw).series_keys if isinstance(k, bytes)}


def columns(decoded: DecodedWrite) -> tuple[object, ...]:
    return (
        decoded.series_keys,
        [decoded.series_labels[i] for i in range(len(decoded.series_labels))],
        decoded.sample_entry.tolist(),
        decoded.timestamps.tolist(),
        decoded.values.view(np.uint64).tolist(),
        decoded.histograms,
        decoded.exemplars,
        decoded.metadata,
    )


def both_ways(raw: bytes, known: set[bytes]) -> tuple[DecodedWrite, DecodedWrite]:
    return decode_write_request(raw), decode_write_request(raw, known)


label_text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
label_lists = st.lists(st.tuples(label_text, label_text), min_size=1, max_size=8)
# Every float64 bit pattern: NaN payloads, -0.0, infinities, the staleness marker.
values = st.integers(0, (1 << 64) - 1).map(
    lambda b: struct.unpack("<d", b.to_bytes(8, "little"))[0]
)
timestamps = st.one_of(
    st.integers(1 << 35, (1 << 42) - 1),  # six varint bytes: the fast shape
    st.integers(-(1 << 63), (1 << 63) - 1),  # anything else
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(label_lists, st.lists(st.tuples(timestamps, values), max_size=3)), max_size=6
    ),
    st.floats(0, 1),
)
def test_the_fast_path_gives_what_the_general_path_gives(
    series: list[tuple[LabelList, list[tuple[int, float]]]], share_known: float
) -> None:
    raw = request(*(entry(labels, samples) for labels, samples in series))
    keys = sorted(known_keys(raw))
    known = set(keys[: math.ceil(len(keys) * share_known)])
    general, fast = both_ways(raw, known)
    assert columns(fast) == columns(general)


def test_known_series_with_one_sample_each_take_the_fast_path() -> None:
    labels = [[("__name__", f"m{i}"), ("job", "node")] for i in range(50)]
    first = request(*(entry(ls, [(NOW_MS, 1.5 * i)]) for i, ls in enumerate(labels)))
    known = known_keys(first)
    later = request(
        *(
            entry(ls, [(NOW_MS + 15_000, 0.0 if i % 3 == 0 else -2.25 * i)])
            for i, ls in enumerate(labels)
        )
    )
    found = decode_known(later, known)
    assert found is not None
    keys, ts, vs = found
    assert keys == decode_write_request(later).series_keys
    assert ts.tolist() == [NOW_MS + 15_000] * 50
    assert vs.tolist() == [0.0 if i % 3 == 0 else -2.25 * i for i in range(50)]


SERIES = [("__name__", "up"), ("job", "a")]


def steps_aside(raw: bytes) -> None:
    known = known_keys(request(entry(SERIES, [(NOW_MS, 1.0)])))
    assert decode_known(raw, known) is None
    general, fast = both_ways(raw, known)
    assert columns(fast) == columns(general)


@pytest.mark.parametrize(
    "case",
    [
        "two samples",
        "old timestamp",
        "unknown series",
        "exemplar",
        "metadata",
        "sample hidden before the labels",
        "unknown top-level field",
        "timestamp varint running past the entry",
    ],
)
def test_the_fast_path_steps_aside(case: str) -> None:
    one = entry(SERIES, [(NOW_MS, 1.0)])
    if case == "two samples":
        steps_aside(request(entry(SERIES, [(NOW_MS, 1.0), (NOW_MS + 1, 2.0)])))
    elif case == "old timestamp":
        steps_aside(request(entry(SERIES, [(1_000, 1.0)])))
    elif case == "unknown series":
        steps_aside(request(one, entry([("__name__", "other")], [(NOW_MS, 1.0)])))
    elif case == "exemplar":
        with_exemplar = entry(SERIES, [(NOW_MS, 1.0)])
        with_exemplar.exemplars.add(value=1.0, timestamp=NOW_MS)
        steps_aside(request(with_exemplar))
    elif case == "metadata":
        raw = remote_pb2.WriteRequest(
            timeseries=[one],
            metadata=[
                types_pb2.MetricMetadata(
                    metric_family_name="up", type=types_pb2.MetricMetadata.GAUGE
                )
            ],
        ).SerializeToString()
        steps_aside(raw)
    elif case == "sample hidden before the labels":
        # A known series' labels, then a sample, then the labels again and a sample: the
        # tail is a plain sample, but what precedes it is not a known key.
        body = one.SerializeToString()
        labels_only = entry(SERIES, []).SerializeToString()
        sample = body[len(labels_only) :]
        hidden = body + labels_only + sample
        steps_aside(b"\x0a" + uvarint(len(hidden)) + hidden)
    elif case == "unknown top-level field":
        steps_aside(request(one) + b"\x10\x01")
    elif case == "timestamp varint running past the entry":
        # The last byte of the sample's timestamp says more follows: not protobuf. The
        # general path refuses the request; the fast path must not read it as a sample.
        broken = bytearray(one.SerializeToString())
        broken[-1] |= 0x80
        raw = b"\x0a" + uvarint(len(broken)) + bytes(broken)
        known = known_keys(request(one))
        assert decode_known(raw, known) is None
        with pytest.raises(InvalidRequest):
            decode_write_request(raw, known)
