"""The head: recent samples per tenant and series, in memory, in compact columns.

A tenant's head holds a registry of series (canonical label bytes, found by the raw
label bytes senders use), the last sample of each series, an uncompressed buffer of
recent samples and compressed batches of older ones, and native histogram samples beside
them under the same series refs (gateway/head_histograms.py; docs/head.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from blocks.columns import run_bounds
from blocks.errors import Unavailable
from blocks.sample_codec import decode_samples, encode_samples
from gateway.head_append import AppendPlan, advance_last, plan_append
from gateway.head_columns import GrowableArray, SampleColumns
from gateway.head_histograms import HeadHistograms, HistogramPart

NO_SAMPLE = np.iinfo(np.int64).min
# What one series costs besides the bytes of its labels and key: two dict entries, a list
# slot, the per-series columns (172 B measured with tracemalloc over 100k series) and
# two bytes-object headers.
SERIES_OVERHEAD_BYTES = 240


@dataclass(frozen=True, slots=True)
class FrozenBatch:
    """Compressed samples sorted by (ref, timestamp), with their time range."""

    data: bytes
    mint: int
    maxt: int
    samples: int


@dataclass(frozen=True, slots=True)
class HeadSnapshot:
    """Samples taken out of a head: compressed batches and uncompressed columns."""

    frozen: list[FrozenBatch]
    recent: SampleColumns
    histograms: HeadHistograms = field(default_factory=HeadHistograms)

    def sorted_samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All samples sorted by (ref, timestamp), exact duplicates dropped."""
        parts = [decode_samples(b.data) for b in self.frozen]
        parts.append(self.recent.sorted_view())
        refs = np.concatenate([p[0] for p in parts])
        ts = np.concatenate([p[1] for p in parts])
        values = np.concatenate([p[2] for p in parts])
        order = np.lexsort((ts, refs))
        refs, ts, values = refs[order], ts[order], values[order]
        repeat = np.zeros(len(refs), dtype=bool)
        repeat[1:] = (refs[1:] == refs[:-1]) & (ts[1:] == ts[:-1])
        return refs[~repeat], ts[~repeat], values[~repeat]


