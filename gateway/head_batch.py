"""The head's compressed batches, and the runs they form (gateway/head_merge.py)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from blocks.sample_codec import encode_samples

# Blocks cut from the head cover aligned windows of this length, as Prometheus's do.
BLOCK_DURATION_MS = 2 * 3600 * 1000
# Samples a compressed batch holds at most: compressing one holds about 50 bytes a sample
# of working arrays at once, so a freeze (head_freeze_samples) or the samples a cut puts
# back never need more than 3 MB of them.
FROZEN_BATCH_SAMPLES = 65_536

# The most merges a sample goes through in the head (gateway/head_merge.py): level 2 is
# 16 freezes (4 M samples at the default head_freeze_samples), each level one more
# pass over every sample.
MAX_LEVEL = 2
# Merged runs (and what a cut keeps) are held longest and are long per series: they take
# the compact layout of blocks/sample_codec.py. On the 100k fleet's 12 M samples that is
# 1.42 bytes a sample where the fast layout held 2.49 (python -m bench.head_bytes), for
# about 0.07 µs a sample more CPU; a freeze, on the ingest path, keeps the fast one.
COMPACT_FROM_LEVEL = 1

# Float samples as columns: series refs (u32), timestamps (i64), values (f64).
SampleTriple = tuple[np.ndarray, np.ndarray, np.ndarray]

_run_ids = itertools.count(1)


def window_start(ts: int, duration_ms: int = BLOCK_DURATION_MS) -> int:
    """Start of the aligned window holding `ts` (floor, also for negative times)."""
    return ts - ts % duration_ms


def new_run_id() -> int:
    """An id no run of this process has had."""
    return next(_run_ids)


@dataclass(frozen=True, slots=True)
class FrozenBatch:
    """Compressed samples sorted by (ref, timestamp), with their time range.

    `run`: the batches one freeze, restore or merge made share it, and are together
    sorted by (ref, timestamp); `level`: how many merges made the run (head_merge.py).
    """

    data: bytes
    mint: int
    maxt: int
    samples: int
    run: int = 0
    level: int = 0
    # The refs of its first and last sample: merged batches hold narrow ranges of series,
    # so a read of a few series decodes few of them.
    first_ref: int = 0
    last_ref: int = (1 << 32) - 1

    def may_hold(self, refs: np.ndarray) -> bool:
        """Whether any of `refs` (sorted) lies in the batch's range of refs."""
        at = int(np.searchsorted(refs, self.first_ref))
        return at < len(refs) and int(refs[at]) <= self.last_ref


def compress_batch(
    refs: np.ndarray,
    timestamps: np.ndarray,
    values: np.ndarray,
    *,
    run: int | None = None,
    level: int = 0,
) -> FrozenBatch:
    """Samples sorted by (ref, timestamp), not empty, as one compressed batch; a run of
    its own unless `run` is given; merged ones in the compact layout."""
    return FrozenBatch(
        encode_samples(refs, timestamps, values, compact=level >= COMPACT_FROM_LEVEL),
        int(timestamps.min()),
        int(timestamps.max()),
        len(refs),
        new_run_id() if run is None else run,
        level,
        int(refs[0]),
        int(refs[-1]),
    )


def merge_sorted(parts: Sequence[SampleTriple]) -> SampleTriple:
    """Parts each sorted by (ref, timestamp) as one sorted run, exact duplicates dropped:
    of the samples at one (ref, timestamp) the first stays, in the order of the parts."""
    refs, ts, values = concatenate_triples(parts)
    order = np.lexsort((ts, refs))  # stable: samples at one pair keep the parts' order
    refs, ts, values = refs[order], ts[order], values[order]
    repeat = np.zeros(len(refs), dtype=bool)
    repeat[1:] = (refs[1:] == refs[:-1]) & (ts[1:] == ts[:-1])
    if not repeat.any():
        return refs, ts, values
    return refs[~repeat], ts[~repeat], values[~repeat]


def concatenate_triples(parts: Sequence[SampleTriple]) -> SampleTriple:
    """The parts' columns end to end (the one part itself when there is one)."""
    if len(parts) == 1:
        return parts[0]
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )
