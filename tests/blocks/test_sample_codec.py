"""The head's sample batches round-trip every float64 bit pattern and every int64 timestamp."""

from __future__ import annotations

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.errors import CorruptBlock
from blocks.sample_codec import COMPACT_MAGIC, HEADER, MAGIC, decode_samples, encode_samples
from tests.support.values import STALE_NAN

SPECIAL_BITS = [
    STALE_NAN,
    0x7FF8000000000000,
    0xFFF8DEADBEEF0001,
    0x7FF0000000000001,
    0x7FF0000000000000,
    0xFFF0000000000000,
    0x8000000000000000,
    0x0000000000000000,
    0x0000000000000001,
    0x000FFFFFFFFFFFFF,
]
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

words = st.one_of(st.integers(min_value=0, max_value=2**64 - 1), st.sampled_from(SPECIAL_BITS))
timestamps = st.one_of(
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    st.sampled_from([INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX]),
    st.integers(min_value=1_700_000_000_000, max_value=1_700_000_100_000),
)
refs = st.one_of(
    st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=2**32 - 1)
)

Columns = tuple[np.ndarray, np.ndarray, np.ndarray]
# Both layouts: the fast one (False) a freeze writes, the compact one merges write.
LAYOUTS = pytest.mark.parametrize("compact", [False, True], ids=["fast", "compact"])


@st.composite
def batches(draw: st.DrawFn) -> Columns:
    """Samples sorted by (ref, timestamp), values with arbitrary bits."""
    keys = sorted(draw(st.lists(st.tuples(refs, timestamps), max_size=60)))
    values = draw(st.lists(words, min_size=len(keys), max_size=len(keys)))
    return (
        np.array([k[0] for k in keys], dtype=np.uint32),
        np.array([k[1] for k in keys], dtype=np.int64),
        np.array(values, dtype=np.uint64).view(np.float64),
    )


def assert_same(got: Columns, want: Columns) -> None:
    assert got[0].dtype == np.uint32
    assert got[1].dtype == np.int64
    assert got[2].dtype == np.float64
    assert got[0].tolist() == want[0].tolist()
    assert got[1].tolist() == want[1].tolist()
    assert got[2].view(np.uint64).tolist() == want[2].view(np.uint64).tolist()


@given(batches(), st.booleans())
@settings(max_examples=400, deadline=None)
def test_batch_roundtrips_bit_exact(batch: Columns, compact: bool) -> None:
    assert_same(decode_samples(encode_samples(*batch, compact=compact)), batch)


@st.composite
def decimal_batches(draw: st.DrawFn) -> Columns:
    """Samples of a few series whose values are mostly decimals (what the compact layout
    stores as mantissas), with the odd value that is not: -0.0, NaN, 0.1 + 0.2, 2**53 + 2."""
    odd = [-0.0, float("nan"), 0.1 + 0.2, float(2**53 + 2), 1e300, 5e-324]
    decimals = st.builds(
        lambda m, scale: m / 10**scale, st.integers(-(10**9), 10**9), st.integers(0, 12)
    )
    keys = sorted(draw(st.lists(st.tuples(st.integers(0, 3), timestamps), max_size=80)))
    values = draw(
        st.lists(st.one_of(decimals, st.sampled_from(odd)), min_size=len(keys), max_size=len(keys))
    )
    return (
        np.array([k[0] for k in keys], dtype=np.uint32),
        np.array([k[1] for k in keys], dtype=np.int64),
        np.array(values, dtype=np.float64),
    )


@given(decimal_batches())
@settings(max_examples=400, deadline=None)
def test_compact_batch_of_decimals_roundtrips_bit_exact(batch: Columns) -> None:
    assert_same(decode_samples(encode_samples(*batch, compact=True)), batch)


def test_compact_layout_holds_exporter_counters_in_fewer_bytes() -> None:
    """Counters scraped every 15 s: the compact layout stores small mantissa steps."""
    rng = np.random.default_rng(3)
    series, scrapes = 500, 40
    refs_col = np.repeat(np.arange(series, dtype=np.uint32), scrapes)
    ts = np.tile(1_700_000_000_000 + np.arange(scrapes, dtype=np.int64) * 15_000, series)
    # Seconds of CPU as an exporter prints them, to the hundredth: about 15 a scrape.
    centiseconds = np.cumsum(rng.integers(1_480, 1_520, size=(series, scrapes)), axis=1)
    values = (centiseconds / 100).ravel()
    fast = encode_samples(refs_col, ts, values)
    compact = encode_samples(refs_col, ts, values, compact=True)
    assert compact[:4] == COMPACT_MAGIC
    assert fast[:4] == MAGIC
    assert len(compact) < 0.7 * len(fast), (len(compact), len(fast))
    assert_same(decode_samples(compact), (refs_col, ts, values))


@LAYOUTS
def test_stale_nan_and_special_values_roundtrip_bit_exact(compact: bool) -> None:
    values = np.array(SPECIAL_BITS, dtype=np.uint64).view(np.float64)
    refs_col = np.zeros(len(values), dtype=np.uint32)
    ts = np.arange(len(values), dtype=np.int64) * 15_000
    encoded = encode_samples(refs_col, ts, values, compact=compact)
    assert_same(decode_samples(encoded), (refs_col, ts, values))


@LAYOUTS
def test_timestamp_deltas_that_overflow_int64_wrap_back_exactly(compact: bool) -> None:
    ts = np.array([INT64_MIN, INT64_MAX, INT64_MIN, 0, INT64_MAX], dtype=np.int64)
    refs_col = np.array([7, 7, 8, 8, 8], dtype=np.uint32)
    values = np.array([1.0, -1.0, 0.5, 2.0, 3.0])
    encoded = encode_samples(refs_col, ts, values, compact=compact)
    assert_same(decode_samples(encoded), (refs_col, ts, values))


