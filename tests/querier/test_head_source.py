"""Reading the head: only batches whose range of refs holds a wanted series are decoded,
and what comes back is every sample of the wanted series, bit for bit."""

from __future__ import annotations

import re

import numpy as np
import pytest

import querier.head_source
from blocks.sample_codec import decode_samples
from gateway.head import TenantHead, key_label_pairs, series_key_of
from gateway.head_batch import compress_batch
from querier.head_source import HeadPostings, HeadView, capture, select_head
from querier.matchers import Matcher, MatchType
from tests.gateway.writes import canonical

START_MS = 1_795_564_800_000  # aligned to 2 h
SERIES, SCRAPES = 20_000, 40


@pytest.fixture(scope="module")
def head() -> TenantHead:
    """Many series, a few samples of each a freeze: runs merged up to level 2."""
    rng = np.random.default_rng(11)
    values = np.cumsum(rng.integers(0, 20, size=(SCRAPES, SERIES)) / 4, axis=0)
    head = TenantHead("t", 40_000)
    refs = np.array(
        [head.series_ref(canonical([("__name__", "m"), ("i", f"{i:05d}")])) for i in range(SERIES)],
        dtype=np.uint32,
    )
    for scrape in range(SCRAPES):
        ts = np.full(SERIES, START_MS + scrape * 15_000, dtype=np.int64)
        head.commit(head.plan(refs, ts, values[scrape]))
    return head


def selected(head: TenantHead, pattern: str) -> tuple[dict[str, tuple[list[int], list[int]]], int]:
    """The samples of the series whose `i` matches `pattern`, by `i`; batches decoded."""
    return selected_from(capture(head, None), pattern)


def selected_from(
    view: HeadView, pattern: str
) -> tuple[dict[str, tuple[list[int], list[int]]], int]:
    """The same from a captured view."""
    decoded = 0

    def counting_decode(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        nonlocal decoded
        decoded += 1
        return decode_samples(data)

    matchers = [Matcher(MatchType.EQ, "__name__", "m"), Matcher(MatchType.RE, "i", pattern)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(querier.head_source, "decode_samples", counting_decode)
        selection = select_head(
            view, HeadPostings(), matchers, START_MS, 1 << 62, checkpoint=lambda: None
        )
    parts = selection.read(range(len(selection.labels)))
    out = {
        dict(labels)["i"]: (ts.tolist(), values.view(np.uint64).tolist())
        for labels, (ts, values) in zip(selection.labels, parts, strict=True)
    }
    return out, decoded


def expected(head: TenantHead, names: set[str]) -> dict[str, tuple[list[int], list[int]]]:
    """The same from every sample the head holds, series by series."""
    out = {}
    for labels, ts, values in head.series_samples():
        name = dict(key_label_pairs(series_key_of(labels)))["i"]
        if name in names:
            out[name] = (ts.tolist(), values.view(np.uint64).tolist())
    return out


def test_a_one_series_read_decodes_only_the_batches_that_may_hold_it(head: TenantHead) -> None:
    assert max(b.level for b in head.frozen) == 2
    got, decoded = selected(head, "12345")
    assert got == expected(head, {"12345"})
    ref = 12345  # refs are given in creation order
    holding = [b for b in head.frozen if b.first_ref <= ref <= b.last_ref]
    assert decoded == len(holding)
    assert decoded <= len(head.frozen) / 3, (decoded, len(head.frozen))


@pytest.mark.parametrize("pattern", ["0000[0-9]", "1[0-9]{4}", "00042|19999|05000", ".*"])
def test_reads_give_back_every_sample_of_the_wanted_series(head: TenantHead, pattern: str) -> None:
    names = {f"{i:05d}" for i in range(SERIES) if re.fullmatch(pattern, f"{i:05d}")}
    got, _ = selected(head, pattern)
    assert set(got) == names
    assert got == expected(head, names)


def test_a_batch_may_hold_refs_within_its_first_and_last_ref() -> None:
    refs = np.array([10, 10, 12, 15], dtype=np.uint32)
    batch = compress_batch(refs, np.arange(4, dtype=np.int64), np.ones(4))
    assert (batch.first_ref, batch.last_ref) == (10, 15)
    for wanted, holds in [
        ([10], True),
        ([15], True),
        ([11], True),
        ([9], False),
        ([16], False),
        ([1, 9, 16, 40], False),
        ([1, 13], True),
        ([], False),
    ]:
        assert batch.may_hold(np.array(wanted, dtype=np.uint32)) is holds, wanted


def test_a_capture_holds_views_of_the_buffer_that_later_writes_leave_as_they_were() -> None:
    head = TenantHead("t", 1 << 20)
    refs = np.array(
        [head.series_ref(canonical([("__name__", "m"), ("i", str(i))])) for i in range(3)],
        dtype=np.uint32,
    )
    head.commit(head.plan(refs, np.full(3, START_MS, dtype=np.int64), np.array([1.0, 2, 3])))
    view = capture(head, None)
    (captured,) = view.recent
    assert np.shares_memory(captured[1], head.recent.timestamps.view), "no copy"
    before = [column.copy() for column in captured]
    for scrape in range(1, 200):  # appends, and the buffer grows into new arrays
        ts = np.full(3, START_MS + scrape * 15_000, dtype=np.int64)
        head.commit(head.plan(refs, ts, np.array([1.0, 2, 3]) + scrape))
    head.freeze()  # and is emptied
    assert [column.tolist() for column in captured] == [column.tolist() for column in before]
    got, _ = selected_from(view, "[0-9]")
    assert got == {
        str(i): ([START_MS], [bits]) for i, bits in enumerate(before[2].view(np.uint64).tolist())
    }
