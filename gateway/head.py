"""The head: recent samples per tenant and series, in memory, in compact columns.

A tenant's head holds a registry of series (one bytes object each, its key: the form in
which a Prometheus sends its labels, so also what finds it), the last sample of each
series, an uncompressed buffer of recent samples and compressed batches of older ones,
and native histogram samples beside them under the same series refs
(gateway/head_histograms.py; docs/head.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from blocks.columns import run_bounds
from blocks.errors import Unavailable
from blocks.sample_codec import decode_samples
from gateway.cut_alarm import CutAlarm, CutWatch
from gateway.decode_known import split_label_fields
from gateway.head_append import AppendPlan, advance_last, plan_append
from gateway.head_batch import BLOCK_DURATION_MS, new_run_id
from gateway.head_batch import FROZEN_BATCH_SAMPLES as FROZEN_BATCH_SAMPLES
from gateway.head_batch import FrozenBatch as FrozenBatch
from gateway.head_batch import SampleTriple as SampleTriple
from gateway.head_batch import compress_batch as compress_batch
from gateway.head_batch import merge_sorted as merge_sorted
from gateway.head_columns import GrowableArray, SampleColumns
from gateway.head_histograms import HeadHistograms, HistogramPart
from gateway.head_merge import RunMerge, tail_to_merge
from gateway.head_starts import HeadStarts
from querier.varint import uvarint

NO_SAMPLE = np.iinfo(np.int64).min
# What one series costs besides the bytes of its key and its per-series columns (counted
# apart): its dict entry with its share of the table (52 B), its ref as a Python int (28),
# its list slot (8) and its bytes-object header (33), measured with tracemalloc over 100k
# series (bench/peers_memory.py).
SERIES_OVERHEAD_BYTES = 121
# What a sender's own key for a series costs besides its bytes, when it differs from the
# series' key (labels unsorted, say): a dict entry with its share of the table and a
# bytes-object header.
EXTRA_KEY_OVERHEAD_BYTES = 85
_NAME_TAG = 0x0A  # Label.name, and TimeSeries.labels around each Label
_VALUE_TAG = 0x12  # Label.value
# The tag and one-byte length of a TimeSeries.labels field, for Labels under 128 bytes:
# made once, since replaying a WAL turns every series record into keys (2.7 x faster).
_SHORT_FRAMES = [bytes((_NAME_TAG, size)) for size in range(0x80)]


def series_key_of(canonical: bytes) -> bytes:
    """The head's key of a series from its canonical label bytes (validate.encode_labels):
    each Label message framed as a TimeSeries's `labels` field (decode.series_key).

    For a Prometheus, which sends its labels sorted and encoded as protobuf does, this is
    the key of the series as sent, byte for byte.
    """
    parts = []
    at, end = 0, len(canonical)
    while at < end:
        start = at
        # A canonical Label is its name field, then its value field (absent when empty).
        at = _field_end(canonical, at)
        if at < end and canonical[at] == _VALUE_TAG:
            at = _field_end(canonical, at)
        size = at - start
        parts.append(_SHORT_FRAMES[size] if size < 0x80 else bytes((_NAME_TAG,)) + uvarint(size))
        parts.append(canonical[start:at])
    return b"".join(parts)


def canonical_of_key(key: bytes) -> bytes:
    """The canonical label bytes of a series from its key; inverse of series_key_of."""
    return b"".join(split_label_fields(key))


def key_label_pairs(key: bytes) -> list[tuple[str, str]]:
    """A series' (name, value) pairs read from its key, as validate.decode_labels reads
    them from its canonical label bytes; ValueError for bytes that are no key (canonical
    label bytes passed by mistake, say)."""
    pairs = []
    at, end = 0, len(key)
    while at < end:
        length, at = _uvarint(key, at + 1)
        stop = at + length
        name = value = ""
        while at < stop:
            tag = key[at]
            size, at = _uvarint(key, at + 1)
            text = key[at : at + size].decode()
            at += size
            if tag == _NAME_TAG:
                name = text
            elif tag == _VALUE_TAG:
                value = text
            else:
                raise ValueError(f"not a series key: field tag {tag:#x} in a label")
        if at != stop or not name:
            raise ValueError("not a series key: a label overruns its length or has no name")
        pairs.append((name, value))
    return pairs


def _field_end(data: bytes, at: int) -> int:
    """Where the length-delimited field whose tag is at `at` ends."""
    length = data[at + 1]
    if length < 0x80:
        return at + 2 + length
    length, at = _uvarint(data, at + 1)
    return at + length


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    """(value, position after it) of the varint at `at`."""
    byte = data[at]
    if byte < 0x80:
        return byte, at + 1
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if byte < 0x80:
            return value, at
        shift += 7


# The latest time there is.
LAST_TIME = int(np.iinfo(np.int64).max)


def held_time_range(
    frozen: Sequence[FrozenBatch], recent: SampleColumns, extra: Sequence[tuple[int, int]] = ()
) -> tuple[int, int] | None:
    """(oldest, newest) time over compressed batches, the uncompressed buffer and `extra`
    ranges; None when all are empty."""
    bounds = [(b.mint, b.maxt) for b in frozen] + list(extra)
    if len(recent):
        ts = recent.timestamps.view
        bounds.append((int(ts.min()), int(ts.max())))
    if not bounds:
        return None
    return min(b[0] for b in bounds), max(b[1] for b in bounds)


@dataclass(frozen=True, slots=True)
class HeadSnapshot:
    """Samples taken out of a head: compressed batches and uncompressed columns."""

    frozen: list[FrozenBatch]
    recent: SampleColumns
    histograms: HeadHistograms = field(default_factory=HeadHistograms)

    @property
    def samples(self) -> int:
        """Float samples held, duplicates counted."""
        return sum(b.samples for b in self.frozen) + len(self.recent)

    def time_range(self) -> tuple[int, int] | None:
        """(oldest, newest) float sample time held, or None when empty."""
        return held_time_range(self.frozen, self.recent)

    def sources(self, mint: int = NO_SAMPLE, maxt: int = LAST_TIME) -> Iterator[SampleTriple]:
        """The samples of each batch with any in [mint, maxt] (all of the batch's), sorted
        by (ref, timestamp), decoded as asked for, the uncompressed ones last: the order
        in which the first of duplicates stays."""
        for batch in self.frozen:
            if batch.mint <= maxt and batch.maxt >= mint:
                yield decode_samples(batch.data)
        if len(self.recent):
            ts = self.recent.timestamps.view
            if int(ts.min()) <= maxt and int(ts.max()) >= mint:
                yield self.recent.sorted_view()

    def sorted_samples(self) -> SampleTriple:
        """All samples sorted by (ref, timestamp), exact duplicates dropped."""
        parts = [decode_samples(b.data) for b in self.frozen]
        parts.append(self.recent.sorted_view())
        return merge_sorted(parts)


class TenantHead:
    """One tenant's series and samples."""

    def __init__(self, tenant: str, freeze_samples: int, alarm: CutAlarm | None = None) -> None:
        self.tenant = tenant
        self.freeze_samples = freeze_samples
        # Wakes the shipper when a write makes a window due (gateway/cut_alarm.py).
        self.cut_watch = CutWatch(alarm or CutAlarm())
        # One index from key to ref: each series' own key (series_key_of), the same bytes
        # object as in `labels`, and any other key a sender used for it (its labels
        # unsorted, say); both are series_key forms, so no key can name a second series.
        self.ref_by_key: dict[bytes | tuple[bytes, ...], int] = {}
        # Each series' key by ref.
        self.labels: list[bytes] = []
        self.label_bytes = 0
        self.last_ts = GrowableArray(np.int64, NO_SAMPLE)
        self.last_bits = GrowableArray(np.uint64)
        # Generation of the WAL segment that last logged each series' labels (gateway/wal.py);
        # one per segment, so 32 bits outlast any disk.
        self.logged_generation = GrowableArray(np.int32, -1)
        self.recent = SampleColumns(soft_cap=freeze_samples)
        self.frozen: list[FrozenBatch] = []
        self.frozen_bytes = 0
        self.frozen_samples = 0
        # Native histograms: their own store and newest time per series; floats' last
        # sample columns stay floats' alone, since they decide float resends. The newest
        # times reach only as far as the highest ref that had a histogram: a head of
        # floats alone spends nothing on them.
        self.histograms = HeadHistograms()
        self.histogram_last_ts = GrowableArray(np.int64, NO_SAMPLE)
        # Start timestamps of float samples, as change events (gateway/head_starts.py).
        self.starts = HeadStarts()

    @property
    def series_count(self) -> int:
        """Number of series ever created in this head."""
        return len(self.labels)

    @property
    def sample_count(self) -> int:
        """Number of samples held."""
        return len(self.recent) + self.frozen_samples

    @property
    def nbytes(self) -> int:
        """Estimated memory held."""
        return (
            self.recent.nbytes
            + self.frozen_bytes
            + self.label_bytes
            + self.series_count * SERIES_OVERHEAD_BYTES
            + (len(self.ref_by_key) - self.series_count) * EXTRA_KEY_OVERHEAD_BYTES
            + self.last_ts.nbytes
            + self.last_bits.nbytes
            + self.logged_generation.nbytes
            + self.histograms.nbytes
            + self.histogram_last_ts.nbytes
            + self.starts.nbytes
        )

    def series_ref(self, canonical: bytes) -> int:
        """The ref of the series with these canonical labels, created if new."""
        return self.keyed_series_ref(series_key_of(canonical))

    def keyed_series_ref(self, key: bytes) -> int:
        """The ref of the series with this key (series_key_of its canonical labels),
        created if new."""
        ref = self.ref_by_key.get(key)
        if ref is None:
            ref = len(self.labels)
            self.labels.append(key)
            self.label_bytes += len(key)
            self.ref_by_key[key] = ref
            for column in (self.last_ts, self.last_bits, self.logged_generation):
                column.grow_to(ref + 1)
        return ref

    def remember_key(self, raw_key: bytes | tuple[bytes, ...], ref: int) -> None:
        """Let later requests find `ref` by the raw label bytes a sender used."""
        if raw_key in self.ref_by_key:
            return  # the series' own key (a Prometheus's), or one remembered before
        self.ref_by_key[raw_key] = ref
        self.label_bytes += len(raw_key) if isinstance(raw_key, bytes) else sum(map(len, raw_key))

    def canonical(self, ref: int) -> bytes:
        """The canonical label bytes of a series, the form the WAL's series records keep."""
        return canonical_of_key(self.labels[ref])

    def label_pairs(self, ref: int) -> list[tuple[str, str]]:
        """The (name, value) pairs of a series."""
        return key_label_pairs(self.labels[ref])

    def plan(self, refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> AppendPlan:
        """Decide which samples are new, resent or conflicting; changes nothing."""
        return plan_append(
            refs, timestamps, values, self.last_ts.view, self.last_bits.view, self._existing
        )

    def commit(self, plan: AppendPlan) -> None:
        """Store the new samples of a plan made against the current state."""
        new = plan.new
        timestamps = plan.timestamps[new]
        self.recent.extend(plan.refs[new], timestamps, plan.values[new])
        advance_last(plan, self.last_ts.view, self.last_bits.view)
        if len(timestamps):
            self.cut_watch.stored(int(timestamps.min()), int(timestamps.max()))
        if len(self.recent) >= self.freeze_samples:
            self.freeze()

    def commit_histograms(
        self, refs: np.ndarray, timestamps: np.ndarray, payloads: list[bytes]
    ) -> None:
        """Store new histogram samples (none stored at their (ref, timestamp) yet)."""
        for ref, ts, payload in zip(refs.tolist(), timestamps.tolist(), payloads, strict=True):
            self.histograms.add(ref, ts, payload)
        if len(refs):
            self.histogram_last_ts.grow_to(int(refs.max()) + 1)
            last = self.histogram_last_ts.view
            np.maximum.at(last, refs.astype(np.int64), timestamps)
            self.cut_watch.stored(int(timestamps.min()), int(timestamps.max()))

    def newest_ts(self) -> np.ndarray:
        """Per series ref, the time of its newest float or histogram sample."""
        newest: np.ndarray = self.last_ts.view[: self.series_count].copy()
        histogram_ts = self.histogram_last_ts.view
        with_histograms = newest[: len(histogram_ts)]
        np.maximum(with_histograms, histogram_ts, out=with_histograms)
        return newest

    def freeze(self) -> None:
        """Compress the uncompressed buffer into frozen batches."""
        if not len(self.recent):
            return
        # The buffer goes before compressing, so that it and the compressor's working
        # arrays are never held at once: the head's transient peak (bench/peers_memory.py).
        refs, timestamps, values = self.recent.sorted_view()
        self.recent.clear()
        try:
            self.restore(refs, timestamps, values)
        except BaseException:
            self.recent.extend(refs, timestamps, values)
            raise
        del refs, timestamps, values
        self.merge_runs()

    def merge_runs(self) -> None:
        """Merge the newest runs of batches while four of one level make one of the next
        (gateway/head_merge.py): longer runs per series, fewer bytes a sample."""
        while (start := tail_to_merge(self.frozen, BLOCK_DURATION_MS)) is not None:
            # The merge owns the runs it merges, so it can give each batch back once it
            # has written its samples; what it holds when it ends, or fails, goes back.
            merge = RunMerge(self.frozen[start:])
            self._count_frozen(self.frozen[start:], -1)
            del self.frozen[start:]
            try:
                merge.merge()
            finally:
                held = merge.held()
                self.frozen += held
                self._count_frozen(held, 1)

    def _count_frozen(self, batches: list[FrozenBatch], sign: int) -> None:
        self.frozen_bytes += sign * sum(len(b.data) for b in batches)
        self.frozen_samples += sign * sum(b.samples for b in batches)

    def _existing(self, refs: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored value bits at (ref, timestamp) pairs; the slow path for older samples."""
        wanted = {(int(r), int(t)): i for i, (r, t) in enumerate(zip(refs, ts, strict=True))}
        found = np.zeros(len(refs), dtype=bool)
        bits = np.zeros(len(refs), dtype=np.uint64)
        unique_refs = np.unique(refs)
        sources = [(self.recent.refs.view, self.recent.timestamps.view, self.recent.values.view)]
        mint, maxt = int(ts.min()), int(ts.max())
        overlapping = [
            b for b in self.frozen if b.mint <= maxt and b.maxt >= mint and b.may_hold(unique_refs)
        ]
        sources += [decode_samples(b.data) for b in overlapping]
        for s_refs, s_ts, s_values in sources:
            hits = np.flatnonzero(np.isin(s_refs, unique_refs))
            s_bits = s_values.view(np.uint64)
            for i in hits:
                slot = wanted.get((int(s_refs[i]), int(s_ts[i])))
                if slot is not None:
                    found[slot] = True
                    bits[slot] = s_bits[i]
        return found, bits

    def detach(self) -> HeadSnapshot:
        """Take all stored samples out of the head (O(1)); series and last samples stay.

        The caller cuts the snapshot into blocks and gives back what it does not cut
        with `restore`. Meanwhile an older sample is not checked against the snapshot,
        so a resend may be stored twice; readers drop such exact duplicates.
        """
        snapshot = HeadSnapshot(self.frozen, self.recent, self.histograms)
        self.histograms = HeadHistograms()
        self.frozen = []
        self.frozen_bytes = 0
        self.frozen_samples = 0
        self.recent = SampleColumns(soft_cap=self.freeze_samples)
        return snapshot

    def restore(self, refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> None:
        """Add samples sorted by (ref, timestamp) as compressed batches.

        What a cut puts back, and how `freeze` compresses the uncompressed buffer.
        """
        run = new_run_id()
        for start in range(0, len(refs), FROZEN_BATCH_SAMPLES):
            part = slice(start, start + FROZEN_BATCH_SAMPLES)
            batch = compress_batch(refs[part], timestamps[part], values[part], run=run)
            self.frozen.append(batch)
            self.frozen_bytes += len(batch.data)
            self.frozen_samples += batch.samples

    def restore_batches(self, batches: Iterable[FrozenBatch]) -> None:
        """Add compressed batches as they are: what a cut keeps, or all a failed cut took
        (their order is the order in which the first of duplicates stays)."""
        for batch in batches:
            self.frozen.append(batch)
            self.frozen_bytes += len(batch.data)
            self.frozen_samples += batch.samples

    def restore_histograms(
        self, refs: np.ndarray, timestamps: np.ndarray, payloads: list[bytes]
    ) -> None:
        """Put back histograms a cut took out and did not cut; where the head got another
        one at the same (ref, timestamp) meanwhile, the one put back stays (first wins)."""
        held = self.histograms
        self.histograms = HeadHistograms()
        self.histograms.add_many(refs, timestamps, payloads)
        self.histograms.add_many(*held.columns())

    def time_range(self) -> tuple[int, int] | None:
        """(oldest, newest) sample time held, or None when empty."""
        extra = []
        if self.histograms.mint is not None and self.histograms.maxt is not None:
            extra.append((self.histograms.mint, self.histograms.maxt))
        return held_time_range(self.frozen, self.recent, extra)

    def series_samples(self) -> Iterator[tuple[bytes, np.ndarray, np.ndarray]]:
        """Every series with samples: (canonical labels, timestamps, values), time-sorted."""
        refs, ts, values = HeadSnapshot(self.frozen, self.recent).sorted_samples()
        for start, end in run_bounds(refs):
            yield self.canonical(int(refs[start])), ts[start:end], values[start:end]

    def series_histograms(self) -> Iterator[tuple[bytes, HistogramPart]]:
        """Every series with histograms: (canonical labels, its time-sorted histograms)."""
        for ref, part in self.histograms.series():
            yield self.canonical(ref), part


class Head:
    """All tenants' heads under one memory budget."""

    def __init__(self, *, max_bytes: int, freeze_samples: int) -> None:
        self.max_bytes = max_bytes
        self.freeze_samples = freeze_samples
        self.tenants: dict[str, TenantHead] = {}
        self.cut_alarm = CutAlarm()

    def tenant(self, tenant: str) -> TenantHead:
        """The head of a tenant, created on first use."""
        head = self.tenants.get(tenant)
        if head is None:
            head = self.tenants[tenant] = TenantHead(tenant, self.freeze_samples, self.cut_alarm)
        return head

    @property
    def nbytes(self) -> int:
        """Estimated memory of all tenants' heads."""
        return sum(h.nbytes for h in self.tenants.values())

    def check_budget(self) -> None:
        """Unavailable (503) while the head is over its memory budget."""
        used = self.nbytes
        if used > self.max_bytes:
            raise Unavailable(
                f"head memory budget exhausted: {used} bytes in use, budget {self.max_bytes}"
            )
