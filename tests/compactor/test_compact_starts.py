"""Start-timestamp events through the compactor (issue 8): merges carry them (each sample
timestamp once, the newest block winning, nothing outside the new block's range) and
downsampled copies keep every one, so a read answers the same before and after."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blocks.bucket_index import add_blocks
from blocks.meta import BlockMeta, Resolution
from blocks.objstore.base import ObjectStore
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from blocks.start_store import StartPart
from blocks.ulid import new_ulid
from blocks.upload import upload_block
from blocks.writer import BlockWriter
from compactor.levels import HOUR_MS
from compactor.planner import Downsample
from compactor.rewrite import write_downsample
from querier.start_times import read_starts
from tests.compactor.bucket_data import T0, WINDOW_MS, labels, live_blocks
from tests.compactor.test_compact import compactor

TENANT = "team-a"
STEP_MS = 60_000
REQUESTS = labels("requests_total", job="api")
TEMPERATURE = labels("temperature", room="r1")
LabelSet = tuple[tuple[str, str], ...]
Events = list[tuple[int, int]]
EVERYTHING = (-(2**63), 2**63 - 1)


def put(
    store: ObjectStore,
    work: Path,
    mint: int,
    maxt: int,
    starts: dict[LabelSet, Events],
) -> BlockMeta:
    """A block of [mint, maxt): both series a sample a minute, with these events."""
    writer = BlockWriter(work, new_ulid())
    ts = np.arange(mint, maxt, STEP_MS, dtype=np.int64)
    for key in sorted((REQUESTS, TEMPERATURE)):
        found = starts.get(key, [])
        part = (
            np.array([t for t, _ in found], dtype=np.int64),
            np.array([s for _, s in found], dtype=np.int64),
        )
        writer.add_series(list(key), ts, np.arange(len(ts), dtype=np.float64), None, part)
    writer.finish(tenant=TENANT, mint=mint, maxt=maxt)
    meta = upload_block(store, writer.final_dir, TENANT)
    add_blocks(store, TENANT, [meta])
    return meta


def as_events(found: dict[LabelSet, StartPart]) -> dict[LabelSet, Events]:
    return {k: list(zip(ts.tolist(), s.tolist(), strict=True)) for k, (ts, s) in found.items()}


def events_of(store: ObjectStore, meta: BlockMeta) -> dict[LabelSet, Events]:
    """Every event a block holds, by its series' label sets."""
    index = BlockReader(store, f"{TENANT}/{meta.block_id}", meta=meta).index
    if index.starts is None:
        return {}
    return {
        tuple(index.labels(i)): as_events({(): index.starts.part(i, *EVERYTHING)})[()]
        for i in index.starts.series_with_events().tolist()
    }


def test_merges_carry_events_newest_block_winning(tmp_path: Path) -> None:
    work = tmp_path / "work"
    # One counter restart per window, at its 10th minute, the start a second before.
    expected: Events = []
    with LocalStore(tmp_path / "bucket") as store:
        for window in range(7):
            mint = T0 + window * WINDOW_MS
            event = (mint + 10 * STEP_MS, mint + 10 * STEP_MS - 1_000)
            starts = {REQUESTS: [event]}
            if window == 2:
                # An event outside the block's own range: no merge may carry it.
                starts[REQUESTS].append((mint + WINDOW_MS + 5, 1))
            put(store, work, mint, mint + WINDOW_MS, starts)
            expected.append(event)
        # A second gateway's block of window 1, newer: it says otherwise at one sample and
        # has one more event, on the other series.
        twin_at = T0 + WINDOW_MS + 10 * STEP_MS
        twin = {REQUESTS: [(twin_at, 5)], TEMPERATURE: [(twin_at + STEP_MS, 6)]}
        put(store, work, T0 + WINDOW_MS, T0 + 2 * WINDOW_MS, twin)
        expected[1] = (twin_at, 5)
        want = {REQUESTS: expected, TEMPERATURE: [(twin_at + STEP_MS, 6)]}
        before = as_events(read_starts(store, TENANT, [], *EVERYTHING))
        assert before == want

        summary = compactor(store, tmp_path, downsampling=False, retention_raw="0").run_pass(
            now_ms=T0 + 15 * HOUR_MS
        )

        assert summary.merges == 2, summary.line()
        merged, last = live_blocks(store, TENANT, unmarked=True)
        assert (merged.mint, merged.maxt, merged.level) == (T0, T0 + 12 * HOUR_MS, 2)
        assert events_of(store, merged) == {
            REQUESTS: expected[:6],
            TEMPERATURE: [(twin_at + STEP_MS, 6)],
        }
        assert events_of(store, last) == {REQUESTS: expected[6:]}
        # A read answers the same, with the replaced blocks still there and without them.
        assert as_events(read_starts(store, TENANT, [], *EVERYTHING)) == want
        for meta in live_blocks(store, TENANT):
            if meta not in (merged, last):
                store.delete(f"{TENANT}/{meta.block_id}/meta.json")
        assert as_events(read_starts(store, TENANT, [], *EVERYTHING)) == want


def test_downsampled_copies_keep_every_event_on_the_series_own_labels(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with LocalStore(tmp_path / "bucket") as store:
        starts = {
            REQUESTS: [(T0 + 7 * STEP_MS, T0), (T0 + 300 * STEP_MS, T0 + 299 * STEP_MS)],
            TEMPERATURE: [(T0 + 8 * STEP_MS, -3)],
        }
        for window in range(6):
            mint = T0 + window * WINDOW_MS
            inside = {
                k: [e for e in v if mint <= e[0] < mint + WINDOW_MS] for k, v in starts.items()
            }
            put(store, work, mint, mint + WINDOW_MS, inside)
        put(store, work, T0 + 12 * HOUR_MS, T0 + 14 * HOUR_MS, {})
        summary = compactor(
            store, tmp_path, retention_raw="0", retention_5m="0", downsample_5m_after="12h"
        ).run_pass(now_ms=T0 + 15 * HOUR_MS)
        assert summary.downsamplings == 1, summary.line()
        (five,) = [m for m in live_blocks(store, TENANT) if m.resolution == Resolution.FIVE_MINUTES]
        assert events_of(store, five) == starts
        # Its own 1 h copy keeps them too (5 m -> 1 h reads the aggregates' block).
        hourly = write_downsample(store, Downsample(TENANT, five, Resolution.ONE_HOUR), work)
        copy = upload_block(store, hourly.path, TENANT)
        assert hourly.start_events == 3
        assert events_of(store, copy) == starts
        index = BlockReader(store, f"{TENANT}/{copy.block_id}", meta=copy).index
        ids = {tuple(index.labels(i)): i for i in range(index.series_count)}
        # On the series' own label set: no samples there, the aggregates carry those.
        assert index.chunk_range(ids[REQUESTS])[0] == index.chunk_range(ids[REQUESTS])[1]
