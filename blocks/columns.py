"""Vectorised transforms over runs: deltas, zigzag, byte planes.

Columns of many chunks are transformed at once; `starts` marks the first element of each
chunk, so one numpy call serves a whole page. All integer arithmetic wraps (int64), and
every transform here has an exact inverse.
"""

from __future__ import annotations

import numpy as np


def run_starts(counts: np.ndarray) -> np.ndarray:
    """Index of the first element of each run, from run lengths."""
    starts = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        starts[1:] = np.cumsum(counts[:-1], dtype=np.int64)
    return starts


def start_mask(counts: np.ndarray, total: int, offset: int = 0) -> np.ndarray:
    """Mask of the elements at position `offset` inside their run (if the run is that long)."""
    mask = np.zeros(total, dtype=bool)
    starts = run_starts(counts)
    long_enough = counts > offset
    mask[starts[long_enough] + offset] = True
    return mask


def delta(values: np.ndarray, restart: np.ndarray) -> np.ndarray:
    """Difference to the previous element; elements where `restart` is set stay as they are."""
    out = values.copy()
    out[1:] -= values[:-1]
    out[restart] = values[restart]
    return out


def undelta(deltas: np.ndarray, restart: np.ndarray) -> np.ndarray:
    """Inverse of delta: a running sum that starts again at every `restart` element."""
    total = np.cumsum(deltas, dtype=deltas.dtype)
    if not len(total):
        return total
    # Subtract, from every element, the running sum just before its segment began.
    segment = np.cumsum(restart) - 1
    first = np.flatnonzero(restart)
    before = np.zeros(len(first), dtype=deltas.dtype)
    nonzero_first = first > 0
    before[nonzero_first] = total[first[nonzero_first] - 1]
    out: np.ndarray = total - before[segment]
    return out


def delta_of_delta(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per run: first value, first delta, then differences of deltas (small when regular)."""
    first = start_mask(counts, len(values))
    second = first | start_mask(counts, len(values), 1)
    return delta(delta(values, first), second)


def undelta_of_delta(dod: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inverse of delta_of_delta."""
    first = start_mask(counts, len(dod))
    second = first | start_mask(counts, len(dod), 1)
    return undelta(undelta(dod, second), first)


def xor_delta(bits: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per run: first word, then each word XOR the previous one (uint64)."""
    first = start_mask(counts, len(bits))
    out = bits.copy()
    out[1:] ^= bits[:-1]
    out[first] = bits[first]
    return out


def unxor_delta(xored: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Inverse of xor_delta: XOR is its own inverse, so a segmented XOR scan."""
    total = np.bitwise_xor.accumulate(xored) if len(xored) else xored.copy()
    first = start_mask(counts, len(xored))
    segment = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    before = np.zeros(len(starts), dtype=np.uint64)
    nonzero = starts > 0
    before[nonzero] = total[starts[nonzero] - 1]
    out: np.ndarray = total ^ before[segment]
    return out


def zigzag(values: np.ndarray) -> np.ndarray:
    """int64 -> uint64 with small magnitudes small: 0, -1, 1, -2 … -> 0, 1, 2, 3 …"""
    v = values.astype(np.int64, copy=False)
    out: np.ndarray = ((v << 1) ^ (v >> 63)).view(np.uint64)
    return out


def unzigzag(values: np.ndarray) -> np.ndarray:
    """Inverse of zigzag."""
    u = values.astype(np.uint64, copy=False)
    out: np.ndarray = ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)
    return out


def to_planes(words: np.ndarray) -> bytes:
    """uint64 words as 8 byte planes (all lowest bytes, then the next …): zeros cluster."""
    return np.ascontiguousarray(words, dtype="<u8").view(np.uint8).reshape(-1, 8).T.tobytes()


def from_planes(data: bytes | memoryview, count: int, offset: int = 0) -> np.ndarray:
    """Inverse of to_planes for `count` words at `offset`."""
    planes = np.frombuffer(data, np.uint8, count * 8, offset).reshape(8, count)
    return planes.T.copy().view("<u8").ravel().astype(np.uint64, copy=False)


def run_positions(firsts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Every position of the runs that start at `firsts` and are `lengths` long, run after
    run: a running count, restarted at each run's first position."""
    offsets = np.arange(int(lengths.sum()), dtype=np.int64)
    run_begin = np.repeat(np.cumsum(lengths) - lengths, lengths)
    out: np.ndarray = np.repeat(firsts, lengths) + offsets - run_begin
    return out


def run_bounds(keys: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of each run of equal neighbours in a column: one per series when sorted."""
    if not len(keys):
        return []
    bounds = (np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist()
    return list(zip([0, *bounds], [*bounds, len(keys)], strict=True))