class TenantHead:
    """One tenant's series and samples."""

    def __init__(self, tenant: str, freeze_samples: int) -> None:
        self.tenant = tenant
        self.freeze_samples = freeze_samples
        # Two indexes: by canonical label bytes (one entry per series), and by the key of
        # the labels as senders encode them (gateway/decode.py: series_key), the hot path.
        self.ref_by_labels: dict[bytes, int] = {}
        self.ref_by_key: dict[bytes | tuple[bytes, ...], int] = {}
        self.labels: list[bytes] = []
        self.label_bytes = 0
        self.last_ts = GrowableArray(np.int64, NO_SAMPLE)
        self.last_bits = GrowableArray(np.uint64)
        # Generation of the WAL segment that last logged each series' labels (gateway/wal.py).
        self.logged_generation = GrowableArray(np.int64, -1)
        self.recent = SampleColumns(soft_cap=freeze_samples)
        self.frozen: list[FrozenBatch] = []
        self.frozen_bytes = 0
        self.frozen_samples = 0
        # Native histograms: their own store and newest time per series; floats' last
        # sample columns stay floats' alone, since they decide float resends.
        self.histograms = HeadHistograms()
        self.histogram_last_ts = GrowableArray(np.int64, NO_SAMPLE)

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
            + self.last_ts.nbytes
            + self.last_bits.nbytes
            + self.logged_generation.nbytes
            + self.histograms.nbytes
            + self.histogram_last_ts.nbytes
        )

    def series_ref(self, canonical: bytes) -> int:
        """The ref of the series with these canonical labels, created if new."""
        ref = self.ref_by_labels.get(canonical)
        if ref is None:
            ref = len(self.labels)
            self.labels.append(canonical)
            self.label_bytes += len(canonical)
            self.ref_by_labels[canonical] = ref
            for column in (
                self.last_ts,
                self.last_bits,
                self.logged_generation,
                self.histogram_last_ts,
            ):
                column.grow_to(ref + 1)
        return ref

    def remember_key(self, raw_key: bytes | tuple[bytes, ...], ref: int) -> None:
        """Let later requests find `ref` by the raw label bytes a sender used."""
        self.ref_by_key[raw_key] = ref
        self.label_bytes += len(raw_key) if isinstance(raw_key, bytes) else sum(map(len, raw_key))

    def plan(self, refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> AppendPlan:
        """Decide which samples are new, resent or conflicting; changes nothing."""
        return plan_append(
            refs, timestamps, values, self.last_ts.view, self.last_bits.view, self._existing
        )

    def commit(self, plan: AppendPlan) -> None:
        """Store the new samples of a plan made against the current state."""
        new = plan.new
        self.recent.extend(plan.refs[new], plan.timestamps[new], plan.values[new])
        advance_last(plan, self.last_ts.view, self.last_bits.view)
        if len(self.recent) >= self.freeze_samples:
            self.freeze()

    def commit_histograms(
        self, refs: np.ndarray, timestamps: np.ndarray, payloads: list[bytes]
    ) -> None:
        """Store new histogram samples (none stored at their (ref, timestamp) yet)."""
        for ref, ts, payload in zip(refs.tolist(), timestamps.tolist(), payloads, strict=True):
            self.histograms.add(ref, ts, payload)
        if len(refs):
            last = self.histogram_last_ts.view
            np.maximum.at(last, refs.astype(np.int64), timestamps)

    def newest_ts(self) -> np.ndarray:
        """Per series ref, the time of its newest float or histogram sample."""
        n = self.series_count
        newest: np.ndarray = np.maximum(self.last_ts.view[:n], self.histogram_last_ts.view[:n])
        return newest

    def freeze(self) -> None:
        """Compress the uncompressed buffer into a frozen batch."""
        if not len(self.recent):
            return
        self.restore(*self.recent.sorted_view())
        self.recent.clear()

    def _existing(self, refs: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stored value bits at (ref, timestamp) pairs; the slow path for older samples."""
        wanted = {(int(r), int(t)): i for i, (r, t) in enumerate(zip(refs, ts, strict=True))}
        found = np.zeros(len(refs), dtype=bool)
        bits = np.zeros(len(refs), dtype=np.uint64)
        unique_refs = np.unique(refs)
        sources = [(self.recent.refs.view, self.recent.timestamps.view, self.recent.values.view)]
        mint, maxt = int(ts.min()), int(ts.max())
        overlapping = [b for b in self.frozen if b.mint <= maxt and b.maxt >= mint]
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
        """Add samples sorted by (ref, timestamp) as one compressed batch.

        What a cut puts back, and how `freeze` compresses the uncompressed buffer.
        """
        if not len(refs):
            return
        batch = FrozenBatch(
            encode_samples(refs, timestamps, values),
            int(timestamps.min()),
            int(timestamps.max()),
            len(refs),
        )
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
        bounds = [(b.mint, b.maxt) for b in self.frozen]
        if self.histograms.mint is not None and self.histograms.maxt is not None:
            bounds.append((self.histograms.mint, self.histograms.maxt))
        if len(self.recent):
            ts = self.recent.timestamps.view
            bounds.append((int(ts.min()), int(ts.max())))
        if not bounds:
            return None
        return min(b[0] for b in bounds), max(b[1] for b in bounds)

    def series_samples(self) -> Iterator[tuple[bytes, np.ndarray, np.ndarray]]:
        """Every series with samples: (canonical labels, timestamps, values), time-sorted."""
        refs, ts, values = HeadSnapshot(self.frozen, self.recent).sorted_samples()
        for start, end in run_bounds(refs):
            yield self.labels[int(refs[start])], ts[start:end], values[start:end]

    def series_histograms(self) -> Iterator[tuple[bytes, HistogramPart]]:
        """Every series with histograms: (canonical labels, its time-sorted histograms)."""
        for ref, part in self.histograms.series():
            yield self.labels[ref], part


class Head:
    """All tenants' heads under one memory budget."""

    def __init__(self, *, max_bytes: int, freeze_samples: int) -> None:
        self.max_bytes = max_bytes
        self.freeze_samples = freeze_samples
        self.tenants: dict[str, TenantHead] = {}

    def tenant(self, tenant: str) -> TenantHead:
        """The head of a tenant, created on first use."""
        head = self.tenants.get(tenant)
        if head is None:
            head = self.tenants[tenant] = TenantHead(tenant, self.freeze_samples)
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
