"""Prometheus XOR chunks: bit-exact round trips, Prometheus's own bytes, chunk boundaries.

The vectorized encoder is checked against a plain bit-by-bit restatement of the layout
(`reference_chunk`) and against chunks a real Prometheus 2.42 wrote
(tests/e2e/test_prometheus_xor_chunks.py checks many more against a live one).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from querier.xor_chunk import (
    MAX_CHUNK_SAMPLES,
    SAMPLES_PER_CHUNK,
    CorruptChunk,
    decode_xor_chunk,
    encode_xor_chunk,
    encode_xor_chunks,
    encode_xor_series,
)
from tests.support.values import STALE_NAN

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MASK64 = 2**64 - 1
SPECIAL_BITS = (
    STALE_NAN,
    0x7FF8000000000001,  # Go's math.NaN()
    0x7FF8000000000000,
    0xFFF8000000000000,
    0x7FF0000000000001,
    0xFFFFFFFFFFFFFFFF,
    0x7FF0000000000000,  # +Inf
    0xFFF0000000000000,  # -Inf
    0x8000000000000000,  # -0.0
    0x0000000000000000,
    0x0000000000000001,
    0x000FFFFFFFFFFFFF,
    0x7FEFFFFFFFFFFFFF,
    0x3FF0000000000000,  # 1.0
    0x3FF0000000000001,  # next after 1.0: XOR of one bit, leading zeros clamped
)


def as_values(bits: Sequence[int]) -> npt.NDArray[np.float64]:
    """float64 values with exactly these bit patterns."""
    return np.array(bits, dtype=np.uint64).view(np.float64)


class ReferenceStream:
    """A bit stream written the way Prometheus's appender calls its writer: a field is
    its whole bytes, then its remaining bits one by one. A whole byte written on a byte
    boundary opens the next byte, which stays (empty) in the output if nothing follows."""

    def __init__(self) -> None:
        self.bits: list[int] = []
        self.open_byte = False

    def bit(self, b: int) -> None:
        self.bits.append(b)
        self.open_byte = False

    def byte(self, b: int) -> None:
        self.bits.extend((b >> i) & 1 for i in range(7, -1, -1))
        self.open_byte = len(self.bits) % 8 == 0

    def write(self, value: int, nbits: int) -> None:
        rest = nbits % 8
        for shift in range(nbits - 8, rest - 1, -8):
            self.byte((value >> shift) & 0xFF)
        for shift in range(rest - 1, -1, -1):
            self.bit((value >> shift) & 1)

    def varint(self, n: int) -> None:
        while n > 0x7F:
            self.byte((n & 0x7F) | 0x80)
            n >>= 7
        self.byte(n)

    def tobytes(self) -> bytes:
        padded = self.bits + [0] * (-len(self.bits) % 8)
        data = bytes(int("".join(map(str, padded[i : i + 8])), 2) for i in range(0, len(padded), 8))
        return data + (b"\0" if self.open_byte else b"")


def reference_chunk(ts: Sequence[int], bits: Sequence[int]) -> bytes:
    """One XOR chunk, field by field as docs/remote-read.md describes it."""
    out = ReferenceStream()
    out.varint(2 * ts[0] if ts[0] >= 0 else -2 * ts[0] - 1)
    out.write(bits[0], 64)
    window: tuple[int, int] | None = None
    for i in range(1, len(ts)):
        delta = (ts[i] - ts[i - 1]) & MASK64
        if i == 1:
            out.varint(delta)
        else:
            reference_dod(out, (delta - ts[i - 1] + ts[i - 2]) & MASK64)
        xor = bits[i] ^ bits[i - 1]
        if xor == 0:
            out.bit(0)
            continue
        out.bit(1)
        leading = min(64 - xor.bit_length(), 31)
        trailing = (xor & -xor).bit_length() - 1
        if window is not None and leading >= window[0] and trailing >= window[1]:
            out.bit(0)
            out.write(xor >> window[1], 64 - window[0] - window[1])
        else:
            window = (leading, trailing)
            out.bit(1)
            out.write(leading, 5)
            out.write((64 - leading - trailing) % 64, 6)
            out.write(xor >> trailing, 64 - leading - trailing)
    return len(ts).to_bytes(2, "big") + out.tobytes()


def reference_dod(out: ReferenceStream, dod: int) -> None:
    """A delta of deltas (given modulo 2**64) in the smallest bucket that holds it."""
    signed = dod - 2**64 if dod >> 63 else dod
    if signed == 0:
        out.bit(0)
        return
    for width, prefix, prefix_bits in ((14, 0b10, 2), (17, 0b110, 3), (20, 0b1110, 4)):
        if -(2 ** (width - 1)) < signed <= 2 ** (width - 1):
            out.write(prefix, prefix_bits)
            out.write(dod & (2**width - 1), width)
            return
    out.write(0b1111, 4)
    out.write(dod, 64)


def assert_round_trip(
    ts: npt.NDArray[np.int64], bits: npt.NDArray[np.uint64], max_samples: int
) -> None:
    """encode_xor_chunks -> decode gives back every sample bit for bit, cut as asked."""
    chunks = encode_xor_chunks(ts, bits.view(np.float64), max_samples)
    assert len(chunks) == -(-len(ts) // max_samples)
    at = 0
    for mint, maxt, data in chunks:
        n = min(max_samples, len(ts) - at)
        got_ts, got_values = decode_xor_chunk(data)
        assert got_ts.dtype == np.int64
        assert got_values.dtype == np.float64
        np.testing.assert_array_equal(got_ts, ts[at : at + n])
        np.testing.assert_array_equal(got_values.view(np.uint64), bits[at : at + n])
        assert (mint, maxt) == (ts[at], ts[at + n - 1])
        assert data == reference_chunk(ts[at : at + n].tolist(), bits[at : at + n].tolist())
        at += n
    assert at == len(ts)


# Chunks a real Prometheus 2.42 returned over remote read for these samples (pushed
# through its remote-write receiver): every dod bucket, a wide dod, a clamped window,
# the staleness marker, negative timestamps, and a chunk that ends in a padding byte.
PROMETHEUS_CHUNKS = (
    (
        [500, 1500, 2500, 2501, 10695, 84426, 758157, 1423696],
        [0x3FF0000000000000, 0x3FF0000000000000, 0x4000000000000000, 0x4008000000000000,
         0x4008000000000001, STALE_NAN, 0x8000000000000000, 0x7FF0000000000000],
        "0008e8073ff0000000000000e8073097ffef067603c2001ff080000000784000717dffc0000000"
        "00001f80000000000493e060ffffc000000000000ef0005ffe00000000000000",
    ),
    (
        [-600000, -585000, -570000],
        [0x3FF8000000000000, 0x3FF8AB0000000000, 0x3FF8660000000000],
        "0003ff9e493ff80000000000009875e0455acd00",
    ),
    (
        [-1199999, -1000000, -999999, -999998],
        [0x7FF8000000000001, 0xFFF8000000000000, 0x0000000000000001, 0xFFFFFFFFFFFFFFFF],
        "0004fdbd92017ff8000000000001bf9a0cc004000000000000000f679615fff0000000000002bf"
        "ffffffffffffff80",
    ),
    ([7], [STALE_NAN], "00010e7ff000000000000200"),
)  # fmt: skip


@pytest.mark.parametrize(("ts", "bits", "data"), PROMETHEUS_CHUNKS)
def test_encoder_writes_prometheus_bytes(ts: list[int], bits: list[int], data: str) -> None:
    assert encode_xor_chunk(np.array(ts), as_values(bits)).hex() == data
    assert reference_chunk(ts, bits).hex() == data


@pytest.mark.parametrize(("ts", "bits", "data"), PROMETHEUS_CHUNKS)
def test_decoder_reads_prometheus_bytes(ts: list[int], bits: list[int], data: str) -> None:
    got_ts, got_values = decode_xor_chunk(bytes.fromhex(data))
    assert got_ts.tolist() == ts
    assert got_values.view(np.uint64).tolist() == bits


sorted_timestamps = st.lists(
    st.integers(INT64_MIN, INT64_MAX) | st.integers(-(10**13), 10**13), max_size=400
).map(lambda xs: np.unique(np.array(xs, dtype=np.int64)))
regular_timestamps = st.tuples(
    st.integers(-(10**13), 10**13),
    st.lists(st.integers(1, 30_000) | st.sampled_from([15_000, 15_001]), max_size=400),
).map(lambda a: a[0] + np.cumsum(np.array([0, *a[1]], dtype=np.int64)))
value_bits = st.integers(0, MASK64) | st.sampled_from(SPECIAL_BITS)


@settings(deadline=None, max_examples=150)
@given(
    data=st.data(),
    ts=sorted_timestamps | regular_timestamps,
    max_samples=st.integers(1, 200) | st.just(SAMPLES_PER_CHUNK),
)
def test_any_series_round_trips_bit_exact(
    data: st.DataObject, ts: npt.NDArray[np.int64], max_samples: int
) -> None:
    bits = data.draw(
        st.lists(value_bits, min_size=len(ts), max_size=len(ts))
        | st.lists(st.sampled_from(SPECIAL_BITS[:4]), min_size=len(ts), max_size=len(ts))
    )
    assert_round_trip(ts, np.array(bits, dtype=np.uint64), max_samples)


@settings(deadline=None, max_examples=150)
@given(data=st.data(), ts=sorted_timestamps | regular_timestamps)
def test_chunks_without_reused_windows_decode_to_the_same_samples(
    data: st.DataObject, ts: npt.NDArray[np.int64]
) -> None:
    """reuse_windows=False: every changed value opens its own window. Other bytes than
    Prometheus's (where a value fits the last window), the same samples back."""
    bits = np.array(
        data.draw(st.lists(value_bits, min_size=len(ts), max_size=len(ts))), dtype=np.uint64
    )
    [chunks] = encode_xor_series([(ts, bits.view(np.float64))], reuse_windows=False)
    [exact] = encode_xor_series([(ts, bits.view(np.float64))])
    at = 0
    assert len(chunks) == len(exact)
    for mint, maxt, got in chunks:
        got_ts, got_values = decode_xor_chunk(got)
        n = len(got_ts)
        np.testing.assert_array_equal(got_ts, ts[at : at + n])
        np.testing.assert_array_equal(got_values.view(np.uint64), bits[at : at + n])
        assert (mint, maxt) == (ts[at], ts[at + n - 1])
        at += n
    assert at == len(ts)


