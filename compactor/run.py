"""One compaction pass over the bucket, tenant by tenant; and the loop of passes.

Per tenant: take its lease (or skip it: another compactor is at work), bring the bucket
index in line with a listing (a crash may have left them apart), remove abandoned
partial uploads, then plan and carry out rounds until the plan is empty, so one pass
from cron goes all the way (2 h blocks to 12 h to 2 d to 14 d, then downsampling).
Planning works from the listing, not the index: the compactor is the one reader that
can afford to list, and the one that must not trust a drifted index.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from blocks.bucket_index import read_bucket_index, rebuild_bucket_index, scan_tenant
from blocks.catalog import bucket_tenants
from blocks.errors import CorruptBlock, StrataError
from blocks.objstore.base import ObjectStore
from blocks.partial_uploads import clean_partial_uploads
from compactor.config import CompactorConfig
from compactor.execute import Executor, describe
from compactor.lease import Lease, LeaseLost, new_holder
from compactor.metrics import CompactorMetrics
from compactor.planner import Action, Delete, Downsample, MarkForDeletion, Merge, plan

log = logging.getLogger(__name__)

# Rounds of plan-and-execute per tenant and pass: 4 levels and 2 downsamplings need
# about 8; more means the plan does not converge, which is a bug to report, not loop on.
MAX_ROUNDS = 16


@dataclass(slots=True)
class PassSummary:
    """What one pass did, for the closing log line and the exit status."""

    tenants: int = 0
    busy: list[str] = field(default_factory=list)
    merges: int = 0
    downsamplings: int = 0
    marked: int = 0
    deleted: int = 0
    partial_cleaned: int = 0
    failed: list[str] = field(default_factory=list)  # "tenant: reason"
    halted: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether every tenant was compacted without failure."""
        return not self.failed and not self.halted

    def line(self) -> str:
        """The pass in one line."""
        text = (
            f"compaction pass: tenants={self.tenants} merges={self.merges} "
            f"downsamplings={self.downsamplings} marked={self.marked} deleted={self.deleted} "
            f"partial_uploads_cleaned={self.partial_cleaned} seconds={self.seconds:.1f}"
        )
        if self.busy:
            text += f" busy={','.join(self.busy)}"
        if self.failed:
            text += f" failed=[{'; '.join(self.failed)}]"
        if self.halted:
            text += f" halted=[{'; '.join(self.halted)}]"
        return text


class Compactor:
    """Compaction of one bucket; `run_pass` once, or `run_loop` until stopped."""

    def __init__(
        self,
        store: ObjectStore,
        config: CompactorConfig,
        metrics: CompactorMetrics,
        *,
        holder: str | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.work_dir = work_dir or config.work_dir
        self.config = config
        self.metrics = metrics
        self.holder = holder or new_holder()
        self.stop = threading.Event()

    def run_loop(self) -> None:
        """Passes with `interval` between them until `stop` is set."""
        while not self.stop.is_set():
            self.run_pass()
            self.stop.wait(self.config.interval_s)

    def run_pass(self, now_ms: int | None = None) -> PassSummary:
        """Compact every tenant once; the summary says what happened."""
        summary = PassSummary()
        started = time.monotonic()
        self.metrics.running.set(1)
        try:
            tenants = bucket_tenants(self.store)
        except StrataError as exc:
            summary.failed.append(f"listing the bucket: {exc.reason}")
            tenants = []
        halted = []
        for tenant in tenants:
            if self.stop.is_set():
                break
            summary.tenants += 1
            try:
                self._compact_tenant(tenant, summary, now_ms)
            except CorruptBlock as exc:
                # Not going to mend by retrying: leave the tenant for an operator.
                log.error("tenant halted tenant=%s error=%s", tenant, exc.reason)
                halted.append(tenant)
                summary.halted.append(f"{tenant}: {exc.reason}")
                self.metrics.failures.labels("corrupt").inc()
            except StrataError as exc:
                log.error("tenant compaction failed tenant=%s error=%s", tenant, exc.reason)
                summary.failed.append(f"{tenant}: {exc.reason}")
                self.metrics.failures.labels("storage").inc()
        summary.seconds = time.monotonic() - started
        self.metrics.halted.set(1 if halted else 0)
        self.metrics.running.set(0)
        self.metrics.last_pass_seconds.set(summary.seconds)
        self.metrics.passes.labels("ok" if summary.ok else "failed").inc()
        if summary.ok:
            self.metrics.last_success.set(time.time())
        log.info("%s", summary.line())
        return summary

    def _compact_tenant(self, tenant: str, summary: PassSummary, now_ms: int | None) -> None:
        lease = Lease(self.store, tenant, self.holder, self.config.lease_ttl_s)
        if not lease.acquire():
            summary.busy.append(tenant)
            self.metrics.tenants_busy.inc()
            return
        try:
            self._sync_index(tenant)
            cleaned = clean_partial_uploads(
                self.store, tenant, min_age_ms=self.config.ms("partial_upload_cleanup_age")
            )
            summary.partial_cleaned += len(cleaned)
            self.metrics.partial_uploads_cleaned.inc(len(cleaned))
            executor = Executor(self.store, self.work_dir / tenant, lease, self.metrics)
            for _ in range(MAX_ROUNDS):
                index = scan_tenant(self.store, tenant)
                now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
                actions = plan(
                    index.blocks.values(),
                    index.deletion_marks,
                    now_ms=now,
                    config=self.config.planner_config_for(tenant),
                )
                if not actions or self.stop.is_set():
                    return
                executor.run(actions, _ActionLog(tenant, len(actions), summary))
            log.warning("tenant=%s: plan still not empty after %d rounds", tenant, MAX_ROUNDS)
        except LeaseLost as exc:
            summary.busy.append(tenant)
            log.warning("%s; leaving tenant=%s", exc.reason, tenant)
        finally:
            lease.release()

    def _sync_index(self, tenant: str) -> None:
        """Rebuild the bucket index if it disagrees with a listing (a crash between an
        upload and its indexing, or between unindexing and deleting)."""
        listed = scan_tenant(self.store, tenant)
        try:
            stored = read_bucket_index(self.store, tenant)
        except CorruptBlock:
            stored = None
        if (
            stored is None
            or set(stored.blocks) != set(listed.blocks)
            or stored.deletion_marks != listed.deletion_marks
        ):
            log.info("bucket index differs from the listing, rebuilding tenant=%s", tenant)
            rebuild_bucket_index(self.store, tenant)


class _ActionLog:
    """Logs each action of a round as it starts (`[3/12] merge …`) and counts it."""

    def __init__(self, tenant: str, total: int, summary: PassSummary) -> None:
        self.tenant = tenant
        self.total = total
        self.summary = summary
        self.started = 0

    def __call__(self, action: Action) -> None:
        self.started += 1
        log.info("tenant=%s [%d/%d] %s", self.tenant, self.started, self.total, describe(action))
        _count(self.summary, action)


def _count(summary: PassSummary, action: object) -> None:
    if isinstance(action, Merge):
        summary.merges += 1
    elif isinstance(action, Downsample):
        summary.downsamplings += 1
    elif isinstance(action, MarkForDeletion):
        summary.marked += 1
    elif isinstance(action, Delete):
        summary.deleted += 1
