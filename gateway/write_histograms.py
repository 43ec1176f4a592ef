"""The write path of native histograms: decide, log to the WAL, store in the head.

Runs inside `Ingester.submit` (gateway/write.py), on the event loop, after the request's
series are resolved: a histogram takes its series' ref like a float sample, the same time
bounds, and the same duplicate rule (docs/head.md#native-histograms): at a (series,
timestamp) already holding a histogram, the same bytes are a resend (kept, counted as
written), other bytes a conflict (refused as `duplicate_timestamp`, the first stays).
A histogram whose spans and buckets do not fit together is refused (`invalid_histogram`),
as Prometheus refuses it: no histogram chunk could carry it back.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gateway.decode import DecodedWrite
from gateway.head import TenantHead
from gateway.wal import WAL, frame
from gateway.wal_record import encode_histograms, encode_series
from proto.write_v2_pb2 import BucketSpan, Histogram

# WAL bytes per histogram besides its message: ref, timestamp, length.
RECORD_BYTES_PER_HISTOGRAM = 16
# A histogram with this sum is the staleness marker: its other fields do not count.
STALE_NAN_BITS = 0x7FF0000000000002


class Outcome(Protocol):
    """What of gateway/write.py's WriteOutcome this module fills in."""

    histograms_stored: int

    def reject(self, reason: str, count: int, message: str) -> None:
        """Count refused samples."""

    def reject_conflicts(
        self,
        conflict: np.ndarray,
        refs: np.ndarray,
        timestamps: np.ndarray,
        head: TenantHead,
        what: str,
        differs: str,
    ) -> None:
        """Count those marked in `conflict` as duplicate_timestamp, naming the first."""


@dataclass(frozen=True, slots=True)
class TimeBounds:
    """The timestamps a request may store: [earliest, latest], and below `too_old` (when
    set) refused as too old."""

    earliest: int
    latest: int
    too_old: int | None = None
    too_old_why: str = ""


@dataclass(frozen=True, slots=True)
class HistogramPlan:
    """The decision for a request's histograms, in request order."""

    refs: np.ndarray
    timestamps: np.ndarray
    payloads: list[bytes]
    new: np.ndarray
    resent: np.ndarray
    conflict: np.ndarray


def plan_histograms(
    head: TenantHead, refs: np.ndarray, timestamps: np.ndarray, payloads: Sequence[bytes]
) -> HistogramPlan:
    """Classify histograms against the head and against the earlier ones of the request."""
    n = len(refs)
    new = np.zeros(n, dtype=bool)
    resent = np.zeros(n, dtype=bool)
    conflict = np.zeros(n, dtype=bool)
    seen: dict[tuple[int, int], bytes] = {}
    stored = head.histograms
    for i, (ref, ts) in enumerate(zip(refs.tolist(), timestamps.tolist(), strict=True)):
        key = (ref, ts)
        first = seen.get(key)
        if first is None:
            first = stored.get(ref, ts)
            if first is None:
                seen[key] = payloads[i]
                new[i] = True
                continue
            seen[key] = first
        if first == payloads[i]:
            resent[i] = True
        else:
            conflict[i] = True
    return HistogramPlan(refs, timestamps, list(payloads), new, resent, conflict)