def test_without_reused_windows_a_value_that_fits_opens_one_anyway() -> None:
    ts = np.arange(3, dtype=np.int64) * 1000
    values = np.array([1.0, 3.0, 1.0])  # the second XOR is the first: it fits its window
    [[(_, _, exact)]] = encode_xor_series([(ts, values)])
    [[(_, _, fresh)]] = encode_xor_series([(ts, values)], reuse_windows=False)
    assert exact == reference_chunk(ts.tolist(), values.view(np.uint64).tolist())
    assert fresh != exact
    np.testing.assert_array_equal(decode_xor_chunk(fresh)[1], values)


def long_series(kind: str, n: int, rng: np.random.Generator) -> npt.NDArray[np.uint64]:
    """Value bits of a few typical shapes of series."""
    if kind == "counter":
        return np.cumsum(rng.integers(0, 1_000, n)).astype(np.float64).view(np.uint64)
    if kind == "gauge":
        return np.round(rng.normal(50.0, 10.0, n), 2).view(np.uint64)
    if kind == "special":
        return rng.choice(np.array(SPECIAL_BITS, dtype=np.uint64), n)
    return rng.integers(0, 2**64, n, dtype=np.uint64)


@pytest.mark.parametrize("kind", ["counter", "gauge", "special", "random"])
def test_long_series_match_the_reference(kind: str) -> None:
    """Thousands of samples, so that windows, chunk cuts and all buckets mix."""
    rng = np.random.default_rng(sum(map(ord, kind)))
    n = 3_000
    deltas = np.where(rng.random(n) < 0.9, 15_000, rng.integers(1, 2**22, n))
    ts = (-(10**12) + np.cumsum(deltas)).astype(np.int64)
    bits = long_series(kind, n, rng)
    for max_samples in (SAMPLES_PER_CHUNK, 1_000):
        assert_round_trip(ts, bits, max_samples)


