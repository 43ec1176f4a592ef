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
    run_positions,
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
    """For each chunk, the smallest exact decimal scale, or VALUE_XOR.

    Each scale is tried first on three values of every undecided chunk, and on all
    values only of the chunks where those pass: a chunk of long fractions costs thirteen
    looks at three values, not thirteen passes over all of them.
    """
    scales = np.full(len(counts), VALUE_XOR, dtype=np.uint8)
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=offsets[1:])
    undecided = np.flatnonzero(counts > 0)
    for scale in range(MAX_DECIMAL_SCALE + 1):
        if not len(undecided):
            break
        factor = 10.0**scale
        # Probes: the first, middle and last value of each chunk (a gauge may start on a
        # whole number and go on in fractions).
        probes = offsets[undecided] + counts[undecided] * np.array([[0], [1], [2]]) // 2
        probes[2] -= 1
        candidates = undecided[np.logical_and.reduce(_exact_at(values[probes], factor))]
        if not len(candidates):
            continue
        lengths = counts[candidates]
        exact = _exact_at(values[run_positions(offsets[candidates], lengths)], factor)
        segment_starts = np.zeros(len(candidates), dtype=np.int64)
        np.cumsum(lengths[:-1], out=segment_starts[1:])
        decided = candidates[np.logical_and.reduceat(exact, segment_starts)]
        scales[decided] = scale
        undecided = np.setdiff1d(undecided, decided, assume_unique=True)
    return scales


def _exact_at(values: np.ndarray, factor: float) -> np.ndarray:
    """Which values are exactly m / factor for an integer |m| < 2**53."""
    with np.errstate(all="ignore"):
        mantissa = np.round(values * factor)
        usable = np.isfinite(values) & (np.abs(mantissa) < MANTISSA_LIMIT)
        # Check through the int64 the page will hold, not the float: -0.0 would pass as
        # a float mantissa and come back as +0.0 from the integer 0.
        integers = np.where(usable, mantissa, 0.0).astype(np.int64)
        back = (integers.astype(np.float64) / factor).view(np.uint64)
    exact: np.ndarray = usable & (back == values.view(np.uint64))
    return exact


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
