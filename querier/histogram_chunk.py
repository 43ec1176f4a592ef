"""Prometheus's histogram chunk encodings (chunk types HISTOGRAM = 2, FLOAT_HISTOGRAM = 3).

Layout in docs/remote-read.md#histogram-chunks (Prometheus 2.42, tsdb/chunkenc; schema -53's
custom bounds as later Prometheus writes them). Bytes in, bytes out: samples are
(timestamp, serialized Histogram message) pairs, in the field numbers that remote write 1.0
and 2.0 share. The encoder cuts chunks where Prometheus's head does (layout change, counter
reset, gauge/counter switch, staleness, sample count) and widens a chunk's bucket layout as
its head does when buckets appear, so its bytes equal Prometheus's.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from proto.types_pb2 import Chunk
from proto.write_v2_pb2 import Histogram
from querier.xor_chunk import CorruptChunk, _BitReader

SAMPLES_PER_CHUNK = 120
"""Default chunk length, as for XOR chunks (querier/xor_chunk.py says why)."""
MAX_CHUNK_SAMPLES = 0xFFFF
"""A chunk's sample count is the big-endian uint16 of its first two bytes."""
HISTOGRAM = Chunk.HISTOGRAM
FLOAT_HISTOGRAM = Chunk.FLOAT_HISTOGRAM
STALE_NAN_BITS = 0x7FF0000000000002
CUSTOM_BUCKETS_SCHEMA = -53

_HEADER_BYTES = 3  # sample count u16 BE, then the counter-reset header in the top two bits
_MASK64 = (1 << 64) - 1
# Varbit buckets: (payload bits, prefix of ones then a zero, prefix bits), first fit wins.
# Narrow ones suit the small dods of bucket counts, wide ones the first sample's values.
_VARBIT_ALL = (
    (3, 0b10, 2),
    (6, 0b110, 3),
    (9, 0b1110, 4),
    (12, 0b11110, 5),
    (18, 0b111110, 6),
    (25, 0b1111110, 7),
    (56, 0b11111110, 8),
)
_VARBIT_FULL_PREFIX = 0b11111111  # followed by 64 bits
_NO_WINDOW = 0xFF  # leading-zeros value of "no XOR window opened yet"
_RAW_THRESHOLD = 255  # zero-threshold byte: 8 raw bytes follow
_MAX_CUSTOM_MILLIS = 33554430  # custom bounds up to this many thousandths go as a varbit


class CounterResetHeader(IntEnum):
    """The top two bits of a chunk's third byte: what is known about its first sample."""

    UNKNOWN = 0b00
    NOT_COUNTER_RESET = 0b01
    COUNTER_RESET = 0b10
    GAUGE = 0b11


@dataclass(frozen=True, slots=True)
class HistogramChunk:
    """One encoded chunk: first and last timestamp, encoding (HISTOGRAM or FLOAT_HISTOGRAM)."""

    mint: int
    maxt: int
    encoding: int
    data: bytes


@dataclass(frozen=True, slots=True)
class DecodedChunk:
    """A chunk's header and its samples as (timestamp, serialized Histogram)."""

    header: CounterResetHeader
    samples: list[tuple[int, bytes]]


@dataclass(slots=True)
class _Sample:
    """One histogram as the chunk formats see it; bucket values are absolute counts for
    float histograms and Prometheus's in-histogram deltas for integer ones."""

    t: int
    is_float: bool
    hint: int
    stale: bool
    schema: int = 0
    zero_threshold: float = 0.0
    positive_spans: list[tuple[int, int]] = field(default_factory=list)
    negative_spans: list[tuple[int, int]] = field(default_factory=list)
    custom_values: list[float] = field(default_factory=list)
    count: float = 0
    zero_count: float = 0
    sum_bits: int = 0
    positive: list[float] = field(default_factory=list)
    negative: list[float] = field(default_factory=list)


def _bits(value: float) -> int:
    """A float64's bits (NaN payloads kept)."""
    return int.from_bytes(struct.pack(">d", value), "big")