@settings(deadline=None, max_examples=60)
@given(
    deltas=st.lists(
        st.sampled_from(
            [0, 1, -1, 8191, 8192, 8193, -8191, -8192, -8193, 65535, 65536, 65537, -65535,
             -65536, -65537, 2**19 - 1, 2**19, 2**19 + 1, -(2**19) + 1, -(2**19), 2**40,
             -(2**40)]
        ),
        max_size=60,
    )
)  # fmt: skip
def test_delta_of_delta_bucket_edges_round_trip(deltas: list[int]) -> None:
    """Every bucket's edges, where -2**(n-1) belongs to the next bucket up."""
    dods = np.array(deltas, dtype=np.int64)
    step = 2**47 + np.cumsum(dods)  # deltas stay positive: timestamps increase
    ts = np.cumsum(np.append([-(2**50)], step)).astype(np.int64)
    bits = np.arange(len(ts), dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    assert_round_trip(ts, bits, SAMPLES_PER_CHUNK)


def test_extreme_timestamps_round_trip() -> None:
    """Deltas that overflow int64 and dods that need all 64 bits wrap as in Go."""
    ts = np.array([INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX], dtype=np.int64)
    bits = np.array(SPECIAL_BITS[: len(ts)], dtype=np.uint64)
    assert_round_trip(ts, bits, SAMPLES_PER_CHUNK)
    assert_round_trip(ts[[0, -1]], bits[:2], SAMPLES_PER_CHUNK)
    assert_round_trip(ts[[0, 1, -1]], bits[:3], SAMPLES_PER_CHUNK)
    for t in (INT64_MIN, INT64_MAX):
        assert_round_trip(np.array([t], dtype=np.int64), bits[:1], 1)


@pytest.mark.parametrize("bits", SPECIAL_BITS)
def test_special_values_round_trip_bit_exact(bits: int) -> None:
    """Each awkward value first in a chunk, after a neighbour, and repeated."""
    pattern = np.array([bits, 0x4059000000000000, bits, bits, 0, bits], dtype=np.uint64)
    assert_round_trip(np.arange(len(pattern), dtype=np.int64) * 15_000, pattern, 4)


def test_stale_nan_roundtrips_bit_exact() -> None:
    ts = np.array([1_000, 16_000, 31_000], dtype=np.int64)
    values = as_values([0x4000000000000000, STALE_NAN, STALE_NAN])
    _, got = decode_xor_chunk(encode_xor_chunk(ts, values))
    assert got.view(np.uint64).tolist() == [0x4000000000000000, STALE_NAN, STALE_NAN]


@pytest.mark.parametrize(
    ("n", "max_samples"),
    [(1, 120), (119, 120), (120, 120), (121, 120), (240, 120), (241, 120), (7, 1), (5, 2)],
)
def test_chunks_are_cut_every_max_samples(n: int, max_samples: int) -> None:
    ts = 1_700_000_000_000 + np.arange(n, dtype=np.int64) * 15_000
    bits = np.arange(n, dtype=np.float64).view(np.uint64)
    chunks = encode_xor_chunks(ts, bits.view(np.float64), max_samples)
    sizes = [len(decode_xor_chunk(data)[0]) for _, _, data in chunks]
    assert sizes == [max_samples] * (n // max_samples) + (
        [n % max_samples] if n % max_samples else []
    )
    assert_round_trip(ts, bits, max_samples)


def test_longest_chunk_holds_uint16_max_samples() -> None:
    ts = np.arange(MAX_CHUNK_SAMPLES + 1, dtype=np.int64) * 1_000
    values = np.sin(np.arange(len(ts), dtype=np.float64))
    chunks = encode_xor_chunks(ts, values, MAX_CHUNK_SAMPLES)
    assert [data[:2] for _, _, data in chunks] == [b"\xff\xff", b"\x00\x01"]
    got_ts, got_values = decode_xor_chunk(chunks[0][2])
    np.testing.assert_array_equal(got_ts, ts[:-1])
    np.testing.assert_array_equal(got_values.view(np.uint64), values[:-1].view(np.uint64))
    with pytest.raises(ValueError, match="a chunk holds"):
        encode_xor_chunk(ts, values)


def test_empty_input_gives_no_chunks() -> None:
    assert encode_xor_chunks(np.array([], dtype=np.int64), np.array([], dtype=np.float64)) == []
    got_ts, got_values = decode_xor_chunk(b"\x00\x00")
    assert got_ts.shape == got_values.shape == (0,)
    assert got_ts.dtype == np.int64
    with pytest.raises(ValueError, match="a chunk holds"):
        encode_xor_chunk(np.array([], dtype=np.int64), np.array([], dtype=np.float64))


@pytest.mark.parametrize("ts", [[5, 5], [5, 4], [0, 10, 10, 20], [INT64_MAX, INT64_MIN]])
def test_timestamps_must_strictly_increase(ts: list[int]) -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        encode_xor_chunks(np.array(ts, dtype=np.int64), np.zeros(len(ts)))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="equal 1-D"):
        encode_xor_chunks(np.arange(3), np.zeros(2))
    for max_samples in (0, MAX_CHUNK_SAMPLES + 1):
        with pytest.raises(ValueError, match="max_samples"):
            encode_xor_chunks(np.arange(3), np.zeros(3), max_samples)


