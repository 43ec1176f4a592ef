"""Value words: each chunk's decimal scale is the smallest that gives back every value."""

from __future__ import annotations

import math
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.value_words import (
    MANTISSA_LIMIT,
    MAX_DECIMAL_SCALE,
    VALUE_XOR,
    decimal_scales,
    decode_values,
    encode_values,
)


def bits_of(value: float) -> int:
    return int(struct.unpack("<Q", struct.pack("<d", value))[0])


def exact_at(value: float, scale: int) -> bool:
    """The rule, one value at a time: value == m / 10**scale, bit for bit, |m| < 2**53."""
    if not math.isfinite(value):
        return False
    factor = 10.0**scale
    if not abs(value * factor) < MANTISSA_LIMIT:
        return False
    mantissa = round(value * factor)  # round half to even, as numpy's
    return bits_of(float(int(mantissa)) / factor) == bits_of(value)


def expected_scale(chunk: list[float]) -> int:
    for scale in range(MAX_DECIMAL_SCALE + 1):
        if all(exact_at(v, scale) for v in chunk):
            return scale
    return VALUE_XOR


decimal = st.builds(lambda m, s: m / 10**s, st.integers(-(10**12), 10**12), st.integers(0, 14))
odd = st.sampled_from([-0.0, float("nan"), float("inf"), 0.1 + 0.2, 2.0**53 + 2, 1e-300, 1 / 3])
chunk = st.lists(st.one_of(decimal, decimal, decimal, odd, st.floats()), max_size=12)


@settings(max_examples=500, deadline=None)
@given(st.lists(chunk, max_size=8))
def test_each_chunk_gets_the_smallest_scale_that_gives_back_every_value(
    chunks: list[list[float]],
) -> None:
    values = np.array([v for c in chunks for v in c], dtype=np.float64)
    counts = np.array([len(c) for c in chunks], dtype=np.int64)
    got = decimal_scales(values, counts).tolist()
    assert got == [expected_scale(c) if c else VALUE_XOR for c in chunks]
    scales, words = encode_values(values, counts)
    back = decode_values(words, scales, counts, what="test")
    assert back.view(np.uint64).tolist() == values.view(np.uint64).tolist()


def test_a_gauge_that_starts_whole_and_goes_on_in_fractions_takes_its_fractions_scale() -> None:
    # The first value passes at scale 0, the chunk only at 3.
    values = np.array([1.0, 2.0, 1.5, 1.25, 1.125, 3.0])
    assert decimal_scales(values, np.array([6])).tolist() == [3]
