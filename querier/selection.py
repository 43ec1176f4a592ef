"""What one place (a block, the head) holds for a query, before any sample is read.

Selecting first and reading later lets a query count its series and samples against
its limits from indexes alone, and read in batches of series so memory stays flat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from blocks.aggregates import Aggregate
from blocks.meta import Resolution

LabelSet = tuple[tuple[str, str], ...]
Part = tuple[np.ndarray, np.ndarray]
# One series' native histograms: time-sorted timestamps and canonical serialized messages.
HistogramPart = tuple[np.ndarray, list[bytes]]
# One series' aggregate series in a downsampled block, by aggregate (those read only).
AggregateParts = dict[Aggregate, Part]


@dataclass(frozen=True, slots=True)
class EncodedChunks:
    """One stored chunk's samples as XOR chunk fields of a streamed answer, in time order
    (querier/stream_chunks.py)."""

    fields: list[bytes]
    samples: int
    # Per field: its chunk's first and last sample time (so a range that cuts through
    # the stored chunk can still copy the fields wholly inside it).
    mint: tuple[int, ...] = ()
    maxt: tuple[int, ...] = ()


# A series' share of a streamed answer, in time order: encoded fields ready to copy, or
# samples still to encode (a stored chunk a range cuts through, or merged samples).
Piece = EncodedChunks | Part


@dataclass(frozen=True, slots=True)
class Selection:
    """The series of one place of raw samples matching a query.

    `read(positions)` returns the samples (time-sorted, within the query's range) of the
    series at those positions of `labels`, in the same order. `samples` is an upper
    bound known before reading. `rank` orders places for conflicts: higher is newer.

    A block also says the range it can hold samples in (`span`, maxt exclusive) and can
    read its series as streamed-answer pieces (`read_pieces`, querier/stream_chunks.py):
    a series whose places' spans do not overlap is their pieces one after the other.
    """

    labels: list[LabelSet]
    samples: int
    rank: tuple[int, str]
    read: Callable[[Sequence[int]], list[Part]]
    span: tuple[int, int] | None = None
    read_pieces: Callable[[Sequence[int]], list[list[Piece]]] | None = None
    # Native histograms: an upper bound of how many, and their reader (positions as `read`).
    histograms: int = 0
    read_histograms: Callable[[Sequence[int]], list[HistogramPart]] | None = None


@dataclass(frozen=True, slots=True)
class AggregateSelection:
    """The series of one downsampled block matching a query, by their own label sets
    (the aggregate label taken off), so they meet the same series of raw places.

    `read(positions)` returns, per position, the aggregates read of that series, each
    time-sorted within the block's share of the query's range.
    """

    labels: list[LabelSet]
    samples: int
    resolution: Resolution
    read: Callable[[Sequence[int]], list[AggregateParts]]
    # The histograms the block keeps (docs/compactor.md#native-histograms), as `Selection`.
    histograms: int = 0
    read_histograms: Callable[[Sequence[int]], list[HistogramPart]] | None = None


def empty_histograms() -> HistogramPart:
    """No histogram."""
    return np.zeros(0, dtype=np.int64), []


def empty_selection(rank: tuple[int, str]) -> Selection:
    """A place with nothing for the query."""
    return Selection([], 0, rank, lambda positions: [])