def _float(bits: int) -> float:
    """The float64 with these bits."""
    value: float = struct.unpack(">d", bits.to_bytes(8, "big"))[0]
    return value


def _int64(x: int) -> int:
    """x wrapped into int64, as Go's arithmetic does."""
    return ((x + (1 << 63)) & _MASK64) - (1 << 63)


def _sample(t: int, data: bytes) -> _Sample:
    """A serialized Histogram as a chunk sample; a stale sum empties the rest, as in Prometheus."""
    m = Histogram()
    try:
        m.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, raised by its C extension
        raise ValueError(f"not a Histogram message: {exc}") from None
    is_float = m.WhichOneof("count") == "count_float"
    s = _Sample(t=t, is_float=is_float, hint=int(m.reset_hint), stale=False)
    s.sum_bits = _bits(m.sum)
    if s.sum_bits == STALE_NAN_BITS:
        s.stale = True
        return s
    s.schema = m.schema
    s.zero_threshold = m.zero_threshold
    s.positive_spans = [(x.offset, x.length) for x in m.positive_spans]
    s.negative_spans = [(x.offset, x.length) for x in m.negative_spans]
    s.custom_values = list(m.custom_values)
    if is_float:
        s.count, s.zero_count = m.count_float, m.zero_count_float
        s.positive, s.negative = list(m.positive_counts), list(m.negative_counts)
    else:
        s.count, s.zero_count = m.count_int, m.zero_count_int
        s.positive, s.negative = list(m.positive_deltas), list(m.negative_deltas)
    return s


def _bucket_count(spans: list[tuple[int, int]]) -> int:
    """How many buckets the spans cover."""
    return sum(length for _, length in spans)


# Bit writing, as Prometheus's bit stream does it (the padding byte included).


class _BitWriter:
    """Big-endian bits appended to a byte string. Like Prometheus's writer, whole bytes
    written on a byte boundary leave an empty byte open at the end, kept if nothing follows."""

    def __init__(self) -> None:
        self.data = bytearray(_HEADER_BYTES)
        self._free = 0  # unwritten low bits of the last byte

    def bit(self, bit: int) -> None:
        """One bit."""
        if self._free == 0:
            self.data.append(0)
            self._free = 8
        if bit:
            self.data[-1] |= 1 << (self._free - 1)
        self._free -= 1

    def byte(self, byte: int) -> None:
        """Eight bits, written as a whole byte (which may leave the padding byte open)."""
        if self._free == 0:
            self.data.append(0)
            self._free = 8
        self.data[-1] |= byte >> (8 - self._free)
        self.data.append((byte << self._free) & 0xFF)

    def bits(self, value: int, nbits: int) -> None:
        """The low `nbits` of value, as whole bytes first, then single bits."""
        value &= (1 << nbits) - 1
        while nbits >= 8:
            nbits -= 8
            self.byte((value >> nbits) & 0xFF)
        for i in range(nbits - 1, -1, -1):
            self.bit((value >> i) & 1)

    def varbit_int(self, value: int) -> None:
        """An int64 in the first varbit bucket that holds it."""
        if value == 0:
            self.bit(0)
            return
        for width, prefix, prefix_bits in _VARBIT_ALL:
            if -((1 << (width - 1)) - 1) <= value <= 1 << (width - 1):
                self.bits(prefix, prefix_bits)
                self.bits(value, width)
                return
        self.bits(_VARBIT_FULL_PREFIX, 8)
        self.bits(value, 64)

    def varbit_uint(self, value: int) -> None:
        """A uint64 in the first varbit bucket that holds it."""
        if value == 0:
            self.bit(0)
            return
        for width, prefix, prefix_bits in _VARBIT_ALL:
            if value < 1 << width:
                self.bits(prefix, prefix_bits)
                self.bits(value, width)
                return
        self.bits(_VARBIT_FULL_PREFIX, 8)
        self.bits(value, 64)

    def xor(self, new_bits: int, window: list[int]) -> None:
        """Gorilla's value field against window = [previous bits, leading, trailing]."""
        delta = new_bits ^ window[0]
        window[0] = new_bits
        if delta == 0:
            self.bit(0)
            return
        self.bit(1)
        leading = min(64 - delta.bit_length(), 31)
        trailing = (delta & -delta).bit_length() - 1
        if window[1] != _NO_WINDOW and leading >= window[1] and trailing >= window[2]:
            self.bit(0)
            self.bits(delta >> window[2], 64 - window[1] - window[2])
            return
        window[1], window[2] = leading, trailing
        self.bit(1)
        self.bits(leading, 5)
        width = 64 - leading - trailing
        self.bits(width, 6)  # 64 comes out as 0
        self.bits(delta >> trailing, width)


def _write_layout(w: _BitWriter, s: _Sample) -> None:
    """Zero threshold, schema, spans and (schema -53) custom bounds."""
    if s.zero_threshold == 0:
        w.byte(0)
    else:
        frac, exp = math.frexp(s.zero_threshold)
        if frac != 0.5 or not -242 <= exp <= 11:
            w.byte(_RAW_THRESHOLD)
            w.bits(_bits(s.zero_threshold), 64)
        else:
            w.byte(exp + 243)
    w.varbit_int(s.schema)
    for spans in (s.positive_spans, s.negative_spans):
        w.varbit_uint(len(spans))
        for offset, length in spans:
            w.varbit_uint(length)
            w.varbit_int(offset)
    if s.schema == CUSTOM_BUCKETS_SCHEMA:
        w.varbit_uint(len(s.custom_values))
        for bound in s.custom_values:
            millis = bound * 1000
            if 0 <= millis <= _MAX_CUSTOM_MILLIS and _whole_millis(bound):
                w.varbit_uint(_round_half_away(millis) + 1)
            else:
                w.bit(0)
                w.bits(_bits(bound), 64)


def _round_half_away(x: float) -> int:
    """Go's math.Round for x >= 0."""
    floor = math.floor(x)
    return int(floor) + (1 if x - floor >= 0.5 else 0)


def _whole_millis(bound: float) -> bool:
    """Whether the bound is a whole number of thousandths, as Prometheus tests it."""
    return _round_half_away(bound * 1000) / 1000 == bound


def encode_histogram_chunk(
    samples: Sequence[tuple[int, bytes]],
    header: CounterResetHeader = CounterResetHeader.UNKNOWN,
) -> HistogramChunk:
    """The samples as one chunk with the first sample's layout (each later one must have as
    many buckets, as in a chunk Prometheus wrote); ValueError when they do not fit one."""
    parsed = [_sample(t, data) for t, data in samples]
    _check_one_chunk(parsed)
    return _encode(parsed, header)


def _check_one_chunk(samples: list[_Sample]) -> None:
    """ValueError unless the samples can be one chunk as Prometheus writes chunks."""
    if not 1 <= len(samples) <= MAX_CHUNK_SAMPLES:
        raise ValueError(f"a chunk holds 1..{MAX_CHUNK_SAMPLES} samples, got {len(samples)}")
    first = samples[0]
    if any(s.is_float != first.is_float for s in samples if not s.stale):
        raise ValueError("a chunk holds integer or float histograms, not both")
    pos, neg = _bucket_count(first.positive_spans), _bucket_count(first.negative_spans)
    for prev, s in itertools.pairwise(samples):
        if s.t <= prev.t:
            raise ValueError(f"timestamps must be strictly increasing: {prev.t} then {s.t}")
        if prev.stale and not s.stale:
            raise ValueError("only stale samples follow a stale one in a chunk")
    for s in samples:
        if not s.stale and (len(s.positive) != pos or len(s.negative) != neg):
            raise ValueError(f"sample at {s.t} has other buckets than the chunk's layout")


