"""querier/histogram_chunk.py: Prometheus's HISTOGRAM and FLOAT_HISTOGRAM chunks both ways."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto.write_v2_pb2 import BucketSpan, Histogram
from querier.histogram_chunk import (
    FLOAT_HISTOGRAM,
    HISTOGRAM,
    STALE_NAN_BITS,
    CounterResetHeader,
    decode_histogram_chunk,
    encode_histogram_chunk,
    encode_histogram_chunks,
)
from querier.xor_chunk import CorruptChunk

UNKNOWN = CounterResetHeader.UNKNOWN
RESET = CounterResetHeader.COUNTER_RESET
NOT_RESET = CounterResetHeader.NOT_COUNTER_RESET
GAUGE = CounterResetHeader.GAUGE
INT64 = st.integers(-(2**63), 2**63 - 1)
# The edges of every varbit bucket (±2**(n-1) and one past), so each width is hit.
VARBIT_EDGES = st.sampled_from(
    [v for n in (3, 6, 9, 12, 18, 25, 56) for e in (2 ** (n - 1),) for v in (e, e + 1, -e + 1, -e)]
)
SMALL_OR_EDGE = st.one_of(st.integers(-40, 40), VARBIT_EDGES, INT64)
TIMESTAMPS = st.lists(INT64, min_size=1, max_size=12, unique=True).map(sorted)


def from_bits(bits: int) -> float:
    """The float64 with these bits."""
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


def bits_of(value: float) -> int:
    """A float64's bit pattern."""
    out: int = struct.unpack("<Q", struct.pack("<d", value))[0]
    return out


STALE = from_bits(STALE_NAN_BITS)
FLOAT_BITS = st.one_of(
    st.integers(0, 2**64 - 1).map(from_bits),
    st.sampled_from([0.0, -0.0, 1.0, 0.25, math.inf, -math.inf, from_bits(0x7FF8000000000001)]),
)
THRESHOLDS = st.one_of(
    st.sampled_from([0.0, -0.0, 2.0**-128, 2.0**-243, 2.0**10, 2.0**11, 2.0**-244, 0.001]),
    FLOAT_BITS,
)
CUSTOM_BOUNDS = st.one_of(
    st.sampled_from([0.0, -0.0, 0.001, 0.5, 1.0, 33554.43, 33554.431, -1.0, math.inf]),
    FLOAT_BITS,
)
SPANS = st.lists(st.tuples(st.integers(-(2**31), 2**31 - 1), st.integers(0, 4)), max_size=4).map(
    lambda spans: [BucketSpan(offset=o, length=n) for o, n in spans]
)


@st.composite
def chunk_samples(draw: st.DrawFn) -> tuple[list[tuple[int, Histogram]], bool]:
    """Samples of one chunk: one layout, any values, maybe stale ones at the end."""
    is_float = draw(st.booleans())
    schema = draw(st.sampled_from([*range(-4, 9), -53]))
    layout = Histogram(
        schema=schema,
        zero_threshold=draw(THRESHOLDS),
        positive_spans=draw(SPANS),
        negative_spans=draw(SPANS),
    )
    if schema == -53:
        layout.custom_values.extend(draw(st.lists(CUSTOM_BOUNDS, max_size=5)))
    n_pos = sum(s.length for s in layout.positive_spans)
    n_neg = sum(s.length for s in layout.negative_spans)
    timestamps = draw(TIMESTAMPS)
    stale_from = draw(st.integers(0, len(timestamps)))
    out = []
    for i, t in enumerate(timestamps):
        h = Histogram()
        if i >= stale_from:
            h.sum = STALE
        else:
            h.CopyFrom(layout)
            h.sum = draw(FLOAT_BITS)
            if is_float:
                h.count_float, h.zero_count_float = draw(FLOAT_BITS), draw(FLOAT_BITS)
                h.positive_counts.extend(draw(st.lists(FLOAT_BITS, min_size=n_pos, max_size=n_pos)))
                h.negative_counts.extend(draw(st.lists(FLOAT_BITS, min_size=n_neg, max_size=n_neg)))
            else:
                h.count_int = draw(st.integers(0, 2**64 - 1))
                h.zero_count_int = draw(st.integers(0, 2**64 - 1))
                h.positive_deltas.extend(
                    draw(st.lists(SMALL_OR_EDGE, min_size=n_pos, max_size=n_pos))
                )
                h.negative_deltas.extend(
                    draw(st.lists(SMALL_OR_EDGE, min_size=n_neg, max_size=n_neg))
                )
        if is_float and i >= stale_from:
            h.count_float = 0.0  # a stale float sample still says "float"
        out.append((t, h))
    return out, is_float


