"""Start (created) timestamps of float samples, read back: the events of the series that
matchers select, over a time range, from a tenant's blocks and a gateway's head.

Remote read 1.0 has no field for them, so this is their way out (`strata inspect starts`,
tests). Places merge as samples do (querier/merge.py): blocks oldest first by id, the head
last, a later place winning a sample timestamp, which is also the compactor's rule; so
the answer is the same before and after compaction. Layout: docs/block-format.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from blocks.columns import run_bounds
from blocks.index import BlockIndex, decode_index
from blocks.meta import INDEX_FILENAME, META_FILENAME, BlockMeta
from blocks.objstore.base import ObjectStore
from blocks.start_store import StartPart, merge_start_parts
from blocks.upload import list_blocks
from gateway.head import TenantHead
from querier.matchers import Matcher
from querier.postings import select_series

LabelSet = tuple[tuple[str, str], ...]


def block_starts(
    index: BlockIndex, matchers: Sequence[Matcher], mint: int, maxt: int
) -> dict[LabelSet, StartPart]:
    """The events of a block's selected series with mint <= sample time <= maxt."""
    events = index.starts
    if events is None:
        return {}
    ids = np.intersect1d(select_series(index, matchers), events.series_with_events())
    found = {}
    for series in ids.tolist():
        part = events.part(series, mint, maxt)
        if len(part[0]):
            found[tuple(index.labels(series))] = part
    return found


def head_starts(
    head: TenantHead, matchers: Sequence[Matcher], mint: int, maxt: int
) -> dict[LabelSet, StartPart]:
    """The events a head holds for its selected series with mint <= sample time <= maxt.

    Only the series with events are matched: few of a head's series, a reset's worth.
    """
    events = head.starts.columns()
    found = {}
    for a, b in run_bounds(events.refs):
        ts, starts = events.ts[a:b], events.starts[a:b]
        inside = (ts >= mint) & (ts <= maxt)
        if not inside.any():
            continue
        labels = head.label_pairs(int(events.refs[a]))
        named = dict(labels)
        if all(m.matches(named) for m in matchers):
            found[tuple(labels)] = (ts[inside], starts[inside])
    return found


def read_starts(
    store: ObjectStore,
    tenant: str,
    matchers: Sequence[Matcher],
    mint: int,
    maxt: int,
    *,
    head: TenantHead | None = None,
) -> dict[LabelSet, StartPart]:
    """Labels -> (sample timestamps, start timestamps) of the tenant's series `matchers`
    select (all without matchers), mint <= sample time <= maxt, sorted by labels: every
    block in `store` overlapping the range, then `head` if given, merged."""
    parts: dict[LabelSet, list[StartPart]] = {}
    for block_id in list_blocks(store, tenant):  # ids sort by creation: oldest first
        prefix = f"{tenant}/{block_id}"
        meta = BlockMeta.from_json(store.get(f"{prefix}/{META_FILENAME}"))
        if meta.maxt <= mint or meta.mint > maxt:
            continue
        index = decode_index(store.get(f"{prefix}/{INDEX_FILENAME}"))
        # A block answers for its own range only, as a merge keeps only that of it.
        inside = max(mint, meta.mint), min(maxt, meta.maxt - 1)
        for labels, part in block_starts(index, matchers, *inside).items():
            parts.setdefault(labels, []).append(part)
    if head is not None:
        for labels, part in head_starts(head, matchers, mint, maxt).items():
            parts.setdefault(labels, []).append(part)
    return {labels: merge_start_parts(parts[labels], mint, maxt) for labels in sorted(parts)}
