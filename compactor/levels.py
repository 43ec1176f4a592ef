"""Compaction levels: which epoch-aligned time range a block of each level may cover.

A block's level names the longest range it may span, never how often it was rewritten:
level 1 is what gateways cut, and every higher range is a whole multiple of the one
below, so aligned ranges nest and a block never straddles a boundary of its level.
Table and rules: docs/compactor.md#levels.
"""

from __future__ import annotations

HOUR_MS = 3600 * 1000
DAY_MS = 24 * HOUR_MS

# Level -> length of its aligned range. 2 h is the gateways' cut (BLOCK_DURATION_MS);
# 12 h, 2 d and 14 d each hold 6, 4 and 7 of the level below, so one merge reads few
# blocks, and 14 d is long enough for the 5 m -> 1 h downsampling threshold (10 d).
LEVEL_RANGES_MS: dict[int, int] = {
    1: 2 * HOUR_MS,
    2: 12 * HOUR_MS,
    3: 2 * DAY_MS,
    4: 14 * DAY_MS,
}
FIRST_LEVEL = 1
TOP_LEVEL = max(LEVEL_RANGES_MS)


def aligned_range(ts: int, level: int) -> tuple[int, int]:
    """The [start, end) range of `level` holding `ts` (floor, also for negative times)."""
    length = LEVEL_RANGES_MS[level]
    start = ts - ts % length
    return start, start + length


def fits_level(mint: int, maxt: int, level: int) -> bool:
    """Whether [mint, maxt) lies inside one aligned range of `level`."""
    if maxt <= mint:
        return True
    start, end = aligned_range(mint, level)
    return maxt <= end and mint >= start


def smallest_level(mint: int, maxt: int) -> int | None:
    """The lowest level whose aligned range holds [mint, maxt); None if even the top one
    cannot (the range crosses a 14 d boundary)."""
    for level in sorted(LEVEL_RANGES_MS):
        if fits_level(mint, maxt, level):
            return level
    return None


def level_for_length(length_ms: int) -> int:
    """The lowest level whose range is at least `length_ms` long (the top one if none)."""
    for level in sorted(LEVEL_RANGES_MS):
        if LEVEL_RANGES_MS[level] >= length_ms:
            return level
    return TOP_LEVEL
