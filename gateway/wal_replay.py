"""Reading the WAL back at start: repair torn or corrupt tails, rebuild the head.

A segment is read up to its first bad frame; the rest of that segment is cut (the file
is truncated there) and reported, and replay goes on with the next segment. So a crash
mid-write costs only the unacknowledged tail, and corruption never stops the start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import numpy as np

from blocks.errors import CorruptWAL
from gateway.head import Head
from gateway.head_starts import StartColumns
from gateway.metrics import GatewayMetrics
from gateway.wal import (
    FRAME,
    MAX_RECORD_BYTES,
    MIN_RECORD_BYTES,
    SEGMENT_HEADER,
    SEGMENT_MAGIC,
    SEGMENT_VERSION,
    list_segments,
)
from gateway.wal_record import (
    BadRecord,
    HistogramsRecord,
    SamplesRecord,
    SeriesRecord,
    StartsRecord,
    decode_record,
)
from gateway.write_histograms import plan_histograms

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Damage:
    """A cut WAL tail: where, why, and how many bytes were dropped."""

    segment: str
    offset: int
    reason: str
    dropped_bytes: int


@dataclass(slots=True)
class ReplayReport:
    """What a replay read and what it had to cut."""

    segments: int = 0
    records: int = 0
    samples: int = 0
    histograms: int = 0
    starts: int = 0
    damage: list[Damage] = field(default_factory=list)


def read_segment(path: Path, report: ReplayReport, *, repair: bool) -> Iterator[bytes]:
    """Yield the payloads of a segment's good records; cut and report a bad tail."""
    data = path.read_bytes()
    if len(data) < SEGMENT_HEADER.size:
        _damaged(path, 0, "segment shorter than its header", len(data), report, repair)
        return
    magic, version, _ = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC:
        _damaged(path, 0, f"bad segment magic {magic!r}", len(data), report, repair)
        return
    if version != SEGMENT_VERSION:
        raise CorruptWAL(path.name, 0, f"segment format version {version} is not supported")
    pos = SEGMENT_HEADER.size
    while pos < len(data):
        reason = ""
        if len(data) - pos < FRAME.size:
            reason = "torn frame header"
        else:
            length, crc = FRAME.unpack_from(data, pos)
            end = pos + FRAME.size + length
            if length < MIN_RECORD_BYTES:
                reason = "record shorter than any record (zeroed bytes?)"
            elif length > MAX_RECORD_BYTES or end > len(data):
                reason = "torn or oversized record"
            else:
                payload = data[pos + FRAME.size : end]
                if google_crc32c.value(payload) != crc:
                    reason = "checksum mismatch"
        if reason:
            _damaged(path, pos, reason, len(data) - pos, report, repair)
            return
        yield payload
        pos = end


def _damaged(
    path: Path, offset: int, reason: str, dropped: int, report: ReplayReport, repair: bool
) -> None:
    report.damage.append(Damage(path.name, offset, reason, dropped))
    log.warning(
        "wal tail cut segment=%s offset=%d reason=%r dropped_bytes=%d",
        path.name,
        offset,
        reason,
        dropped,
    )
    if not repair:
        return
    if offset == 0:
        # Nothing usable, not even the header: keep the bytes aside for inspection.
        path.rename(path.with_name(path.name + ".corrupt"))
    else:
        with path.open("r+b") as f:
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())


class RefMap:
    """Per segment and tenant: the refs a segment used -> the head's refs."""

    def __init__(self) -> None:
        self.maps: dict[str, np.ndarray] = {}

    def define(self, tenant: str, old: list[int], new: list[int]) -> None:
        """Record that the segment's refs `old` are the head's `new`."""
        current = self.maps.get(tenant, np.full(0, -1, dtype=np.int64))
        needed = max(old) + 1
        if needed > len(current):
            grown = np.full(max(needed, 2 * len(current)), -1, dtype=np.int64)
            grown[: len(current)] = current
            current = grown
        current[old] = new
        self.maps[tenant] = current

    def translate(self, tenant: str, refs: np.ndarray) -> np.ndarray:
        """Head refs for segment refs; -1 where the segment never defined the ref."""
        current = self.maps.get(tenant)
        if current is None:
            return np.full(len(refs), -1, dtype=np.int64)
        inside = refs < len(current)
        out = np.full(len(refs), -1, dtype=np.int64)
        out[inside] = current[refs[inside]]
        return out


