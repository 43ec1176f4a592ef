"""Merge runs of the head's compressed batches into longer runs per series.

A freeze compresses 262,144 samples sorted by (ref, timestamp): at 100,000 series that is
2 or 3 samples of each series, and a run that short costs its first timestamp and value
in full. The head's batches of the 100k fleet took 4.0 bytes a sample; the same samples
merged four freezes at a time take 2.9, sixteen at a time 2.3 (docs/head.md, "Merged
runs"). So runs of the same level merge, four at a time, into one of the next level.

A run is the consecutive batches one freeze, restore or merge made (the same `run` id):
together sorted by (ref, timestamp). The merge reads its runs in step, one batch of each
decoded at a time, and writes batches as they fill, so it holds a few batches' samples
whatever the runs' size.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np

from blocks.sample_codec import decode_samples
from gateway.head_batch import (
    FROZEN_BATCH_SAMPLES,
    MAX_LEVEL,
    FrozenBatch,
    SampleTriple,
    compress_batch,
    concatenate_triples,
    merge_sorted,
    new_run_id,
)

# Runs merged at once: four runs of one level make one of the next.
MERGE_FAN_IN = 4


def tail_to_merge(frozen: Sequence[FrozenBatch], window_ms: int) -> int | None:
    """Where the batches to merge start: the last MERGE_FAN_IN runs of `frozen` when they
    have the same level (below MAX_LEVEL) and lie in one block window; else None.

    Only whole windows merge, so that a cut never decodes a batch reaching over its
    boundary for a merge's sake.
    """
    runs: list[int] = []  # start of each run, from the end
    end = len(frozen)
    while end and len(runs) < MERGE_FAN_IN:
        start = end - 1
        while start and frozen[start - 1].run == frozen[end - 1].run:
            start -= 1
        runs.append(start)
        end = start
    if len(runs) < MERGE_FAN_IN:
        return None
    first = runs[-1]
    tail = frozen[first:]
    level = tail[0].level
    if level >= MAX_LEVEL or any(b.level != level for b in tail):
        return None
    window = tail[0].mint // window_ms
    if any(b.mint // window_ms != window or b.maxt // window_ms != window for b in tail):
        return None
    return first


def merge_runs(batches: Sequence[FrozenBatch]) -> list[FrozenBatch]:
    """One run of the next level from consecutive runs: their samples sorted by (ref,
    timestamp); of samples at one (ref, timestamp) the first in the runs' order stays,
    the one readers and cuts would keep of them."""
    runs = [list(group) for _, group in itertools.groupby(batches, key=lambda b: b.run)]
    level = max(b.level for b in batches) + 1
    run = new_run_id()
    out: list[FrozenBatch] = []
    for refs, ts, values in _batched(_merged(runs), FROZEN_BATCH_SAMPLES):
        out.append(compress_batch(refs, ts, values, run=run, level=level))
    return out


def _merged(runs: list[list[FrozenBatch]]) -> Iterator[SampleTriple]:
    """The runs' samples in (ref, timestamp) order, a piece at a time.

    Each run has a decoded head (what is left of its current batch). A piece takes from
    every head the refs below the smallest last ref of the heads whose run goes on: a
    series may go on in that run's next batch, so its samples wait for it.
    """
    pending = [iter(r) for r in runs]
    heads: list[SampleTriple | None] = [_decode_next(p) for p in pending]
    more = [True] * len(runs)
    while any(h is not None for h in heads):
        limit = None
        for i, head in enumerate(heads):
            if head is not None and more[i]:
                last = int(head[0][-1])
                limit = last if limit is None else min(limit, last)
        parts: list[SampleTriple] = []
        for i, head in enumerate(heads):
            if head is None:
                continue
            refs, ts, values = head
            cut = len(refs) if limit is None else int(np.searchsorted(refs, limit))
            if cut:
                parts.append((refs[:cut], ts[:cut], values[:cut]))
            rest = (refs[cut:], ts[cut:], values[cut:])
            if limit is not None and int(refs[-1]) == limit and more[i]:
                following = _decode_next(pending[i])
                if following is None:
                    more[i] = False
                else:
                    rest = concatenate_triples([rest, following])
            heads[i] = rest if len(rest[0]) else None
            if heads[i] is None and more[i]:
                heads[i] = _decode_next(pending[i])
                more[i] = heads[i] is not None
        if parts:
            yield merge_sorted(parts)


def _decode_next(batches: Iterator[FrozenBatch]) -> SampleTriple | None:
    batch = next(batches, None)
    return None if batch is None else decode_samples(batch.data)


def _batched(pieces: Iterator[SampleTriple], size: int) -> Iterator[SampleTriple]:
    """The pieces' samples in batches of `size` (the last one shorter)."""
    held: list[SampleTriple] = []
    count = 0
    for piece in pieces:
        held.append(piece)
        count += len(piece[0])
        while count >= size:
            refs, ts, values = concatenate_triples(held)
            yield refs[:size], ts[:size], values[:size]
            held = [(refs[size:], ts[size:], values[size:])] if len(refs) > size else []
            count -= size
    if count:
        yield concatenate_triples(held)