def _encode(samples: list[_Sample], header: CounterResetHeader) -> HistogramChunk:
    """One chunk of checked samples; the flavour is the first sample's."""
    w = _BitWriter()
    is_float = samples[0].is_float
    (_encode_float if is_float else _encode_int)(w, samples)
    w.data[0:2] = len(samples).to_bytes(2, "big")
    w.data[2] = header << 6
    encoding = FLOAT_HISTOGRAM if is_float else HISTOGRAM
    return HistogramChunk(samples[0].t, samples[-1].t, encoding, bytes(w.data))


def _encode_int(w: _BitWriter, samples: list[_Sample]) -> None:
    """An integer chunk's samples: varbit dods and the sum's XOR fields."""
    first = samples[0]
    _write_layout(w, first)
    w.varbit_int(first.t)
    w.varbit_uint(int(first.count))
    w.varbit_uint(int(first.zero_count))
    w.bits(first.sum_bits, 64)
    for b in (*first.positive, *first.negative):
        w.varbit_int(int(b))
    t, t_delta, cnt, z_cnt, cnt_delta, z_delta = first.t, 0, int(first.count), 0, 0, 0
    z_cnt = int(first.zero_count)
    buckets = [int(b) for b in (*first.positive, *first.negative)]
    bucket_deltas = [0] * len(buckets)
    window = [first.sum_bits, _NO_WINDOW, 0]
    for s in samples[1:]:
        new_t_delta = _int64(s.t - t)
        new_cnt_delta = _int64(int(s.count) - cnt)
        new_z_delta = _int64(int(s.zero_count) - z_cnt)
        w.varbit_int(_int64(new_t_delta - t_delta))
        w.varbit_int(0 if s.stale else _int64(new_cnt_delta - cnt_delta))
        w.varbit_int(0 if s.stale else _int64(new_z_delta - z_delta))
        w.xor(s.sum_bits, window)
        if not s.stale:
            for i, b in enumerate((*s.positive, *s.negative)):
                d = _int64(int(b) - buckets[i])
                w.varbit_int(_int64(d - bucket_deltas[i]))
                bucket_deltas[i] = d
                buckets[i] = int(b)
        t, t_delta, cnt, z_cnt = s.t, new_t_delta, int(s.count), int(s.zero_count)
        cnt_delta, z_delta = new_cnt_delta, new_z_delta


def _encode_float(w: _BitWriter, samples: list[_Sample]) -> None:
    """A float chunk's samples: XOR fields for every value."""
    first = samples[0]
    _write_layout(w, first)
    w.varbit_int(first.t)
    for value in (first.count, first.zero_count):
        w.bits(_bits(value), 64)
    w.bits(first.sum_bits, 64)
    for b in (*first.positive, *first.negative):
        w.bits(_bits(b), 64)
    t, t_delta = first.t, 0
    count_w = [_bits(first.count), _NO_WINDOW, 0]
    zero_w = [_bits(first.zero_count), _NO_WINDOW, 0]
    sum_w = [first.sum_bits, _NO_WINDOW, 0]
    bucket_w = [[_bits(b), _NO_WINDOW, 0] for b in (*first.positive, *first.negative)]
    for s in samples[1:]:
        new_t_delta = _int64(s.t - t)
        w.varbit_int(_int64(new_t_delta - t_delta))
        w.xor(_bits(s.count), count_w)
        w.xor(_bits(s.zero_count), zero_w)
        w.xor(s.sum_bits, sum_w)
        if not s.stale:
            for window, b in zip(bucket_w, (*s.positive, *s.negative), strict=True):
                w.xor(_bits(b), window)
        t, t_delta = s.t, new_t_delta


# Cutting, as Prometheus's head cuts and widens its chunks.