def as_chunk_returns(t: int, h: Histogram, i: int, header: CounterResetHeader) -> Histogram:
    """What decoding gives for sample i: the chunk's own rules on thresholds, custom bounds,
    hints and staleness; everything else bit for bit."""
    out = Histogram(sum=h.sum, timestamp=t)
    is_float = h.WhichOneof("count") == "count_float"
    if bits_of(h.sum) == STALE_NAN_BITS:
        if is_float:
            out.count_float, out.zero_count_float = 0.0, 0.0
        else:
            out.count_int, out.zero_count_int = 0, 0
        return out
    out.CopyFrom(h)
    out.timestamp = t
    out.ClearField("start_timestamp")
    if h.zero_threshold == 0:  # -0.0 too: one zero byte
        out.zero_threshold = 0.0
    if h.schema != -53:
        out.ClearField("custom_values")
    else:
        out.ClearField("custom_values")
        out.custom_values.extend(0.0 if v == 0 else v for v in h.custom_values)
    if header == GAUGE:
        out.reset_hint = Histogram.RESET_HINT_GAUGE
    elif i > 0:
        out.reset_hint = Histogram.RESET_HINT_NO
    elif header == RESET:
        out.reset_hint = Histogram.RESET_HINT_YES
    else:
        out.reset_hint = Histogram.RESET_HINT_UNSPECIFIED
    if is_float:
        out.count_float, out.zero_count_float = h.count_float, h.zero_count_float
    return out


def serialized(samples: list[tuple[int, Histogram]]) -> list[tuple[int, bytes]]:
    return [(t, h.SerializeToString()) for t, h in samples]


@settings(max_examples=300, deadline=None)
@given(chunk_samples(), st.sampled_from(list(CounterResetHeader)))
def test_one_chunk_roundtrips_bit_exact(
    drawn: tuple[list[tuple[int, Histogram]], bool], header: CounterResetHeader
) -> None:
    samples, is_float = drawn
    chunk = encode_histogram_chunk(serialized(samples), header)
    assert chunk.encoding == (FLOAT_HISTOGRAM if is_float else HISTOGRAM)
    assert (chunk.mint, chunk.maxt) == (samples[0][0], samples[-1][0])
    decoded = decode_histogram_chunk(chunk.data, chunk.encoding)
    assert decoded.header == header
    assert len(decoded.samples) == len(samples)
    for i, ((t, h), (got_t, got)) in enumerate(zip(samples, decoded.samples, strict=True)):
        assert got_t == t
        expected = as_chunk_returns(t, h, i, header)
        assert got == expected.SerializeToString(deterministic=True)
    # Decoded samples encode to the very same bytes: nothing was lost that the format holds.
    assert encode_histogram_chunk(decoded.samples, decoded.header).data == chunk.data


def prometheus_vector(hex_text: str) -> bytes:
    return bytes.fromhex("".join(hex_text.split()))


