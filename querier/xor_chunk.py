"""Prometheus's XOR chunk encoding of float samples, as remote read's streamed answer sends it.

Layout in docs/remote-read.md#xor-chunks-and-stream-frames (Prometheus 2.42,
tsdb/chunkenc). Bytes in, bytes out, exact to the bit: the encoder lays every chunk's
bit fields out with numpy and produces the bytes Prometheus's own appender would (or,
asked not to reuse windows, other valid bytes for the same samples, sooner); the
decoder reads the fields back one by one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from blocks.errors import StrataError
from querier.varint import uvarint

SAMPLES_PER_CHUNK = 120
"""Default chunk length. Gorilla's compression gains little past ~120 samples, Prometheus's
head aims at the same number, and a reader that needs one sample decodes a whole chunk."""
MAX_CHUNK_SAMPLES = 0xFFFF
# Samples encoded in one pass by encode_xor_series: past a few thousand, larger arrays
# are slower per sample (one series measured at 4.3-4.7 M/s up to 4k samples, 3.3 M/s
# from 8k on), so a group stops once it holds this many.
GROUP_SAMPLES = 2048
"""A chunk's sample count is the big-endian uint16 of its first two bytes."""

_HEADER_BYTES = 2
_MAX_VARINT_BYTES = 10
_MASK64 = (1 << 64) - 1
# Delta-of-delta buckets: (payload bits n, prefix, prefix bits). A dod belongs to the
# first bucket whose range -(2**(n-1) - 1) <= dod <= 2**(n-1) holds it; -2**(n-1) is left
# out so that the decoder can read the n bits back without ambiguity.
_DOD_BUCKETS = ((14, 0b10, 2), (17, 0b110, 3), (20, 0b1110, 4))
_DOD_WIDE_PREFIX = 0b1111  # followed by the dod's full 64 bits
_DOD_WIDE_PREFIX_BITS = 4
# Value fields: "0" for an unchanged value; "10" + the XOR's meaningful bits inside the
# previous leading/trailing-zeros window; "11" + 5 bits of leading zeros + 6 bits of
# meaningful-bit count (64 written as 0) + the meaningful bits, opening a new window.
_VALUE_SAME_WINDOW = 0b10
_VALUE_NEW_WINDOW = 0b11
_MAX_LEADING = 31  # the widest count that 5 bits hold; more leading zeros are clamped

Int64Array = npt.NDArray[np.int64]
UInt64Array = npt.NDArray[np.uint64]
Float64Array = npt.NDArray[np.float64]


class CorruptChunk(StrataError):
    """Bytes that are not a complete XOR chunk."""


def encode_xor_chunks(
    timestamps: npt.ArrayLike,
    values: npt.ArrayLike,
    max_samples: int = SAMPLES_PER_CHUNK,
) -> list[tuple[int, int, bytes]]:
    """One series' samples as XOR chunks of `max_samples` each (the last may be shorter).

    Timestamps (int64 ms) must be strictly increasing. Returns (mint, maxt, chunk bytes)
    per chunk, mint and maxt being the chunk's first and last timestamp.
    """
    [chunks] = encode_xor_series([(timestamps, values)], max_samples)
    return chunks


def encode_xor_series(
    series: Sequence[tuple[npt.ArrayLike, npt.ArrayLike]],
    max_samples: int = SAMPLES_PER_CHUNK,
    *,
    reuse_windows: bool = True,
) -> list[list[tuple[int, int, bytes]]]:
    """encode_xor_chunks of several series: short series are encoded together, in groups
    of about GROUP_SAMPLES, since a call's fixed cost dominates for a few hundred samples.

    `reuse_windows=False` opens a new leading/trailing-zeros window for every changed
    value instead of reusing the last one where it fits: still XOR chunks any decoder
    reads to the same samples, but not the bytes Prometheus's appender writes. It skips
    the encoder's one sequential pass, a quarter of its time on short series, for about
    13 % more bytes: worth it for the few samples a read re-encodes at a range's edges."""
    if not 1 <= max_samples <= MAX_CHUNK_SAMPLES:
        raise ValueError(f"max_samples must be in 1..{MAX_CHUNK_SAMPLES}, got {max_samples}")
    checked = [_checked_samples(ts, values) for ts, values in series]
    out: list[list[tuple[int, int, bytes]]] = []
    group: list[tuple[Int64Array, UInt64Array]] = []
    size = 0
    for ts, bits in checked:
        group.append((ts, bits))
        size += len(ts)
        if size >= GROUP_SAMPLES:
            out.extend(_encode_group(group, max_samples, reuse_windows))
            group, size = [], 0
    out.extend(_encode_group(group, max_samples, reuse_windows))
    return out


