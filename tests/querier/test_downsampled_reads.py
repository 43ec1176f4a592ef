"""Remote read over downsampled blocks, through the real endpoint: the resolution a query's
hints pick, the aggregate its function picks, gaps filled from other resolutions, and
counters joined so that rate and increase see what raw data would show.

Each test builds raw blocks and the downsampled blocks the compactor would make from the
same samples (blocks/aggregates.downsample_raw) in a local bucket, and reads them back
through `strata query` (or `strata serve`, for the head) in process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
import snappy
from prometheus_client import CollectorRegistry

from blocks.aggregates import Aggregate, downsample_aggregates, downsample_raw, raw_counter
from blocks.meta import Resolution
from gateway.config import GatewayConfig
from proto import remote_pb2, types_pb2
from querier.app import create_query_app
from querier.engine import SERIES_PER_BATCH
from tests.querier.downsampled_bucket import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    T0,
    BlockMaker,
    LabelSet,
    Part,
    counter,
    gauge,
    in_range,
    with_stale_marker,
)
from tests.querier.streamed import decode_streamed
from tests.querier.test_read_api import (
    READ_HEADERS,
    START_MS,
    gateway_app,
    matcher,
    run,
    write,
)

FIVE_MINUTES = Resolution.FIVE_MINUTES
ONE_HOUR = Resolution.ONE_HOUR
SCRAPE_MS = 30_000
TWO_DAYS = 2 * DAY_MS // SCRAPE_MS  # samples in a 2-day block
REQUESTS = (("__name__", "requests_total"), ("job", "api"))
TEMPERATURE = (("__name__", "temperature"), ("job", "api"))
# Resets: before the queries' start, inside the first block, at the first sample of the
# second block (a restart between blocks), and inside the second block.
RESETS = (200, 1000, TWO_DAYS, TWO_DAYS + 2000)


def workload() -> dict[LabelSet, Part]:
    """Four days: a counter that restarts, and a gauge with a staleness marker."""
    return {
        REQUESTS: counter(T0, 2 * TWO_DAYS, SCRAPE_MS, RESETS),
        TEMPERATURE: with_stale_marker(gauge(T0, 2 * TWO_DAYS, SCRAPE_MS), TWO_DAYS + 700),
    }


def query(
    mint: int,
    maxt: int,
    name: str = "",
    *,
    func: str = "",
    step_ms: int = 0,
    range_ms: int = 0,
    hints: bool = True,
) -> remote_pb2.Query:
    matchers = [matcher("__name__", name)] if name else [matcher("job", "api")]
    out = remote_pb2.Query(start_timestamp_ms=mint, end_timestamp_ms=maxt, matchers=matchers)
    if hints:
        out.hints.CopyFrom(
            types_pb2.ReadHints(
                step_ms=step_ms, range_ms=range_ms, func=func, start_ms=mint, end_ms=maxt
            )
        )
    return out


async def read(
    client: httpx.AsyncClient, queries: Sequence[remote_pb2.Query], *, streamed: bool = False
) -> list[dict[LabelSet, Part]]:
    """Per query, labels -> samples, from a SAMPLES or a STREAMED_XOR_CHUNKS answer."""
    request = remote_pb2.ReadRequest(queries=queries)
    if streamed:
        request.accepted_response_types.append(remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS)
    answer = await client.post(
        "/api/v1/read", content=snappy.compress(request.SerializeToString()), headers=READ_HEADERS
    )
    assert answer.status_code == 200, answer.text
    if streamed:
        return [
            {labels: as_part(samples) for labels, samples in result.items()}
            for result in decode_streamed(answer.content, len(queries))
        ]
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.content))
    out = []
    for result in response.results:
        series = {}
        for ts in result.timeseries:
            labels = tuple((label.name, label.value) for label in ts.labels)
            series[labels] = (
                np.array([s.timestamp for s in ts.samples], dtype=np.int64),
                np.array([s.value for s in ts.samples], dtype=np.float64),
            )
        out.append(series)
    return out


def as_part(samples: list[tuple[int, int]]) -> Part:
    ts = np.array([t for t, _ in samples], dtype=np.int64)
    return ts, np.array([b for _, b in samples], dtype=np.uint64).view(np.float64)


def assert_bit_exact(got: Part, expected: Part) -> None:
    assert np.array_equal(got[0], expected[0])
    assert np.array_equal(got[1].view(np.uint64), expected[1].view(np.uint64))


def window_values(part: Part, resolution: Resolution, aggregate: Aggregate | None) -> Part:
    """What the compactor stores for `aggregate`, or the windows' means for None."""
    aggregates = downsample_raw(*part, int(resolution))
    if aggregate is not None:
        return aggregates[aggregate]
    (ts, sums), (_, counts) = aggregates[Aggregate.SUM], aggregates[Aggregate.COUNT]
    return ts, sums / counts


