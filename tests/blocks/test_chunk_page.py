"""Chunk pages round-trip every float64 bit pattern and every int64 timestamp."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.chunk_page import (
    decode_page,
    decode_page_chunks,
    encode_page,
)
from blocks.errors import CorruptBlock
from blocks.value_words import VALUE_XOR, decimal_scales
from tests.support.values import STALE_NAN

words = st.integers(min_value=0, max_value=2**64 - 1)
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def bits(values: np.ndarray) -> np.ndarray:
    return values.view(np.uint64)


@st.composite
def pages(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    counts = draw(st.lists(st.integers(min_value=1, max_value=40), min_size=0, max_size=8))
    n = sum(counts)
    ts = np.array(draw(st.lists(int64s, min_size=n, max_size=n)), dtype=np.int64)
    kind = draw(st.sampled_from(["bits", "decimal", "mixed"]))
    if kind == "bits":
        raw = draw(st.lists(words, min_size=n, max_size=n))
        values = np.array(raw, dtype=np.uint64).view(np.float64)
    else:
        mantissas = draw(
            st.lists(st.integers(min_value=-(2**40), max_value=2**40), min_size=n, max_size=n)
        )
        scale = draw(st.integers(min_value=0, max_value=6))
        values = np.array(mantissas, dtype=np.float64) / 10.0**scale
        if kind == "mixed" and n:
            specials = [STALE_NAN, 0x8000000000000000, 0x7FF0000000000000, 1]
            position = draw(st.integers(min_value=0, max_value=n - 1))
            values.view(np.uint64)[position] = draw(st.sampled_from(specials))
    return np.array(counts, dtype=np.uint32), ts, values


@given(pages())
@settings(max_examples=300, deadline=None)
def test_page_roundtrips_bit_exact(page: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    counts, ts, values = page
    got_counts, got_ts, got_values = decode_page(encode_page(counts, ts, values))
    assert got_counts.tolist() == counts.tolist()
    assert np.array_equal(got_ts, ts)
    assert np.array_equal(bits(got_values), bits(values))


def test_stale_nan_and_negative_zero_roundtrip_bit_exact() -> None:
    specials = np.array([STALE_NAN, 0x8000000000000000, 0x7FF8DEADBEEF0001, 1], dtype=np.uint64)
    values = specials.view(np.float64)
    ts = np.array([-(2**63), -1, 0, 2**63 - 1], dtype=np.int64)
    _, got_ts, got_values = decode_page(encode_page(np.array([4]), ts, values))
    assert np.array_equal(got_ts, ts)
    assert np.array_equal(bits(got_values), specials)


def test_counters_use_decimal_and_nan_chunks_use_xor() -> None:
    counter = np.arange(100, dtype=np.float64) * 3
    gauge = np.round(np.linspace(0, 1, 100), 2)
    broken = counter.copy()
    broken[5] = np.nan
    negative_zero = np.full(100, -0.0)
    scales = decimal_scales(
        np.concatenate([counter, gauge, broken, negative_zero]), np.array([100, 100, 100, 100])
    )
    assert scales.tolist() == [0, 2, VALUE_XOR, VALUE_XOR]


def test_regular_counter_compresses_below_a_tenth_of_a_byte_per_sample() -> None:
    ts = 1_700_000_000_000 + np.arange(16384, dtype=np.int64) * 15_000
    values = np.cumsum(np.full(16384, 7.0))
    assert len(encode_page(np.array([2048] * 8), ts, values)) < 16384 * 0.1


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "truncated": lambda b: b[: len(b) // 2],
    "last_byte_flipped": lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]),
    "garbage": lambda b: b"garbage",
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_page_raises_corrupt_block(damage: str) -> None:
    page = encode_page(np.array([3]), np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(CorruptBlock):
        decode_page(DAMAGE[damage](page))


@given(pages(), st.data())
@settings(max_examples=200, deadline=None)
def test_decoding_some_chunks_gives_their_slices_of_the_whole_page(
    page: tuple[np.ndarray, np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    counts, ts, values = page
    encoded = encode_page(counts, ts, values)
    slots = st.integers(0, max(len(counts) - 1, 0))
    wanted = sorted(data.draw(st.sets(slots, max_size=len(counts)))) if len(counts) else []
    got_counts, got_ts, got_values = decode_page_chunks(encoded, np.array(wanted, dtype=np.int64))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64).tolist()
    assert got_counts.tolist() == [int(counts[s]) for s in wanted]
    want_ts = [ts[starts[s] : starts[s + 1]] for s in wanted]
    want_values = [values[starts[s] : starts[s + 1]] for s in wanted]
    assert got_ts.tolist() == (np.concatenate(want_ts).tolist() if wanted else [])
    expected_bits = bits(np.concatenate(want_values)) if wanted else np.zeros(0, np.uint64)
    assert bits(got_values).tolist() == expected_bits.tolist()


def test_a_slot_past_the_page_is_corruption() -> None:
    page = encode_page(np.array([2], dtype=np.uint32), np.array([1, 2]), np.array([1.0, 2.0]))
    with pytest.raises(CorruptBlock, match="slot"):
        decode_page_chunks(page, np.array([1]))