def _encode_group(
    group: list[tuple[Int64Array, UInt64Array]], max_samples: int, reuse_windows: bool
) -> list[list[tuple[int, int, bytes]]]:
    """Several series' chunks from one pass of array operations."""
    if not group:
        return []
    ts = np.concatenate([g[0] for g in group])
    bits = np.concatenate([g[1] for g in group])
    lengths = [len(g[0]) for g in group]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # Chunks restart at every series' first sample, then every max_samples.
    starts_per_series = [
        np.arange(offset, offset + n, max_samples, dtype=np.int64)
        for offset, n in zip(offsets[:-1].tolist(), lengths, strict=True)
    ]
    starts = np.concatenate(starts_per_series)
    if not len(starts):
        return [[] for _ in group]
    datas = _encode(ts, bits, starts, reuse_windows)
    ends = np.append(starts[1:], len(ts)) - 1
    chunks = list(zip(ts[starts].tolist(), ts[ends].tolist(), datas, strict=True))
    out = []
    at = 0
    for series_starts in starts_per_series:
        out.append(chunks[at : at + len(series_starts)])
        at += len(series_starts)
    return out


def encode_xor_chunk(timestamps: npt.ArrayLike, values: npt.ArrayLike) -> bytes:
    """All the samples as one XOR chunk (1 to MAX_CHUNK_SAMPLES of them)."""
    ts, bits = _checked_samples(timestamps, values)
    if not 1 <= len(ts) <= MAX_CHUNK_SAMPLES:
        raise ValueError(f"a chunk holds 1..{MAX_CHUNK_SAMPLES} samples, got {len(ts)}")
    return _encode(ts, bits, np.zeros(1, dtype=np.int64), True)[0]


def _checked_samples(
    timestamps: npt.ArrayLike, values: npt.ArrayLike
) -> tuple[Int64Array, UInt64Array]:
    """(timestamps, value bits) as contiguous 1-D arrays; ValueError when they do not fit."""
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    vs = np.ascontiguousarray(values, dtype=np.float64)
    if ts.ndim != 1 or vs.shape != ts.shape:
        raise ValueError(f"timestamps {ts.shape} and values {vs.shape} must be equal 1-D arrays")
    if len(ts) > 1 and not bool(np.all(ts[1:] > ts[:-1])):
        at = int(np.flatnonzero(ts[1:] <= ts[:-1])[0]) + 1
        raise ValueError(f"timestamps must be strictly increasing: {ts[at - 1]} then {ts[at]}")
    return ts, vs.view(np.uint64)


