"""WAL record payloads: series definitions, sample columns, native histogram samples and
start-timestamp events of float samples; layout in docs/wal.md.

Only the contents of records live here; framing and checksums are gateway/wal.py's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from blocks.errors import StrataError

SERIES = 1
SAMPLES = 2
# Added with native histograms: WALs written before have no such record and replay as ever.
HISTOGRAMS = 3
# Added with start timestamps of float samples (gateway/head_starts.py); likewise absent
# from older WALs.
STARTS = 4
# type, tenant length
PREFIX = struct.Struct("<BB")
COUNT = struct.Struct("<I")
SERIES_ENTRY = struct.Struct("<II")  # ref, label bytes length


class BadRecord(StrataError):
    """A checksummed record whose contents still do not parse."""


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    """Labels of series that sample records of the same segment refer to by ref."""

    tenant: str
    refs: list[int]
    labels: list[bytes]


@dataclass(frozen=True, slots=True)
class SamplesRecord:
    """Samples as columns; refs name series defined earlier in the same segment."""

    tenant: str
    refs: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, slots=True)
class HistogramsRecord:
    """Histogram samples: refs, timestamps and canonical serialized Histogram messages."""

    tenant: str
    refs: np.ndarray
    timestamps: np.ndarray
    payloads: list[bytes]


@dataclass(frozen=True, slots=True)
class StartsRecord:
    """Start-timestamp entries: refs, sample timestamps, start timestamps; a sample
    timestamp of gateway/head_starts.py's LAST_START_ONLY is a series' last start alone."""

    tenant: str
    refs: np.ndarray
    timestamps: np.ndarray
    starts: np.ndarray


def _prefix(kind: int, tenant: str) -> bytes:
    name = tenant.encode()
    return PREFIX.pack(kind, len(name)) + name


def encode_series(tenant: str, refs: list[int], labels: list[bytes]) -> bytes:
    """A SERIES payload."""
    parts = [_prefix(SERIES, tenant), COUNT.pack(len(refs))]
    for ref, label_bytes in zip(refs, labels, strict=True):
        parts.append(SERIES_ENTRY.pack(ref, len(label_bytes)))
        parts.append(label_bytes)
    return b"".join(parts)


def encode_samples(
    tenant: str, refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray
) -> bytes:
    """A SAMPLES payload: little-endian refs (u32), timestamps (i64), value bits (f64)."""
    return _encode_columns(SAMPLES, tenant, refs, timestamps, values.astype("<f8", copy=False))


def _encode_columns(
    kind: int, tenant: str, refs: np.ndarray, timestamps: np.ndarray, third: np.ndarray
) -> bytes:
    """A payload of `count` entries of 20 bytes, as three columns: refs (u32),
    timestamps (i64) and `third`, 8 bytes an entry (SAMPLES and STARTS)."""
    return b"".join(
        (
            _prefix(kind, tenant),
            COUNT.pack(len(refs)),
            refs.astype("<u4", copy=False).tobytes(),
            timestamps.astype("<i8", copy=False).tobytes(),
            third.tobytes(),
        )
    )


def encode_histograms(
    tenant: str, refs: np.ndarray, timestamps: np.ndarray, payloads: list[bytes]
) -> bytes:
    """A HISTOGRAMS payload: refs (u32), timestamps (i64), message lengths (u32), then the
    messages back to back."""
    lengths = np.fromiter(map(len, payloads), dtype="<u4", count=len(payloads))
    return b"".join(
        (
            _prefix(HISTOGRAMS, tenant),
            COUNT.pack(len(refs)),
            refs.astype("<u4", copy=False).tobytes(),
            timestamps.astype("<i8", copy=False).tobytes(),
            lengths.tobytes(),
            *payloads,
        )
    )


def encode_starts(
    tenant: str, refs: np.ndarray, timestamps: np.ndarray, starts: np.ndarray
) -> bytes:
    """A STARTS payload: refs (u32), sample timestamps (i64), start timestamps (i64)."""
    return _encode_columns(STARTS, tenant, refs, timestamps, starts.astype("<i8", copy=False))


def _decode_histograms(tenant: str, payload: bytes, pos: int, count: int) -> HistogramsRecord:
    if len(payload) - pos < count * 16:
        raise BadRecord(f"histograms record of {count} samples is too short")
    refs = np.frombuffer(payload, "<u4", count, pos).astype(np.uint32)
    ts = np.frombuffer(payload, "<i8", count, pos + 4 * count).astype(np.int64)
    lengths = np.frombuffer(payload, "<u4", count, pos + 12 * count).astype(np.int64)
    pos += 16 * count
    if len(payload) - pos != int(lengths.sum()):
        raise BadRecord(f"histograms record of {count} samples has the wrong size")
    ends = (pos + np.cumsum(lengths)).tolist()
    starts = [pos, *ends[:-1]] if count else []
    messages = [payload[a:b] for a, b in zip(starts, ends, strict=True)]
    return HistogramsRecord(tenant, refs, ts, messages)


def decode(payload: bytes) -> SeriesRecord | SamplesRecord:
    """Parse a SERIES or SAMPLES payload (BadRecord for any other type)."""
    record = decode_record(payload)
    if isinstance(record, HistogramsRecord | StartsRecord):
        raise BadRecord("a histograms or starts record where series or samples were expected")
    return record


def decode_record(
    payload: bytes,
) -> SeriesRecord | SamplesRecord | HistogramsRecord | StartsRecord:
    """Parse a payload written by encode_series, encode_samples, encode_histograms or
    encode_starts."""
    try:
        kind, tenant_len = PREFIX.unpack_from(payload)
        pos = PREFIX.size + tenant_len
        tenant = payload[PREFIX.size : pos].decode()
        (count,) = COUNT.unpack_from(payload, pos)
        pos += COUNT.size
    except (struct.error, UnicodeDecodeError) as exc:
        raise BadRecord(f"bad record prefix: {exc}") from None
    if kind == SERIES:
        refs: list[int] = []
        labels: list[bytes] = []
        for _ in range(count):
            try:
                ref, length = SERIES_ENTRY.unpack_from(payload, pos)
            except struct.error:
                raise BadRecord("series record ends early") from None
            pos += SERIES_ENTRY.size
            refs.append(ref)
            labels.append(payload[pos : pos + length])
            pos += length
        if pos != len(payload):
            raise BadRecord("series record has trailing bytes")
        return SeriesRecord(tenant, refs, labels)
    if kind == SAMPLES:
        refs_col, ts, values = _decode_columns(payload, pos, count, "<f8", "samples")
        return SamplesRecord(tenant, refs_col, ts, values.astype(np.float64))
    if kind == HISTOGRAMS:
        return _decode_histograms(tenant, payload, pos, count)
    if kind == STARTS:
        refs_col, ts, starts = _decode_columns(payload, pos, count, "<i8", "starts")
        return StartsRecord(tenant, refs_col, ts, starts.astype(np.int64))
    raise BadRecord(f"unknown record type {kind}")


def _decode_columns(
    payload: bytes, pos: int, count: int, third: str, what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three columns _encode_columns wrote from `pos` on: refs, timestamps, and the
    third as dtype `third` (little-endian, still to convert to native)."""
    if len(payload) - pos != count * 20:
        raise BadRecord(f"{what} record of {count} entries has the wrong size")
    refs = np.frombuffer(payload, "<u4", count, pos).astype(np.uint32)
    ts = np.frombuffer(payload, "<i8", count, pos + 4 * count).astype(np.int64)
    return refs, ts, np.frombuffer(payload, third, count, pos + 12 * count)
