"""Compaction passes on a real bucket (a directory, and SeaweedFS over S3): merges that
change no sample, downsampled copies equal to the aggregates of the raw data, retention,
deletion after the delay, and the bucket index kept in line."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from blocks.aggregates import Aggregate, downsample_raw, with_aggregate
from blocks.bucket_index import read_bucket_index, scan_tenant
from blocks.meta import Resolution
from blocks.objstore.base import ObjectStore
from blocks.objstore.local import LocalStore
from blocks.partial_uploads import partial_blocks
from compactor.config import CompactorConfig
from compactor.levels import DAY_MS, HOUR_MS
from compactor.metrics import CompactorMetrics
from compactor.run import Compactor
from gateway.config import GatewayConfig
from gateway.metadata_store import MetadataRecord, bucket_key, encode_document
from querier.app import create_query_app
from tests.compactor.bucket_data import (
    T0,
    LabelKey,
    Series,
    as_bits,
    clip,
    contents,
    expected_bits,
    labels,
    live_blocks,
    put_block,
    put_windows,
    synthetic,
)
from tests.querier.test_read_api import RE, matcher, read_samples, run

TENANT = "team-a"
Answer = dict[LabelKey, list[tuple[int, int]]]
NAMES = [labels("requests_total", job="api"), labels("temperature", room="r1"), labels("up")]


def compactor(store: ObjectStore, tmp_path: Path, **settings: object) -> Compactor:
    config = CompactorConfig(data_dir=tmp_path / "data", **settings)  # type: ignore[arg-type]
    return Compactor(store, config, CompactorMetrics(CollectorRegistry()))


def test_merges_change_no_sample_and_resolve_overlaps_newest_first(
    bucket: ObjectStore, tmp_path: Path
) -> None:
    data = synthetic(T0, T0 + 14 * HOUR_MS, 30_000, NAMES)
    put_windows(bucket, tmp_path, TENANT, data)
    # A second gateway sent window 1 as well, one value differing: its block is newer.
    twin = clip(data, T0 + 2 * HOUR_MS, T0 + 4 * HOUR_MS)
    key = NAMES[0]
    ts, values = twin[key]
    changed = values.copy()
    changed[5] = 12345.0
    twin[key] = (ts, changed)
    twin[labels("only_in_twin")] = (ts[:10], np.arange(10, dtype=np.float64))
    put_block(bucket, tmp_path, TENANT, twin, T0 + 2 * HOUR_MS, T0 + 4 * HOUR_MS)
    before = contents(bucket, TENANT)
    expected = dict(expected_bits(data))
    expected[key] = [
        (t, int(np.float64(12345.0).view(np.uint64))) if t == int(ts[5]) else (t, b)
        for t, b in expected[key]
    ]
    expected[labels("only_in_twin")] = as_bits(ts[:10], np.arange(10, dtype=np.float64))
    assert before == expected

    summary = compactor(bucket, tmp_path, downsampling=False, retention_raw="0").run_pass(
        now_ms=T0 + 15 * HOUR_MS
    )

    assert summary.ok, summary.line()
    assert summary.merges == 2, summary.line()
    live = live_blocks(bucket, TENANT, unmarked=True)
    assert [(m.mint, m.maxt, m.level) for m in live] == [
        (T0, T0 + 12 * HOUR_MS, 2),
        (T0 + 12 * HOUR_MS, T0 + 14 * HOUR_MS, 1),
    ]
    assert len(live[0].sources) == 7  # six windows and the twin
    assert contents(bucket, TENANT, unmarked=True) == expected
    assert contents(bucket, TENANT) == expected  # marked blocks still readable meanwhile
    index = read_bucket_index(bucket, TENANT)
    assert index is not None
    assert len(index.deletion_marks) == 8  # 7 windows + twin, and the overlap merge's block

    # Two days later the marked blocks are deleted, objects and index entries alike.
    later = compactor(bucket, tmp_path, downsampling=False, retention_raw="0").run_pass(
        now_ms=index.updated_ms + 49 * HOUR_MS
    )
    assert later.ok, later.line()
    assert later.deleted == 8, later.line()
    assert scan_tenant(bucket, TENANT).blocks.keys() == {m.block_id for m in live}
    assert not partial_blocks(bucket, TENANT)
    assert contents(bucket, TENANT) == expected


def aggregates_of(data: Series, resolution: int) -> Series:
    out = {}
    for key, (ts, values) in data.items():
        found = downsample_raw(ts, values, resolution)
        for aggregate in Aggregate:
            a_ts, a_values = found[aggregate]
            if len(a_ts):
                out[tuple(with_aggregate(list(key), aggregate))] = (a_ts, a_values)
    return out


def test_two_days_become_one_block_with_5m_and_1h_copies(
    bucket: ObjectStore, tmp_path: Path
) -> None:
    data = synthetic(T0, T0 + 2 * DAY_MS + 2 * HOUR_MS, 60_000, NAMES)
    put_windows(bucket, tmp_path, TENANT, data)

    summary = compactor(
        bucket, tmp_path, downsample_1h_after="2d", retention_raw="0", retention_5m="0"
    ).run_pass(now_ms=T0 + 3 * DAY_MS)

    assert summary.ok, summary.line()
    live = live_blocks(bucket, TENANT, unmarked=True)
    shape = sorted((int(m.resolution), m.mint, m.maxt, m.level) for m in live)
    assert shape == [
        (0, T0, T0 + 2 * DAY_MS, 3),
        (0, T0 + 2 * DAY_MS, T0 + 2 * DAY_MS + 2 * HOUR_MS, 1),
        (300_000, T0, T0 + 2 * DAY_MS, 3),
        (3_600_000, T0, T0 + 2 * DAY_MS, 3),
    ]
    assert contents(bucket, TENANT, unmarked=True) == expected_bits(data)
    two_days = clip(data, T0, T0 + 2 * DAY_MS)
    for resolution in (Resolution.FIVE_MINUTES, Resolution.ONE_HOUR):
        got = contents(bucket, TENANT, unmarked=True, resolution=resolution)
        want = aggregates_of(two_days, int(resolution))
        assert sorted(got) == sorted(want)
        for key, (ts, values) in want.items():
            got_ts = [t for t, _ in got[key]]
            got_values = np.array([b for _, b in got[key]], dtype=np.uint64).view(np.float64)
            assert got_ts == ts.tolist(), key
            if dict(key)["__strata_aggr__"] == "sum":
                np.testing.assert_allclose(got_values, values, rtol=1e-12)
            else:
                assert got_values.view(np.uint64).tolist() == values.view(np.uint64).tolist()


def test_retention_marks_old_blocks_per_resolution(bucket: ObjectStore, tmp_path: Path) -> None:
    old = synthetic(T0, T0 + 2 * HOUR_MS, 60_000, NAMES[:1], specials=False)
    new = synthetic(T0 + 40 * DAY_MS, T0 + 40 * DAY_MS + 2 * HOUR_MS, 60_000, NAMES[:1])
    [old_meta] = put_windows(bucket, tmp_path, TENANT, old)
    [new_meta] = put_windows(bucket, tmp_path, TENANT, new)

    summary = compactor(bucket, tmp_path, retention_raw="30d").run_pass(
        now_ms=T0 + 40 * DAY_MS + 3 * HOUR_MS
    )

    assert summary.marked == 1, summary.line()
    index = read_bucket_index(bucket, TENANT)
    assert index is not None
    assert set(index.deletion_marks) == {old_meta.block_id}
    assert new_meta.block_id in index.blocks


def test_a_drifted_index_is_rebuilt_and_partial_uploads_cleaned(
    bucket: ObjectStore, tmp_path: Path
) -> None:
    data = synthetic(T0, T0 + 2 * HOUR_MS, 60_000, NAMES)
    indexed = put_block(bucket, tmp_path, TENANT, data, T0, T0 + 2 * HOUR_MS)
    hidden = put_block(
        bucket, tmp_path, TENANT, data, T0 + 2 * HOUR_MS, T0 + 4 * HOUR_MS, index=False
    )
    bucket.put(f"{TENANT}/01ARZ3NDEKTSV4RRFFQ69G5FAV/chunks/000001", b"left by a crash")

    summary = compactor(bucket, tmp_path, partial_upload_cleanup_age="0").run_pass(
        now_ms=T0 + 5 * HOUR_MS
    )

    assert summary.partial_cleaned == 1, summary.line()
    assert not partial_blocks(bucket, TENANT)
    index = read_bucket_index(bucket, TENANT)
    assert index is not None
    assert {indexed.block_id, hidden.block_id} <= set(index.blocks)


@pytest.mark.parametrize("setting", ["retention_raw", "interval", "lease_ttl"])
def test_bad_durations_are_refused_with_the_setting_named(setting: str) -> None:
    from gateway.config import ConfigError

    with pytest.raises(ConfigError, match=setting):
        CompactorConfig(**{setting: "ten days"})  # type: ignore[arg-type]


def test_remote_read_answers_bit_identically_before_and_after_compaction(tmp_path: Path) -> None:
    data = synthetic(T0, T0 + 26 * HOUR_MS, 15_000, NAMES)
    bucket_dir = tmp_path / "bucket"
    with LocalStore(bucket_dir) as store:
        put_windows(store, tmp_path / "work", TENANT, data)
        twin = clip(data, T0 + 4 * HOUR_MS, T0 + 6 * HOUR_MS)
        put_block(store, tmp_path / "work", TENANT, twin, T0 + 4 * HOUR_MS, T0 + 6 * HOUR_MS)
    queries = [
        (T0, T0 + 26 * HOUR_MS, [matcher("__name__", ".+", RE)]),
        (T0 + 5 * HOUR_MS, T0 + 13 * HOUR_MS + 1, [matcher("job", "api")]),
        (T0 + 11 * HOUR_MS, T0 + 12 * HOUR_MS, [matcher("room", "r1")]),
    ]

    def remote_read() -> list[Answer]:
        config = GatewayConfig(data_dir=tmp_path, bucket_url=f"file://{bucket_dir}")
        app = create_query_app(config, CollectorRegistry())

        async def scenario(
            client: httpx.AsyncClient,
        ) -> list[dict[LabelKey, list[tuple[int, int]]]]:
            return await read_samples(client, queries, tenant=TENANT)

        return run(app, scenario)

    before = remote_read()
    assert before[0] == expected_bits(data)
    with LocalStore(bucket_dir) as store:
        summary = compactor(store, tmp_path, retention_raw="0", downsample_5m_after="12h").run_pass(
            now_ms=T0 + 27 * HOUR_MS
        )
        assert summary.merges == 3, summary.line()  # the overlap, then two 12 h ranges
        assert summary.downsamplings == 2, summary.line()
    assert remote_read() == before


def test_a_tenant_override_shortens_its_raw_retention_only(
    bucket: ObjectStore, tmp_path: Path
) -> None:
    overrides = tmp_path / "retention.json"
    overrides.write_text(json.dumps({"short": {"retention_raw": "7d"}}))
    metas = {}
    for tenant in ("short", TENANT):
        data = synthetic(T0, T0 + 2 * HOUR_MS, 60_000, NAMES[:1], specials=False)
        [metas[tenant]] = put_windows(bucket, tmp_path, tenant, data)
        newer = synthetic(T0 + 10 * DAY_MS, T0 + 10 * DAY_MS + 2 * HOUR_MS, 60_000, NAMES[:1])
        put_windows(bucket, tmp_path, tenant, newer)

    summary = compactor(bucket, tmp_path, retention_overrides=str(overrides)).run_pass(
        now_ms=T0 + 10 * DAY_MS + 3 * HOUR_MS
    )

    assert summary.marked == 1, summary.line()
    short = read_bucket_index(bucket, "short")
    other = read_bucket_index(bucket, TENANT)
    assert short is not None
    assert other is not None
    assert set(short.deletion_marks) == {metas["short"].block_id}
    assert not other.deletion_marks


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("[1, 2]", "JSON object of tenants"),
        ('{"t": {"retention_raw": "soon"}}', "retention_overrides\\[t\\].retention_raw"),
        ('{"t": {"delete_delay": "1d"}}', "unknown"),
        ("{not json", "unreadable"),
    ],
)
def test_a_bad_overrides_file_is_refused_with_the_reason(
    tmp_path: Path, content: str, why: str
) -> None:
    from gateway.config import ConfigError

    path = tmp_path / "retention.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=why):
        CompactorConfig(retention_overrides=str(path))


def test_series_described_as_gauges_get_no_counter_aggregate(
    bucket: ObjectStore, tmp_path: Path
) -> None:
    data = synthetic(T0, T0 + 2 * DAY_MS + 2 * HOUR_MS, 60_000, NAMES)
    put_windows(bucket, tmp_path, TENANT, data)
    described = {
        "temperature": MetadataRecord("gauge", "celsius", "Room temperature.", T0),
        "requests_total": MetadataRecord("counter", "", "Requests served.", T0),
    }
    bucket.put(bucket_key(TENANT), encode_document(TENANT, described.items()))

    summary = compactor(bucket, tmp_path, retention_raw="0").run_pass(now_ms=T0 + 3 * DAY_MS)

    assert summary.ok, summary.line()
    got = contents(bucket, TENANT, unmarked=True, resolution=Resolution.FIVE_MINUTES)
    kinds: dict[str, set[str]] = {}
    for key in got:
        labels_of_key = dict(key)
        kinds.setdefault(labels_of_key["__name__"], set()).add(labels_of_key["__strata_aggr__"])
    every = {a.value for a in Aggregate}
    assert kinds["temperature"] == every - {Aggregate.COUNTER.value}
    assert kinds["requests_total"] == every  # a counter keeps all
    assert kinds["up"] == every  # never described: all, as before
    # The raw data is untouched whatever the metadata says.
    assert contents(bucket, TENANT, unmarked=True) == expected_bits(data)
