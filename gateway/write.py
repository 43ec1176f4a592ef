"""The write path: decoded request -> validated samples -> WAL -> head -> outcome.

`Ingester.submit` runs on the event loop without awaiting, so head state, WAL order and
the decisions made from them never interleave between requests; the caller then awaits
durability. The head is updated at submit time, before the fsync: a request whose fsync
fails gets 503, and its retry (a resend of the same samples) is logged again.

Exemplars and metadata take the same path: exemplars are kept with their series' labels
(gateway/exemplar_store.py) and made durable in their own log before the answer;
metadata updates the tenant's metric metadata (gateway/metadata_store.py). Native
histograms are checked, logged and stored beside the float samples of their series
(gateway/write_histograms.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from blocks.errors import InvalidRequest, Unavailable
from blocks.objstore.base import ObjectStore
from gateway.config import GatewayConfig
from gateway.decode import DecodedWrite
from gateway.exemplar_store import EXEMPLARS_DIRNAME, Exemplar, ExemplarStore, LabelPairs
from gateway.head import Head, TenantHead, series_key_of
from gateway.head_append import AppendPlan
from gateway.head_cut import BLOCK_DURATION_MS
from gateway.head_starts import StartColumns
from gateway.metadata_store import METADATA_DIRNAME, MetadataStore, MetadataUpdate
from gateway.metrics import GatewayMetrics
from gateway.tenant_limits import (
    ACTIVE_WINDOW_MS,
    Limits,
    RateLimited,
    RateLimiter,
    TenantLimits,
)
from gateway.validate import (
    LabelRules,
    RejectedSeries,
    canonical_labels,
    decode_labels,
    format_labels,
)
from gateway.wal import WAL, frame
from gateway.wal_record import encode_samples, encode_series, encode_starts
from gateway.write_histograms import TimeBounds, all_durable, store_histograms

log = logging.getLogger(__name__)

# The int64 range less its partial 2 h windows at both ends (73 minutes each, of its
# 292 million years): a block's window must start and end inside int64, or cutting it
# would wrap around. The smallest int64 is also the head's "no sample" mark.
EARLIEST_TIMESTAMP = -((1 << 63) // BLOCK_DURATION_MS) * BLOCK_DURATION_MS
LATEST_TIMESTAMP = ((1 << 63) - 1) // BLOCK_DURATION_MS * BLOCK_DURATION_MS - 1
# Prometheus's bound on an exemplar's labels: names and values together, in characters.
MAX_EXEMPLAR_LABEL_CHARS = 128


@dataclass(slots=True)
class WriteOutcome:
    """What happened to one request's samples."""

    tenant: str
    stored: int = 0
    resent: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    first_error: str = ""
    # Exemplars kept: new ones and resent ones already kept.
    exemplars_kept: int = 0
    exemplars_rejected: Counter[str] = field(default_factory=Counter)
    new_exemplars: list[Exemplar] = field(default_factory=list)
    # Histogram samples the request leaves stored: new ones and resent ones.
    histograms_stored: int = 0
    metadata: MetadataUpdate = field(default_factory=MetadataUpdate)
    start_timestamps: int = 0

    @property
    def samples_written(self) -> int:
        """Samples the request leaves stored: new ones and resent ones already stored."""
        return self.stored + self.resent

    def reject(self, reason: str, count: int, message: str) -> None:
        """Count `count` samples refused for `reason`; keep the first message."""
        if count <= 0:
            return
        self.rejected[reason] += count
        if not self.first_error:
            self.first_error = message

    def reject_conflicts(
        self,
        conflict: np.ndarray,
        refs: np.ndarray,
        timestamps: np.ndarray,
        head: TenantHead,
        what: str,
        differs: str,
    ) -> None:
        """Count the planned samples (or histograms) marked in `conflict` as
        duplicate_timestamp: each has a timestamp its series already holds with another
        value. The first is named: `{what} at {ts} of {labels} {differs}`."""
        conflicts = int(conflict.sum())
        if not conflicts:
            return
        first = int(np.flatnonzero(conflict)[0])
        labels = format_labels(head.label_pairs(int(refs[first])))
        self.reject(
            "duplicate_timestamp",
            conflicts,
            f"{what} at {int(timestamps[first])} of {labels} {differs}",
        )

    def reject_exemplar(self, reason: str, message: str) -> None:
        """Count one exemplar refused for `reason`; keep the first message."""
        self.exemplars_rejected[reason] += 1
        if not self.first_error:
            self.first_error = message

    def raise_if_rejected(self) -> None:
        """InvalidRequest (400) naming the rejections, once the rest is durable."""
        total = sum(self.rejected.values())
        refused_exemplars = sum(self.exemplars_rejected.values())
        if not (total or refused_exemplars):
            return
        parts = []
        if total:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.rejected.items()))
            parts.append(f"{total} samples ({reasons})")
        if refused_exemplars:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.exemplars_rejected.items()))
            parts.append(f"{refused_exemplars} exemplars ({reasons})")
        raise InvalidRequest(
            f"rejected {', '.join(parts)}, kept {self.samples_written}; first: {self.first_error}"
        )