# Chunks Prometheus 2.42 wrote, taken from tests/e2e/test_prometheus_histogram_chunks.py.
# Integer, schema 3: a chunk widened twice (a positive bucket at its 4th sample, a negative
# one at its 7th), 10 samples, 7-digit bucket counts.
PROMETHEUS_INT_WIDENED = prometheus_vector(
    """
    000a00749ce48ca328c6dfc00034425d154d7f81e848a4136e367800000008aff81e8486e327e07a124cf4efc00034
    3333333631b7e07a121845f27e8800000000c2a0f93fabffffffc617766f10a7f244aaaaaa93794449edb6dbcccccc
    d02d87414b64ccccccccc30f1dd205c8e3eaaaaaaa1ba10f5cae1ffffffc008291c91aaaaaab80
    """
)
# Integer, schema 2, zero threshold 0.001 (8 raw bytes in the layout), 5 samples.
PROMETHEUS_INT_RAW_THRESHOLD = prometheus_vector(
    """
    000500ff3f50624dd2f1a9fc94e48ca328c6dfc00034425d16479f94fb26d9e416f78ba60000000c5e2b6ff94fb1ab
    8be31fe07a125cf5e9e522e5999999b18dff03d090a323765d92fbd55555482c6dcb4fe487ffffff044df8dc8ec6aa
    aaaac0
    """
)
# Float, schema -2, a bucket appearing at the 6th of 20 samples.
PROMETHEUS_FLOAT = prometheus_vector(
    """
    00140074b4a558cdfc00034425d154d680040000000000007fc0000000000001800c0000000000007fa00000000000
    007ff00000000000000000000000000001c64d60f583d60f505e12fff9b049d80f50fb7603d6269a86e7099fff0dd6
    1729b449da0e37b41c68ec0eec0b9b6c0bd427e22ffedb591c33b84f9da1fda0e30eeb0fed16b84dfffec137587d19
    ee07b06ef7038f70342bb42e37685cbb42d37ccbceb1bd946bb03fa49fdec0fc2ec0fc6138ef12e3071b6927f33dc2
    d671b38ef16f1da37f1878b70d6ea17f2bac4f9dc277fff1da3f3de0e2f78383de0ed15dc17b07fbb82e17705c67f3
    1798f9457687e1bb43f0bb43e0
    """
)
# A chunk holding only a staleness marker, with Prometheus's padding byte at the end.
PROMETHEUS_STALE = prometheus_vector("000100001fc00034425d170f83ff80000000000010")


@pytest.mark.parametrize(
    ("data", "encoding", "count", "first", "last"),
    [
        (
            PROMETHEUS_INT_WIDENED,
            HISTOGRAM,
            10,
            Histogram(count_int=1_000_005, sum=1_500_007.5, positive_deltas=[1, 0, -1, 1_000_003]),
            Histogram(count_int=10_000_107, zero_count_int=27, negative_deltas=[10]),
        ),
        (
            PROMETHEUS_INT_RAW_THRESHOLD,
            HISTOGRAM,
            5,
            Histogram(count_int=11_000_118, zero_threshold=0.001, schema=2),
            Histogram(count_int=15_000_162, sum=22_500_245.4, zero_count_int=42),
        ),
        (
            PROMETHEUS_FLOAT,
            FLOAT_HISTOGRAM,
            20,
            Histogram(count_float=2.25, sum=-2.75, positive_counts=[0.25, 1.5, 0.0]),
            Histogram(count_float=47.5, zero_count_float=10.0, positive_counts=[5.0, 30.0, 2.5]),
        ),
        (PROMETHEUS_STALE, HISTOGRAM, 1, Histogram(count_int=0, sum=STALE), None),
    ],
    ids=["int-widened", "int-raw-threshold", "float", "stale"],
)
def test_prometheus_chunks_decode_and_reencode(
    data: bytes, encoding: int, count: int, first: Histogram, last: Histogram | None
) -> None:
    assert len(data) in (133, 97, 248, 21)
    decoded = decode_histogram_chunk(data, encoding)
    assert decoded.header == UNKNOWN
    assert len(decoded.samples) == count
    for (_, got), expected in ((decoded.samples[0], first), (decoded.samples[-1], last)):
        if expected is None:
            continue
        message = Histogram.FromString(got)
        for descriptor, expected_value in expected.ListFields():
            got_value = getattr(message, descriptor.name)
            if isinstance(expected_value, float):
                assert bits_of(got_value) == bits_of(expected_value), descriptor.name
            else:
                assert (
                    list(got_value) == list(expected_value)
                    if isinstance(expected_value, Sequence)
                    else got_value == expected_value
                ), descriptor.name
    assert encode_histogram_chunk(decoded.samples, decoded.header).data == data
    steps = [t for t, _ in decoded.samples]
    assert steps == sorted(set(steps))