def store_histograms(
    head: TenantHead,
    wal: WAL,
    request: DecodedWrite,
    entry_refs: np.ndarray,
    outcome: Outcome,
    bounds: TimeBounds,
) -> Future[None] | None:
    """Check, log and store the request's histograms; the WAL's durability future (None
    when nothing had to be logged). Histograms of refused series (ref -1) were counted
    as refused when their series was."""
    refs = entry_refs[request.histogram_entry]
    ts = request.histogram_timestamps
    keep = refs >= 0
    checks = [
        ("too_far_in_future", ts > bounds.latest, ""),
        ("timestamp_out_of_range", ts < bounds.earliest, ""),
    ]
    if bounds.too_old is not None:
        checks.append(("too_old", ts < bounds.too_old, bounds.too_old_why))
    problems = [
        histogram_problem(p) if k else None
        for p, k in zip(request.histogram_payloads, keep.tolist(), strict=True)
    ]
    invalid = np.array([p is not None for p in problems], dtype=bool)
    if invalid.any():
        first = int(np.flatnonzero(invalid)[0])
        outcome.reject(
            "invalid_histogram",
            int(invalid.sum()),
            f"histogram at {int(ts[first])}: {problems[first]}",
        )
        keep &= ~invalid
    for reason, refused, why in checks:
        mask = keep & refused
        count = int(mask.sum())
        if count:
            first = int(np.flatnonzero(mask)[0])
            outcome.reject(
                reason,
                count,
                f"histogram timestamp {int(ts[first])} is " + (why or reason.replace("_", " ")),
            )
        keep &= ~refused
    if not keep.any():
        return None
    kept = np.flatnonzero(keep).tolist()
    payloads = request.histogram_payloads
    plan = plan_histograms(
        head, refs[keep].astype(np.uint32), ts[keep], [payloads[i] for i in kept]
    )
    outcome.reject_conflicts(
        plan.conflict, plan.refs, plan.timestamps, head, "histogram", "differs from the one stored"
    )
    logged = plan.new | plan.resent
    durable = None
    if logged.any():
        durable = log_histograms(
            head, wal, plan.refs[logged], plan.timestamps[logged], _pick(plan.payloads, logged)
        )
    new = plan.new
    head.commit_histograms(plan.refs[new], plan.timestamps[new], _pick(plan.payloads, new))
    outcome.histograms_stored = int(logged.sum())
    return durable


def histogram_problem(payload: bytes) -> str | None:
    """Why a histogram cannot be stored (Prometheus's checks that chunks rely on), or None."""
    message = Histogram.FromString(payload)
    if int(np.float64(message.sum).view(np.uint64)) == STALE_NAN_BITS:
        return None
    is_float = message.WhichOneof("count") == "count_float"
    sides = (
        ("positive", message.positive_spans, message.positive_deltas, message.positive_counts),
        ("negative", message.negative_spans, message.negative_deltas, message.negative_counts),
    )
    for side, spans, deltas, counts in sides:
        if counts if not is_float else deltas:
            return f"{side} buckets of the other kind than its count (integer or float)"
        if _negative_offset(spans):
            return f"a {side} span after the first has a negative offset"
        buckets = len(counts if is_float else deltas)
        if sum(span.length for span in spans) != buckets:
            return f"its {side} spans cover other than its {buckets} buckets"
    return None


def _negative_offset(spans: Sequence[BucketSpan]) -> bool:
    return any(span.offset < 0 for span in spans[1:])


def log_histograms(
    head: TenantHead, wal: WAL, refs: np.ndarray, ts: np.ndarray, payloads: list[bytes]
) -> Future[None]:
    """Append histograms (and the labels of series this segment lacks) to the WAL."""
    size = len(refs) * RECORD_BYTES_PER_HISTOGRAM + sum(map(len, payloads)) + 64
    generation = wal.begin(size)
    seen = head.logged_generation.view
    unlogged = np.unique(refs[seen[refs] != generation])
    records = []
    if len(unlogged):
        labels = [head.canonical(int(r)) for r in unlogged]
        records.append(frame(encode_series(head.tenant, unlogged.tolist(), labels)))
    records.append(frame(encode_histograms(head.tenant, refs, ts, payloads)))
    durable = wal.submit(generation, b"".join(records))
    seen[unlogged] = generation
    return durable


def all_durable(*futures: Future[None] | None) -> Future[None] | None:
    """One future for several WAL submissions: done when all are, failed if one fails."""
    pending = [f for f in futures if f is not None]
    if len(pending) <= 1:
        return pending[0] if pending else None
    joined: Future[None] = Future()
    left = [len(pending)]
    lock = threading.Lock()  # callbacks run in the WAL's writer thread

    def settle(done: Future[None]) -> None:
        with lock:
            if joined.done():
                return
            exc = done.exception()
            if exc is not None:
                joined.set_exception(exc)
                return
            left[0] -= 1
            if not left[0]:
                joined.set_result(None)

    for future in pending:
        future.add_done_callback(settle)
    return joined


def _pick(payloads: list[bytes], mask: np.ndarray) -> list[bytes]:
    return [payloads[i] for i in np.flatnonzero(mask).tolist()]