class Ingester:
    """Turns decoded requests into durable, stored samples."""

    def __init__(
        self,
        config: GatewayConfig,
        head: Head,
        wal: WAL,
        metrics: GatewayMetrics,
        *,
        persist: bool = False,
        bucket: ObjectStore | None = None,
    ) -> None:
        self.config = config
        self.head = head
        self.wal = wal
        self.metrics = metrics
        # With `persist`, exemplars and metadata live in the data dir; otherwise in memory.
        self.exemplars = ExemplarStore(
            config.data_dir / EXEMPLARS_DIRNAME if persist else None,
            retention_ms=int(config.exemplar_retention_s * 1000),
            max_per_tenant=config.max_exemplars_per_tenant,
            fsync=config.wal_fsync,
        )
        self.metadata = MetadataStore(
            config.data_dir / METADATA_DIRNAME if persist else None,
            max_metrics_per_tenant=config.max_metadata_per_tenant,
        )
        # Where metadata is copied for processes without this disk (the compactor).
        self.bucket = bucket
        self._copies: set[asyncio.Task[None]] = set()
        self.rules = LabelRules.from_config(config)
        self.limits = Limits(config)
        self.rate = RateLimiter()
        self._active: dict[str, tuple[float, int]] = {}  # tenant -> (counted at, count)

    async def write(self, tenant: str, request: DecodedWrite) -> WriteOutcome:
        """Store a request's valid samples durably; the outcome says what was refused."""
        outcome, durable = self.submit(tenant, request, now_ms=int(time.time() * 1000))
        try:
            if durable is not None:
                await asyncio.wrap_future(durable)
        except BaseException:
            if outcome.new_exemplars:
                # The resend will find them kept; it must log them then.
                self.exemplars.mark_unlogged(tenant)
            raise
        await self._persist_extras(outcome)
        self._count(outcome)
        return outcome

    async def _persist_extras(self, outcome: WriteOutcome) -> None:
        """Make the request's new exemplars durable (503 when the disk refuses: the
        resend finds them kept and logs them again), and write changed metadata."""
        tenant = outcome.tenant
        if self.exemplars.needs_log(tenant, outcome.new_exemplars):
            try:
                await asyncio.to_thread(self.exemplars.log, tenant, outcome.new_exemplars)
            except OSError as exc:
                raise Unavailable(f"exemplar log write failed: {exc}") from None
        if outcome.metadata.changed:
            try:
                await asyncio.to_thread(self.metadata.persist, tenant)
            except OSError as exc:
                # Senders repeat metadata; the next change or shutdown writes it again.
                log.warning("metadata write failed tenant=%s error=%s", tenant, exc)
        if (
            self.bucket is not None
            and outcome.metadata.stored
            and self.metadata.copy_due(tenant, time.monotonic())
        ):
            # In the background: the bucket copy is not part of the acknowledgement.
            task = asyncio.create_task(self._copy_metadata(self.bucket, tenant))
            self._copies.add(task)
            task.add_done_callback(self._copies.discard)

    async def _copy_metadata(self, bucket: ObjectStore, tenant: str) -> None:
        try:
            await asyncio.to_thread(self.metadata.copy_to_bucket, bucket, tenant)
        except Exception as exc:  # any store failure: the next due copy tries again
            log.warning("metadata not copied to the bucket tenant=%s error=%s", tenant, exc)

    def submit(
        self, tenant: str, request: DecodedWrite, *, now_ms: int
    ) -> tuple[WriteOutcome, Future[None] | None]:
        """Validate, log and store; returns the outcome and the WAL's durability future."""
        self.head.check_budget()
        limits = self.limits.of(tenant)
        try:
            self.rate.take(tenant, len(request.timestamps) + request.histograms, limits)
        except RateLimited:
            self.metrics.samples_rejected.labels(tenant, "rate_limited").inc(
                len(request.timestamps) + request.histograms
            )
            raise
        tenant_head = self.head.tenant(tenant)
        outcome = WriteOutcome(tenant)
        outcome.start_timestamps = request.start_timestamps
        if request.metadata:
            self.metrics.metadata_received.labels(tenant).inc(request.metadata)
            outcome.metadata = self.metadata.update(tenant, request.metadata_entries, now_ms)
        refused: dict[int, RejectedSeries] = {}
        entry_refs = self._resolve_series(tenant_head, request, outcome, limits, now_ms, refused)
        if request.exemplars:
            self._keep_exemplars(tenant_head, request, outcome, entry_refs, refused, limits, now_ms)
        histograms_durable = None
        if request.histograms:
            bounds = TimeBounds(
                EARLIEST_TIMESTAMP,
                min(now_ms + limits.max_future_ms, LATEST_TIMESTAMP),
                now_ms - limits.max_sample_age_ms if limits.max_sample_age_ms else None,
                f"older than max_sample_age_ms={limits.max_sample_age_ms}",
            )
            histograms_durable = store_histograms(
                tenant_head, self.wal, request, entry_refs, outcome, bounds
            )
        refs = entry_refs[request.sample_entry]
        keep = refs >= 0
        ts = request.timestamps
        # The latest timestamp a block can hold caps a max_future_ms set absurdly high.
        future = ts > min(now_ms + limits.max_future_ms, LATEST_TIMESTAMP)
        self._reject_samples(outcome, "too_far_in_future", keep & future, request)
        out_of_range = ts < EARLIEST_TIMESTAMP
        self._reject_samples(outcome, "timestamp_out_of_range", keep & out_of_range, request)
        keep &= ~future & ~out_of_range
        if limits.max_sample_age_ms:
            old = keep & (ts < now_ms - limits.max_sample_age_ms)
            self._reject_samples(
                outcome,
                "too_old",
                old,
                request,
                f"older than max_sample_age_ms={limits.max_sample_age_ms}",
            )
            keep &= ~old
        if not keep.any():
            return outcome, histograms_durable
        plan = tenant_head.plan(refs[keep].astype(np.uint32), ts[keep], request.values[keep])
        outcome.reject_conflicts(
            plan.conflict,
            plan.refs,
            plan.timestamps,
            tenant_head,
            "sample",
            "has a different value than the one stored",
        )
        starts = _start_events(tenant_head, plan, refs[keep], ts[keep], request, keep)
        durable = self._log(tenant_head, plan, starts)
        tenant_head.commit(plan)
        outcome.stored = int(plan.new.sum())
        outcome.resent = int(plan.resent.sum())
        return outcome, all_durable(durable, histograms_durable)

    def _resolve_series(
        self,
        tenant_head: TenantHead,
        request: DecodedWrite,
        outcome: WriteOutcome,
        limits: TenantLimits,
        now_ms: int,
        refused_entries: dict[int, RejectedSeries],
    ) -> np.ndarray:
        """Head ref of each TimeSeries entry; -1 for label sets that are refused (their
        entries' reasons put in `refused_entries`) and for entries without samples
        (nothing to store: no series is made for them)."""
        rules = self._rules(limits)
        refs = np.empty(len(request.series_keys), dtype=np.int64)
        samples_per_entry = np.bincount(
            np.concatenate((request.sample_entry, request.histogram_entry)),
            minlength=len(request.series_keys),
        ).tolist()
        # A label set refused once is refused again without a second check: a request
        # can repeat one bad entry millions of times.
        refused: dict[bytes | tuple[bytes, ...], RejectedSeries] = {}
        for index, key in enumerate(request.series_keys):
            ref = tenant_head.ref_by_key.get(key)
            if ref is None:
                if not samples_per_entry[index]:
                    refs[index] = -1
                    continue
                rejected = refused.get(key)
                if rejected is None:
                    try:
                        canonical = canonical_labels(request.series_labels[index], rules)
                        series = series_key_of(canonical)
                        self._check_new_series(tenant_head, series, limits, now_ms)
                    except RejectedSeries as exc:
                        rejected = refused[key] = exc
                        self.metrics.series_rejected.labels(outcome.tenant, exc.code).inc()
                if rejected is not None:
                    refs[index] = -1
                    refused_entries[index] = rejected
                    outcome.reject(rejected.code, samples_per_entry[index], str(rejected))
                    continue
                before = tenant_head.series_count
                ref = tenant_head.keyed_series_ref(series)
                if tenant_head.series_count > before:
                    self.metrics.series_created.labels(outcome.tenant).inc()
                    if tenant_head.tenant in self._active:
                        at, count = self._active[tenant_head.tenant]
                        self._active[tenant_head.tenant] = (at, count + 1)
                tenant_head.remember_key(key, ref)
            refs[index] = ref
        return refs

    def _keep_exemplars(
        self,
        tenant_head: TenantHead,
        request: DecodedWrite,
        outcome: WriteOutcome,
        entry_refs: np.ndarray,
        refused: dict[int, RejectedSeries],
        limits: TenantLimits,
        now_ms: int,
    ) -> None:
        """Check the request's exemplars and keep the valid ones with their series'
        labels; an exemplar without a timestamp takes the time it arrived."""
        rules = self._rules(limits)
        series_of: dict[int, LabelPairs | RejectedSeries] = {}
        oldest = now_ms - self.exemplars.retention_ms
        latest = min(now_ms + limits.max_future_ms, LATEST_TIMESTAMP)
        bits = request.exemplar_values.view(np.uint64).tolist()
        kept = []
        for j, entry in enumerate(request.exemplar_entry.tolist()):
            series = series_of.get(entry)
            if series is None:
                series = series_of[entry] = self._exemplar_series(
                    tenant_head, request, entry, int(entry_refs[entry]), refused, rules
                )
            if isinstance(series, RejectedSeries):
                outcome.reject_exemplar(series.code, f"exemplar of a refused series: {series}")
                continue
            labels = request.exemplar_labels[j]
            problem = exemplar_labels_problem(labels)
            if problem is not None:
                outcome.reject_exemplar(problem[0], f"{problem[1]} in {format_labels(labels)}")
                continue
            ts = int(request.exemplar_timestamps[j]) or now_ms
            if ts < oldest or ts > latest:
                reason = "exemplar_too_old" if ts < oldest else "too_far_in_future"
                outcome.reject_exemplar(
                    reason,
                    f"exemplar timestamp {ts} of {format_labels(list(series))} is "
                    + reason.replace("_", " "),
                )
                continue
            pairs = tuple(sorted(labels, key=lambda p: p[0].encode()))
            kept.append(Exemplar(series, pairs, ts, bits[j]))
        outcome.new_exemplars = self.exemplars.add(outcome.tenant, kept, now_ms)
        outcome.exemplars_kept = len(kept)

    def _exemplar_series(
        self,
        tenant_head: TenantHead,
        request: DecodedWrite,
        entry: int,
        ref: int,
        refused: dict[int, RejectedSeries],
        rules: LabelRules,
    ) -> LabelPairs | RejectedSeries:
        """The labels of the series an exemplar belongs to, or why they are refused;
        checked here for entries that carry no sample."""
        if ref >= 0:
            return tuple(tenant_head.label_pairs(ref))
        if entry in refused:
            return refused[entry]
        try:
            return tuple(decode_labels(canonical_labels(request.series_labels[entry], rules)))
        except RejectedSeries as exc:
            return exc

    def _rules(self, limits: TenantLimits) -> LabelRules:
        """The label rules of a tenant's limits."""
        return LabelRules(
            max_labels=limits.max_labels_per_series,
            max_name_bytes=limits.max_label_name_bytes,
            max_value_bytes=limits.max_label_value_bytes,
            legacy_names=self.rules.legacy_names,
        )

    def _check_new_series(
        self, tenant_head: TenantHead, series: bytes, limits: TenantLimits, now_ms: int
    ) -> None:
        """RejectedSeries if the series keyed `series` would be new past max_active_series."""
        if not limits.max_active_series or series in tenant_head.ref_by_key:
            return
        active = self.active_series(tenant_head, now_ms)
        if active >= limits.max_active_series:
            raise RejectedSeries(
                "max_active_series",
                f"tenant {tenant_head.tenant} has {active} active series, the limit "
                f"(max_active_series={limits.max_active_series}); no new series until some "
                "go quiet for an hour",
            )

    def active_series(self, tenant_head: TenantHead, now_ms: int) -> int:
        """Series with a sample in the last hour, plus those made since last counted;
        counted again at most once a second (one pass over every series' newest time)."""
        counted = self._active.get(tenant_head.tenant)
        now = time.monotonic()
        if counted is None or now - counted[0] >= 1.0:
            newest = tenant_head.newest_ts()
            count = int(np.count_nonzero(newest >= now_ms - ACTIVE_WINDOW_MS))
            counted = self._active[tenant_head.tenant] = (now, count)
        return counted[1]

    def _reject_samples(
        self,
        outcome: WriteOutcome,
        reason: str,
        mask: np.ndarray,
        request: DecodedWrite,
        why: str = "",
    ) -> None:
        count = int(mask.sum())
        if count:
            first = int(np.flatnonzero(mask)[0])
            outcome.reject(
                reason,
                count,
                f"sample timestamp {int(request.timestamps[first])} is "
                + (why or reason.replace("_", " ")),
            )

    def _log(
        self, tenant_head: TenantHead, plan: AppendPlan, starts: StartColumns | None = None
    ) -> Future[None] | None:
        """Hand the samples that must be durable (new and resent) to the WAL, with their
        start-timestamp events."""
        logged = plan.new | plan.resent
        if not logged.any():
            return None
        return self.log_samples(
            tenant_head,
            plan.refs[logged],
            plan.timestamps[logged],
            plan.values[logged],
            starts=starts,
        )

    def log_samples(
        self,
        tenant_head: TenantHead,
        refs: np.ndarray,
        ts: np.ndarray,
        values: np.ndarray,
        *,
        starts: StartColumns | None = None,
    ) -> Future[None]:
        """Append samples and start-timestamp entries (and the labels of series this
        segment lacks) to the WAL, in one submission: they are durable together."""
        events = starts if starts is not None and len(starts) else None
        entries = len(refs) + (len(events) if events is not None else 0)
        generation = self.wal.begin(entries * 20 + 64)
        seen = tenant_head.logged_generation.view
        used = refs if events is None else np.concatenate((refs, events.refs))
        unlogged = np.unique(used[seen[used] != generation])
        records = []
        if len(unlogged):
            labels = [tenant_head.canonical(int(r)) for r in unlogged]
            records.append(frame(encode_series(tenant_head.tenant, unlogged.tolist(), labels)))
        if len(refs):
            records.append(frame(encode_samples(tenant_head.tenant, refs, ts, values)))
        if events is not None:
            records.append(
                frame(encode_starts(tenant_head.tenant, events.refs, events.ts, events.starts))
            )
        durable = self.wal.submit(generation, b"".join(records))
        seen[unlogged] = generation
        return durable

    def _count(self, outcome: WriteOutcome) -> None:
        tenant = outcome.tenant
        kept = outcome.stored + outcome.resent
        if kept:
            self.metrics.samples_received.labels(tenant).inc(kept)
        if outcome.histograms_stored:
            self.metrics.histograms_received.labels(tenant).inc(outcome.histograms_stored)
        for reason, count in outcome.rejected.items():
            self.metrics.samples_rejected.labels(tenant, reason).inc(count)
        if outcome.exemplars_kept:
            self.metrics.exemplars_received.labels(tenant).inc(outcome.exemplars_kept)
        if outcome.new_exemplars:
            self.metrics.exemplars_stored.labels(tenant).inc(len(outcome.new_exemplars))
        for reason, count in outcome.exemplars_rejected.items():
            self.metrics.exemplars_rejected.labels(tenant, reason).inc(count)
        if outcome.metadata.stored:
            self.metrics.metadata_stored.labels(tenant).inc(outcome.metadata.stored)
        for reason, count in outcome.metadata.refused.items():
            self.metrics.metadata_refused.labels(tenant, reason).inc(count)
        if outcome.start_timestamps:
            self.metrics.start_timestamps_received.labels(tenant).inc(outcome.start_timestamps)