def encode_histogram_chunks(
    samples: Sequence[tuple[int, bytes]], max_samples: int = SAMPLES_PER_CHUNK
) -> list[HistogramChunk]:
    """One series' samples as chunks, cut where Prometheus's head cuts them: at a change of
    schema, zero threshold, custom bounds or flavour (integer/float, counter/gauge), at a
    counter reset or vanished bucket, after a stale sample, and every `max_samples`. New
    buckets widen the open chunk's layout (earlier samples get zero-count buckets there)."""
    if not 1 <= max_samples <= MAX_CHUNK_SAMPLES:
        raise ValueError(f"max_samples must be in 1..{MAX_CHUNK_SAMPLES}, got {max_samples}")
    chunks: list[_OpenChunk] = []
    for t, data in samples:
        s = _sample(t, data)
        _check_valid(s)
        if chunks and s.t <= chunks[-1].samples[-1].t:
            raise ValueError(f"timestamps must be strictly increasing: {t} after a later one")
        header = _append(chunks[-1], s, max_samples) if chunks else _first_header(s, False, False)
        if header is not None:
            chunks.append(_OpenChunk(s, header))
    return [c.close() for c in chunks]


def _check_valid(s: _Sample) -> None:
    """What Prometheus checks before it stores a histogram, as far as cutting relies on it."""
    for spans, values in ((s.positive_spans, s.positive), (s.negative_spans, s.negative)):
        if any(offset < 0 for offset, _ in spans[1:]):
            raise ValueError(f"histogram at {s.t} has a span with a negative offset")
        if _bucket_count(spans) != len(values):
            raise ValueError(f"histogram at {s.t}: its spans do not cover its buckets")


def _first_header(s: _Sample, appendable: bool, reset: bool) -> CounterResetHeader:
    """The header of a chunk that `s` starts, as the head sets it."""
    if s.hint == Histogram.RESET_HINT_GAUGE:
        return CounterResetHeader.GAUGE
    if reset:
        return CounterResetHeader.COUNTER_RESET
    if appendable:
        return CounterResetHeader.NOT_COUNTER_RESET
    return CounterResetHeader.UNKNOWN


def _indices(spans: list[tuple[int, int]]) -> list[int]:
    """Bucket indices that spans cover, in order."""
    out: list[int] = []
    at = 0
    for offset, length in spans:
        at += offset
        out.extend(range(at, at + length))
        at += length
    return out


def spans_of(indices: Sequence[int]) -> list[tuple[int, int]]:
    """The fewest (offset, length) spans covering sorted bucket indices (no empty spans),
    as Prometheus's head merges them."""
    spans: list[tuple[int, int]] = []
    last = 0
    for i in indices:
        if spans and i == last + 1:
            spans[-1] = (spans[-1][0], spans[-1][1] + 1)
        else:
            spans.append((i - last - (1 if spans else 0), 1))
        last = i
    return spans


def _absolute(s: _Sample) -> tuple[dict[int, float], dict[int, float]]:
    """Bucket index -> absolute count, positive and negative."""
    out = []
    for spans, values in ((s.positive_spans, s.positive), (s.negative_spans, s.negative)):
        if not s.is_float:
            running, absolute = 0, list[float]()
            for v in values:
                running = _int64(running + int(v))
                absolute.append(running)
            values = absolute
        out.append(dict(zip(_indices(spans), values, strict=False)))
    return out[0], out[1]


class _OpenChunk:
    """A chunk being filled: its samples, layout, header and the last sample's state."""

    def __init__(self, first: _Sample, header: CounterResetHeader) -> None:
        self.samples = [first]
        self.header = header
        self.layout = first
        self.absolute = [_absolute(first)]

    def add(self, s: _Sample, layout: _Sample | None) -> None:
        """Append a sample; `layout` is the chunk's new layout when it widens."""
        self.samples.append(s)
        self.absolute.append(_absolute(s))
        if layout is not None:
            self.layout = layout

    def close(self) -> HistogramChunk:
        """Every sample laid out in the chunk's final layout, then encoded."""
        pos_idx = _indices(self.layout.positive_spans)
        neg_idx = _indices(self.layout.negative_spans)
        out = []
        for s, (pos, neg) in zip(self.samples, self.absolute, strict=True):
            if not s.stale:
                s.positive_spans = self.layout.positive_spans
                s.negative_spans = self.layout.negative_spans
                s.positive = _relayout(pos, pos_idx, s.is_float)
                s.negative = _relayout(neg, neg_idx, s.is_float)
            out.append(s)
        return _encode(out, self.header)


