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