def counter(t: int, buckets: dict[int, int], hint: int = 0) -> tuple[int, bytes]:
    """An integer counter histogram with these absolute bucket counts (schema 0)."""
    h = Histogram(count_int=sum(buckets.values()), schema=0, zero_threshold=2.0**-128)
    h.reset_hint = hint  # type: ignore[assignment]
    previous = at = 0
    for i in sorted(buckets):
        if h.positive_spans and i == at:
            h.positive_spans[-1].length += 1
        else:
            h.positive_spans.add(offset=i - at, length=1)
        at = i + 1
        h.positive_deltas.append(buckets[i] - previous)
        previous = buckets[i]
    h.sum = float(t)
    return t, h.SerializeToString()


def decoded_all(chunks: list[tuple[int, bytes]]) -> list[tuple[int, Histogram]]:
    return [(t, Histogram.FromString(d)) for t, d in chunks]


def headers_and_sizes(samples: list[tuple[int, bytes]], **kwargs: int) -> list[tuple[str, int]]:
    """(header name, samples) of each chunk encode_histogram_chunks cuts."""
    out = []
    for chunk in encode_histogram_chunks(samples, **kwargs):
        decoded = decode_histogram_chunk(chunk.data, chunk.encoding)
        out.append((decoded.header.name, len(decoded.samples)))
    return out


def test_new_buckets_widen_the_open_chunk() -> None:
    samples = [counter(1, {0: 1}), counter(2, {0: 2, 3: 1}), counter(3, {-1: 1, 0: 2, 3: 1})]
    [chunk] = encode_histogram_chunks(samples)
    decoded = decode_histogram_chunk(chunk.data, chunk.encoding).samples
    first = Histogram.FromString(decoded[0][1])
    # The first sample now has the last one's layout, with empty buckets where it had none.
    assert [(s.offset, s.length) for s in first.positive_spans] == [(-1, 2), (2, 1)]
    assert list(first.positive_deltas) == [0, 1, -1]


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (counter(2, {0: 1}), [("UNKNOWN", 1), ("COUNTER_RESET", 1)]),  # a bucket vanished
        (counter(2, {0: 0, 2: 4}), [("UNKNOWN", 1), ("COUNTER_RESET", 1)]),  # count dropped
        (counter(2, {0: 9, 2: 9}, hint=1), [("UNKNOWN", 1), ("COUNTER_RESET", 1)]),  # said so
        (counter(2, {0: 9, 2: 9}, hint=3), [("UNKNOWN", 1), ("GAUGE", 1)]),  # now a gauge
        (counter(2, {0: 9, 2: 9}), [("UNKNOWN", 2)]),
    ],
    ids=["vanished-bucket", "bucket-drop", "reset-hint", "gauge", "appendable"],
)
def test_chunks_are_cut_where_prometheus_cuts(
    second: tuple[int, bytes], expected: list[tuple[str, int]]
) -> None:
    assert headers_and_sizes([counter(1, {0: 1, 2: 3}), second]) == expected


def test_layout_change_stale_and_size_cut_chunks() -> None:
    _, data = counter(3, {0: 5})
    other_schema = Histogram.FromString(data)
    other_schema.schema = 1
    stale = Histogram(count_int=0, sum=STALE)
    samples = [
        counter(1, {0: 1}),
        counter(2, {0: 2}),
        (3, other_schema.SerializeToString()),
        (4, stale.SerializeToString()),
        (5, stale.SerializeToString()),
        counter(6, {0: 1}),
        counter(7, {0: 2}),
        counter(8, {0: 3}),
    ]
    assert headers_and_sizes(samples, max_samples=2) == [
        ("UNKNOWN", 2),  # then the schema changes
        ("UNKNOWN", 2),  # the new schema and a staleness marker
        ("NOT_COUNTER_RESET", 1),  # the size cut: the second marker would have fit
        ("UNKNOWN", 2),  # after staleness
        ("NOT_COUNTER_RESET", 1),
    ]


