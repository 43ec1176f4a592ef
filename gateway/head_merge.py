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
from collections import deque
from collections.abc import Callable, Iterator, Sequence

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
# Samples a piece of the merge takes at most, about (from all runs together).
PIECE_SAMPLES = FROZEN_BATCH_SAMPLES


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


class RunMerge:
    """One merge of consecutive runs into one run of the next level: their samples sorted
    by (ref, timestamp); of samples at one (ref, timestamp) the first in the runs' order
    stays, the one readers and cuts would keep of them. It gives back each input batch
    once every sample of it is in a written batch.

    So the merge holds about the inputs' bytes, not the inputs' and the new run's at once
    (a level-2 merge writes about 9 MB at 100,000 series). If it fails part way, `held()`
    is still every sample: the batches written so far, then the input batches not given
    back, in their runs' order. The written batches hold the kept sample of every (ref,
    timestamp) below where they end, so what follows them in that order repeats a pair
    only where they already have the first of it.
    """

    def __init__(self, batches: Sequence[FrozenBatch]) -> None:
        self.level = max(b.level for b in batches) + 1
        self.run = new_run_id()
        self.written: list[FrozenBatch] = []
        self._runs = [deque(group) for _, group in itertools.groupby(batches, key=_run_of)]
        # The last ref of each decoded batch still held: the first ones of its run.
        self._decoded: list[deque[int]] = [deque() for _ in self._runs]

    def held(self) -> list[FrozenBatch]:
        """Every sample of the runs: the batches written, then the inputs not given back."""
        return self.written + [batch for run in self._runs for batch in run]

    def merge(self) -> None:
        """Write the merged run, giving back the inputs as the written batches pass them."""
        for refs, ts, values in _batched(
            _merged(len(self._runs), self._decode_next), FROZEN_BATCH_SAMPLES
        ):
            self.written.append(compress_batch(refs, ts, values, run=self.run, level=self.level))
            self._give_back_below(int(refs[-1]))
            # Views of the batch's samples: held while the next one is made, they would
            # keep the arrays it was cut from alive beside that one's.
            del refs, ts, values
        for run, decoded in zip(self._runs, self._decoded, strict=True):
            run.clear()
            decoded.clear()

    def _decode_next(self, i: int) -> SampleTriple | None:
        run, decoded = self._runs[i], self._decoded[i]
        if len(decoded) == len(run):
            return None
        samples = decode_samples(run[len(decoded)].data)
        decoded.append(int(samples[0][-1]))
        return samples

    def _give_back_below(self, ref: int) -> None:
        """Drop the decoded inputs whose refs all lie below `ref`: every sample of a ref
        below the last one written is in a written batch (the merge goes in ref order)."""
        for run, decoded in zip(self._runs, self._decoded, strict=True):
            while decoded and decoded[0] < ref:
                decoded.popleft()
                run.popleft()


def _run_of(batch: FrozenBatch) -> int:
    return batch.run


def _merged(
    count: int, decode_next: Callable[[int], SampleTriple | None]
) -> Iterator[SampleTriple]:
    """The samples of `count` runs in (ref, timestamp) order, a piece at a time;
    `decode_next(i)` is run i's next batch decoded, None after its last.

    Each run has a decoded head (what is left of its current batch). A piece takes from
    every head the refs below the smallest last ref of the heads whose run goes on: a
    series may go on in that run's next batch, so its samples wait for it.
    """
    heads: list[SampleTriple | None] = [decode_next(i) for i in range(count)]
    more = [True] * count
    per_head = max(1, PIECE_SAMPLES // count)
    while any(h is not None for h in heads):
        limit = None
        for i, head in enumerate(heads):
            if head is not None and more[i]:
                last = int(head[0][-1])
                limit = last if limit is None else min(limit, last)
        limit = _capped(limit, [h[0] for h in heads if h is not None], per_head)
        parts: list[SampleTriple] = []
        for i, head in enumerate(heads):
            if head is None:
                continue
            refs, ts, values = head
            cut = len(refs) if limit is None else int(np.searchsorted(refs, limit))
            if cut:
                parts.append((refs[:cut], ts[:cut], values[:cut]))
                heads[i] = (refs[cut:], ts[cut:], values[cut:])
        # The piece is sorted into arrays of its own before any run decodes its next
        # batch: the parts are views that keep their whole batches alive, and a batch
        # whose tail is cut here is given up as its run takes the next one. Both at once
        # held four batches more at the merge's peak.
        piece = merge_sorted(parts) if parts else None
        del parts
        for i, head in enumerate(heads):
            if head is None:
                continue
            if limit is not None and len(head[0]) and int(head[0][-1]) == limit and more[i]:
                following = decode_next(i)
                if following is None:
                    more[i] = False
                else:
                    head = concatenate_triples([head, following])
            heads[i] = head if len(head[0]) else None
            if heads[i] is None and more[i]:
                heads[i] = decode_next(i)
                more[i] = heads[i] is not None
        if piece is not None:
            yield piece


def _capped(limit: int | None, heads: list[np.ndarray], per_head: int) -> int | None:
    """`limit` lowered so that a piece takes about `per_head` samples of each head at most,
    but always at least the smallest ref (so that the merge goes on).

    Without it a piece is a whole batch of each run where batches hold few series (the
    corpus: 1,762 series, 65,536 samples a batch), and merging it holds several copies
    of four batches' samples at once: 35 MB for a level-1 merge of a 2 MB run each.
    """
    if not heads:
        return limit
    smallest = min(int(refs[0]) for refs in heads)
    cap = min(int(refs[min(len(refs) - 1, per_head)]) for refs in heads)
    if cap <= smallest:
        cap = smallest + 1
    elif all(len(refs) <= per_head for refs in heads):
        return limit  # every head is short: the piece is small whatever the limit
    return cap if limit is None else min(limit, cap)


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
            # What is left over is copied, so that the arrays it was cut from can go now
            # rather than at the next concatenation, beside the arrays that one makes.
            held = (
                [(refs[size:].copy(), ts[size:].copy(), values[size:].copy())]
                if count > size
                else []
            )
            del refs, ts, values
            count -= size
    if count:
        yield concatenate_triples(held)
