"""Deciding, for a batch of samples, which are new, which are resends, which conflict.

Pure functions over columns. A sample at a timestamp its series already has is a no-op
when the value bits are equal (a retried request) and a conflict when they differ (the
first value stays). In-order samples are decided from each series' last sample alone;
only older ones need a look at the stored samples.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Stored value bits at (ref, timestamp) pairs: (found mask, bits).
ExistingLookup = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, slots=True)
class AppendPlan:
    """The decision for a batch, in (ref, timestamp) order.

    `new` samples are stored; `resent` ones are already stored with the same bits;
    `conflict` ones are rejected. `new | resent` is what the WAL must hold.
    """

    refs: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray
    new: np.ndarray
    resent: np.ndarray
    conflict: np.ndarray


def plan_append(
    refs: np.ndarray,
    timestamps: np.ndarray,
    values: np.ndarray,
    last_ts: np.ndarray,
    last_bits: np.ndarray,
    existing: ExistingLookup,
) -> AppendPlan:
    """Classify every sample of a batch against the head and against the batch itself."""
    order = np.lexsort((timestamps, refs))
    r = refs[order]
    t = timestamps[order]
    v = values[order]
    bits = v.view(np.uint64)
    n = len(r)
    index = np.arange(n)
    repeat = np.zeros(n, dtype=bool)
    repeat[1:] = (r[1:] == r[:-1]) & (t[1:] == t[:-1])
    # Index of the first sample of each run of equal (ref, timestamp).
    leader = np.maximum.accumulate(np.where(repeat, 0, index))

    head_ts = last_ts[r]
    stored = np.zeros(n, dtype=bool)
    stored_bits = np.zeros(n, dtype=np.uint64)
    at_last = head_ts == t
    stored[at_last] = True
    stored_bits[at_last] = last_bits[r][at_last]
    older = ~repeat & (t < head_ts)
    if older.any():
        found, found_bits = existing(r[older], t[older])
        stored[older] = found
        stored_bits[older] = found_bits
    # Every sample of a run compares against what the run's leader found stored, or,
    # when nothing was stored, against the leader's own value.
    run_stored = stored[leader]
    reference = np.where(run_stored, stored_bits[leader], bits[leader])
    same = bits == reference
    new = ~repeat & ~run_stored
    resent = same & ~new
    conflict = ~same
    return AppendPlan(r, t, v, new, resent, conflict)


def advance_last(plan: AppendPlan, last_ts: np.ndarray, last_bits: np.ndarray) -> None:
    """Move each series' last sample forward to the newest new sample of the plan."""
    r = plan.refs[plan.new]
    if len(r) == 0:
        return
    t = plan.timestamps[plan.new]
    bits = plan.values[plan.new].view(np.uint64)
    tail = np.ones(len(r), dtype=bool)
    tail[:-1] = r[:-1] != r[1:]
    r, t, bits = r[tail], t[tail], bits[tail]
    newer = t > last_ts[r]
    last_ts[r[newer]] = t[newer]
    last_bits[r[newer]] = bits[newer]