def test_gauge_chunk_takes_the_union_of_layouts() -> None:
    gauge = 3
    samples = [counter(1, {0: 4, 1: 2}, gauge), counter(2, {1: 1, 5: 2}, gauge)]
    [chunk] = encode_histogram_chunks(samples)
    decoded = decoded_all(decode_histogram_chunk(chunk.data, chunk.encoding).samples)
    spans = [(s.offset, s.length) for s in decoded[1][1].positive_spans]
    assert spans == [(0, 2), (3, 1)]
    assert [list(h.positive_deltas) for _, h in decoded] == [[4, -2, -2], [0, 1, 1]]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.integers(-6, 6), st.integers(1, 5), max_size=5),
            st.booleans(),
        ),
        min_size=1,
        max_size=30,
    ),
    st.integers(1, 8),
)
def test_cut_chunks_hold_the_series(
    steps: list[tuple[dict[int, int], bool]], max_samples: int
) -> None:
    # A counter that grows, restarts now and then, gains and loses buckets.
    samples = []
    totals: dict[int, int] = {}
    for t, (increase, restart) in enumerate(steps):
        totals = (
            dict(increase)
            if restart
            else {i: totals.get(i, 0) + increase.get(i, 0) for i in {*totals, *increase}}
        )
        samples.append(counter(t, totals))
    chunks = encode_histogram_chunks(samples, max_samples=max_samples)
    decoded: list[tuple[int, Histogram]] = []
    for chunk in chunks:
        got = decode_histogram_chunk(chunk.data, chunk.encoding)
        assert 1 <= len(got.samples) <= max_samples
        assert (chunk.mint, chunk.maxt) == (got.samples[0][0], got.samples[-1][0])
        decoded.extend(decoded_all(got.samples))
        # Within a chunk counts never drop: that is what its header promises.
        counts = [h.count_int for _, h in decoded_all(got.samples)]
        assert counts == sorted(counts)
    assert [t for t, _ in decoded] == list(range(len(steps)))
    for (_, h), (_, data) in zip(decoded, samples, strict=True):
        assert bucket_counts(h) == bucket_counts(Histogram.FromString(data))
        assert h.count_int == Histogram.FromString(data).count_int


def bucket_counts(h: Histogram) -> dict[int, int]:
    """Absolute count by bucket index, empty buckets left out."""
    out = {}
    at = running = 0
    deltas = iter(h.positive_deltas)
    for span in h.positive_spans:
        at += span.offset
        for i in range(at, at + span.length):
            running += next(deltas)
            if running:
                out[i] = running
        at += span.length
    return out