def _relayout(absolute: dict[int, float], indices: list[int], is_float: bool) -> list[float]:
    """Bucket values in a layout: empty buckets where the sample had none; deltas for integers."""
    values = [absolute.get(i, 0) for i in indices]
    if is_float:
        return values
    return [_int64(int(v) - int(p)) for v, p in zip(values, [0, *values], strict=False)]


def _append(chunk: _OpenChunk, s: _Sample, max_samples: int) -> CounterResetHeader | None:
    """Append `s` to the chunk, or the header of the new chunk it starts."""
    last = chunk.samples[-1]
    gauge = s.hint == Histogram.RESET_HINT_GAUGE
    if s.is_float != chunk.samples[0].is_float:
        ok, reset, layout = False, s.hint == Histogram.RESET_HINT_YES, None
    elif gauge:
        ok, reset, layout = _appendable_gauge(chunk, last, s), False, None
        if ok and not s.stale:
            layout = _gauge_layout(chunk.layout, s)
    else:
        ok, reset, layout = _appendable(chunk, last, s)
    if len(chunk.samples) >= max_samples or not ok or reset:
        return _first_header(s, ok, reset)
    chunk.add(s, layout)
    return None


def _same_layout_kind(layout: _Sample, s: _Sample) -> bool:
    """Schema, zero threshold (compared as floats, as Prometheus does) and custom bounds."""
    return (
        s.schema == layout.schema
        and s.zero_threshold == layout.zero_threshold
        and [_bits(v) for v in s.custom_values] == [_bits(v) for v in layout.custom_values]
    )


def _appendable(chunk: _OpenChunk, last: _Sample, s: _Sample) -> tuple[bool, bool, _Sample | None]:
    """(append, counter reset, new layout) for a counter histogram."""
    if s.hint == Histogram.RESET_HINT_YES:
        return False, True, None
    if chunk.header == CounterResetHeader.GAUGE:
        return False, False, None
    if s.stale:
        return True, False, None
    if last.stale:
        return False, False, None
    if s.count < last.count:
        return False, True, None
    if not _same_layout_kind(chunk.layout, s):
        return False, False, None
    if s.zero_count < last.zero_count:
        return False, True, None
    # The last sample's buckets are the chunk's layout: a sample appended with more
    # buckets made its spans the layout.
    new_maps = _absolute(s)
    grows = False
    for old, new in zip(chunk.absolute[-1], new_maps, strict=True):
        if not old.keys() <= new.keys() or any(new[i] < v for i, v in old.items()):
            return False, True, None
        grows = grows or len(new) > len(old)
    return True, False, s if grows else None


def _appendable_gauge(chunk: _OpenChunk, last: _Sample, s: _Sample) -> bool:
    """Whether a gauge histogram goes into the chunk (layouts merge, nothing resets)."""
    if chunk.header != CounterResetHeader.GAUGE:
        return False
    if s.stale:
        return True
    if last.stale:
        return False
    return _same_layout_kind(chunk.layout, s)


def _gauge_layout(layout: _Sample, s: _Sample) -> _Sample | None:
    """A gauge chunk's layout after `s`: unchanged, `s`'s own, or the merge of both."""
    new_layout = None
    merged = _Sample(t=s.t, is_float=s.is_float, hint=s.hint, stale=False)
    merged.schema, merged.zero_threshold = s.schema, s.zero_threshold
    merged.custom_values = s.custom_values
    forward = backward = False
    for name in ("positive_spans", "negative_spans"):
        old = set(_indices(getattr(layout, name)))
        new = set(_indices(getattr(s, name)))
        forward = forward or bool(new - old)
        backward = backward or bool(old - new)
        setattr(merged, name, spans_of(sorted(old | new)))
    if forward and backward:
        new_layout = merged
    elif forward:
        new_layout = s
    return new_layout


# Decoding, as Prometheus's iterators read.


