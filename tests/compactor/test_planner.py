"""The compaction planner on block metadata alone: merges, downsampling, retention."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.bucket_index import BucketIndex
from blocks.meta import BlockMeta, BlockStats, Resolution
from blocks.ulid import new_ulid
from compactor.levels import (
    DAY_MS,
    HOUR_MS,
    LEVEL_RANGES_MS,
    aligned_range,
    fits_level,
    smallest_level,
)
from compactor.planner import (
    REASON_DELETE_DELAY,
    REASON_REPLACED,
    REASON_RETENTION,
    Action,
    Delete,
    Downsample,
    MarkForDeletion,
    Merge,
    PlannerConfig,
    leaves,
    plan,
    plan_index,
)
from gateway.head_cut import BLOCK_DURATION_MS

# An epoch-aligned start of a 14 d range (late 2023), so every level's ranges start here.
T0 = 1400 * LEVEL_RANGES_MS[4]
CONFIG = PlannerConfig()
DELAY = CONFIG.consistency_delay_ms
_ids = itertools.count(1)


def block(
    mint: int,
    maxt: int,
    *,
    level: int = 1,
    resolution: Resolution = Resolution.RAW,
    tenant: str = "t",
    sources: tuple[str, ...] = (),
) -> BlockMeta:
    """A block meta with a fresh id (time-ordered, unique within the test run)."""
    block_id = new_ulid(now_ms=T0, randomness=next(_ids).to_bytes(10, "big"))
    return BlockMeta(
        block_id=block_id,
        tenant=tenant,
        mint=mint,
        maxt=maxt,
        resolution=resolution,
        level=level,
        sources=sources or (block_id,),
        stats=BlockStats(series=1, samples=1, chunks=1, pages=1, bytes=1),
    )


def window(i: int, **kw: object) -> BlockMeta:
    """The gateway block of the i-th 2 h window after T0."""
    start = T0 + i * BLOCK_DURATION_MS
    return block(start, start + BLOCK_DURATION_MS, **kw)  # type: ignore[arg-type]


def newest_at(t: int, **kw: object) -> BlockMeta:
    """A 1 ms block ending at `t`: ranges ending by `t - DELAY` are complete."""
    return block(t - 1, t, **kw)  # type: ignore[arg-type]


def plan_now(
    blocks: list[BlockMeta], marks: dict[str, int] | None = None, *, config: PlannerConfig = CONFIG
) -> list[Action]:
    """The plan at the time just after the newest block (nothing is past retention)."""
    now = max(b.maxt for b in blocks)
    return plan(blocks, marks or {}, now_ms=now, config=config)


def merges(actions: list[Action]) -> list[Merge]:
    return [a for a in actions if isinstance(a, Merge)]


def ids(metas: tuple[BlockMeta, ...] | list[BlockMeta]) -> list[str]:
    return [m.block_id for m in metas]


# --- levels ---------------------------------------------------------------------------


def test_levels_nest_and_level_one_is_the_gateway_cut() -> None:
    assert LEVEL_RANGES_MS[1] == BLOCK_DURATION_MS
    assert [LEVEL_RANGES_MS[k] for k in sorted(LEVEL_RANGES_MS)] == [
        2 * HOUR_MS,
        12 * HOUR_MS,
        2 * DAY_MS,
        14 * DAY_MS,
    ]
    for lower, upper in itertools.pairwise(sorted(LEVEL_RANGES_MS)):
        assert LEVEL_RANGES_MS[upper] % LEVEL_RANGES_MS[lower] == 0
    assert aligned_range(T0 + 13 * HOUR_MS, 2) == (T0 + 12 * HOUR_MS, T0 + 24 * HOUR_MS)
    assert aligned_range(-1, 1) == (-2 * HOUR_MS, 0)
    assert smallest_level(T0 + HOUR_MS, T0 + 3 * HOUR_MS) == 2
    assert smallest_level(T0 - HOUR_MS, T0 + HOUR_MS) is None


# --- merges of whole level ranges -----------------------------------------------------


def test_a_complete_12h_range_of_2h_blocks_becomes_one_level_2_block() -> None:
    windows = [window(i) for i in range(6)]
    actions = plan_now([*windows, newest_at(T0 + 12 * HOUR_MS + DELAY + 2 * HOUR_MS)])
    (merge,) = merges(actions)
    assert merge == Merge("t", Resolution.RAW, tuple(windows), T0, T0 + 12 * HOUR_MS, 2)
    assert merge.output_sources == tuple(sorted(ids(windows)))


def test_a_range_is_merged_only_once_the_newest_data_is_a_delay_past_its_end() -> None:
    windows = [window(i) for i in range(3)]
    end = T0 + 12 * HOUR_MS
    assert merges(plan_now([*windows, block(end, end + DELAY - 1)])) == []
    assert len(merges(plan_now([*windows, block(end, end + DELAY)]))) == 1
    slow = replace(CONFIG, consistency_delay_ms=DELAY + 1)
    assert merges(plan_now([*windows, block(end, end + DELAY)], config=slow)) == []


def test_a_lone_block_in_a_range_is_not_rewritten() -> None:
    lone = window(2)
    assert plan_now([lone, newest_at(T0 + 5 * DAY_MS)]) == []


def test_partial_windows_are_merged_with_their_range() -> None:
    # A gateway under memory pressure cut [0 h, 1 h) and [1 h, 2 h) separately.
    parts = [block(T0, T0 + HOUR_MS), block(T0 + HOUR_MS, T0 + 2 * HOUR_MS), window(3)]
    (merge,) = merges(plan_now([*parts, newest_at(T0 + DAY_MS)]))
    assert ids(merge.sources) == ids(parts)
    assert merge.level == 2
    assert (merge.mint, merge.maxt) == (T0, T0 + 8 * HOUR_MS)


def test_a_higher_range_waits_for_the_lower_merges_inside_it() -> None:
    windows = [window(i) for i in range(24)]  # a whole 48 h range
    actions = plan_now([*windows, newest_at(T0 + 3 * DAY_MS)])
    assert [(m.level, m.mint, len(m.sources)) for m in merges(actions)] == [
        (2, T0 + k * 12 * HOUR_MS, 6) for k in range(4)
    ]
    level_2 = [block(m.mint, m.maxt, level=2, sources=m.output_sources) for m in merges(actions)]
    (merge,) = merges(plan_now([*level_2, newest_at(T0 + 3 * DAY_MS)]))
    assert (merge.level, merge.mint, merge.maxt) == (3, T0, T0 + 2 * DAY_MS)
    assert set(merge.output_sources) == set(ids(windows))


def test_lower_and_same_level_blocks_of_a_range_merge_together() -> None:
    level_2 = block(T0, T0 + 4 * HOUR_MS, level=2)
    late = window(4)  # arrived after the range was merged, without overlapping it
    (merge,) = merges(plan_now([level_2, late, newest_at(T0 + DAY_MS)]))
    assert ids(merge.sources) == ids([level_2, late])
    assert merge.level == 2


def test_merges_never_mix_tenants_or_resolutions() -> None:
    blocks = [
        window(i, tenant=tenant, resolution=res)
        for i in range(2)
        for tenant in ("a", "b")
        for res in (Resolution.RAW, Resolution.FIVE_MINUTES)
    ]
    actions = plan_now(
        [*blocks, newest_at(T0 + DAY_MS, tenant="a"), newest_at(T0 + DAY_MS, tenant="b")]
    )
    assert len(merges(actions)) == 4
    for merge in merges(actions):
        assert {(s.tenant, s.resolution) for s in merge.sources} == {
            (merge.tenant, merge.resolution)
        }


def test_a_tenants_ranges_complete_by_its_own_newest_data() -> None:
    blocks = [window(0, tenant="quiet"), window(1, tenant="quiet")]
    assert merges(plan_now([*blocks, newest_at(T0 + 2 * DAY_MS, tenant="busy")])) == []


# --- overlaps -------------------------------------------------------------------------


def test_blocks_of_two_gateways_for_one_window_merge_first() -> None:
    gateway_a = [window(i) for i in range(6)]
    gateway_b = window(1)
    actions = plan_now([*gateway_a, gateway_b, newest_at(T0 + 2 * DAY_MS)])
    (merge,) = merges(actions)  # the 12 h range waits for it
    assert merge.overlapping
    assert merge.level == 1
    assert set(ids(merge.sources)) == {gateway_a[1].block_id, gateway_b.block_id}
    assert (merge.mint, merge.maxt) == (T0 + 2 * HOUR_MS, T0 + 4 * HOUR_MS)


def test_late_data_overlapping_a_merged_block_merges_into_its_level() -> None:
    merged = block(T0, T0 + 12 * HOUR_MS, level=2)
    late = window(3)
    (merge,) = merges(plan_now([merged, late, newest_at(T0 + DAY_MS)]))
    assert merge.overlapping
    assert merge.level == 2
    assert (merge.mint, merge.maxt) == (T0, T0 + 12 * HOUR_MS)


def test_a_chain_of_overlaps_is_one_merge() -> None:
    chain = [
        block(T0, T0 + HOUR_MS),
        block(T0 + HOUR_MS // 2, T0 + 3 * HOUR_MS),
        block(T0 + 2 * HOUR_MS, T0 + 4 * HOUR_MS),
    ]
    apart = block(T0 + 4 * HOUR_MS, T0 + 5 * HOUR_MS)  # touches, shares no millisecond
    (merge,) = merges(plan_now([*chain, apart]))
    assert ids(merge.sources) == ids(chain)
    assert merge.level == 2


def test_overlaps_across_a_14d_boundary_are_left_alone() -> None:
    odd = [block(T0 - HOUR_MS, T0 + HOUR_MS), block(T0, T0 + 2 * HOUR_MS)]
    assert merges(plan_now(odd)) == []


def test_marked_blocks_take_no_part_in_merges() -> None:
    windows = [window(i) for i in range(3)]
    twin = window(1)
    marks = {twin.block_id: T0, windows[2].block_id: T0}
    actions = plan_now([*windows, twin, newest_at(T0 + DAY_MS)], marks)
    (merge,) = merges(actions)
    assert ids(merge.sources) == ids(windows[:2])
    assert not merge.overlapping


# --- blocks already merged ------------------------------------------------------------


def test_sources_of_an_unmarked_merge_output_are_marked_not_merged_again() -> None:
    windows = [window(i) for i in range(6)]
    merged = block(T0, T0 + 12 * HOUR_MS, level=2, sources=tuple(sorted(ids(windows))))
    actions = plan_now([*windows, merged, newest_at(T0 + DAY_MS)])
    assert actions == [MarkForDeletion("t", w, REASON_REPLACED) for w in windows]


def test_of_two_identical_merge_outputs_one_is_kept() -> None:
    windows = ids([window(i) for i in range(2)])
    twins = [block(T0, T0 + 4 * HOUR_MS, level=2, sources=tuple(windows)) for _ in range(2)]
    actions = plan_now(twins)
    assert actions == [MarkForDeletion("t", twins[0], REASON_REPLACED)]


# --- downsampling ---------------------------------------------------------------------


def test_a_complete_2d_raw_block_is_downsampled_to_5m() -> None:
    raw = block(T0, T0 + 2 * DAY_MS, level=3)
    newer = newest_at(T0 + 2 * DAY_MS + DELAY)
    assert plan_now([raw, newer]) == [Downsample("t", raw, Resolution.FIVE_MINUTES)]
    assert plan_now([raw, newest_at(T0 + 2 * DAY_MS + DELAY - 1)]) == []


def test_short_raw_blocks_are_not_downsampled_long_ones_are() -> None:
    short = block(T0, T0 + 12 * HOUR_MS, level=2)
    long = block(T0 + 2 * DAY_MS, T0 + 2 * DAY_MS + 40 * HOUR_MS, level=2)
    actions = plan_now([short, long, newest_at(T0 + 5 * DAY_MS)])
    assert actions == [Downsample("t", long, Resolution.FIVE_MINUTES)]
    later = replace(CONFIG, raw_to_5m_min_range_ms=41 * HOUR_MS)
    assert plan_now([short, long, newest_at(T0 + 5 * DAY_MS)], config=later) == []
    off = replace(CONFIG, downsampling=False)
    assert plan_now([short, long, newest_at(T0 + 5 * DAY_MS)], config=off) == []


def test_a_downsampled_copy_stops_further_downsampling() -> None:
    raw = block(T0, T0 + 2 * DAY_MS, level=3, sources=("A", "B"))
    newer = newest_at(T0 + 3 * DAY_MS)
    copy = block(
        raw.mint, raw.maxt, level=3, resolution=Resolution.FIVE_MINUTES, sources=("A", "B")
    )
    assert plan_now([raw, copy, newer]) == []
    by_id = block(
        raw.mint, raw.maxt, level=3, resolution=Resolution.FIVE_MINUTES, sources=(raw.block_id,)
    )
    assert plan_now([raw, by_id, newer]) == []
    partial = replace(copy, sources=("A",))
    assert plan_now([raw, partial, newer]) == [Downsample("t", raw, Resolution.FIVE_MINUTES)]
    # A marked copy is going away: downsample again.
    assert plan_now([raw, copy, newer], {copy.block_id: newer.maxt}) == [
        Downsample("t", raw, Resolution.FIVE_MINUTES)
    ]


def test_no_copy_is_made_that_its_retention_would_drop_at_once() -> None:
    raw = block(T0, T0 + 2 * DAY_MS, level=3)
    newer = newest_at(T0 + 3 * DAY_MS)
    short_5m = replace(CONFIG, retention_5m_ms=DAY_MS)
    now = raw.maxt + DAY_MS
    assert plan([raw, newer], {}, now_ms=now, config=short_5m) == [
        Downsample("t", raw, Resolution.FIVE_MINUTES)
    ]
    assert plan([raw, newer], {}, now_ms=now + 1, config=short_5m) == []


def test_5m_blocks_of_10d_and_more_are_downsampled_to_1h() -> None:
    five = Resolution.FIVE_MINUTES
    long = block(T0, T0 + 10 * DAY_MS, level=4, resolution=five)
    short = block(T0 + 14 * DAY_MS, T0 + 16 * DAY_MS, level=3, resolution=five)
    actions = plan_now([long, short, newest_at(T0 + 17 * DAY_MS)])
    assert actions == [Downsample("t", long, Resolution.ONE_HOUR)]


def test_blocks_being_merged_are_not_downsampled_in_the_same_plan() -> None:
    level_3 = [block(T0 + k * 2 * DAY_MS, T0 + (k + 1) * 2 * DAY_MS, level=3) for k in range(7)]
    actions = plan_now([*level_3, newest_at(T0 + 15 * DAY_MS)])
    (merge,) = merges(actions)
    assert merge.level == 4
    assert len(actions) == 1


# --- retention and deletion -----------------------------------------------------------


def test_retention_marks_blocks_past_it_per_resolution() -> None:
    raw = window(0)
    five = window(0, resolution=Resolution.FIVE_MINUTES, level=1)
    hour = window(0, resolution=Resolution.ONE_HOUR)
    now = raw.maxt + 30 * DAY_MS + 1
    actions = plan([raw, five, hour], {}, now_ms=now, config=CONFIG)
    assert actions == [MarkForDeletion("t", raw, REASON_RETENTION)]
    assert plan([raw], {}, now_ms=now - 1, config=CONFIG) == []
    actions = plan([raw, five, hour], {}, now_ms=raw.maxt + 181 * DAY_MS, config=CONFIG)
    assert actions == [
        MarkForDeletion("t", raw, REASON_RETENTION),
        MarkForDeletion("t", five, REASON_RETENTION),
    ]
    keep = replace(CONFIG, retention_raw_ms=0)
    assert plan([raw], {}, now_ms=raw.maxt + 3650 * DAY_MS, config=keep) == []


def test_marked_blocks_are_deleted_after_the_delete_delay() -> None:
    old, young = window(0), window(1)
    now = T0 + DAY_MS
    marks = {old.block_id: now - 48 * HOUR_MS, young.block_id: now - 48 * HOUR_MS + 1}
    actions = plan([old, young], marks, now_ms=now, config=CONFIG)
    assert actions == [Delete("t", old, REASON_DELETE_DELAY)]
    assert plan([old, young], marks, now_ms=now + 1, config=CONFIG) == [
        Delete("t", old, REASON_DELETE_DELAY),
        Delete("t", young, REASON_DELETE_DELAY),
    ]


# --- order ----------------------------------------------------------------------------


def test_the_plan_does_not_depend_on_input_order() -> None:
    blocks = [window(i, tenant=t) for i in range(30) for t in ("b", "a")]
    blocks += [window(7, tenant="a"), block(T0, T0 + 2 * DAY_MS, level=3, tenant="b")]
    blocks += [newest_at(T0 + 4 * DAY_MS, tenant=t) for t in ("a", "b")]
    expected = plan_now(blocks)
    assert len(expected) > 5
    for seed in range(5):
        shuffled = blocks[:]
        random.Random(seed).shuffle(shuffled)
        assert plan_now(shuffled) == expected
    index = BucketIndex("t", 0, {b.block_id: b for b in reversed(blocks)}, {})
    assert plan_index(index, now_ms=max(b.maxt for b in blocks), config=CONFIG) == expected


# --- properties -----------------------------------------------------------------------

RESOLUTIONS = [Resolution.RAW, Resolution.FIVE_MINUTES]
STEP = 30 * 60 * 1000  # block edges on half hours, so overlaps and touches both happen


@st.composite
def aligned_blocks(draw: st.DrawFn) -> BlockMeta:
    """A block inside one aligned range of its level, within 6 days after T0."""
    level = draw(st.sampled_from([1, 1, 1, 2, 3]))
    length = LEVEL_RANGES_MS[level]
    start = T0 + draw(st.integers(0, 6 * DAY_MS // length - 1)) * length
    steps = length // STEP
    a = draw(st.integers(0, steps - 1))
    b = draw(st.integers(a + 1, steps))
    return block(
        start + a * STEP,
        start + b * STEP,
        level=level,
        tenant=draw(st.sampled_from(["a", "b"])),
        resolution=draw(st.sampled_from(RESOLUTIONS)),
    )


def overlapping_ids(live: list[BlockMeta]) -> set[str]:
    found = set()
    for x, y in itertools.combinations(live, 2):
        same = (x.tenant, x.resolution) == (y.tenant, y.resolution)
        if same and x.mint < y.maxt and y.mint < x.maxt:
            found |= {x.block_id, y.block_id}
    return found


def apply(
    actions: list[Action], blocks: dict[str, BlockMeta], marks: dict[str, int], now: int
) -> None:
    """What the executor would do: write outputs, mark sources, mark, delete."""
    for action in actions:
        if isinstance(action, Merge):
            out = block(
                action.mint,
                action.maxt,
                level=action.level,
                resolution=action.resolution,
                tenant=action.tenant,
                sources=action.output_sources,
            )
            blocks[out.block_id] = out
            marks.update({s.block_id: now for s in action.sources})
        elif isinstance(action, Downsample):
            src = action.source
            out = block(
                src.mint,
                src.maxt,
                level=src.level,
                resolution=action.to,
                tenant=src.tenant,
                sources=action.output_sources,
            )
            blocks[out.block_id] = out
        elif isinstance(action, MarkForDeletion):
            marks.setdefault(action.block.block_id, now)
        else:
            del blocks[action.block.block_id]
            marks.pop(action.block.block_id, None)


@settings(max_examples=150, deadline=None)
@given(st.lists(aligned_blocks(), max_size=25), st.integers(0, 10 * DAY_MS))
def test_merges_stay_in_one_tenant_resolution_and_level_range(
    blocks: list[BlockMeta], after: int
) -> None:
    now = T0 + 6 * DAY_MS + after
    for merge in merges(plan(blocks, {}, now_ms=now, config=CONFIG)):
        assert len(merge.sources) >= 2
        assert {(s.tenant, s.resolution) for s in merge.sources} == {
            (merge.tenant, merge.resolution)
        }
        assert merge.level in LEVEL_RANGES_MS
        assert fits_level(merge.mint, merge.maxt, merge.level)
        assert merge.mint == min(s.mint for s in merge.sources)
        assert merge.maxt == max(s.maxt for s in merge.sources)


@settings(max_examples=150, deadline=None)
@given(st.lists(aligned_blocks(), max_size=25), st.integers(0, 40 * DAY_MS))
def test_overlapping_blocks_are_merged_before_anything_else_involving_them(
    blocks: list[BlockMeta], after: int
) -> None:
    now = T0 + 6 * DAY_MS + after
    actions = plan(blocks, {}, now_ms=now, config=CONFIG)
    retired = {a.block.block_id for a in actions if isinstance(a, MarkForDeletion)}
    overlapping = overlapping_ids([b for b in blocks if b.block_id not in retired])
    used: list[str] = []
    for action in actions:
        if isinstance(action, Merge):
            used += ids(action.sources)
            if not action.overlapping:
                assert not overlapping & set(ids(action.sources))
        elif isinstance(action, Downsample):
            used.append(action.source.block_id)
            assert action.source.block_id not in overlapping
    assert len(used) == len(set(used)), "a block used by two actions of one plan"
    merged_together = {i for a in merges(actions) if a.overlapping for i in ids(a.sources)}
    assert overlapping <= merged_together


@settings(max_examples=100, deadline=None)
@given(st.lists(aligned_blocks(), max_size=25), st.integers(0, 40 * DAY_MS))
def test_executing_the_plan_reaches_a_fixed_point_without_overlaps(
    start: list[BlockMeta], after: int
) -> None:
    now = T0 + 6 * DAY_MS + after
    blocks = {b.block_id: b for b in start}
    marks: dict[str, int] = {}
    for _ in range(12):
        actions = plan(blocks.values(), marks, now_ms=now, config=CONFIG)
        if not actions:
            break
        apply(actions, blocks, marks, now)
    else:
        raise AssertionError(f"no fixed point after 12 rounds; still planned: {actions}")
    live = [b for b in blocks.values() if b.block_id not in marks]
    assert not overlapping_ids(live)
    # Nothing was lost: every original leaf is in a live block or was past retention.
    kept = set().union(*(leaves(b) for b in live if b.resolution == Resolution.RAW))
    for b in start:
        expired = b.maxt < now - CONFIG.retention_ms(b.resolution)
        if b.resolution == Resolution.RAW and not expired:
            assert b.block_id in kept


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.builds(
            lambda i, days, res, level: block(
                T0 + i * HOUR_MS, T0 + i * HOUR_MS + days * DAY_MS, level=level, resolution=res
            ),
            st.integers(-24 * 400, 24 * 400),
            st.integers(0, 3),
            st.sampled_from(list(Resolution)),
            st.integers(1, 4),
        ),
        max_size=20,
    ),
    st.integers(0, 400 * DAY_MS),
    st.sampled_from([0, DAY_MS, 30 * DAY_MS]),
    st.lists(st.integers(0, 4 * DAY_MS), max_size=20),
)
def test_retention_never_removes_a_block_younger_than_it(
    blocks: list[BlockMeta], after: int, raw_retention: int, mark_ages: list[int]
) -> None:
    now = T0 + after
    config = replace(CONFIG, retention_raw_ms=raw_retention)
    marks = {b.block_id: now - age for b, age in zip(blocks, mark_ages, strict=False)}
    for action in plan(blocks, marks, now_ms=now, config=config):
        if isinstance(action, MarkForDeletion) and action.reason == REASON_RETENTION:
            meta = action.block
            retention = config.retention_ms(meta.resolution)
            assert retention > 0
            assert meta.maxt < now - retention
            assert meta.resolution != Resolution.ONE_HOUR
            assert meta.block_id not in marks
        if isinstance(action, Delete):
            assert now - marks[action.block.block_id] >= config.delete_delay_ms
