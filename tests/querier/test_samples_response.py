"""The hand-laid ReadResponse decodes, with protobuf's own parser, to exactly its input."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import remote_pb2, types_pb2
from querier import samples_response
from querier.samples_response import (
    PAIR_FIELDS_KEPT,
    label_fields,
    query_result_fields,
    read_response,
)
from querier.varint import uvarint
from tests.support.values import STALE_NAN

timestamps = st.lists(st.integers(-(2**63), 2**63 - 1), max_size=60, unique=True).map(sorted)
value_bits = st.integers(0, 2**64 - 1)
label_sets = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=8)),
    max_size=4,
    unique_by=lambda p: p[0],
)


def decoded(body: bytes) -> remote_pb2.ReadResponse:
    response = remote_pb2.ReadResponse()
    response.ParseFromString(body)
    return response


def one_series(
    labels: list[tuple[str, str]], ts: np.ndarray, values: np.ndarray
) -> types_pb2.TimeSeries:
    """A ReadResponse of one query and one series, parsed; that series."""
    body = read_response([query_result_fields([(labels, (ts, values), ())])])
    return decoded(body).results[0].timeseries[0]


@settings(max_examples=200, deadline=None)
@given(
    queries=st.lists(st.lists(st.tuples(label_sets, timestamps, st.data()), max_size=3), max_size=3)
)
def test_every_bit_pattern_and_timestamp_survives(queries: list[list[tuple]]) -> None:  # type: ignore[type-arg]
    expected = []
    results = []
    for query in queries:
        batch = []
        want = []
        for labels, ts_list, data in query:
            bits = data.draw(st.lists(value_bits, min_size=len(ts_list), max_size=len(ts_list)))
            ts = np.array(ts_list, dtype=np.int64)
            values = np.array(bits, dtype=np.uint64).view(np.float64)
            batch.append((sorted(labels), (ts, values), ()))
            want.append((sorted(labels), ts_list, bits))
        # The series of a query are laid out together, as the read handler does, and
        # come out as each one laid out on its own.
        fields = query_result_fields(batch)
        one_by_one = [query_result_fields([series]) for series in batch]
        assert b"".join(fields) == b"".join(b"".join(own) for own in one_by_one)
        results.append(fields)
        expected.append(want)
    response = decoded(read_response(results))
    assert len(response.results) == len(expected)
    for result, want in zip(response.results, expected, strict=True):
        assert len(result.timeseries) == len(want)
        for series, (labels, ts_list, bits) in zip(result.timeseries, want, strict=True):
            assert [(label.name, label.value) for label in series.labels] == labels
            assert [s.timestamp for s in series.samples] == ts_list
            got = np.array([s.value for s in series.samples], dtype=np.float64)
            assert got.view(np.uint64).tolist() == bits


def test_edge_values_and_varint_lengths() -> None:
    ts = np.array([-(2**63), -1, 0, 1, 127, 128, 16383, 16384, 2**62, 2**63 - 1], dtype=np.int64)
    bits = np.array(
        [
            STALE_NAN,
            0x7FF8000000000001,
            0,
            1 << 63,
            0x7FF0000000000000,
            0xFFF0000000000000,
            1,
            2,
            3,
            4,
        ],
        dtype=np.uint64,
    )
    series = one_series([("a", "b")], ts, bits.view(np.float64))
    assert [s.timestamp for s in series.samples] == ts.tolist()
    assert np.array([s.value for s in series.samples]).view(np.uint64).tolist() == bits.tolist()


def test_empty_answers_are_valid_messages() -> None:
    assert len(decoded(read_response([query_result_fields([])] * 3)).results) == 3
    series = one_series([("a", "b")], np.zeros(0, dtype=np.int64), np.zeros(0))
    assert [(label.name, label.value) for label in series.labels] == [("a", "b")]
    assert list(series.samples) == []


def test_varint_matches_protobuf() -> None:
    for n in (1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 2**32, 2**63 - 1):
        assert b"\x10" + uvarint(n) == types_pb2.Sample(timestamp=n).SerializeToString()


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=70), st.text(max_size=140)), max_size=5))
def test_label_fields_are_the_bytes_protobuf_writes(labels: list[tuple[str, str]]) -> None:
    """Empty names and values, lengths on either side of one varint byte, any code point."""
    want = types_pb2.TimeSeries(labels=[types_pb2.Label(name=n, value=v) for n, v in labels])
    assert label_fields(labels) == want.SerializeToString()


def test_label_fields_stay_right_past_the_kept_pairs() -> None:
    """More distinct pairs than are kept: the kept ones are dropped, none is answered
    wrong, and what is kept stays bounded."""
    series = [
        [("__name__", "up"), ("instance", f"host-{i}"), ("job", "node")]
        for i in range(PAIR_FIELDS_KEPT * 2 + 7)
    ]
    for _ in range(2):  # the second pass finds some pairs kept, encodes the rest again
        for labels in series:
            want = types_pb2.TimeSeries(
                labels=[types_pb2.Label(name=n, value=v) for n, v in labels]
            )
            assert label_fields(labels) == want.SerializeToString()
            assert len(samples_response._PAIR_FIELDS) <= PAIR_FIELDS_KEPT


def test_long_label_pairs_are_written_but_not_kept() -> None:
    labels = [("__name__", "up"), ("url", "x" * 200)]
    want = types_pb2.TimeSeries(labels=[types_pb2.Label(name=n, value=v) for n, v in labels])
    assert label_fields(labels) == want.SerializeToString()
    assert ("url", "x" * 200) not in samples_response._PAIR_FIELDS
    assert ("__name__", "up") in samples_response._PAIR_FIELDS