def _varbit(r: _BitReader, signed: bool) -> int:
    """One varbit integer."""
    ones = 0
    while ones < 8 and r.read(1):
        ones += 1
    if ones == 0:
        return 0
    if ones == 8:
        raw = r.read(64)
        return _int64(raw) if signed else raw
    width = _VARBIT_ALL[ones - 1][0]
    raw = r.read(width)
    if signed and raw > 1 << (width - 1):
        raw -= 1 << width
    return raw


def _read_xor(r: _BitReader, window: list[int]) -> int:
    """One XOR field against window = [previous bits, leading, trailing]; the new bits."""
    if r.read(1):
        if r.read(1):
            window[1] = r.read(5)
            width = r.read(6) or 64
            window[2] = 64 - window[1] - width
            if window[2] < 0:
                raise CorruptChunk("histogram chunk has an XOR window wider than 64 bits")
        window[0] ^= r.read(64 - window[1] - window[2]) << window[2]
    return window[0]


def _read_layout(r: _BitReader) -> _Sample:
    """The chunk's layout, as a sample without values."""
    s = _Sample(t=0, is_float=False, hint=0, stale=False)
    threshold = r.read(8)
    if threshold == _RAW_THRESHOLD:
        s.zero_threshold = _float(r.read(64))
    elif threshold:
        s.zero_threshold = math.ldexp(0.5, threshold - 243)
    s.schema = _varbit(r, signed=True)
    for spans in (s.positive_spans, s.negative_spans):
        for _ in range(_varbit(r, signed=False)):
            length = _varbit(r, signed=False)
            spans.append((_varbit(r, signed=True), length))
    if s.schema == CUSTOM_BUCKETS_SCHEMA:
        for _ in range(_varbit(r, signed=False)):
            millis = _varbit(r, signed=False)
            s.custom_values.append(_float(r.read(64)) if millis == 0 else (millis - 1) / 1000)
    return s


def decode_histogram_chunk(data: bytes, encoding: int) -> DecodedChunk:
    """A HISTOGRAM or FLOAT_HISTOGRAM chunk's header and samples; CorruptChunk when the
    bytes end too soon or hold what no writer writes."""
    if encoding not in (HISTOGRAM, FLOAT_HISTOGRAM):
        raise ValueError(f"not a histogram chunk encoding: {encoding}")
    if len(data) < _HEADER_BYTES:
        raise CorruptChunk(f"histogram chunk of {len(data)} bytes has no header")
    count = int.from_bytes(data[:2], "big")
    header = CounterResetHeader(data[2] >> 6)
    r = _BitReader(data, _HEADER_BYTES)
    try:
        if count == 0:
            return DecodedChunk(header, [])
        layout = _read_layout(r)
        is_float = encoding == FLOAT_HISTOGRAM
        rows = (_decode_float if is_float else _decode_int)(r, count, layout)
    except CorruptChunk as exc:
        raise CorruptChunk(f"histogram chunk: {exc}") from None
    out = []
    for i, (t, s) in enumerate(rows, start=1):
        s.is_float = is_float
        s.hint = _hint(header, i)
        out.append((t, _message(t, s, layout)))
    return DecodedChunk(header, out)


def _hint(header: CounterResetHeader, position: int) -> int:
    """The reset hint Prometheus gives the sample at 1-based `position`."""
    if header == CounterResetHeader.GAUGE:
        return Histogram.RESET_HINT_GAUGE
    if position > 1:
        return Histogram.RESET_HINT_NO
    if header == CounterResetHeader.COUNTER_RESET:
        return Histogram.RESET_HINT_YES
    return Histogram.RESET_HINT_UNSPECIFIED