def _start_events(
    head: TenantHead,
    plan: AppendPlan,
    refs: np.ndarray,
    ts: np.ndarray,
    request: DecodedWrite,
    keep: np.ndarray,
) -> StartColumns | None:
    """The start-timestamp events to log with a plan's samples (None without any): those
    its new samples make, kept in the head from now on, and the head's events at its
    resent samples, which a retry after a failed fsync must log again.

    `refs` and `ts` are the planned samples in request order, `keep` picks them.
    """
    starts = request.sample_start_timestamps
    if len(starts) != len(request.timestamps) or not starts[keep].any():
        return None
    # The plan's order (plan_append sorts the same columns stably), to pair starts with it.
    starts = starts[keep][np.lexsort((ts, refs))]
    new, resent = plan.new, plan.resent
    made = head.starts.record(plan.refs[new], plan.timestamps[new], starts[new])
    return made + head.starts.at(plan.refs[resent], plan.timestamps[resent])


def exemplar_labels_problem(labels: list[tuple[str, str]]) -> tuple[str, str] | None:
    """(reason, message) when an exemplar's own labels cannot be kept; None if they can."""
    names = [name for name, _ in labels]
    if any(not name for name in names):
        return "invalid_exemplar_labels", "empty exemplar label name"
    if len(set(names)) != len(names):
        return "invalid_exemplar_labels", "duplicate exemplar label name"
    chars = sum(len(name) + len(value) for name, value in labels)
    if chars > MAX_EXEMPLAR_LABEL_CHARS:
        return (
            "exemplar_labels_too_long",
            f"exemplar labels of {chars} characters > limit {MAX_EXEMPLAR_LABEL_CHARS}",
        )
    return None