def test_refuses_what_no_chunk_holds() -> None:
    with pytest.raises(ValueError, match="increasing"):
        encode_histogram_chunk([counter(2, {0: 1}), counter(2, {0: 1})])
    with pytest.raises(ValueError, match="other buckets"):
        encode_histogram_chunk([counter(1, {0: 1}), counter(2, {0: 1, 1: 1})])
    with pytest.raises(ValueError, match="stale"):
        encode_histogram_chunk([(1, Histogram(sum=STALE).SerializeToString()), counter(2, {})])
    with pytest.raises(ValueError, match="not both"):
        encode_histogram_chunk([counter(1, {}), (2, Histogram(count_float=1).SerializeToString())])
    bad = Histogram(count_int=2, positive_deltas=[1, 0])
    bad.positive_spans.add(offset=0, length=1)
    bad.positive_spans.add(offset=-1, length=1)
    with pytest.raises(ValueError, match="negative offset"):
        encode_histogram_chunks([(1, bad.SerializeToString())])
    with pytest.raises(ValueError, match="encoding"):
        decode_histogram_chunk(PROMETHEUS_STALE, 1)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [(PROMETHEUS_INT_WIDENED, HISTOGRAM), (PROMETHEUS_FLOAT, FLOAT_HISTOGRAM)],
    ids=["int", "float"],
)
def test_truncated_chunks_raise_corrupt_chunk(data: bytes, encoding: int) -> None:
    for cut in (2, 5, len(data) // 2, len(data) - 3):
        with pytest.raises(CorruptChunk):
            decode_histogram_chunk(data[:cut], encoding)


# A plain restatement of the varbit table of docs/remote-read.md#histogram-chunks, one
# character a bit, to check the encoder's first sample field by field.
VARBIT_TABLE = [(3, "10"), (6, "110"), (9, "1110"), (12, "11110"), (18, "111110")]
VARBIT_TABLE += [(25, "1111110"), (56, "11111110")]


def varbit_text(value: int, signed: bool) -> str:
    if value == 0:
        return "0"
    for width, prefix in VARBIT_TABLE:
        low, high = (-(2 ** (width - 1)) + 1, 2 ** (width - 1)) if signed else (0, 2**width - 1)
        if low <= value <= high:
            return prefix + format(value % 2**width, f"0{width}b")
    return "11111111" + format(value % 2**64, "064b")


@given(
    st.lists(SMALL_OR_EDGE, min_size=1, max_size=6),
    INT64,
    st.integers(0, 2**64 - 1),
    st.one_of(VARBIT_EDGES.filter(lambda v: v >= 0), st.integers(0, 2**64 - 1)),
)
def test_first_sample_fields_follow_the_varbit_table(
    deltas: list[int], t: int, count: int, zero_count: int
) -> None:
    h = Histogram(count_int=count, zero_count_int=zero_count, sum=0.5, schema=-4)
    h.positive_spans.add(offset=-3, length=len(deltas))
    h.positive_deltas.extend(deltas)
    chunk = encode_histogram_chunk([(t, h.SerializeToString())])
    # Zero threshold 0 (one zero byte), schema, one positive span, no negative span.
    layout = "00000000" + varbit_text(-4, True) + varbit_text(1, False)
    layout += varbit_text(len(deltas), False) + varbit_text(-3, True) + "0"
    fields = varbit_text(t, True) + varbit_text(count, False) + varbit_text(zero_count, False)
    fields += format(bits_of(0.5), "064b") + "".join(varbit_text(d, True) for d in deltas)
    bits = layout + fields
    expected = (int(bits, 2) << (-len(bits) % 8)).to_bytes((len(bits) + 7) // 8, "big")
    body = chunk.data[3:]
    assert chunk.data[:3] == b"\x00\x01\x00"
    assert body[: len(expected)] == expected
    assert body[len(expected) :] in (b"", b"\0")  # Prometheus's padding byte, sometimes


def xor_text(new: int, window: list[int]) -> str:
    """Gorilla's value field against window = [previous bits, leading, trailing], leading
    -1 before the first window opens; restated one character a bit."""
    delta = new ^ window[0]
    window[0] = new
    if delta == 0:
        return "0"
    text = format(delta, "064b")
    leading = min(len(text) - len(text.lstrip("0")), 31)
    trailing = len(text) - len(text.rstrip("0"))
    if window[1] >= 0 and leading >= window[1] and trailing >= window[2]:
        return "10" + text[window[1] : 64 - window[2]]
    window[1], window[2] = leading, trailing
    width = 64 - leading - trailing
    return "11" + format(leading, "05b") + format(width % 64, "06b") + text[leading : 64 - trailing]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(FLOAT_BITS, FLOAT_BITS, FLOAT_BITS), min_size=2, max_size=8), TIMESTAMPS)
def test_float_fields_follow_gorilla_rules(
    values: list[tuple[float, float, float]], timestamps: list[int]
) -> None:
    samples = []
    for t, (count, zero, total) in zip(timestamps, values, strict=False):
        if bits_of(total) == STALE_NAN_BITS:
            total = 1.0
        h = Histogram(count_float=count, zero_count_float=zero, sum=total)
        samples.append((t, h))
    chunk = encode_histogram_chunk(serialized(samples))
    windows: list[list[int]] = []
    bits = "00000000" + "0" + "0" + "0"  # zero threshold 0, schema 0, no spans either side
    previous_delta = 0
    for i, (t, h) in enumerate(samples):
        fields = [bits_of(h.count_float), bits_of(h.zero_count_float), bits_of(h.sum)]
        if i == 0:
            bits += varbit_text(t, True) + "".join(format(f, "064b") for f in fields)
            windows = [[f, -1, -1] for f in fields]
            continue
        delta = t - samples[i - 1][0]
        bits += varbit_text(delta - previous_delta, True)
        previous_delta = delta
        bits += "".join(xor_text(f, w) for f, w in zip(fields, windows, strict=True))
    expected = (int(bits, 2) << (-len(bits) % 8)).to_bytes((len(bits) + 7) // 8, "big")
    assert chunk.data[3 : 3 + len(expected)] == expected
    assert chunk.data[3 + len(expected) :] in (b"", b"\0")