def _encode(
    ts: Int64Array, bits: UInt64Array, starts: Int64Array, reuse_windows: bool
) -> list[bytes]:
    """Chunk bytes for the runs of samples beginning at each of `starts` (ascending, from 0)."""
    counts = np.diff(np.append(starts, len(ts)))
    chunk = np.repeat(np.arange(len(starts)), counts)
    pos = np.arange(len(ts)) - starts[chunk]
    # Four bit fields per sample, in stream order: delta-of-delta prefix (+ its small
    # payload), a wide dod's 64 bits, value prefix (+ window), value meaningful bits.
    # A field of 0 bits is absent. The first sample and the second's time delta are
    # whole bytes in front of the bit stream (_chunk_prefix).
    field_values = np.zeros((len(ts), 4), dtype=np.uint64)
    field_bits = np.zeros((len(ts), 4), dtype=np.int64)
    _timestamp_fields(ts.view(np.uint64), pos, field_values, field_bits)
    _value_fields(bits, pos, chunk, field_values, field_bits, reuse_windows)
    sample_bits = field_bits.sum(axis=1)
    chunk_bits = np.add.reduceat(sample_bits, starts)
    stream, word_starts = _pack(field_values, field_bits, starts, chunk, chunk_bits)

    last = starts + counts - 1
    # Prometheus writes whole bytes with a call that, on a byte boundary, leaves an empty
    # byte at the end of the chunk; it stays there when nothing follows. That happens after
    # the first sample's 64 value bits, and after meaningful bits of a multiple-of-8 width
    # that end on a byte boundary.
    last_width = field_bits[last, 3]
    ends_on_whole_bytes = (counts == 1) | (
        (last_width > 0) & (last_width % 8 == 0) & (chunk_bits % 8 == 0)
    )
    out = []
    for start, count, nbits, word, padded in zip(
        starts.tolist(),
        counts.tolist(),
        chunk_bits.tolist(),
        word_starts.tolist(),
        ends_on_whole_bytes.tolist(),
        strict=True,
    ):
        body = stream[word * 8 : word * 8 + (nbits + 7) // 8]
        padding = b"\0" if padded else b""
        out.append(b"".join((_chunk_prefix(ts, bits, start, count), body, padding)))
    return out


def _chunk_prefix(ts: Int64Array, bits: UInt64Array, start: int, count: int) -> bytes:
    """Sample count, first timestamp (varint), first value (64 bits), second time delta."""
    t0 = int(ts[start])
    prefix = [
        count.to_bytes(_HEADER_BYTES, "big"),
        uvarint(2 * t0 if t0 >= 0 else -2 * t0 - 1),  # zig-zag, as Go's PutVarint
        int(bits[start]).to_bytes(8, "big"),
    ]
    if count > 1:
        prefix.append(uvarint((int(ts[start + 1]) - t0) & _MASK64))
    return b"".join(prefix)


def _timestamp_fields(
    tu: UInt64Array, pos: Int64Array, values: UInt64Array, nbits: Int64Array
) -> None:
    """Fill fields 0 and 1: each sample's delta-of-delta from the third in a chunk on."""
    delta = np.zeros_like(tu)
    delta[1:] = tu[1:] - tu[:-1]  # wraps modulo 2**64, as Go's int64 arithmetic does
    dod = np.zeros_like(tu)
    dod[1:] = delta[1:] - delta[:-1]
    signed = dod.view(np.int64)
    has_dod = pos >= 2
    nbits[has_dod, 0] = 1  # "0": same delta as before
    left = has_dod & (signed != 0)
    for width, prefix, prefix_bits in _DOD_BUCKETS:
        half = 1 << (width - 1)
        fits = left & (signed >= -(half - 1)) & (signed <= half)
        values[fits, 0] = (dod[fits] & np.uint64((1 << width) - 1)) | np.uint64(prefix << width)
        nbits[fits, 0] = prefix_bits + width
        left &= ~fits
    values[left, 0] = _DOD_WIDE_PREFIX
    nbits[left, 0] = _DOD_WIDE_PREFIX_BITS
    values[left, 1] = dod[left]
    nbits[left, 1] = 64


def _value_fields(
    bits: UInt64Array,
    pos: Int64Array,
    chunk: Int64Array,
    values: UInt64Array,
    nbits: Int64Array,
    reuse_windows: bool,
) -> None:
    """Fill fields 2 and 3: each value XOR'd with the one before, from the second on."""
    xor = np.zeros_like(bits)
    xor[1:] = bits[1:] ^ bits[:-1]
    nbits[pos >= 1, 2] = 1  # "0": the same bits as before
    changed = np.flatnonzero((pos >= 1) & (xor != 0))
    if len(changed) == 0:
        return
    x = xor[changed]
    leading = np.minimum(_leading_zeros(x), _MAX_LEADING)
    trailing = _trailing_zeros(x)
    if reuse_windows:
        changed_chunk = chunk[changed]
        first_in_chunk = np.ones(len(changed), dtype=bool)
        first_in_chunk[1:] = changed_chunk[1:] != changed_chunk[:-1]
        opens = _window_openings(leading, trailing, first_in_chunk)
    else:
        opens = np.ones(len(changed), dtype=bool)
    # Each changed value uses the window opened last (its own when it opens one); a chunk's
    # first changed value always opens one, so no window leaks across chunks.
    opener = np.maximum.accumulate(np.where(opens, np.arange(len(changed)), 0))
    win_leading = leading[opener]
    win_trailing = trailing[opener]
    width = 64 - win_leading - win_trailing
    values[changed, 2] = np.where(
        opens,
        (_VALUE_NEW_WINDOW << 11) | (win_leading << 6) | (width & 0x3F),
        _VALUE_SAME_WINDOW,
    ).astype(np.uint64)
    nbits[changed, 2] = np.where(opens, 13, 2)
    values[changed, 3] = x >> win_trailing.astype(np.uint64)
    nbits[changed, 3] = width


def _window_openings(
    leading: Int64Array, trailing: Int64Array, first_in_chunk: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """Which changed values open a new leading/trailing-zeros window.

    A value keeps the current window when its meaningful bits fit inside it. Whether they
    fit depends on the window the previous values left, so this is one sequential pass;
    it is the only per-sample Python loop of the encoder, and kept to two comparisons.
    """
    opens = bytearray(len(leading))
    win_leading = win_trailing = 0
    for i, (lz, tz, first) in enumerate(
        zip(leading.tolist(), trailing.tolist(), first_in_chunk.tolist(), strict=True)
    ):
        if first or lz < win_leading or tz < win_trailing:
            win_leading, win_trailing = lz, tz
            opens[i] = 1
    return np.frombuffer(bytes(opens), dtype=np.bool_)


def _bit_length(x: UInt64Array) -> Int64Array:
    """Bits needed for each value (0 for 0); halves of 32 bits convert to float exactly."""
    high = np.frexp((x >> np.uint64(32)).astype(np.float64))[1]
    low = np.frexp((x & np.uint64(0xFFFFFFFF)).astype(np.float64))[1]
    return np.where(high > 0, high + 32, low).astype(np.int64)


def _leading_zeros(x: UInt64Array) -> Int64Array:
    """Leading zero bits of each 64-bit value."""
    return 64 - _bit_length(x)


def _trailing_zeros(x: UInt64Array) -> Int64Array:
    """Trailing zero bits of each non-zero 64-bit value."""
    lowest = x & (~x + np.uint64(1))  # the lowest set bit: a power of two, exact as float
    return (np.frexp(lowest.astype(np.float64))[1] - 1).astype(np.int64)


def _pack(
    values: UInt64Array,
    nbits: Int64Array,
    starts: Int64Array,
    chunk_of_sample: Int64Array,
    chunk_bits: Int64Array,
) -> tuple[bytes, Int64Array]:
    """Fields (one row per sample) as one big-endian bit stream per chunk, each starting
    on a 64-bit word of one buffer. Returns the buffer and each chunk's first word."""
    fields_per_sample = values.shape[1]
    chunk_words = (chunk_bits + 63) // 64
    word_starts = np.cumsum(chunk_words) - chunk_words
    chunk = np.repeat(chunk_of_sample, fields_per_sample)
    flat_bits = nbits.ravel()
    offset_in_all = np.cumsum(flat_bits) - flat_bits
    chunk_base = word_starts * 64 - offset_in_all[starts * fields_per_sample]
    offset = offset_in_all + chunk_base[chunk]
    present = flat_bits > 0
    v, n, offset = values.ravel()[present], flat_bits[present], offset[present]

    word = offset >> 6
    end = (offset & 63) + n  # where the field ends, counted from its first word's top bit
    fits = end <= 64
    # In one word: shift up to end there; across two: the high part ends the first word,
    # the low part starts the next. Shift counts stay in 0..63.
    head = (v << np.where(fits, 64 - end, 0).astype(np.uint64)) >> np.where(
        fits, 0, end - 64
    ).astype(np.uint64)
    words = np.zeros(int(chunk_words.sum()), dtype=np.uint64)
    group = np.flatnonzero(np.diff(word, prepend=-1))
    words[word[group]] = np.bitwise_or.reduceat(head, group)
    spill = ~fits
    # At most one field crosses any word boundary, so these indices are unique.
    words[word[spill] + 1] |= v[spill] << (128 - end[spill]).astype(np.uint64)
    return words.astype(">u8").tobytes(), word_starts


def decode_xor_chunk(data: bytes) -> tuple[Int64Array, Float64Array]:
    """(timestamps, values) of one XOR chunk; CorruptChunk when the bytes end too soon."""
    if len(data) < _HEADER_BYTES:
        raise CorruptChunk(f"xor chunk of {len(data)} bytes has no sample count")
    count = int.from_bytes(data[:_HEADER_BYTES], "big")
    times: list[int] = []
    bits: list[int] = []
    if count:
        reader = _BitReader(data, _HEADER_BYTES)
        _decode_samples(reader, count, times, bits)
    ts = np.array(times, dtype=np.uint64).view(np.int64)
    return ts, np.array(bits, dtype=np.uint64).view(np.float64)


def _decode_samples(reader: _BitReader, count: int, times: list[int], bits: list[int]) -> None:
    """Append `count` samples' timestamps (as uint64) and value bits to the lists."""
    zigzag = reader.uvarint()
    t = (zigzag >> 1) ^ -(zigzag & 1)
    value = reader.read(64)
    times.append(t & _MASK64)
    bits.append(value)
    delta = 0
    leading = trailing = 0
    for i in range(1, count):
        # The second sample's delta is a varint; later ones change it by a dod.
        delta = reader.uvarint() if i == 1 else (delta + _read_dod(reader)) & _MASK64
        t = (t + delta) & _MASK64
        if reader.read(1):
            if reader.read(1):
                leading = reader.read(5)
                width = reader.read(6) or 64
                trailing = 64 - leading - width
                if trailing < 0:
                    raise CorruptChunk(
                        f"xor chunk sample {i}: {leading} leading zeros and {width} bits"
                    )
            else:
                width = 64 - leading - trailing
            value ^= reader.read(width) << trailing
        times.append(t)
        bits.append(value)


def _read_dod(reader: _BitReader) -> int:
    """One delta of deltas, as an unsigned 64-bit int (two's complement)."""
    ones = 0
    while ones < 4 and reader.read(1):
        ones += 1
    if ones == 0:
        return 0
    if ones == 4:
        return reader.read(64)
    width = _DOD_BUCKETS[ones - 1][0]
    raw = reader.read(width)
    if raw > 1 << (width - 1):
        raw -= 1 << width
    return raw & _MASK64


class _BitReader:
    """Big-endian bits of a byte string from a byte offset on, a 64-bit window at a time."""

    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self._next_byte = offset
        self._buffer = 0
        self._buffered = 0

    def read(self, nbits: int) -> int:
        """The next `nbits` bits as an unsigned int."""
        while self._buffered < nbits:
            take = self._data[self._next_byte : self._next_byte + 8]
            if not take:
                raise CorruptChunk(f"xor chunk ends after {len(self._data)} bytes, inside a sample")
            self._next_byte += len(take)
            self._buffer = (self._buffer << (8 * len(take))) | int.from_bytes(take, "big")
            self._buffered += 8 * len(take)
        self._buffered -= nbits
        out = self._buffer >> self._buffered
        self._buffer &= (1 << self._buffered) - 1
        return out

    def uvarint(self) -> int:
        """A varint as Go's binary.ReadUvarint reads it: at most 10 bytes, 64 bits."""
        out = 0
        for i in range(_MAX_VARINT_BYTES):
            byte = self.read(8)
            if byte < 0x80:
                if i == _MAX_VARINT_BYTES - 1 and byte > 1:
                    break
                return out | (byte << (7 * i))
            out |= (byte & 0x7F) << (7 * i)
        raise CorruptChunk("xor chunk has a varint that overflows 64 bits")
