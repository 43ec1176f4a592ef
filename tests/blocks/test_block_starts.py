"""Start-timestamp events in blocks (issue 8): an optional index section, read back by
series and range, absent from blocks without events (so they and older blocks read as
ever), checked like every other section, and merged with later places winning."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from blocks.errors import CorruptBlock
from blocks.index import SECTION_STARTS, check_index, decode_index, encode_index
from blocks.meta import INDEX_FILENAME, BlockMeta
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from blocks.start_store import StartEvents, merge_start_parts
from blocks.upload import upload_block
from blocks.writer import BlockWriter
from querier.matchers import Matcher, MatchType
from querier.start_times import block_starts
from tests.blocks.test_block_histograms import section_ids

T0 = 1_795_564_800_000
STEP_MS = 15_000
TENANT = "t"
EMPTY = np.zeros(0, dtype=np.int64)


def events(*pairs: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([t for t, _ in pairs], dtype=np.int64),
        np.array([s for _, s in pairs], dtype=np.int64),
    )


A_EVENTS = events((T0, T0 - 5_000), (T0 + 40 * STEP_MS, T0 + 39 * STEP_MS), (T0 + 90 * STEP_MS, -7))
B_EVENTS = events((T0 + STEP_MS, 1 << 60))


def write_block(
    tmp_path: Path, block_id: str, *, with_events: bool, lone_events: bool = False
) -> tuple[LocalStore, BlockMeta]:
    """Series a and b with floats (and events), c with floats only, and with `lone_events`
    a series d with events and nothing else (nothing makes one, but nothing is lost)."""
    writer = BlockWriter(tmp_path / "work", block_id)
    floats = (T0 + STEP_MS * np.arange(100), np.arange(100.0))
    writer.add_series([("__name__", "a")], *floats, None, A_EVENTS if with_events else None)
    writer.add_series([("__name__", "b")], *floats, None, B_EVENTS if with_events else events())
    writer.add_series([("__name__", "c")], *floats)
    if lone_events:
        writer.add_series([("__name__", "d")], EMPTY, np.zeros(0), None, B_EVENTS)
    meta = writer.finish(tenant=TENANT, mint=T0, maxt=T0 + 2 * 3_600_000)
    store = LocalStore(tmp_path / "bucket")
    upload_block(store, writer.final_dir, TENANT)
    return store, meta


def as_pairs(part: tuple[np.ndarray, np.ndarray]) -> list[tuple[int, int]]:
    return list(zip(part[0].tolist(), part[1].tolist(), strict=True))


def test_events_come_back_by_series_and_range(tmp_path: Path) -> None:
    store, meta = write_block(
        tmp_path, "01KBRM00000000000000000001", with_events=True, lone_events=True
    )
    reader = BlockReader(store, f"{TENANT}/{meta.block_id}")
    starts = reader.index.starts
    assert starts is not None
    assert starts.offsets.tolist() == [0, 3, 4, 4, 5]
    assert starts.total == 5
    assert starts.series_with_events().tolist() == [0, 1, 3]
    assert as_pairs(starts.part(0, -(2**63), 2**63 - 1)) == as_pairs(A_EVENTS)
    assert as_pairs(starts.part(0, T0 + 1, T0 + 90 * STEP_MS)) == as_pairs(A_EVENTS)[1:]
    assert as_pairs(starts.part(1, 0, 2**62)) == as_pairs(B_EVENTS)
    assert as_pairs(starts.part(3, 0, 2**62)) == as_pairs(B_EVENTS)
    assert starts.count(2) == 0
    assert meta.stats.series == 4  # d has events only and is a series all the same
    assert meta.stats.samples == 300
    # The querier's pick: by matchers and range, labels named.
    named = block_starts(reader.index, [Matcher(MatchType.RE, "__name__", "a|c")], T0, T0 + 1)
    assert {k: as_pairs(v) for k, v in named.items()} == {(("__name__", "a"),): [(T0, T0 - 5_000)]}


def test_a_block_without_events_has_no_section_and_reads_as_ever(tmp_path: Path) -> None:
    block_id = "01KBRM00000000000000000002"
    store, meta = write_block(tmp_path / "without", block_id, with_events=False)
    index_bytes = store.get(f"{TENANT}/{meta.block_id}/{INDEX_FILENAME}")
    assert section_ids(index_bytes) == {1, 2, 3, 4, 5}
    index = decode_index(index_bytes)
    assert index.starts is None
    assert block_starts(index, [], -(2**63), 2**63 - 1) == {}
    # No section, and no other byte changed: the same index with empty events encodes alike.
    assert encode_index(replace(index, starts=StartEvents.from_parts([]))) == index_bytes
    empty = StartEvents.from_parts([events()] * index.series_count)
    assert encode_index(replace(index, starts=empty)) == index_bytes
    with_them = write_block(tmp_path / "with", block_id, with_events=True)
    with_bytes = with_them[0].get(f"{TENANT}/{block_id}/{INDEX_FILENAME}")
    assert SECTION_STARTS in section_ids(with_bytes)
    # Everything but the events is the same block: same series, same chunks.
    decoded = decode_index(with_bytes)
    assert encode_index(replace(decoded, starts=None)) == index_bytes


@pytest.mark.parametrize("damage", ["offsets", "backwards", "columns"])
def test_an_index_with_inconsistent_events_is_corrupt(tmp_path: Path, damage: str) -> None:
    store, meta = write_block(tmp_path, "01KBRM00000000000000000003", with_events=True)
    index = BlockReader(store, f"{TENANT}/{meta.block_id}").index
    starts = index.starts
    assert starts is not None
    if damage == "offsets":
        bad = replace(starts, offsets=starts.offsets[:-1])
    elif damage == "backwards":
        bad = replace(starts, offsets=np.array([0, 3, 2, 4], dtype=np.uint64))
    else:
        bad = replace(starts, start=starts.start[:-1])
    with pytest.raises(CorruptBlock):
        check_index(replace(index, starts=bad))
    with pytest.raises(CorruptBlock):
        decode_index(encode_index(replace(index, starts=bad)))


def test_later_parts_win_a_timestamp_and_the_range_is_inclusive() -> None:
    older = events((10, 1), (20, 2), (30, 3))
    newer = events((20, 9), (40, 4))
    assert as_pairs(merge_start_parts([older, newer], 10, 40)) == [
        (10, 1),
        (20, 9),
        (30, 3),
        (40, 4),
    ]
    assert as_pairs(merge_start_parts([newer, older], 11, 39)) == [(20, 2), (30, 3)]
    assert as_pairs(merge_start_parts([events(), events()], 0, 100)) == []
