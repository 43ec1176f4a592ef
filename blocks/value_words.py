"""Float values as 64-bit words that compress well, chosen per run of one series.

A run whose values are all exact decimals of at most MAX_DECIMAL_SCALE digits after the
point (counters, and gauges of decimal numbers) is stored as integer mantissas m with
value == m / 10**scale exactly, as zigzagged deltas of deltas: regular counters give
words of a few bits. Any other run (NaN, -0.0, long fractions) is stored as each value's
bits XOR the previous value's. Exact to the bit either way: a run is decimal only if
every value comes back bit for bit.

Used by chunk pages (blocks/chunk_page.py) and the head's compact batches
(blocks/sample_codec.py); layouts in docs/block-format.md#pages.
"""

from __future__ import annotations

import numpy as np

from blocks.columns import (
    delta_of_delta,
    undelta_of_delta,
    unxor_delta,
    unzigzag,
    xor_delta,
    zigzag,
)
from blocks.errors import CorruptBlock

# Value encodings: 0..MAX_DECIMAL_SCALE store the value as an integer mantissa m with
# value == m / 10**scale exactly (counters, and gauges of decimal numbers); XOR stores
# the raw bits XOR the previous value's bits (anything else: NaN, -0.0, long fractions).
MAX_DECIMAL_SCALE = 12
VALUE_XOR = 255
# Integers above 2**53 are not all representable as float64: no mantissa may exceed it.
MANTISSA_LIMIT = float(2**53)


def decimal_scales(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """For each chunk, the smallest exact decimal scale, or VALUE_XOR."""
    scales = np.full(len(counts), VALUE_XOR, dtype=np.uint8)
    nonempty = counts > 0
    if not len(values):
        return scales
    starts = np.flatnonzero(nonempty)
    offsets = np.zeros(len(counts), dtype=np.int64)
    offsets[1:] = np.cumsum(counts[:-1])
    bits = values.view(np.uint64)
    undecided = nonempty.copy()
    with np.errstate(all="ignore"):
        finite = np.isfinite(values)
        for scale in range(MAX_DECIMAL_SCALE + 1):
            factor = 10.0**scale
            mantissa = np.round(values * factor)
            usable = finite & (np.abs(mantissa) < MANTISSA_LIMIT)
            # Check through the int64 the page will hold, not the float: -0.0 would
            # pass as a float mantissa and come back as +0.0 from the integer 0.
            integers = np.where(usable, mantissa, 0.0).astype(np.int64)
            exact = usable & ((integers.astype(np.float64) / factor).view(np.uint64) == bits)
            chunk_exact = np.zeros(len(counts), dtype=bool)
            chunk_exact[starts] = np.logical_and.reduceat(exact, offsets[starts])
            chosen = undecided & chunk_exact
            scales[chosen] = scale
            undecided &= ~chunk_exact
            if not undecided.any():
                break
    return scales


def encode_values(values: np.ndarray, runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scale of each run as uint8, one uint64 word per value) for runs of `runs` values."""
    scales = decimal_scales(values, runs)
    per_sample_scale = np.repeat(scales, runs)
    decimal = per_sample_scale != VALUE_XOR
    with np.errstate(all="ignore"):
        factors = 10.0 ** per_sample_scale[decimal].astype(np.float64)
        mantissas = np.zeros(len(values), dtype=np.int64)
        mantissas[decimal] = np.round(values[decimal] * factors).astype(np.int64)
    words = np.where(
        decimal,
        zigzag(delta_of_delta(mantissas, runs)),
        xor_delta(values.view(np.uint64), runs),
    )
    return scales, words


def decode_values(
    words: np.ndarray, scales: np.ndarray, runs: np.ndarray, *, what: str
) -> np.ndarray:
    """Inverse of encode_values: the float64 values; CorruptBlock names `what` held them."""
    per_sample_scale = np.repeat(scales, runs)
    decimal = per_sample_scale != VALUE_XOR
    if (per_sample_scale[decimal] > MAX_DECIMAL_SCALE).any():
        raise CorruptBlock(f"{what} has an unknown value encoding")
    mantissas = undelta_of_delta(unzigzag(words), runs)
    bits = unxor_delta(words, runs)
    factors = 10.0 ** per_sample_scale[decimal].astype(np.float64)
    decoded: np.ndarray = bits.view(np.float64).copy()
    decoded[decimal] = mantissas[decimal].astype(np.float64) / factors
    return decoded
