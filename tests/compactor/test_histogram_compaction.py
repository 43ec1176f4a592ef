"""Native histograms through the compactor: merges copy them (each timestamp once, the
newest block winning), downsampled copies keep what rate()/increase() need
(blocks/histogram_downsample.py), and reads of downsampled spans give those back."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import snappy
from prometheus_client import CollectorRegistry

from blocks.bucket_index import add_blocks
from blocks.histogram_downsample import downsample_histograms, possible_reset
from blocks.meta import BlockMeta
from blocks.objstore.base import ObjectStore
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from blocks.ulid import new_ulid
from blocks.upload import upload_block
from blocks.writer import BlockWriter
from compactor.config import CompactorConfig
from compactor.levels import DAY_MS, HOUR_MS
from compactor.metrics import CompactorMetrics
from compactor.run import Compactor
from gateway.config import GatewayConfig
from proto import remote_pb2, types_pb2, write_v2_pb2
from querier.app import create_query_app
from tests.compactor.bucket_data import T0, live_blocks
from tests.querier.histogram_reads import canonical, float_gauge, samples_answer
from tests.querier.test_read_api import READ_HEADERS, run

TENANT = "team-a"
SCRAPE_MS = 60_000
# A step long enough that remote read answers from hourly blocks (querier/resolution.py).
HOURS_STEP_MS = 5 * 3_600_000
COUNTER = (("__name__", "latency"), ("job", "api"))
GAUGE = (("__name__", "queue"), ("job", "api"))
UP = (("__name__", "up"), ("job", "api"))
LabelSet = tuple[tuple[str, str], ...]
Histograms = tuple[np.ndarray, list[bytes]]


def counter_histogram(i: int, t: int) -> bytes:
    """An integer counter histogram restarting every 700 scrapes (a reset said by the
    counts only, no hint), with a bucket that appears after each restart."""
    base = i % 700
    counts = [base + 1, 2 * base] if base >= 3 else [base + 1]
    spans = [write_v2_pb2.BucketSpan(offset=0, length=len(counts))]
    message = write_v2_pb2.Histogram(
        count_int=sum(counts),
        sum=0.5 * base,
        schema=1,
        positive_spans=spans,
        positive_deltas=[c - p for c, p in zip(counts, [0, *counts], strict=False)],
        timestamp=t,
    )
    return canonical(message)


def series_data(mint: int, maxt: int) -> dict[LabelSet, Histograms]:
    ts = np.arange(mint, maxt, SCRAPE_MS, dtype=np.int64)
    steps = ((ts - T0) // SCRAPE_MS).tolist()
    return {
        COUNTER: (ts, [counter_histogram(i, t) for i, t in zip(steps, ts.tolist(), strict=True)]),
        GAUGE: (
            ts,
            [canonical(float_gauge(i, t)) for i, t in zip(steps, ts.tolist(), strict=True)],
        ),
    }


def put(
    store: ObjectStore,
    work: Path,
    mint: int,
    maxt: int,
    data: dict[LabelSet, Histograms],
    floats: bool = True,
) -> BlockMeta:
    writer = BlockWriter(work, new_ulid())
    for key in sorted({*data, UP}):
        ts = np.arange(mint, maxt, SCRAPE_MS, dtype=np.int64)
        values = np.ones(len(ts)) if key == UP and floats else np.zeros(0)
        writer.add_series(list(key), ts[: len(values)], values, data.get(key))
    writer.finish(tenant=TENANT, mint=mint, maxt=maxt)
    meta = upload_block(store, writer.final_dir, TENANT)
    add_blocks(store, TENANT, [meta])
    return meta


def clip(part: Histograms, mint: int, maxt: int) -> Histograms:
    """The histograms with mint <= t < maxt."""
    ts, messages = part
    inside = (ts >= mint) & (ts < maxt)
    return ts[inside], [messages[i] for i in np.flatnonzero(inside).tolist()]


def histograms_of(store: ObjectStore, meta: BlockMeta) -> dict[LabelSet, Histograms]:
    reader = BlockReader(store, f"{TENANT}/{meta.block_id}", meta=meta)
    count = reader.index.series_count
    found = reader.read_histograms(range(count), -(2**63), 2**63 - 1)
    return {tuple(reader.index.labels(i)): part for i, part in found.items() if len(part[0])}


def as_lists(data: dict[LabelSet, Histograms]) -> dict[LabelSet, list[tuple[int, bytes]]]:
    return {k: list(zip(ts.tolist(), m, strict=True)) for k, (ts, m) in data.items()}


def compactor(store: ObjectStore, tmp_path: Path, **settings: object) -> Compactor:
    config = CompactorConfig(data_dir=tmp_path / "compactor", **settings)  # type: ignore[arg-type]
    return Compactor(store, config, CompactorMetrics(CollectorRegistry()))


def test_overlapping_blocks_merge_their_histograms_newest_block_winning(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "bucket") as store:
        first = series_data(T0, T0 + 2 * HOUR_MS)
        put(store, tmp_path / "work", T0, T0 + 2 * HOUR_MS, first)
        # A second gateway's block of the same window: half the timestamps, other bytes.
        ts, _ = first[GAUGE]
        twin_ts = ts[::2]
        twin = [canonical(float_gauge(99, int(t))) for t in twin_ts.tolist()]
        put(store, tmp_path / "work", T0, T0 + 2 * HOUR_MS, {GAUGE: (twin_ts, twin)}, floats=False)
        summary = compactor(store, tmp_path, downsampling=False, retention_raw="0").run_pass(
            now_ms=T0 + 3 * HOUR_MS
        )
        assert summary.merges == 1, summary.line()
        (merged,) = live_blocks(store, TENANT, unmarked=True)
        got = as_lists(histograms_of(store, merged))
    expected_gauge = dict(zip(ts.tolist(), first[GAUGE][1], strict=True))
    expected_gauge.update(zip(twin_ts.tolist(), twin, strict=True))
    assert got[GAUGE] == sorted(expected_gauge.items())
    assert got[COUNTER] == as_lists(first)[COUNTER]


def increase(messages: list[bytes]) -> float:
    """A counter histogram's count increase over its samples, resets undone (Prometheus's
    rule for the count: a drop is a restart from zero)."""
    total = 0.0
    previous = None
    for data in messages:
        count = float(write_v2_pb2.Histogram.FromString(data).count_int)
        if previous is not None:
            total += count - previous if count >= previous else count
        previous = count
    return total


def test_downsampling_keeps_window_ends_and_both_sides_of_every_reset() -> None:
    data = series_data(T0, T0 + DAY_MS)
    ts, messages = data[COUNTER]
    for resolution in (300_000, 3_600_000):
        kept_ts, kept = downsample_histograms(ts, messages, resolution)
        windows = ts // resolution
        last_of_window = ts[np.append(windows[1:] != windows[:-1], True)]
        assert set(last_of_window.tolist()) <= set(kept_ts.tolist())
        assert len(kept) < len(messages) // 4
        # Every kept histogram is one of the raw ones, bit for bit.
        raw = dict(zip(ts.tolist(), messages, strict=True))
        assert all(raw[t] == m for t, m in zip(kept_ts.tolist(), kept, strict=True))
        # increase() between any two window ends is the raw one.
        ends = [int(np.searchsorted(ts, t)) for t in last_of_window.tolist()]
        kept_at = {t: i for i, t in enumerate(kept_ts.tolist())}
        for a, b in zip(ends, ends[5:], strict=False):
            lo, hi = kept_at[int(ts[a])], kept_at[int(ts[b])]
            assert increase(kept[lo : hi + 1]) == increase(messages[a : b + 1])
    # 5 m, then 1 h of that, keeps what raw -> 1 h keeps.
    five = downsample_histograms(ts, messages, 300_000)
    hour_of_five = downsample_histograms(*five, 3_600_000)
    hour = downsample_histograms(ts, messages, 3_600_000)
    assert hour_of_five[0].tolist() == hour[0].tolist()
    assert hour_of_five[1] == hour[1]
    # Gauges keep the last of each window only.
    g_ts, g_messages = data[GAUGE]
    kept_ts, _ = downsample_histograms(g_ts, g_messages, 3_600_000)
    assert len(kept_ts) == 24


def test_possible_resets_are_recognised() -> None:
    def h(**fields: object) -> write_v2_pb2.Histogram:
        return write_v2_pb2.Histogram(**fields)  # type: ignore[arg-type]

    span = [write_v2_pb2.BucketSpan(offset=0, length=2)]
    before = h(count_int=10, sum=1.0, positive_spans=span, positive_deltas=[4, 2])
    assert not possible_reset(
        before, h(count_int=12, sum=2.0, positive_spans=span, positive_deltas=[5, 2])
    )
    assert possible_reset(
        before, h(count_int=9, sum=2.0, positive_spans=span, positive_deltas=[4, 1])
    )
    # A bucket going down while the count grows is a reset too.
    assert possible_reset(before, h(count_int=30, positive_spans=span, positive_deltas=[3, 20]))
    assert possible_reset(
        before, h(count_int=12, schema=2, positive_spans=span, positive_deltas=[5, 2])
    )
    assert possible_reset(
        before, h(count_int=12, reset_hint=1, positive_spans=span, positive_deltas=[5, 2])
    )
    assert possible_reset(before, h(sum=float("nan")))


def test_downsampled_blocks_keep_histograms_and_reads_of_them_give_them_back(
    tmp_path: Path,
) -> None:
    bucket = tmp_path / "bucket"
    end = T0 + 2 * DAY_MS + 2 * HOUR_MS
    data = series_data(T0, end)
    with LocalStore(bucket) as store:
        for start in range(T0, end, 2 * HOUR_MS):
            window = {
                k: (
                    ts[(ts >= start) & (ts < start + 2 * HOUR_MS)],
                    [
                        m
                        for t, m in zip(ts.tolist(), ms, strict=True)
                        if start <= t < start + 2 * HOUR_MS
                    ],
                )
                for k, (ts, ms) in data.items()
            }
            put(store, tmp_path / "work", start, start + 2 * HOUR_MS, window)
        summary = compactor(
            store, tmp_path, downsample_1h_after="2d", retention_raw="0", retention_5m="0"
        ).run_pass(now_ms=T0 + 3 * DAY_MS)
        assert summary.ok, summary.line()
        live = live_blocks(store, TENANT, unmarked=True)
        by_resolution = {(int(m.resolution), m.mint, m.maxt): m for m in live}
        two_days = {
            k: (ts[ts < T0 + 2 * DAY_MS], ms[: int((ts < T0 + 2 * DAY_MS).sum())])
            for k, (ts, ms) in data.items()
        }
        raw = histograms_of(store, by_resolution[(0, T0, T0 + 2 * DAY_MS)])
        assert as_lists(raw) == as_lists(two_days)
        for resolution in (300_000, 3_600_000):
            got = histograms_of(store, by_resolution[(resolution, T0, T0 + 2 * DAY_MS)])
            want = {k: downsample_histograms(*v, resolution) for k, v in two_days.items()}
            assert as_lists(got) == as_lists(want)

    # A query whose hints ask for hours reads the 1 h block's histograms.
    config = GatewayConfig(data_dir=tmp_path / "querier", bucket_url=f"file://{bucket}")
    app = create_query_app(config, CollectorRegistry())
    start, stop = T0 + 6 * HOUR_MS, T0 + 30 * HOUR_MS
    query = remote_pb2.Query(
        start_timestamp_ms=start,
        end_timestamp_ms=stop,
        matchers=[types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name="job", value="api")],
        hints=types_pb2.ReadHints(
            step_ms=HOURS_STEP_MS, func="rate", range_ms=HOURS_STEP_MS, start_ms=start, end_ms=stop
        ),
    )
    body = snappy.compress(remote_pb2.ReadRequest(queries=[query]).SerializeToString())

    async def scenario(client: httpx.AsyncClient) -> bytes:
        headers = {**READ_HEADERS, "X-Scope-OrgID": TENANT}
        answer = await client.post("/api/v1/read", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.content

    _, histograms = samples_answer(run(app, scenario))
    hourly = downsample_histograms(*two_days[COUNTER], 3_600_000)
    inside = [
        (t, m) for t, m in zip(hourly[0].tolist(), hourly[1], strict=True) if start <= t <= stop
    ]
    assert histograms[COUNTER] == inside