@LAYOUTS
def test_each_series_restarts_its_value_and_time_chain(compact: bool) -> None:
    refs_col = np.array([0, 0, 1, 1, 2**32 - 1], dtype=np.uint32)
    ts = np.array([10, 20, 5, 6, -3], dtype=np.int64)
    values = np.array([1.5, 1.5, np.inf, -0.0, 7.0])
    encoded = encode_samples(refs_col, ts, values, compact=compact)
    assert_same(decode_samples(encoded), (refs_col, ts, values))


@LAYOUTS
def test_empty_batch_roundtrips(compact: bool) -> None:
    empty = (np.zeros(0, np.uint32), np.zeros(0, np.int64), np.zeros(0, np.float64))
    assert_same(decode_samples(encode_samples(*empty, compact=compact)), empty)


def valid_batch(compact: bool = False) -> bytes:
    refs_col = np.array([1, 1, 1, 4, 4], dtype=np.uint32)
    ts = np.array([1000, 2000, 3000, 1000, 2500], dtype=np.int64)
    values = np.array(SPECIAL_BITS[:5], dtype=np.uint64).view(np.float64)
    values[3:] = [0.25, 12.5]  # the second series decimal, the first not
    return encode_samples(refs_col, ts, values, compact=compact)


@LAYOUTS
def test_every_truncation_raises_corrupt_block(compact: bool) -> None:
    data = valid_batch(compact)
    for size in range(len(data)):
        with pytest.raises(CorruptBlock):
            decode_samples(data[:size])


def test_a_compact_batch_with_an_unknown_value_scale_raises_corrupt_block() -> None:
    n, n_series = 3, 1
    body = b"".join(
        (
            np.array([5], dtype=np.uint32).tobytes(),
            np.array([n], dtype=np.uint32).tobytes(),
            np.array([13], dtype=np.uint8).tobytes(),  # scales go to 12, then 255 (XOR)
            np.zeros(n * 16, dtype=np.uint8).tobytes(),
        )
    )
    data = HEADER.pack(COMPACT_MAGIC, n, n_series) + zstandard.ZstdCompressor().compress(body)
    with pytest.raises(CorruptBlock, match="value encoding"):
        decode_samples(data)


def test_bad_magic_raises_corrupt_block() -> None:
    data = valid_batch()
    with pytest.raises(CorruptBlock, match="magic"):
        decode_samples(b"XXXX" + data[4:])


@pytest.mark.parametrize(
    "garbage",
    [b"garbage", b"\x00" * 12, b"\xff" * 64, MAGIC + b"\x01\x00\x00\x00\x01\x00\x00\x00junk"],
)
def test_garbage_raises_corrupt_block(garbage: bytes) -> None:
    with pytest.raises(CorruptBlock):
        decode_samples(garbage)


@LAYOUTS
@pytest.mark.parametrize(("samples", "series"), [(4, 2), (5, 1), (6, 2), (0, 0), (1 << 31, 2)])
def test_header_counts_that_disagree_with_the_body_raise_corrupt_block(
    samples: int, series: int, compact: bool
) -> None:
    data = valid_batch(compact)
    magic = data[:4]
    with pytest.raises(CorruptBlock):
        decode_samples(HEADER.pack(magic, samples, series) + data[HEADER.size :])


def craft_batch(unique_refs: list[int], counts: list[int], deltas: list[int]) -> bytes:
    """A batch with a well-formed frame but whatever per-series counts it is given."""
    body = b"".join(
        (
            np.array(unique_refs, dtype=np.uint32).tobytes(),
            np.array(counts, dtype=np.uint32).tobytes(),
            np.array(deltas, dtype=np.int64).view(np.uint8).reshape(-1, 8).T.tobytes(),
            np.zeros(len(deltas) * 8, dtype=np.uint8).tobytes(),
        )
    )
    compressed = zstandard.ZstdCompressor().compress(body)
    return HEADER.pack(MAGIC, len(deltas), len(unique_refs)) + compressed


@pytest.mark.parametrize(
    ("unique_refs", "counts", "deltas"),
    [
        pytest.param([1, 2], [0, 0], [], id="no-samples-two-empty-runs"),
        pytest.param([1, 2], [0, 3], [10, 1, 1], id="empty-first-run"),
        pytest.param([1, 2, 3], [1, 0, 2], [10, 1, 1], id="empty-middle-run"),
    ],
)
def test_series_run_of_zero_samples_raises_corrupt_block(
    unique_refs: list[int], counts: list[int], deltas: list[int]
) -> None:
    # encode_samples never writes an empty run; a decoder that accepts one either
    # crashes (IndexError) or shifts timestamps between series.
    with pytest.raises(CorruptBlock):
        decode_samples(craft_batch(unique_refs, counts, deltas))


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_arbitrary_bytes_raise_corrupt_block(data: bytes) -> None:
    with pytest.raises(CorruptBlock):
        decode_samples(data)


@given(st.data(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_flipped_byte_raises_corrupt_block_or_decodes_to_consistent_columns(
    data: st.DataObject, compact: bool
) -> None:
    encoded = bytearray(valid_batch(compact))
    position = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    encoded[position] ^= data.draw(st.integers(min_value=1, max_value=255))
    try:
        got_refs, got_ts, got_values = decode_samples(bytes(encoded))
    except CorruptBlock:
        return
    # zstandard frames carry no checksum: a flipped payload byte may decode to other
    # numbers, but never to columns of a length other than the header's.
    (samples,) = HEADER.unpack_from(encoded)[1:2]
    assert len(got_refs) == len(got_ts) == len(got_values) == samples