def replay(
    wal_dir: Path, head: Head, metrics: GatewayMetrics | None = None, *, repair: bool = True
) -> ReplayReport:
    """Apply every good record of every segment to the head, oldest first."""
    report = ReplayReport()
    for _, path in list_segments(wal_dir):
        report.segments += 1
        refs = RefMap()
        for payload in read_segment(path, report, repair=repair):
            try:
                record = decode_record(payload)
            except BadRecord as exc:
                # The checksum held, so this is a writer bug, not a torn write: skip it loudly.
                log.error("wal record unreadable segment=%s error=%s", path.name, exc)
                continue
            report.records += 1
            if isinstance(record, SeriesRecord):
                tenant_head = head.tenant(record.tenant)
                new = [tenant_head.series_ref(labels) for labels in record.labels]
                refs.define(record.tenant, record.refs, new)
            elif isinstance(record, HistogramsRecord):
                report.histograms += apply_histograms(head, refs, record)
            elif isinstance(record, StartsRecord):
                report.starts += apply_starts(head, refs, record)
            else:
                report.samples += apply_samples(head, refs, record)
    if metrics is not None:
        metrics.wal_replay_records.inc(report.records)
        metrics.wal_corruptions.inc(len(report.damage))
        metrics.wal_bytes_discarded.inc(sum(d.dropped_bytes for d in report.damage))
    return report


def _known_refs(
    refs: RefMap, tenant: str, wal_refs: np.ndarray, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """A record's WAL refs as head refs (-1 where no series record defined one), and which
    are known; the unknown ones, which replay must skip, logged as an error."""
    mapped = refs.translate(tenant, wal_refs)
    known = mapped >= 0
    if not known.all():
        log.error("wal %s without series tenant=%s entries=%d", what, tenant, int((~known).sum()))
    return mapped, known


def apply_samples(head: Head, refs: RefMap, record: SamplesRecord) -> int:
    """Store a samples record's samples as a live append would; returns how many."""
    mapped, known = _known_refs(refs, record.tenant, record.refs, "samples")
    tenant_head = head.tenant(record.tenant)
    plan = tenant_head.plan(
        mapped[known].astype(np.uint32), record.timestamps[known], record.values[known]
    )
    tenant_head.commit(plan)
    return int(known.sum())


def apply_starts(head: Head, refs: RefMap, record: StartsRecord) -> int:
    """Keep a starts record's events and last starts, in record order; returns how many
    entries. (A WAL written before start timestamps were kept has no such record.)"""
    mapped, known = _known_refs(refs, record.tenant, record.refs, "start timestamps")
    entries = StartColumns(
        mapped[known].astype(np.uint32), record.timestamps[known], record.starts[known]
    )
    head.tenant(record.tenant).starts.replay(entries)
    return len(entries)


def apply_histograms(head: Head, refs: RefMap, record: HistogramsRecord) -> int:
    """Store a histograms record's samples as a live append would; returns how many."""
    mapped, known = _known_refs(refs, record.tenant, record.refs, "histograms")
    tenant_head = head.tenant(record.tenant)
    kept = np.flatnonzero(known).tolist()
    plan = plan_histograms(
        tenant_head,
        mapped[known].astype(np.uint32),
        record.timestamps[known],
        [record.payloads[i] for i in kept],
    )
    new = np.flatnonzero(plan.new).tolist()
    tenant_head.commit_histograms(
        plan.refs[plan.new], plan.timestamps[plan.new], [plan.payloads[i] for i in new]
    )
    return len(kept)