def _decode_int(r: _BitReader, count: int, layout: _Sample) -> list[tuple[int, _Sample]]:
    """An integer chunk's samples."""
    n_pos = _bucket_count(layout.positive_spans)
    n_buckets = n_pos + _bucket_count(layout.negative_spans)
    t = _varbit(r, signed=True)
    cnt = _varbit(r, signed=False)
    z_cnt = _varbit(r, signed=False)
    window = [r.read(64), 0, 0]
    buckets: list[float] = [_varbit(r, signed=True) for _ in range(n_buckets)]
    deltas = [0] * n_buckets
    t_delta = cnt_delta = z_delta = 0
    rows = []
    for i in range(count):
        if i:
            t_delta = _int64(t_delta + _varbit(r, signed=True))
            t = _int64(t + t_delta)
            cnt_delta = _int64(cnt_delta + _varbit(r, signed=True))
            cnt = (cnt + cnt_delta) & _MASK64
            z_delta = _int64(z_delta + _varbit(r, signed=True))
            z_cnt = (z_cnt + z_delta) & _MASK64
            _read_xor(r, window)
            if window[0] != STALE_NAN_BITS:
                for j in range(n_buckets):
                    deltas[j] = _int64(deltas[j] + _varbit(r, signed=True))
                    buckets[j] = _int64(int(buckets[j]) + deltas[j])
        s = _Sample(t=t, is_float=False, hint=0, stale=window[0] == STALE_NAN_BITS)
        s.sum_bits, s.count, s.zero_count = window[0], cnt, z_cnt
        s.positive, s.negative = buckets[:n_pos], buckets[n_pos:]
        rows.append((t, s))
    return rows


def _decode_float(r: _BitReader, count: int, layout: _Sample) -> list[tuple[int, _Sample]]:
    """A float chunk's samples."""
    n_pos = _bucket_count(layout.positive_spans)
    n_buckets = n_pos + _bucket_count(layout.negative_spans)
    t = _varbit(r, signed=True)
    count_w, zero_w, sum_w = ([r.read(64), 0, 0] for _ in range(3))
    bucket_w = [[r.read(64), 0, 0] for _ in range(n_buckets)]
    t_delta = 0
    rows = []
    for i in range(count):
        if i:
            t_delta = _int64(t_delta + _varbit(r, signed=True))
            t = _int64(t + t_delta)
            for window in (count_w, zero_w, sum_w):
                _read_xor(r, window)
            if sum_w[0] != STALE_NAN_BITS:
                for window in bucket_w:
                    _read_xor(r, window)
        s = _Sample(t=t, is_float=True, hint=0, stale=sum_w[0] == STALE_NAN_BITS)
        s.sum_bits, s.count, s.zero_count = sum_w[0], _float(count_w[0]), _float(zero_w[0])
        values = [_float(w[0]) for w in bucket_w]
        s.positive, s.negative = values[:n_pos], values[n_pos:]
        rows.append((t, s))
    return rows


def _message(t: int, s: _Sample, layout: _Sample) -> bytes:
    """The Histogram message Prometheus's remote read would send for the sample."""
    m = Histogram(sum=_float(s.sum_bits), timestamp=t)
    if s.stale:  # Prometheus returns a stale sample as a histogram with only its sum
        if s.is_float:
            m.count_float, m.zero_count_float = 0.0, 0.0
        else:
            m.count_int, m.zero_count_int = 0, 0
        return m.SerializeToString(deterministic=True)
    m.reset_hint = s.hint  # type: ignore[assignment]
    m.schema = layout.schema
    m.zero_threshold = layout.zero_threshold
    m.custom_values.extend(layout.custom_values)
    for offset, length in layout.positive_spans:
        m.positive_spans.add(offset=offset, length=length)
    for offset, length in layout.negative_spans:
        m.negative_spans.add(offset=offset, length=length)
    if s.is_float:
        m.count_float, m.zero_count_float = float(s.count), float(s.zero_count)
        m.positive_counts.extend(s.positive)
        m.negative_counts.extend(s.negative)
    else:
        m.count_int, m.zero_count_int = int(s.count), int(s.zero_count)
        m.positive_deltas.extend(int(b) for b in s.positive)
        m.negative_deltas.extend(int(b) for b in s.negative)
    return m.SerializeToString(deterministic=True)