def assert_increase_is_raw(got: Part, raw: Part) -> None:
    """The increase between every two neighbouring samples returned is the raw
    counter's increase between those times: what rate and increase compute from."""
    ts, values = got
    corrected_ts, corrected = raw_counter(*raw)
    at = np.searchsorted(corrected_ts, ts)
    assert np.array_equal(corrected_ts[at], ts), "returned timestamps are not scrape times"
    assert len(ts) > 100
    assert np.all(np.diff(values) >= 0), "a reset was not undone"
    np.testing.assert_allclose(np.diff(values), np.diff(corrected[at]), rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(values[-1] - values[0], corrected[at[-1]] - corrected[at[0]])


def blocks_read(registry: CollectorRegistry) -> dict[str, float]:
    return {
        name: registry.get_sample_value("strata_read_blocks_total", {"resolution": name}) or 0.0
        for name in ("raw", "5m", "1h")
    }


def full_bucket(tmp_path: Path, data: dict[LabelSet, Part]) -> BlockMaker:
    """Raw and 5 m blocks of both 2-day ranges: what the compactor leaves within the
    raw retention."""
    maker = BlockMaker(tmp_path / "bucket", tmp_path / "work")
    for start in (T0, T0 + 2 * DAY_MS):
        maker.raw(data, start, start + 2 * DAY_MS)
        maker.downsampled(data, FIVE_MINUTES, start, start + 2 * DAY_MS)
    return maker


def test_rate_over_downsampled_counters_sees_the_raw_increase_across_resets_and_blocks(
    tmp_path: Path,
) -> None:
    data = workload()
    full_bucket(tmp_path, data)
    registry = CollectorRegistry()
    app = create_query_app(GatewayConfig(data_dir=tmp_path), registry)
    mint, maxt = T0 + 3 * HOUR_MS + 12_345, T0 + 4 * DAY_MS - 1
    rate = query(mint, maxt, "requests_total", func="rate", step_ms=HOUR_MS, range_ms=HOUR_MS)

    async def scenario(client: httpx.AsyncClient) -> list[dict[LabelSet, Part]]:
        return await read(client, [rate])

    [got] = run(app, scenario)
    assert blocks_read(registry) == {"raw": 0.0, "5m": 2.0, "1h": 0.0}
    ts, _ = got[REQUESTS]
    # One sample a 5 m window (and each block's first sample), not one every 30 s.
    assert len(ts) <= (maxt - mint) // (5 * MINUTE_MS) + 3
    assert mint <= ts[0]
    assert ts[-1] <= maxt
    assert_increase_is_raw(got[REQUESTS], data[REQUESTS])


@pytest.mark.parametrize(
    ("func", "aggregate"),
    [
        ("max_over_time", Aggregate.MAX),
        ("min_over_time", Aggregate.MIN),
        ("sum_over_time", Aggregate.SUM),
        ("last_over_time", Aggregate.LAST),
        ("avg_over_time", None),
        ("", None),
    ],
)
def test_the_function_picks_the_aggregate_returned(
    tmp_path: Path, func: str, aggregate: Aggregate | None
) -> None:
    data = workload()
    full_bucket(tmp_path, data)
    app = create_query_app(GatewayConfig(data_dir=tmp_path), CollectorRegistry())
    mint, maxt = T0 + HOUR_MS + 1, T0 + 3 * DAY_MS
    hinted = query(mint, maxt, "temperature", func=func, step_ms=HOUR_MS, range_ms=HOUR_MS)

    async def scenario(client: httpx.AsyncClient) -> list[dict[LabelSet, Part]]:
        return await read(client, [hinted])

    [got] = run(app, scenario)
    expected = window_values(data[TEMPERATURE], FIVE_MINUTES, aggregate)
    assert_bit_exact(got[TEMPERATURE], in_range(expected, mint, maxt))


def test_without_hints_or_with_a_small_step_the_raw_samples_come_back_bit_exact(
    tmp_path: Path,
) -> None:
    data = workload()
    full_bucket(tmp_path, data)
    registry = CollectorRegistry()
    app = create_query_app(GatewayConfig(data_dir=tmp_path), registry)
    mint, maxt = T0 + 5 * HOUR_MS, T0 + 3 * DAY_MS + 7
    queries = [
        query(mint, maxt, hints=False),
        query(mint, maxt),  # an instant plain selector
        query(mint, maxt, step_ms=MINUTE_MS),
        query(mint, maxt, func="rate", step_ms=MINUTE_MS, range_ms=5 * MINUTE_MS),
        # rate(x[5m]) at a one-day step still needs every sample of its 5 m windows.
        query(mint, maxt, func="rate", step_ms=DAY_MS, range_ms=5 * MINUTE_MS),
    ]

    async def scenario(client: httpx.AsyncClient) -> list[dict[LabelSet, Part]]:
        return await read(client, queries)

    for got in run(app, scenario):
        assert sorted(got) == [REQUESTS, TEMPERATURE]
        for labels, samples in got.items():
            assert_bit_exact(samples, in_range(data[labels], mint, maxt))
    assert blocks_read(registry) == {"raw": 2.0 * len(queries), "5m": 0.0, "1h": 0.0}


def test_raw_blocks_fill_a_range_without_downsampled_blocks_as_the_windows_it_would_hold(
    tmp_path: Path,
) -> None:
    data = workload()
    maker = BlockMaker(tmp_path / "bucket", tmp_path / "work")
    maker.raw(data, T0, T0 + 2 * DAY_MS)
    maker.raw(data, T0 + 2 * DAY_MS, T0 + 4 * DAY_MS)
    maker.downsampled(data, FIVE_MINUTES, T0, T0 + 2 * DAY_MS)  # the second not made yet
    registry = CollectorRegistry()
    app = create_query_app(GatewayConfig(data_dir=tmp_path), registry)
    mint, maxt = T0, T0 + 4 * DAY_MS - 1
    queries = [
        query(mint, maxt, step_ms=HOUR_MS),
        query(mint, maxt, "requests_total", func="increase", step_ms=HOUR_MS, range_ms=HOUR_MS),
    ]

    async def scenario(client: httpx.AsyncClient) -> list[dict[LabelSet, Part]]:
        return await read(client, queries)

    averages, increases = run(app, scenario)
    # The raw half is downsampled in the querier: one resolution for the whole answer,
    # equal to what the missing 5 m block will hold.
    means = window_values(data[TEMPERATURE], FIVE_MINUTES, None)
    assert_bit_exact(averages[TEMPERATURE], in_range(means, mint, maxt))
    # The counter restarts at the first raw sample: the join from 5 m to raw sees it.
    assert_increase_is_raw(increases[REQUESTS], data[REQUESTS])
    ts, _ = increases[REQUESTS]
    assert len(ts) <= (maxt - mint) // (5 * MINUTE_MS) + 3
    assert blocks_read(registry) == {"raw": 2.0, "5m": 2.0, "1h": 0.0}


def join(*parts: Part) -> Part:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_downsampled_data_answers_where_retention_deleted_raw_and_the_setting_turns_it_off(
    tmp_path: Path,
) -> None:
    data = workload()
    maker = BlockMaker(tmp_path / "bucket", tmp_path / "work")
    maker.downsampled(data, FIVE_MINUTES, T0, T0 + 2 * DAY_MS)  # its raw block is deleted
    maker.raw(data, T0 + 2 * DAY_MS, T0 + 4 * DAY_MS)
    mint, maxt, middle = T0, T0 + 4 * DAY_MS - 1, T0 + 2 * DAY_MS
    everything = [query(mint, maxt, hints=False)]

    async def scenario(client: httpx.AsyncClient) -> list[dict[LabelSet, Part]]:
        return await read(client, everything)

    [got] = run(create_query_app(GatewayConfig(data_dir=tmp_path), CollectorRegistry()), scenario)
    means = in_range(window_values(data[TEMPERATURE], FIVE_MINUTES, None), mint, middle - 1)
    raw = in_range(data[TEMPERATURE], middle, maxt)
    assert_bit_exact(got[TEMPERATURE], join(means, raw))

    raw_only = GatewayConfig(data_dir=tmp_path, query_downsampled=False)
    [got] = run(create_query_app(raw_only, CollectorRegistry()), scenario)
    assert_bit_exact(got[TEMPERATURE], raw)
    assert_bit_exact(got[REQUESTS], in_range(data[REQUESTS], middle, maxt))


def test_a_coarser_block_that_starts_before_its_span_joins_counters_from_the_span_on(
    tmp_path: Path,
) -> None:
    # No raw left; 5 m for the first two days, 1 h for all four: the 1 h block answers
    # from the third day on, its counter already corrected for the resets before.
    data = workload()
    maker = BlockMaker(tmp_path / "bucket", tmp_path / "work")
    maker.downsampled(data, FIVE_MINUTES, T0, T0 + 2 * DAY_MS)
    maker.downsampled(data, ONE_HOUR, T0, T0 + 4 * DAY_MS, level=4)
    registry = CollectorRegistry()
    app = create_query_app(GatewayConfig(data_dir=tmp_path), registry)
    mint, maxt = T0, T0 + 4 * DAY_MS - 1
    increase = query(
        mint, maxt, "requests_total", func="increase", step_ms=HOUR_MS, range_ms=HOUR_MS
    )

    async def scenario(client: httpx.AsyncClient) -> list[dict[LabelSet, Part]]:
        return await read(client, [increase])

    [got] = run(app, scenario)
    assert_increase_is_raw(got[REQUESTS], data[REQUESTS])
    ts, _ = got[REQUESTS]
    assert np.all(np.diff(ts[ts > T0 + 2 * DAY_MS]) >= HOUR_MS - SCRAPE_MS), "1 h windows"
    assert blocks_read(registry) == {"raw": 0.0, "5m": 1.0, "1h": 1.0}


def test_a_long_step_reads_hours_and_fills_from_five_minutes_made_hours(tmp_path: Path) -> None:
    data = workload()
    maker = full_bucket(tmp_path, data)
    maker.downsampled(data, ONE_HOUR, T0, T0 + 2 * DAY_MS)
    registry = CollectorRegistry()
    app = create_query_app(GatewayConfig(data_dir=tmp_path), registry)
    mint, maxt, middle = T0, T0 + 4 * DAY_MS - 1, T0 + 2 * DAY_MS

    async def scenario(client: httpx.AsyncClient) -> list[dict[LabelSet, Part]]:
        return await read(client, [query(mint, maxt, "temperature", step_ms=6 * HOUR_MS)])

    [got] = run(app, scenario)
    hours = in_range(window_values(data[TEMPERATURE], ONE_HOUR, None), mint, middle - 1)
    # The second half's hours come from its 5 m block, added up as the compactor would.
    fives = downsample_raw(*in_range(data[TEMPERATURE], middle, maxt), int(FIVE_MINUTES))
    (ts, sums), (_, counts) = (
        downsample_aggregates(fives, int(ONE_HOUR))[a] for a in (Aggregate.SUM, Aggregate.COUNT)
    )
    assert_bit_exact(got[TEMPERATURE], join(hours, (ts, sums / counts)))
    assert blocks_read(registry) == {"raw": 0.0, "5m": 1.0, "1h": 1.0}


def test_streamed_and_samples_answers_agree_over_many_series_and_resolutions(
    tmp_path: Path,
) -> None:
    count = SERIES_PER_BATCH + 6  # more than one batch
    series: dict[LabelSet, Part] = {
        (("__name__", "temperature"), ("host", f"h{i:03d}"), ("job", "api")): gauge(
            T0, DAY_MS // MINUTE_MS, MINUTE_MS, seed=i
        )
        for i in range(count)
    }
    maker = BlockMaker(tmp_path / "bucket", tmp_path / "work")
    maker.downsampled(series, FIVE_MINUTES, T0, T0 + DAY_MS // 2)
    maker.raw(series, T0 + DAY_MS // 2, T0 + DAY_MS)
    app = create_query_app(GatewayConfig(data_dir=tmp_path), CollectorRegistry())
    queries = [
        query(T0, T0 + DAY_MS, "temperature", step_ms=HOUR_MS),
        query(T0 + HOUR_MS, T0 + DAY_MS, "temperature", func="rate", step_ms=HOUR_MS),
    ]

    async def scenario(
        client: httpx.AsyncClient,
    ) -> tuple[list[dict[LabelSet, Part]], list[dict[LabelSet, Part]]]:
        return await read(client, queries), await read(client, queries, streamed=True)

    samples, streamed = run(app, scenario)
    for one, other in zip(samples, streamed, strict=True):
        assert sorted(one) == sorted(other) == sorted(series)
        for labels in series:
            assert_bit_exact(other[labels], one[labels])
    for labels in series:  # the raw half made 5 m windows too
        means = window_values(series[labels], FIVE_MINUTES, None)
        assert_bit_exact(samples[0][labels], in_range(means, T0, T0 + DAY_MS))


def test_limits_count_a_series_once_whatever_aggregates_it_is_read_from(tmp_path: Path) -> None:
    data = workload()
    full_bucket(tmp_path, data)
    rate = query(T0, T0 + 4 * DAY_MS, func="rate", step_ms=HOUR_MS, range_ms=HOUR_MS)
    request = snappy.compress(remote_pb2.ReadRequest(queries=[rate]).SerializeToString())

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/api/v1/read", content=request, headers=READ_HEADERS)

    two = GatewayConfig(data_dir=tmp_path, query_max_series=2)
    assert run(create_query_app(two, CollectorRegistry()), scenario).status_code == 200
    one = GatewayConfig(data_dir=tmp_path, query_max_series=1)
    refused = run(create_query_app(one, CollectorRegistry()), scenario)
    assert refused.status_code == 422
    assert "selects 2 series" in refused.text
    # Counter and last samples of two series in two blocks: 4 x (577 + 576) = 4,612.
    few = GatewayConfig(data_dir=tmp_path, query_max_samples=4_000)
    refused = run(create_query_app(few, CollectorRegistry()), scenario)
    assert refused.status_code == 422
    assert "query_max_samples" in refused.text
    enough = GatewayConfig(data_dir=tmp_path, query_max_samples=5_000)
    assert run(create_query_app(enough, CollectorRegistry()), scenario).status_code == 200


def test_the_head_answers_for_its_windows_and_counters_join_onto_it(tmp_path: Path) -> None:
    # Raw blocks of the two days before START_MS are gone; their 5 m copy is left. The
    # gateway's head holds the five hours since, and one late sample for an old window,
    # written through remote write.
    start = START_MS - 2 * DAY_MS
    older: dict[LabelSet, Part] = {REQUESTS: counter(start, TWO_DAYS, SCRAPE_MS, (500,))}
    maker = BlockMaker(tmp_path / "bucket", tmp_path / "work")
    maker.downsampled(older, FIVE_MINUTES, start, START_MS)
    recent_ts = START_MS + 1_000 + np.arange(5 * 120, dtype=np.int64) * SCRAPE_MS
    recent_values = np.concatenate([np.arange(300.0) + 5, np.arange(300.0) + 2])  # restarts
    late = (np.array([start + HOUR_MS + 1]), np.array([42.0]))
    data = {REQUESTS: join(older[REQUESTS], (recent_ts, recent_values))}
    app = gateway_app(tmp_path)
    mint, maxt = start, START_MS + 6 * HOUR_MS
    queries = [
        query(mint, maxt, "requests_total", func="rate", step_ms=HOUR_MS, range_ms=HOUR_MS),
        query(mint, maxt, "requests_total", step_ms=HOUR_MS),
        query(mint, maxt, "requests_total", hints=False),
    ]

    async def scenario(client: httpx.AsyncClient) -> list[dict[LabelSet, Part]]:
        for ts, values in ((recent_ts, recent_values), late):
            samples = list(zip(ts.tolist(), values.view(np.uint64).tolist(), strict=True))
            await write(client, {REQUESTS: samples})
        return await read(client, queries)

    rates, plain, raw_first = run(app, scenario)
    # 5 m answers wherever it has blocks: the late sample's window included.
    assert_increase_is_raw(rates[REQUESTS], data[REQUESTS])
    means = window_values(older[REQUESTS], FIVE_MINUTES, None)
    recent_means = window_values((recent_ts, recent_values), FIVE_MINUTES, None)
    assert_bit_exact(plain[REQUESTS], join(means, recent_means))
    # Raw first: the head answers for the 2 h window of the late sample, not all time
    # since; 5 m for the rest of the old days.
    after_late = in_range(means, start + 2 * HOUR_MS, START_MS - 1)
    assert_bit_exact(raw_first[REQUESTS], join(late, after_late, (recent_ts, recent_values)))