def test_truncated_chunks_are_corrupt() -> None:
    ts = np.array([-5, 10, 20, 700_000, 700_001], dtype=np.int64)
    data = encode_xor_chunk(ts, as_values(SPECIAL_BITS[:5]))
    for end in range(len(data) - 1):  # the last byte may be padding
        with pytest.raises(CorruptChunk):
            decode_xor_chunk(data[:end])


def test_a_count_beyond_the_data_is_corrupt() -> None:
    data = encode_xor_chunk(np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(CorruptChunk, match="ends after"):
        decode_xor_chunk(b"\x00\x09" + data[2:])


def test_overlong_varints_are_corrupt() -> None:
    with pytest.raises(CorruptChunk, match="varint"):
        decode_xor_chunk(b"\x00\x01" + b"\xff" * 10 + b"\x01" + bytes(8))
    with pytest.raises(CorruptChunk, match="varint"):
        decode_xor_chunk(b"\x00\x01" + b"\xff" * 9 + b"\x02" + bytes(8))


def test_a_window_wider_than_64_bits_is_corrupt() -> None:
    # Two samples; the second opens a window of 20 leading zeros and 60 meaningful bits.
    head = encode_xor_chunk(np.array([0]), np.array([1.0]))[:-1]
    fields = (0b11 << 11) | (20 << 6) | 60  # "1" changed, "1" new window, 5 + 6 bits
    stream = fields << (80 - 13)  # padded out to 80 bits
    data = b"\x00\x02" + head[2:] + b"\x01" + stream.to_bytes(10, "big")
    with pytest.raises(CorruptChunk, match="20 leading zeros and 60 bits"):
        decode_xor_chunk(data)


def test_a_value_inside_the_open_window_takes_the_short_form() -> None:
    v0 = 0x3FF8000000000000
    bits = [v0, v0 ^ (0xF0 << 40), v0 ^ (0xF0 << 40) ^ (0x30 << 40)]
    data = encode_xor_chunk(np.array([0, 1, 2]), as_values(bits))
    # 12 bytes up to the second delta; then 1+1+5+6+4 bits (a 4-bit window opens), a 1-bit
    # dod, and 1+1+4 bits inside the window: 24 bits. A new window would take 35.
    assert len(data) == 12 + 3
    assert decode_xor_chunk(data)[1].view(np.uint64).tolist() == bits


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 300), max_size=6),
    max_samples=st.integers(1, 130),
    seed=st.integers(0, 2**32 - 1),
)
def test_encoding_series_together_equals_one_by_one(
    lengths: list[int], max_samples: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    series = []
    for n in lengths:
        ts = np.cumsum(rng.integers(1, 30_000, n)).astype(np.int64) - 10**6
        bits = rng.integers(0, 2**63, n, dtype=np.uint64)
        series.append((ts, bits.view(np.float64)))
    together = encode_xor_series(series, max_samples)
    assert together == [encode_xor_chunks(ts, values, max_samples) for ts, values in series]
