"""From head to bucket: cut windows into blocks, upload them, then let the WAL go.

Order (docs/shipping.md): rotate the WAL; take the head's samples out; build blocks of
what is due in a worker thread into the upload queue (a local directory: built as .tmp,
fsynced, renamed); put back and re-log what stays (a checkpoint in the new segment);
upload queued blocks meta.json last and add them to the bucket index; only then delete
the WAL segments before the rotation. A crash anywhere leaves the samples in the WAL,
the queue or the bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blocks.bucket_index import add_blocks
from blocks.errors import StrataError, Unavailable
from blocks.failpoints import failpoint
from blocks.meta import META_FILENAME
from blocks.objstore.base import ObjectStore
from blocks.partial_uploads import clean_partial_uploads
from blocks.sample_codec import decode_samples
from blocks.ulid import is_ulid
from blocks.upload import upload_block
from gateway.config import GatewayConfig
from gateway.head import FrozenBatch, Head, HeadSnapshot, TenantHead
from gateway.head_cut import (
    BLOCK_DURATION_MS,
    HistogramColumns,
    cut_snapshot,
    split_histograms_at,
    split_starts_at,
    window_start,
)
from gateway.head_starts import StartColumns
from gateway.metrics import GatewayMetrics
from gateway.wal import WAL
from gateway.write import Ingester
from gateway.write_histograms import log_histograms

# What a cut built for one tenant: the samples it keeps (as batches), the block dirs.
Built = tuple[list[FrozenBatch], list[Path]]

log = logging.getLogger(__name__)

KEEP_ALL = np.iinfo(np.int64).min
# A cut everything at once when the head uses more than this share of its budget.
BUDGET_CUT_SHARE = 0.5
# Abandoned uploads are rare (a gateway that lost its disk mid-upload): an hourly look
# costs one listing per tenant.
PARTIAL_CLEANUP_INTERVAL_S = 3600.0


@dataclass(slots=True)
class PendingTruncation:
    """WAL segments before `generation` may go once these queued blocks are uploaded
    and the samples the cut kept are durable in the new segment."""

    generation: int
    blocks: set[Path] = field(default_factory=set)
    kept_durable: bool = False


def queued_blocks(upload_dir: Path) -> list[tuple[str, Path]]:
    """(tenant, block dir) of every complete block waiting in the queue, oldest first."""
    found = []
    if upload_dir.is_dir():
        for tenant_dir in sorted(p for p in upload_dir.iterdir() if p.is_dir()):
            for block_dir in sorted(tenant_dir.iterdir()):
                if is_ulid(block_dir.name) and (block_dir / META_FILENAME).exists():
                    found.append((tenant_dir.name, block_dir))
    return found


def drop_queued_block(block_dir: Path) -> None:
    """Remove an uploaded block from the queue: first renamed out of it (atomic), so a
    kill mid-removal never leaves a queued block with files missing."""
    doomed = block_dir.with_name(block_dir.name + ".tmp")
    block_dir.rename(doomed)
    shutil.rmtree(doomed)


def cut_boundaries(head: Head, grace_ms: int, *, force: bool) -> dict[str, int]:
    """Per tenant, the time before which samples go to blocks now (KEEP_ALL: none)."""
    boundaries: dict[str, int] = {}
    for tenant, tenant_head in head.tenants.items():
        span = tenant_head.time_range()
        boundary = KEEP_ALL
        if span is not None:
            oldest, newest = span
            if force:
                boundary = newest + 1
            elif window_start(newest - grace_ms) > oldest:
                boundary = window_start(newest - grace_ms)
        boundaries[tenant] = boundary
    return boundaries


class Shipper:
    """Runs the cut-and-upload loop of a gateway."""

    def __init__(
        self,
        config: GatewayConfig,
        head: Head,
        wal: WAL,
        ingester: Ingester,
        store: ObjectStore,
        metrics: GatewayMetrics,
        on_uploaded: Callable[[str], None] = lambda tenant: None,
    ) -> None:
        self.config = config
        self.head = head
        self.wal = wal
        self.ingester = ingester
        self.store = store
        self.metrics = metrics
        self.pending: list[PendingTruncation] = []
        self._backoff_s = 0.0
        self._next_upload = 0.0
        self._uploaded_tenants: set[str] = set()
        # Called with the tenant after a block is in the bucket index, before it leaves
        # the queue: readers must find it in one place or the other at every moment.
        self.on_uploaded = on_uploaded
        # Samples a cut has taken out of the head and not yet queued, for readers.
        self.in_flight: dict[str, HeadSnapshot] = {}
        # Counts the changes this shipper made to the upload queue (only it writes
        # there): a reader lists the queue again only when it has moved.
        self.queue_changes = 0
        self.uploaded = 0
        # Cuts never overlap cuts, uploads never overlap uploads; the two run side by side.
        self._cut_lock = asyncio.Lock()
        self._upload_lock = asyncio.Lock()
        self._queued = asyncio.Event()
        self._next_partial_cleanup = 0.0
        self._stopping = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Cut every cut_interval_s and upload what is queued, until `stop` is set.

        Two loops: an upload that hangs on a dead bucket for a minute must not hold back
        the cuts that keep the head within its memory budget.
        """
        self._stopping = stop
        loop = asyncio.get_running_loop()
        cut_wanted = asyncio.Event()

        def wake() -> None:  # called from whichever thread wrote to the head
            loop.call_soon_threadsafe(cut_wanted.set)

        self.head.cut_alarm.arm(
            wake,
            window_ms=BLOCK_DURATION_MS,
            grace_ms=self.config.cut_grace_ms,
        )
        uploads = asyncio.create_task(self._upload_loop(stop))
        try:
            while not stop.is_set():
                cut_wanted.clear()
                try:
                    await self.cut_due()
                except Exception:
                    log.exception("head cut round failed")
                self._queued.set()
                # The interval, or sooner when a write makes a window due (a backfill).
                await _first_of(stop, cut_wanted, timeout_s=self.config.cut_interval_s)
        finally:
            self._queued.set()
            await uploads

    async def _upload_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._queued.clear()
            try:
                await self.upload_queued()
                await self.clean_partial_uploads()
            except Exception:
                log.exception("upload round failed")
            # Woken by a cut (or the stop); the timeout retries after a backoff.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queued.wait(), self.config.cut_interval_s)

    async def flush(self) -> int:
        """Cut everything in the head and upload it now; the number of blocks uploaded.

        Unavailable (503) if blocks are left in the queue (the bucket refused them).
        """
        before = self.uploaded
        self._next_upload = 0.0  # an operator asking now does not wait out a backoff
        await self.step(force=True)
        left = self.queue_size()
        if left:
            raise Unavailable(f"flush incomplete: {left} blocks still wait for upload")
        return self.uploaded - before

    async def step(self, *, force: bool = False) -> None:
        """One round of both loops: upload what is queued, cut what is due (everything
        with `force`), upload again. The queue goes first: blocks left by an earlier
        process are older than anything this round can cut."""
        await self.upload_queued()
        await self.cut_due(force=force)
        await self.upload_queued()
        await self.clean_partial_uploads()

    async def cut_due(self, *, force: bool = False) -> None:
        """Cut what is due, or everything if forced or the head is over half its budget."""
        async with self._cut_lock:
            over_budget = self.head.nbytes > self.head.max_bytes * BUDGET_CUT_SHARE
            boundaries = cut_boundaries(
                self.head, self.config.cut_grace_ms, force=force or over_budget
            )
            if any(b != KEEP_ALL for b in boundaries.values()):
                await self.cut(boundaries)
            for tenant_head in self.head.tenants.values():
                tenant_head.cut_watch.reset(tenant_head.time_range())

    async def cut(self, boundaries: dict[str, int]) -> None:
        """Move samples before each tenant's boundary into queued blocks."""
        # Every tenant is taken out and what stays is re-logged, since the segments this
        # rotation closes will be deleted and they hold every tenant's samples.
        generation = self.wal.rotate()
        snapshots = {t: h.detach() for t, h in self.head.tenants.items()}
        starts = {t: h.starts.take() for t, h in self.head.tenants.items()}
        self.in_flight = snapshots
        labels = {t: list(h.labels) for t, h in self.head.tenants.items()}
        try:
            built, kept_histograms = await asyncio.to_thread(
                self._build_all, snapshots, labels, boundaries, starts
            )
        except Exception:
            self.queue_changes += 1  # blocks of tenants cut before the failure
            self.metrics.cut_failures.inc()
            log.exception("head cut failed; samples stay in the head")
            for tenant, snapshot in snapshots.items():
                # As taken out, batches in their order: the first of duplicates stays first.
                self.head.tenant(tenant).restore_batches(snapshot.frozen)
                self.head.tenant(tenant).restore(*snapshot.recent.sorted_view())
                self.head.tenant(tenant).restore_histograms(*snapshot.histograms.columns())
                self.head.tenant(tenant).starts.restore(starts[tenant])
            self.in_flight = {}
            return
        failpoint("gateway.cut.after_build")
        # From here on (no await until the loop ends) the samples are queued or restored.
        self.queue_changes += 1
        self.in_flight = {}
        durable = []
        pending = PendingTruncation(generation)
        # Listed before the first await: an upload may finish a block of this cut at once.
        self.pending.append(pending)
        kept_starts = {
            t: split_starts_at(events, boundaries.get(t, KEEP_ALL))[1]
            for t, events in starts.items()
        }
        for tenant, (keep, block_dirs) in built.items():
            self.head.tenant(tenant).restore_batches(keep)
            self.head.tenant(tenant).restore_histograms(*kept_histograms[tenant])
            self.head.tenant(tenant).starts.restore(kept_starts[tenant])
            # The upload loop may have taken a block out of the queue already, while the
            # build went on with other tenants: a block waited for that never comes back
            # would hold back every WAL truncation from here on.
            pending.blocks.update(d for d in block_dirs if d.is_dir())
            self.metrics.blocks_cut.labels(tenant).inc(len(block_dirs))
        try:
            # Every tenant is restored before any is re-logged: logging can fail at once
            # (a failed WAL write moved the WAL to a new segment meanwhile), and a tenant
            # left out of the head would be missing from reads and from later cuts.
            for tenant, (keep, _) in built.items():
                tenant_head = self.head.tenant(tenant)
                # The kept events, then every series' last start: the segments going hold
                # the events that set them, and a restart must not take a start seen
                # before for a change.
                checkpoint = kept_starts[tenant] + tenant_head.starts.last_starts()
                await self._log_kept(tenant_head, keep, checkpoint)
                if len(kept_histograms[tenant][0]):
                    durable.append(log_histograms(tenant_head, self.wal, *kept_histograms[tenant]))
            for future in durable:
                await asyncio.wrap_future(future)
        except StrataError as exc:
            # The kept samples are still only in the old segments: this cut must not let
            # them go. The next cut that succeeds re-logs everything kept, and frees them.
            log.warning("head cut checkpoint not durable error=%s", exc.reason)
            self.pending.remove(pending)
            return
        pending.kept_durable = True
        failpoint("gateway.cut.after_checkpoint")
        self._truncate_wal()

    async def _log_kept(
        self, tenant_head: TenantHead, keep: list[FrozenBatch], checkpoint: StartColumns
    ) -> None:
        """Log the samples a cut kept, a batch at a time, each durable before the next is
        decoded: a checkpoint holds one batch's record, not all the cut keeps."""
        starts: StartColumns | None = checkpoint
        for batch in keep:
            logged = self.ingester.log_samples(
                tenant_head, *decode_samples(batch.data), starts=starts
            )
            starts = None
            await asyncio.wrap_future(logged)
        if starts is not None and len(starts):
            no_samples = np.zeros(0, np.uint32), np.zeros(0, np.int64), np.zeros(0, np.float64)
            await asyncio.wrap_future(
                self.ingester.log_samples(tenant_head, *no_samples, starts=starts)
            )

    def _build_all(
        self,
        snapshots: dict[str, HeadSnapshot],
        labels: dict[str, list[bytes]],
        boundaries: dict[str, int],
        starts: dict[str, StartColumns],
    ) -> tuple[dict[str, Built], dict[str, HistogramColumns]]:
        """The blocks of a cut (`_build`), and per tenant the histograms that stay."""
        kept = {
            tenant: split_histograms_at(
                snapshot.histograms.columns(), boundaries.get(tenant, KEEP_ALL)
            )[1]
            for tenant, snapshot in snapshots.items()
        }
        return self._build(snapshots, labels, boundaries, starts), kept

    def _build(
        self,
        snapshots: dict[str, HeadSnapshot],
        labels: dict[str, list[bytes]],
        boundaries: dict[str, int],
        starts: dict[str, StartColumns],
    ) -> dict[str, Built]:
        built = {}
        for tenant, snapshot in snapshots.items():
            boundary = boundaries.get(tenant, KEEP_ALL)
            old_histograms, _ = split_histograms_at(snapshot.histograms.columns(), boundary)
            cut = cut_snapshot(
                self.config.upload_dir / tenant,
                tenant,
                labels[tenant],
                snapshot,
                boundary,
                histograms=old_histograms,
                starts=split_starts_at(starts[tenant], boundary)[0],
            )
            metas = cut.metas
            for meta in metas:
                log.info(
                    "cut block tenant=%s block=%s mint=%d samples=%d bytes=%d",
                    tenant,
                    meta.block_id,
                    meta.mint,
                    meta.stats.samples,
                    meta.stats.bytes,
                )
            dirs = [self.config.upload_dir / tenant / m.block_id for m in metas]
            built[tenant] = (cut.kept, dirs)
        return built

    async def upload_queued(self) -> None:
        """Upload queued blocks oldest first; on failure wait (doubling) and retry later."""
        async with self._upload_lock:
            await self._upload_queued()

    async def _upload_queued(self) -> None:
        if time.monotonic() < self._next_upload:
            return
        for tenant, block_dir in queued_blocks(self.config.upload_dir):
            if self._stopping.is_set():
                # A stopping gateway must exit within its grace period; the queue is
                # durable, and the next start uploads the rest first.
                break
            try:
                await asyncio.to_thread(self._upload_and_index, block_dir, tenant)
            except (StrataError, OSError) as exc:
                self.metrics.upload_failures.inc()
                self._backoff_s = min(
                    max(1.0, 2 * self._backoff_s), self.config.upload_backoff_max_s
                )
                self._next_upload = time.monotonic() + self._backoff_s
                log.warning(
                    "block upload failed block=%s retry_in_s=%.0f error=%s",
                    block_dir.name,
                    self._backoff_s,
                    exc,
                )
                return
            self._backoff_s = 0.0
            self.uploaded += 1
            self.on_uploaded(tenant)
            self._uploaded_tenants.add(tenant)
            self.metrics.blocks_uploaded.labels(tenant).inc()
            try:
                await asyncio.to_thread(drop_queued_block, block_dir)
            finally:
                self.queue_changes += 1
            failpoint("gateway.upload.after_dequeue")
            for pending in self.pending:
                pending.blocks.discard(block_dir)
        self._truncate_wal()

    def _upload_and_index(self, block_dir: Path, tenant: str) -> None:
        meta = upload_block(
            self.store,
            block_dir,
            tenant,
            after_chunks=lambda: failpoint("gateway.upload.after_chunks"),
        )
        failpoint("gateway.upload.after_meta")
        add_blocks(self.store, tenant, [meta])
        failpoint("gateway.upload.after_index")

    async def clean_partial_uploads(self) -> None:
        """Hourly, remove abandoned partial uploads of the tenants this gateway ships."""
        if time.monotonic() < self._next_partial_cleanup:
            return
        self._next_partial_cleanup = time.monotonic() + PARTIAL_CLEANUP_INTERVAL_S
        min_age_ms = int(self.config.partial_upload_cleanup_age_s * 1000)
        for tenant in sorted(self._uploaded_tenants):
            try:
                cleaned = await asyncio.to_thread(
                    clean_partial_uploads, self.store, tenant, min_age_ms=min_age_ms
                )
            except (StrataError, OSError) as exc:
                log.warning("partial upload cleanup failed tenant=%s error=%s", tenant, exc)
                continue
            self.metrics.partial_uploads_cleaned.labels(tenant).inc(len(cleaned))

    def _truncate_wal(self) -> None:
        while self.pending and self.pending[0].kept_durable and not self.pending[0].blocks:
            done = self.pending.pop(0)
            removed = self.wal.remove_before(done.generation)
            self.metrics.wal_segments_removed.inc(removed)

    def queue_size(self) -> int:
        """Blocks waiting for upload."""
        return len(queued_blocks(self.config.upload_dir))


async def _first_of(a: asyncio.Event, b: asyncio.Event, *, timeout_s: float) -> None:
    """Return when either event is set, or after `timeout_s`."""
    waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
