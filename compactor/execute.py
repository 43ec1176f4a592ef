"""Carrying out the planner's actions on the bucket, in the order that survives a crash.

A merge: write the new block locally, upload it (meta.json last), add it to the bucket
index, and only then mark its sources for deletion. A downsampling: write, upload,
index. A deletion: drop the block from the index, delete meta.json (the block stops
existing), then its other objects. Killed between any two steps, the bucket still holds
every sample in a readable block, and the next plan finishes the job
(docs/compactor.md#crash-safety). Each step that changes the bucket first renews the
tenant's lease, so a compactor that lost it stops before touching anything.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from blocks.bucket_index import add_blocks, mark_blocks_for_deletion, remove_blocks
from blocks.catalog import format_duration, format_time
from blocks.failpoints import failpoint
from blocks.meta import META_FILENAME, BlockMeta
from blocks.objstore.base import ObjectStore
from blocks.upload import delete_block, upload_block
from compactor.lease import Lease
from compactor.metrics import CompactorMetrics
from compactor.planner import Action, Delete, Downsample, MarkForDeletion, Merge
from compactor.rewrite import Progress, Written, write_downsample, write_merge
from gateway.metadata_store import read_bucket_metadata

log = logging.getLogger(__name__)


def describe(action: Action) -> str:
    """One line naming an action, for progress logs."""
    if isinstance(action, Merge):
        kind = "merge overlapping" if action.overlapping else "merge"
        return (
            f"{kind} {len(action.sources)} blocks into level {action.level} "
            f"{_span(action.mint, action.maxt)} resolution={_resolution(action.sources[0])}"
        )
    if isinstance(action, Downsample):
        return (
            f"downsample {action.source.block_id} {_span(action.source.mint, action.source.maxt)}"
            f" to {int(action.to) // 60_000}m"
        )
    if isinstance(action, MarkForDeletion):
        return f"mark {action.block.block_id} for deletion ({action.reason})"
    return f"delete {action.block.block_id} ({action.reason})"


class Executor:
    """Carries out one tenant's actions with one store, work directory and lease."""

    def __init__(
        self, store: ObjectStore, work_dir: Path, lease: Lease, metrics: CompactorMetrics
    ) -> None:
        self.store = store
        self.work_dir = work_dir
        self.lease = lease
        self.metrics = metrics
        self._gauges: set[str] | None = None

    def gauges(self, tenant: str) -> set[str]:
        """Metrics the tenant's senders described as gauges (their metadata, copied to
        the bucket by the gateways); read once per executor, i.e. per tenant and pass."""
        if self._gauges is None:
            records = read_bucket_metadata(self.store, tenant)
            self._gauges = {name for name, record in records.items() if record.type == "gauge"}
        return self._gauges

    def run(self, actions: Sequence[Action], on_start: Callable[[Action], None]) -> None:
        """Carry out one plan's actions; exceptions propagate (the plan is redone next
        round). Deletions and marks go first, each kind in one bucket-index update:
        they touch no block a merge or downsampling of the same plan uses, and one index
        update per block would cost more than the rewrites on a backlog."""
        deletions = [a for a in actions if isinstance(a, Delete)]
        marks = [a for a in actions if isinstance(a, MarkForDeletion)]
        for batched in actions:
            if isinstance(batched, Delete | MarkForDeletion):
                on_start(batched)
        if deletions:
            self.delete(deletions)
        if marks:
            self.mark(marks)
        for action in actions:
            if isinstance(action, Merge):
                on_start(action)
                self.merge(action)
            elif isinstance(action, Downsample):
                on_start(action)
                self.downsample(action)

    def merge(self, action: Merge) -> None:
        """Write, upload and index the merged block, then mark its sources."""
        written = write_merge(self.store, action, self._work(), self._progress(action))
        failpoint("compact.merge.before_upload")
        meta = self._upload(written, "compact.merge")
        self.metrics.blocks_written.labels("merge").inc()
        self.metrics.blocks_merged.inc(len(action.sources))
        self.lease.renew()
        mark_blocks_for_deletion(
            self.store,
            action.tenant,
            [source.block_id for source in action.sources],
            after_first=lambda: failpoint("compact.merge.after_first_mark"),
        )
        self.metrics.blocks_marked.labels("replaced").inc(len(action.sources))
        _log_written("merged", action.tenant, meta, written)

    def downsample(self, action: Downsample) -> None:
        """Write, upload and index the downsampled copy."""
        gauges = self.gauges(action.tenant)
        written = write_downsample(self.store, action, self._work(), self._progress(action), gauges)
        meta = self._upload(written, "compact.downsample")
        self.metrics.blocks_written.labels("downsample").inc()
        self.metrics.blocks_downsampled.labels(f"{int(action.to) // 60_000}m").inc()
        _log_written("downsampled", action.tenant, meta, written)

    def mark(self, actions: Sequence[MarkForDeletion]) -> None:
        """Write the deletion marks of one tenant's blocks, indexed in one update."""
        self.lease.renew()
        mark_blocks_for_deletion(self.store, actions[0].tenant, [a.block.block_id for a in actions])
        for action in actions:
            self.metrics.blocks_marked.labels(action.reason).inc()

    def delete(self, actions: Sequence[Delete]) -> None:
        """Forget one tenant's blocks in the index (one update), then delete each,
        meta.json first."""
        tenant = actions[0].tenant
        self.lease.renew()
        remove_blocks(self.store, tenant, [a.block.block_id for a in actions])
        failpoint("compact.delete.after_unindex")
        for action in actions:
            block_id = action.block.block_id
            self.store.delete(f"{tenant}/{block_id}/{META_FILENAME}")
            failpoint("compact.delete.after_meta")
            delete_block(self.store, tenant, block_id)
            self.metrics.blocks_deleted.inc()
            log.info("deleted block tenant=%s block=%s reason=%s", tenant, block_id, action.reason)

    def _upload(self, written: Written, step: str) -> BlockMeta:
        """Upload and index a written block; `step` names its failpoints."""
        self.metrics.samples_read.inc(written.samples_read)
        self.lease.renew()
        meta = upload_block(
            self.store,
            written.path,
            written.meta.tenant,
            after_chunks=lambda: failpoint(f"{step}.after_chunks"),
        )
        failpoint(f"{step}.after_upload")
        add_blocks(self.store, meta.tenant, [meta])
        failpoint(f"{step}.after_index")
        shutil.rmtree(written.path, ignore_errors=True)
        self.metrics.samples_written.inc(meta.stats.samples)
        return meta

    def _work(self) -> Path:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        return self.work_dir

    def _progress(self, action: Action) -> Progress:
        def report(done: int, total: int) -> None:
            log.info("%s: %d of %d series written", describe(action), done, total)

        return report


def _log_written(verb: str, tenant: str, meta: BlockMeta, written: Written) -> None:
    rate = meta.stats.samples / written.seconds / 1e6 if written.seconds > 0 else 0.0
    log.info(
        "%s block tenant=%s block=%s series=%d samples=%d start_events=%d bytes=%d "
        "seconds=%.2f msamples_per_s=%.2f",
        verb,
        tenant,
        meta.block_id,
        meta.stats.series,
        meta.stats.samples,
        written.start_events,
        meta.stats.bytes,
        written.seconds,
        rate,
    )


def _span(mint: int, maxt: int) -> str:
    return f"{format_time(mint)}+{format_duration(maxt - mint)}"


def _resolution(meta: BlockMeta) -> str:
    return "raw" if not meta.resolution else f"{int(meta.resolution) // 60_000}m"
