"""Column encoding of one series' native histogram samples; layout in
docs/block-format.md#histogram-samples.

Bytes in, bytes out, exact to the bit: every field of every `io.prometheus.write.v2.Histogram`
(remote write 1.0's `prometheus.Histogram` has the same fields and numbers) comes back, float
bits included. The output is not compressed: the caller puts it into a zstd frame, and the
columns are laid out so that zstd finds long runs of zero bytes in them (deltas between
consecutive samples, bucket layouts once per run, byte planes).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from blocks.columns import (
    delta,
    delta_of_delta,
    from_planes,
    start_mask,
    to_planes,
    undelta,
    undelta_of_delta,
    unzigzag,
    zigzag,
)
from blocks.errors import CorruptBlock
from proto.write_v2_pb2 import Histogram

MAGIC = b"SHC1"
# magic, samples n, layout runs r, spans s (negative and positive together), custom values c,
# float bucket encoding (a decimal scale 0..12, or FLOAT_XOR)
HEADER = struct.Struct("<4sIIIIB")
MAX_DECIMAL_SCALE = 12  # 10**12 < 2**53: the divisor is an exact float64
FLOAT_XOR = 255
# Above this a float64 no longer holds every integer, so mantissas must stay below it.
_MAX_MANTISSA = 2.0**53
MAX_SAMPLES = 0xFFFF_FFFF

# What the `count` and `zero_count` oneofs hold, two bits each in the flags word.
KIND_NONE = 0
KIND_INT = 1
KIND_FLOAT = 2
_KIND_OF = {None: KIND_NONE, "count_int": KIND_INT, "count_float": KIND_FLOAT}
_ZERO_KIND_OF = {None: KIND_NONE, "zero_count_int": KIND_INT, "zero_count_float": KIND_FLOAT}

# Per-sample columns, in this order, each n words.
_SAMPLE_COLUMNS = 11
_TS, _TS_FIELD, _START_TS, _FLAGS, _COUNT, _SUM, _ZERO_COUNT = range(7)
_LEN_POS_DELTAS, _LEN_NEG_DELTAS, _LEN_POS_COUNTS, _LEN_NEG_COUNTS = range(7, 11)
# Per-run columns of the layout section, each r words.
_RUN_COLUMNS = 6

_T = TypeVar("_T")
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Layout:
    """What rarely changes between samples: stored once per run of equal layouts."""

    schema: int
    zero_threshold_bits: int
    negative_spans: tuple[tuple[int, int], ...]
    positive_spans: tuple[tuple[int, int], ...]
    custom_value_bits: tuple[int, ...]


def canonical_histogram(data: bytes) -> bytes:
    """The message as decode_histograms returns it: unknown fields dropped, fields in
    number order, repeated numbers packed (protobuf's deterministic serialization)."""
    return _serialize(_parse(data))


def encode_histograms(timestamps: npt.ArrayLike, histograms: Sequence[bytes]) -> bytes:
    """One series' histogram samples (sample timestamps, serialized Histogram messages)
    as columns; ValueError when the inputs do not fit together or a message is invalid."""
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    if ts.ndim != 1 or len(ts) != len(histograms):
        raise ValueError(f"{ts.shape} timestamps for {len(histograms)} histograms")
    if len(ts) > MAX_SAMPLES:
        raise ValueError(f"at most {MAX_SAMPLES} samples, got {len(ts)}")
    messages = [_parse(h) for h in histograms]
    n = len(messages)
    sample_words = np.zeros((_SAMPLE_COLUMNS, n), dtype=np.uint64)
    sample_words[_TS] = zigzag(delta_of_delta(ts, np.array([n])))
    _scalar_columns(messages, ts, sample_words)
    layout_words, runs, spans, customs = _layout_section(messages)
    int_words, float_words, float_scale = _bucket_sections(messages, sample_words)
    header = HEADER.pack(MAGIC, n, runs, spans, customs, float_scale)
    return b"".join(
        (
            header,
            to_planes(sample_words.ravel()),
            to_planes(layout_words),
            to_planes(int_words),
            to_planes(float_words),
        )
    )


def decode_histograms(data: bytes) -> tuple[I64, list[bytes]]:
    """Inverse of encode_histograms: (timestamps, canonical serialized messages)."""
    if len(data) < HEADER.size:
        raise CorruptBlock("histogram samples shorter than their header")
    magic, n, runs, spans, customs, float_scale = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptBlock(f"histogram samples have magic {magic!r}")
    if float_scale > MAX_DECIMAL_SCALE and float_scale != FLOAT_XOR:
        raise CorruptBlock(f"histogram samples have float bucket encoding {float_scale}")
    layout_count = _RUN_COLUMNS * runs + 2 * spans + customs
    offset = HEADER.size
    sample_words = _words(data, offset, _SAMPLE_COLUMNS * n).reshape(_SAMPLE_COLUMNS, n)
    offset += _SAMPLE_COLUMNS * n * 8
    layout_words = _words(data, offset, layout_count)
    offset += layout_count * 8
    lengths = [_lengths(sample_words[c]) for c in range(_LEN_POS_DELTAS, _SAMPLE_COLUMNS)]
    int_total = int(lengths[0].sum() + lengths[1].sum())
    float_total = int(lengths[2].sum() + lengths[3].sum())
    int_words = _words(data, offset, int_total)
    offset += int_total * 8
    float_words = _words(data, offset, float_total)
    offset += float_total * 8
    if offset != len(data):
        raise CorruptBlock(f"histogram samples hold {len(data)} bytes, expected {offset}")
    ts = undelta_of_delta(unzigzag(sample_words[_TS]), np.array([n]))
    layouts = _decode_layouts(layout_words, n, runs, spans, customs)
    buckets = _decode_buckets(int_words, float_words, lengths, float_scale)
    try:
        messages = _build_messages(ts, sample_words, layouts, buckets)
    except (ValueError, TypeError, OverflowError) as exc:  # a field out of its type's range
        raise CorruptBlock(f"histogram samples decode to an invalid message: {exc}") from None
    return ts, [_serialize(m) for m in messages]


def _parse(data: bytes) -> Histogram:
    """A Histogram message without unknown fields; ValueError when it does not parse."""
    message = Histogram()
    try:
        message.ParseFromString(data)
    except Exception as exc:  # protobuf's DecodeError, raised by its C extension
        raise ValueError(f"not a Histogram message: {exc}") from None
    message.DiscardUnknownFields()
    return message


def _serialize(message: Histogram) -> bytes:
    """Deterministic serialization: the same message gives the same bytes."""
    return message.SerializeToString(deterministic=True)


def _bits(value: float) -> int:
    """A float64's bit pattern."""
    return int(np.array(value, dtype=np.float64).view(np.uint64))


def _floats(bits: U64) -> list[float]:
    """Bit patterns as Python floats (bits kept: NaN payloads survive the conversion)."""
    return bits.view(np.float64).tolist()  # type: ignore[no-any-return]


def _scalar_columns(messages: list[Histogram], ts: I64, out: U64) -> None:
    """Fill the per-sample columns but the timestamps and the bucket lengths."""
    n = len(messages)
    field_ts = np.array([m.timestamp for m in messages], dtype=np.int64)
    start_ts = np.array([m.start_timestamp for m in messages], dtype=np.int64)
    first = np.zeros(n, dtype=bool)
    first[:1] = True
    # The message's own timestamp is usually the sample's: the difference is 0 (or, when the
    # field is unset, minus the timestamp, whose deltas are the scrape interval).
    out[_TS_FIELD] = zigzag(delta(field_ts - ts, first))
    out[_START_TS] = zigzag(delta(start_ts, first))
    count_kind = np.array([_KIND_OF[m.WhichOneof("count")] for m in messages], dtype=np.uint64)
    zero_kind = np.array(
        [_ZERO_KIND_OF[m.WhichOneof("zero_count")] for m in messages], dtype=np.uint64
    )
    hints = zigzag(np.array([m.reset_hint for m in messages], dtype=np.int64))
    out[_FLAGS] = count_kind | (zero_kind << np.uint64(2)) | (hints << np.uint64(4))
    out[_COUNT] = _oneof_column(
        count_kind, [m.count_int for m in messages], [m.count_float for m in messages]
    )
    out[_ZERO_COUNT] = _oneof_column(
        zero_kind, [m.zero_count_int for m in messages], [m.zero_count_float for m in messages]
    )
    sums = np.array([m.sum for m in messages], dtype=np.float64).view(np.uint64)
    out[_SUM] = sums ^ np.concatenate((np.zeros(1, np.uint64), sums[:-1]))[:n]


def _oneof_column(kind: U64, ints: list[int], floats: list[float]) -> U64:
    """An integer-or-float oneof as one column: each integer as the zigzag'd difference to
    the previous integer sample's, each float's bits XOR the previous float sample's."""
    out = np.zeros(len(kind), dtype=np.uint64)
    is_int = kind == KIND_INT
    values = np.array(ints, dtype=np.uint64)[is_int]
    diffs = values.copy()
    diffs[1:] -= values[:-1]  # wraps modulo 2**64, undone exactly by a cumulative sum
    out[is_int] = zigzag(diffs.view(np.int64))
    is_float = kind == KIND_FLOAT
    bits = np.array(floats, dtype=np.float64).view(np.uint64)[is_float]
    xored = bits.copy()
    xored[1:] ^= bits[:-1]
    out[is_float] = xored
    return out


def _undo_oneof_column(kind: U64, words: U64) -> tuple[U64, U64]:
    """Inverse of _oneof_column: (integer values, float bits), each defined where its kind is."""
    ints = np.zeros(len(kind), dtype=np.uint64)
    is_int = kind == KIND_INT
    ints[is_int] = np.cumsum(unzigzag(words[is_int]).view(np.uint64), dtype=np.uint64)
    bits = np.zeros(len(kind), dtype=np.uint64)
    is_float = kind == KIND_FLOAT
    xored = words[is_float]
    bits[is_float] = np.bitwise_xor.accumulate(xored) if len(xored) else xored
    return ints, bits


def _layout_of(message: Histogram) -> _Layout:
    """The message's layout fields."""
    return _Layout(
        schema=message.schema,
        zero_threshold_bits=_bits(message.zero_threshold),
        negative_spans=tuple((s.offset, s.length) for s in message.negative_spans),
        positive_spans=tuple((s.offset, s.length) for s in message.positive_spans),
        custom_value_bits=tuple(_bits(v) for v in message.custom_values),
    )


def _layout_section(messages: list[Histogram]) -> tuple[U64, int, int, int]:
    """Runs of equal layouts as words: (words, runs, spans, custom values)."""
    runs: list[tuple[_Layout, int]] = []
    for message in messages:
        layout = _layout_of(message)
        if runs and runs[-1][0] == layout:
            runs[-1] = (layout, runs[-1][1] + 1)
        else:
            runs.append((layout, 1))
    layouts = [layout for layout, _ in runs]
    per_run = np.array(
        [
            [length for _, length in runs],
            zigzag(np.array([x.schema for x in layouts], dtype=np.int64)).tolist(),
            [x.zero_threshold_bits for x in layouts],
            [len(x.negative_spans) for x in layouts],
            [len(x.positive_spans) for x in layouts],
            [len(x.custom_value_bits) for x in layouts],
        ],
        dtype=np.uint64,
    ).reshape(_RUN_COLUMNS, len(runs))
    spans = [span for x in layouts for span in (*x.negative_spans, *x.positive_spans)]
    offsets = zigzag(np.array([offset for offset, _ in spans], dtype=np.int64))
    span_lengths = np.array([length for _, length in spans], dtype=np.uint64)
    customs = np.array([b for x in layouts for b in x.custom_value_bits], dtype=np.uint64)
    words = np.concatenate((per_run.ravel(), offsets, span_lengths, customs))
    return words, len(runs), len(spans), len(customs)


def _decode_layouts(words: U64, n: int, runs: int, spans: int, customs: int) -> list[_Layout]:
    """Inverse of _layout_section: the layout of every sample."""
    per_run = words[: _RUN_COLUMNS * runs].reshape(_RUN_COLUMNS, runs)
    lengths, schemas, thresholds, neg, pos, custom = per_run.tolist()
    if sum(lengths) != n or 0 in lengths:
        raise CorruptBlock(f"histogram layout runs cover {sum(lengths)} samples, not {n}")
    if sum(neg) + sum(pos) != spans or sum(custom) != customs:
        raise CorruptBlock("histogram layout counts do not add up")
    at = _RUN_COLUMNS * runs
    offsets = unzigzag(words[at : at + spans]).tolist()
    span_lengths = words[at + spans : at + 2 * spans].tolist()
    custom_bits = words[at + 2 * spans :].tolist()
    schema_values = unzigzag(np.array(schemas, dtype=np.uint64)).tolist()
    out: list[_Layout] = []
    span_at = custom_at = 0
    for i, schema in enumerate(schema_values):
        run_spans = list(zip(offsets[span_at:], span_lengths[span_at:], strict=False))
        layout = _Layout(
            schema=schema,
            zero_threshold_bits=thresholds[i],
            negative_spans=tuple(run_spans[: neg[i]]),
            positive_spans=tuple(run_spans[neg[i] : neg[i] + pos[i]]),
            custom_value_bits=tuple(custom_bits[custom_at : custom_at + custom[i]]),
        )
        span_at += neg[i] + pos[i]
        custom_at += custom[i]
        out.extend([layout] * lengths[i])
    return out


def _bucket_sections(messages: list[Histogram], sample_words: U64) -> tuple[U64, U64, int]:
    """The four bucket lists as (integer words, float words, float encoding); fills their
    length columns."""
    # Integers type-check as floats; the column number tells the two apart.
    int_lists: tuple[list[list[float]], ...] = (
        [list(m.positive_deltas) for m in messages],
        [list(m.negative_deltas) for m in messages],
    )
    float_lists = (
        [list(m.positive_counts) for m in messages],
        [list(m.negative_counts) for m in messages],
    )
    float_values = np.array([v for lists in float_lists for x in lists for v in x], np.float64)
    scale = _decimal_scale(float_values)
    words = []
    for column, lists in enumerate((*int_lists, *float_lists)):
        lengths = np.array([len(x) for x in lists], dtype=np.int64)
        first = np.zeros(len(lengths), dtype=bool)
        first[:1] = True
        sample_words[_LEN_POS_DELTAS + column] = zigzag(delta(lengths, first))
        flat = [v for x in lists for v in x]
        if column < len(int_lists):
            words.append(_encode_int_buckets(np.array(flat, dtype=np.int64), lengths))
        elif scale == FLOAT_XOR:
            bits = np.array(flat, dtype=np.float64).view(np.uint64)
            words.append(_chain_xor(bits, lengths))
        else:
            mantissas = _mantissas(np.array(flat, dtype=np.float64), scale)
            words.append(zigzag(_chain_delta(mantissas, lengths)))
    return np.concatenate(words[:2]), np.concatenate(words[2:]), scale


def _mantissas(values: F64, scale: int) -> I64:
    """Integers m with m / 10**scale == value (checked by _decimal_scale)."""
    return np.round(values * 10.0**scale).astype(np.int64)


def _from_mantissas(mantissas: I64, scale: int) -> F64:
    """The floats of _mantissas, by the very expression _decimal_scale checked."""
    out: F64 = mantissas.astype(np.float64) / 10.0**scale
    return out


def _decimal_scale(values: F64) -> int:
    """The smallest scale at which every value is a decimal m / 10**scale bit for bit, as
    in a page's decimal chunks (counts are mostly whole or short fractions); FLOAT_XOR when
    there is none (NaN, infinities, -0.0, long fractions)."""
    if not len(values):
        return 0
    if not bool(np.isfinite(values).all()):
        return FLOAT_XOR
    for scale in range(MAX_DECIMAL_SCALE + 1):
        scaled = np.round(values * 10.0**scale)
        if float(np.abs(scaled).max()) >= _MAX_MANTISSA:
            return FLOAT_XOR
        back = _from_mantissas(scaled.astype(np.int64), scale)
        if np.array_equal(back.view(np.uint64), values.view(np.uint64)):
            return scale
    return FLOAT_XOR


def _lengths(column: U64) -> I64:
    """A bucket-length column back to the lengths."""
    first = np.zeros(len(column), dtype=bool)
    first[:1] = True
    lengths = undelta(unzigzag(column), first)
    if len(lengths) and (lengths.min() < 0 or lengths.max() > MAX_SAMPLES):
        raise CorruptBlock("histogram samples have a negative or huge bucket count")
    return lengths


def _chains(lengths: I64) -> list[tuple[int, int, int, int]]:
    """Runs of consecutive samples with equally many buckets (at least one):
    (first element, samples, buckets each, first sample)."""
    out: list[tuple[int, int, int, int]] = []
    if not len(lengths):
        return out
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    i = 0
    n = len(lengths)
    bounds = np.flatnonzero(np.diff(lengths)) + 1
    for end in [*bounds.tolist(), n]:
        if lengths[i] > 0:
            out.append((int(starts[i]), end - i, int(lengths[i]), i))
        i = end
    return out


def _encode_int_buckets(deltas: I64, lengths: I64) -> U64:
    """Bucket deltas -> absolute counts -> _chain_delta -> zigzag."""
    absolute = undelta(deltas, start_mask(lengths, len(deltas)))
    return zigzag(_chain_delta(absolute, lengths))


def _decode_int_buckets(words: U64, lengths: I64) -> I64:
    """Inverse of _encode_int_buckets."""
    absolute = _unchain_delta(unzigzag(words), lengths)
    return delta(absolute, start_mask(lengths, len(absolute)))


def _chain_delta(values: I64, lengths: I64) -> I64:
    """Per bucket, the difference to the previous sample's same bucket (when the sample
    before has as many buckets; the value itself otherwise). Wraps, exactly undone."""
    out = values.copy()
    for at, samples, width, _ in _chains(lengths):
        block = values[at : at + samples * width].reshape(samples, width)
        out[at + width : at + samples * width] = (block[1:] - block[:-1]).ravel()
    return out


def _unchain_delta(diffs: I64, lengths: I64) -> I64:
    """Inverse of _chain_delta."""
    out = diffs.copy()
    for at, samples, width, _ in _chains(lengths):
        block = diffs[at : at + samples * width].reshape(samples, width)
        out[at : at + samples * width] = np.cumsum(block, axis=0, dtype=np.int64).ravel()
    return out


def _chain_xor(bits: U64, lengths: I64) -> U64:
    """Float bucket bits XOR the previous sample's same bucket (when as many buckets)."""
    out = bits.copy()
    for at, samples, width, _ in _chains(lengths):
        block = bits[at : at + samples * width].reshape(samples, width)
        out[at + width : at + samples * width] = (block[1:] ^ block[:-1]).ravel()
    return out


def _unchain_xor(words: U64, lengths: I64) -> U64:
    """Inverse of _chain_xor."""
    out = words.copy()
    for at, samples, width, _ in _chains(lengths):
        block = words[at : at + samples * width].reshape(samples, width)
        out[at : at + samples * width] = np.bitwise_xor.accumulate(block, axis=0).ravel()
    return out


def _decode_floats(words: U64, lengths: I64, scale: int) -> list[float]:
    """Float bucket counts back from their words."""
    if scale == FLOAT_XOR:
        return _floats(_unchain_xor(words, lengths))
    return _floats(_from_mantissas(_unchain_delta(unzigzag(words), lengths), scale).view(np.uint64))


@dataclass(frozen=True, slots=True)
class _Buckets:
    """The four bucket lists of every sample."""

    positive_deltas: list[list[int]]
    negative_deltas: list[list[int]]
    positive_counts: list[list[float]]
    negative_counts: list[list[float]]


def _split(values: list[_T], lengths: I64) -> list[list[_T]]:
    """A flat list cut into consecutive pieces of the given lengths."""
    ends = np.cumsum(lengths).tolist()
    return [values[e - c : e] for e, c in zip(ends, lengths.tolist(), strict=True)]


def _decode_buckets(
    int_words: U64, float_words: U64, lengths: list[I64], float_scale: int
) -> _Buckets:
    """The bucket lists of every sample, from their sections, lengths and float encoding."""
    pos_d, neg_d, pos_c, neg_c = lengths
    split = int(pos_d.sum())
    fsplit = int(pos_c.sum())
    pos_ints: list[int] = _decode_int_buckets(int_words[:split], pos_d).tolist()
    neg_ints: list[int] = _decode_int_buckets(int_words[split:], neg_d).tolist()
    return _Buckets(
        positive_deltas=_split(pos_ints, pos_d),
        negative_deltas=_split(neg_ints, neg_d),
        positive_counts=_split(_decode_floats(float_words[:fsplit], pos_c, float_scale), pos_c),
        negative_counts=_split(_decode_floats(float_words[fsplit:], neg_c, float_scale), neg_c),
    )


def _build_messages(
    ts: I64,
    sample_words: U64,
    layouts: list[_Layout],
    buckets: _Buckets,
) -> list[Histogram]:
    """Histogram messages from the decoded columns."""
    n = len(ts)
    first = np.zeros(n, dtype=bool)
    first[:1] = True
    field_ts = (undelta(unzigzag(sample_words[_TS_FIELD]), first) + ts).tolist()
    start_ts = undelta(unzigzag(sample_words[_START_TS]), first).tolist()
    flags = sample_words[_FLAGS]
    count_kind = flags & np.uint64(3)
    zero_kind = (flags >> np.uint64(2)) & np.uint64(3)
    if (count_kind == 3).any() or (zero_kind == 3).any():
        raise CorruptBlock("histogram samples have an unknown count kind")
    hints = unzigzag(flags >> np.uint64(4)).tolist()
    count_ints, count_bits = _undo_oneof_column(count_kind, sample_words[_COUNT])
    zero_ints, zero_bits = _undo_oneof_column(zero_kind, sample_words[_ZERO_COUNT])
    sums = _floats(np.bitwise_xor.accumulate(sample_words[_SUM]) if n else sample_words[_SUM])
    counts = (count_kind.tolist(), count_ints.tolist(), _floats(count_bits))
    zeros = (zero_kind.tolist(), zero_ints.tolist(), _floats(zero_bits))
    out = []
    for i in range(n):
        layout = layouts[i]
        m = Histogram(
            sum=sums[i],
            schema=layout.schema,
            zero_threshold=_floats(np.array([layout.zero_threshold_bits], dtype=np.uint64))[0],
            negative_deltas=buckets.negative_deltas[i],
            negative_counts=buckets.negative_counts[i],
            positive_deltas=buckets.positive_deltas[i],
            positive_counts=buckets.positive_counts[i],
            timestamp=field_ts[i],
            start_timestamp=start_ts[i],
            custom_values=_floats(np.array(layout.custom_value_bits, dtype=np.uint64)),
        )
        m.reset_hint = hints[i]  # an open enum: any int32 is kept
        for offset, length in layout.negative_spans:
            m.negative_spans.add(offset=offset, length=length)
        for offset, length in layout.positive_spans:
            m.positive_spans.add(offset=offset, length=length)
        if counts[0][i] == KIND_INT:
            m.count_int = counts[1][i]
        elif counts[0][i] == KIND_FLOAT:
            m.count_float = counts[2][i]
        if zeros[0][i] == KIND_INT:
            m.zero_count_int = zeros[1][i]
        elif zeros[0][i] == KIND_FLOAT:
            m.zero_count_float = zeros[2][i]
        out.append(m)
    return out


def _words(data: bytes, offset: int, count: int) -> U64:
    """`count` words in byte planes at `offset`; CorruptBlock when the data ends first."""
    if offset + count * 8 > len(data):
        raise CorruptBlock(f"histogram samples end inside a column at byte {len(data)}")
    return from_planes(data, count, offset)
