"""One series from several places: blocks that overlap, the upload queue and the head.

The same sample may stand in two places (a block uploaded while still queued, two
gateways writing one series, a block re-cut after a crash). Each timestamp counts once;
where two places disagree on its value, the newer place wins: parts come oldest first
(blocks by id, which sorts by creation time; the head last), so the last one counts.
The compactor resolves conflicts by the same rule, so a query answers the same before
and after compaction. Native histograms merge by the same rule, apart from floats: a
timestamp may hold a float and a histogram.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Part = tuple[np.ndarray, np.ndarray]
HistogramPart = tuple[np.ndarray, list[bytes]]


def merge_parts(parts: Sequence[Part], mint: int, maxt: int) -> Part:
    """Time-sorted samples with mint <= t <= maxt, one per timestamp, later parts winning."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    if len(parts) == 1:
        ts, values = parts[0]
        ordered = bool(np.all(ts[1:] > ts[:-1]))
        if ordered and (not len(ts) or (ts[0] >= mint and ts[-1] <= maxt)):
            return ts, values
    ts = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    # A stable sort keeps equal timestamps in part order; the last of each run wins.
    order = np.argsort(ts, kind="stable")
    ts, values = ts[order], values[order]
    last = np.ones(len(ts), dtype=bool)
    last[:-1] = ts[1:] != ts[:-1]
    last &= (ts >= mint) & (ts <= maxt)
    return ts[last], values[last]


def merge_series(series_parts: Sequence[Sequence[Part]], mint: int, maxt: int) -> list[Part]:
    """`merge_parts` of each series' parts. A series found in one place only is usually
    merged already; that is checked for all such series at once, in a few array
    operations, where checking each on its own cost more than reading it."""
    filled = [[p for p in parts if len(p[0])] for parts in series_parts]
    singles = [at for at, parts in enumerate(filled) if len(parts) == 1]
    ready = _merged_already([filled[at][0][0] for at in singles], mint, maxt)
    as_they_are = {at for at, yes in zip(singles, ready, strict=True) if yes}
    return [
        parts[0] if at in as_they_are else merge_parts(parts, mint, maxt)
        for at, parts in enumerate(filled)
    ]


def _merged_already(timestamps: Sequence[np.ndarray], mint: int, maxt: int) -> list[bool]:
    """For each non-empty array of timestamps: whether they rise strictly within [mint, maxt]."""
    if not timestamps:
        return []
    lengths = np.fromiter(map(len, timestamps), np.int64, len(timestamps))
    starts = np.zeros(len(timestamps), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    ts = np.concatenate(timestamps)
    ready = (ts[starts] >= mint) & (ts[starts + lengths - 1] <= maxt)
    # A step that does not rise inside one array (a step onto the next array's first
    # timestamp does not count).
    rises = np.ones(len(ts), dtype=bool)
    rises[1:] = ts[1:] > ts[:-1]
    rises[starts] = True
    ready[np.searchsorted(starts, np.flatnonzero(~rises), side="right") - 1] = False
    answer: list[bool] = ready.tolist()
    return answer


def merge_histogram_parts(parts: Sequence[HistogramPart], mint: int, maxt: int) -> HistogramPart:
    """`merge_parts` for histograms: time-sorted, one per timestamp, later parts winning."""
    parts = [p for p in parts if len(p[0])]
    if not parts:
        return np.zeros(0, dtype=np.int64), []
    if len(parts) == 1:
        ts, payloads = parts[0]
        if bool(np.all(ts[1:] > ts[:-1])) and ts[0] >= mint and ts[-1] <= maxt:
            return ts, payloads
    ts = np.concatenate([p[0] for p in parts])
    payloads = [m for p in parts for m in p[1]]
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    last = np.ones(len(ts), dtype=bool)
    last[:-1] = ts[1:] != ts[:-1]
    last &= (ts >= mint) & (ts <= maxt)
    picked = order[last].tolist()
    return ts[last], [payloads[i] for i in picked]
