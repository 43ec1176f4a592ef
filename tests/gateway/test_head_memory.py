"""What the head holds besides its series' keys: compressed batches of bounded size, made
without holding the buffer beside the compressor's arrays, and per-series columns only
where a series needs them (issue 10)."""

from __future__ import annotations

import numpy as np
import pytest

import gateway.head
import gateway.head_batch
from blocks.sample_codec import decode_samples
from gateway.head import NO_SAMPLE, TenantHead
from tests.gateway.writes import SPECIAL_BITS, canonical

BATCH = 4


def new_head(freeze_samples: int, series: int = 3) -> TenantHead:
    head = TenantHead("t", freeze_samples)
    for i in range(series):
        head.series_ref(canonical([("__name__", "m"), ("i", str(i))]))
    return head


def append(head: TenantHead, samples: list[tuple[int, int, int]]) -> None:
    head.commit(
        head.plan(
            np.array([s[0] for s in samples], dtype=np.uint32),
            np.array([s[1] for s in samples], dtype=np.int64),
            np.array([s[2] for s in samples], dtype=np.uint64).view(np.float64),
        )
    )


def held(head: TenantHead) -> list[tuple[int, int, int]]:
    refs, ts, values = gateway.head.HeadSnapshot(head.frozen, head.recent).sorted_samples()
    return list(zip(refs.tolist(), ts.tolist(), values.view(np.uint64).tolist(), strict=True))


def test_a_freeze_compresses_batches_of_at_most_frozen_batch_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gateway.head, "FROZEN_BATCH_SAMPLES", BATCH)
    head = new_head(freeze_samples=10)
    samples = [(i % 3, 1000 * i, SPECIAL_BITS[i % len(SPECIAL_BITS)]) for i in range(10)]
    append(head, samples)
    assert [b.samples for b in head.frozen] == [4, 4, 2]
    assert len(head.recent) == 0
    assert head.frozen_samples == head.sample_count == 10
    assert held(head) == sorted(samples)
    for batch in head.frozen:
        ts = decode_samples(batch.data)[1]
        assert (batch.mint, batch.maxt) == (int(ts.min()), int(ts.max()))


def test_a_freeze_that_fails_to_compress_keeps_the_samples_uncompressed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    head = new_head(freeze_samples=1 << 20)
    samples = [(i % 3, 1000 * i, SPECIAL_BITS[i % len(SPECIAL_BITS)]) for i in range(7)]
    append(head, samples)

    def out_of_memory(*_: object, **__: object) -> bytes:
        raise MemoryError

    monkeypatch.setattr(gateway.head_batch, "encode_samples", out_of_memory)
    with pytest.raises(MemoryError):
        head.freeze()
    assert head.frozen == []
    assert len(head.recent) == 7
    assert held(head) == sorted(samples)


def test_float_series_spend_no_newest_histogram_column() -> None:
    head = new_head(freeze_samples=1 << 20, series=1000)
    append(head, [(0, 1000, SPECIAL_BITS[0]), (999, 2000, SPECIAL_BITS[1])])
    assert head.histogram_last_ts.nbytes < 1000
    head.commit_histograms(
        np.array([5], dtype=np.uint32), np.array([3000], dtype=np.int64), [b"\x08\x01"]
    )
    newest = head.newest_ts()
    assert len(newest) == 1000
    assert newest[[0, 5, 999]].tolist() == [1000, 3000, 2000]
    assert int(newest[1]) == NO_SAMPLE
    assert head.logged_generation.view.dtype == np.int32
