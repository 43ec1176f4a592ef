"""Remote read in process: head, queue and bucket merged; both answer types; bad requests.

Each test runs a real gateway app (WAL, head, shipper, local bucket) through httpx's ASGI
transport, writes through remote write, and reads back through remote read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest
import snappy
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from blocks.bucket_index import load_bucket_index
from blocks.errors import StorageError
from blocks.objstore.local import LocalStore
from gateway.app import Gateway, create_app
from gateway.config import GatewayConfig
from gateway.head_cut import BLOCK_DURATION_MS
from proto import remote_pb2, types_pb2
from querier import read_api
from querier.app import create_query_app
from querier.limits import Deadline
from querier.matchers import Matcher, MatchType
from querier.read_api import STREAMED_CONTENT_TYPE
from tests.gateway.writes import SPECIAL_BITS, WRITE_HEADERS, time_series
from tests.querier.streamed import decode_streamed

T = TypeVar("T")
Scenario = Callable[[httpx.AsyncClient], Awaitable[T]]
LabelSet = tuple[tuple[str, str], ...]

HOUR_MS = 3_600_000
# Old enough that its first windows are due for cutting, inside the future limit.
START_MS = (int(time.time() * 1000) // BLOCK_DURATION_MS - 3) * BLOCK_DURATION_MS
READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}
EQ = types_pb2.LabelMatcher.EQ
RE = types_pb2.LabelMatcher.RE


def run(app: FastAPI, scenario: Scenario[T]) -> T:
    async def serve() -> T:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://strata") as client:
                deadline = time.monotonic() + 10
                while (await client.get("/-/ready")).status_code != 200:
                    assert time.monotonic() < deadline, "never ready"
                    await asyncio.sleep(0.005)
                return await scenario(client)

    return asyncio.run(serve())


def gateway_app(tmp_path: Path, **settings: object) -> FastAPI:
    config = GatewayConfig(data_dir=tmp_path, cut_interval_s=3600.0, **settings)  # type: ignore[arg-type]
    return create_app(config, CollectorRegistry())


def gateway_of(app: FastAPI) -> Gateway:
    found: Gateway = app.state.gateway
    return found


async def write(
    client: httpx.AsyncClient, series: dict[LabelSet, list[tuple[int, int]]], tenant: str = ""
) -> None:
    request = remote_pb2.WriteRequest(
        timeseries=[time_series(labels, samples) for labels, samples in series.items()]
    )
    headers = dict(WRITE_HEADERS)
    if tenant:
        headers["X-Scope-OrgID"] = tenant
    answer = await client.post(
        "/api/v1/write", content=snappy.compress(request.SerializeToString()), headers=headers
    )
    assert answer.status_code == 204, answer.text


def matcher(name: str, value: str, kind: int = EQ) -> types_pb2.LabelMatcher:
    return types_pb2.LabelMatcher(type=kind, name=name, value=value)  # type: ignore[arg-type]


def read_request(
    queries: Sequence[tuple[int, int, list[types_pb2.LabelMatcher]]], streamed: bool = False
) -> bytes:
    request = remote_pb2.ReadRequest(
        queries=[
            remote_pb2.Query(start_timestamp_ms=s, end_timestamp_ms=e, matchers=m)
            for s, e, m in queries
        ]
    )
    if streamed:
        request.accepted_response_types.append(remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS)
    return bytes(snappy.compress(request.SerializeToString()))


async def read_samples(
    client: httpx.AsyncClient,
    queries: Sequence[tuple[int, int, list[types_pb2.LabelMatcher]]],
    tenant: str = "",
) -> list[dict[LabelSet, list[tuple[int, int]]]]:
    """SAMPLES answer: per query, labels -> [(timestamp, value bits)]."""
    headers = dict(READ_HEADERS)
    if tenant:
        headers["X-Scope-OrgID"] = tenant
    answer = await client.post("/api/v1/read", content=read_request(queries), headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-encoding"] == "snappy"
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.content))
    out = []
    for result in response.results:
        series = {}
        for ts in result.timeseries:
            labels = tuple((label.name, label.value) for label in ts.labels)
            values = np.array([s.value for s in ts.samples], dtype=np.float64)
            series[labels] = list(
                zip([s.timestamp for s in ts.samples], values.view(np.uint64).tolist(), strict=True)
            )
        out.append(series)
    return out


def workload() -> dict[LabelSet, list[tuple[int, int]]]:
    """Three series over five hours, a minute apart, with every awkward value bit pattern."""
    steps = 5 * 60
    series: dict[LabelSet, list[tuple[int, int]]] = {}
    for i in range(3):
        labels = (("__name__", "load"), ("host", f"h{i}"), ("job", "node"))
        bits = [int(b) for b in np.arange(steps, dtype=np.float64).view(np.uint64) + i]
        for j, special in enumerate(SPECIAL_BITS):
            bits[j * 7 + i] = special
        series[labels] = [(START_MS + k * 60_000, bits[k]) for k in range(steps)]
    return series


def test_head_queue_and_bucket_read_back_merged_and_bit_exact(tmp_path: Path) -> None:
    expected = workload()
    app = gateway_app(tmp_path, cut_grace_ms=0)

    async def scenario(client: httpx.AsyncClient) -> None:
        halves = {k: (v[: len(v) // 2], v[len(v) // 2 :]) for k, v in expected.items()}
        await write(client, {k: h[0] for k, h in halves.items()})
        # The first windows go to blocks in the bucket; the rest stays in the head.
        await gateway_of(app).shipper.step()
        with LocalStore(tmp_path / "bucket") as bucket:
            assert load_bucket_index(bucket, "default", max_age_ms=HOUR_MS).blocks
        await write(client, {k: h[1] for k, h in halves.items()})
        everything = (START_MS, START_MS + 10 * HOUR_MS, [matcher("job", "node")])
        [got] = await read_samples(client, [everything])
        assert got == expected
        # A resend of old samples is stored twice (head and block); read once.
        await write(client, {k: v[:10] for k, v in expected.items()})
        [again] = await read_samples(client, [everything])
        assert again == expected

    run(app, scenario)


def test_each_query_gets_its_result_in_order_clipped_to_its_range(tmp_path: Path) -> None:
    expected = workload()
    app = gateway_app(tmp_path)
    h1 = (("__name__", "load"), ("host", "h1"), ("job", "node"))

    async def scenario(client: httpx.AsyncClient) -> None:
        await write(client, expected)
        mint, maxt = START_MS + 30 * 60_000, START_MS + 90 * 60_000
        got = await read_samples(
            client,
            [
                (mint, maxt, [matcher("host", "h1")]),
                (START_MS, START_MS + 10 * HOUR_MS, [matcher("host", "h[02]", RE)]),
                (START_MS, START_MS + 10 * HOUR_MS, [matcher("host", "nope")]),
            ],
        )
        assert got[0] == {h1: [s for s in expected[h1] if mint <= s[0] <= maxt]}
        assert sorted(got[1]) == sorted(k for k in expected if k != h1)
        assert got[2] == {}

    run(app, scenario)


def test_tenants_see_only_their_own_series(tmp_path: Path) -> None:
    app = gateway_app(tmp_path)
    labels = (("__name__", "x"), ("job", "j"))

    async def scenario(client: httpx.AsyncClient) -> None:
        await write(client, {labels: [(START_MS, 1)]}, tenant="a")
        await write(client, {labels: [(START_MS, 2)]}, tenant="b")
        query = [(START_MS, START_MS + HOUR_MS, [matcher("job", "j")])]
        assert await read_samples(client, query, tenant="a") == [{labels: [(START_MS, 1)]}]
        assert await read_samples(client, query, tenant="b") == [{labels: [(START_MS, 2)]}]
        assert await read_samples(client, query, tenant="c") == [{}]

    run(app, scenario)


@pytest.mark.parametrize("whole_answer_bytes", [None, 1], ids=["one body", "streamed"])
def test_streamed_answer_equals_the_samples_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole_answer_bytes: int | None
) -> None:
    """Small answers go out as one body, larger ones a batch at a time (here every answer,
    with the threshold at one byte); either way the same samples, and the read's
    concurrency slot is free again afterwards."""
    if whole_answer_bytes is not None:
        monkeypatch.setattr(read_api, "WHOLE_ANSWER_BYTES", whole_answer_bytes)
    expected = workload()
    app = gateway_app(tmp_path, cut_grace_ms=0, query_concurrency=1, query_timeout_s=2.0)

    async def scenario(client: httpx.AsyncClient) -> None:
        await write(client, expected)
        await gateway_of(app).shipper.step()
        queries = [
            (START_MS, START_MS + 10 * HOUR_MS, [matcher("job", "node")]),
            (START_MS + 3 * HOUR_MS, START_MS + 4 * HOUR_MS, [matcher("host", "h2")]),
        ]
        samples = await read_samples(client, queries)
        for _ in range(2):  # with one slot, a second read waits for a slot the first kept
            answer = await client.post(
                "/api/v1/read", content=read_request(queries, streamed=True), headers=READ_HEADERS
            )
            assert answer.status_code == 200, answer.text
            assert answer.headers["content-type"] == STREAMED_CONTENT_TYPE
            assert decode_streamed(answer.content, len(queries)) == samples

    run(app, scenario)


@pytest.mark.parametrize(
    ("body", "headers", "status", "reason"),
    [
        (b"\x10not snappy at all", READ_HEADERS, 400, "snappy"),
        (b"\xff\xff\xff\xff\x0fbomb", READ_HEADERS, 413, "limit"),
        (snappy.compress(b"\xff\xff\xff"), READ_HEADERS, 400, "ReadRequest"),
        (read_request([]), {**READ_HEADERS, "Content-Encoding": "gzip"}, 415, "snappy"),
        (
            read_request([(10, 5, [matcher("job", "x")])]),
            READ_HEADERS,
            400,
            "before start",
        ),
        (
            read_request([(0, 10, [matcher("job", "(unclosed", RE)])]),
            READ_HEADERS,
            400,
            "(unclosed",
        ),
        (
            read_request([(0, 10, [matcher("job", "a|" * 10_000 + "b", RE)])]),
            READ_HEADERS,
            422,
            "query_max_regex_bytes",
        ),
        (
            read_request([(0, 10, [matcher("job", ".*", RE)])]),
            READ_HEADERS,
            400,
            "would select every series",
        ),
        (read_request([(0, 10, [])]), READ_HEADERS, 400, "would select every series"),
    ],
)
def test_bad_requests_get_a_clear_error(
    tmp_path: Path, body: bytes, headers: dict[str, str], status: int, reason: str
) -> None:
    app = gateway_app(tmp_path)

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/api/v1/read", content=body, headers=headers)

    answer = run(app, scenario)
    assert answer.status_code == status, answer.text
    assert reason in answer.text


def test_a_backtracking_bomb_is_just_a_regex(tmp_path: Path) -> None:
    # (a*)*b against a long run of a's takes exponential time in a backtracking engine.
    labels = (("__name__", "x"), ("job", "a" * 2000))
    app = gateway_app(tmp_path)

    async def scenario(client: httpx.AsyncClient) -> list[dict[LabelSet, list[tuple[int, int]]]]:
        await write(client, {labels: [(START_MS, 7)]})
        return await read_samples(
            client, [(START_MS, START_MS + 1, [matcher("job", "(a*)*b|(a+)+", RE)])]
        )

    assert run(app, scenario) == [{labels: [(START_MS, 7)]}]


def test_every_series_for_a_year_is_refused_at_once(tmp_path: Path) -> None:
    app = gateway_app(tmp_path, query_max_series=2)
    year_ms = 365 * 24 * HOUR_MS

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        await write(client, workload())
        await gateway_of(app).shipper.flush()
        query = read_request(
            [(START_MS - year_ms, START_MS + HOUR_MS, [matcher("__name__", ".+", RE)])]
        )
        return await client.post("/api/v1/read", content=query, headers=READ_HEADERS)

    answer = run(app, scenario)
    assert answer.status_code == 422
    assert "query_max_series" in answer.text


def test_limits_refuse_before_reading(tmp_path: Path) -> None:
    expected = workload()
    app = gateway_app(tmp_path, query_max_series=2, query_max_samples=200)

    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        await write(client, expected)
        every = read_request([(START_MS, START_MS + 10 * HOUR_MS, [matcher("job", "node")])])
        many_samples = read_request([(START_MS, START_MS + 10 * HOUR_MS, [matcher("host", "h1")])])
        return (
            await client.post("/api/v1/read", content=every, headers=READ_HEADERS),
            await client.post("/api/v1/read", content=many_samples, headers=READ_HEADERS),
        )

    series_answer, samples_answer = run(app, scenario)
    assert "selects" in series_answer.text
    assert series_answer.status_code == 422
    assert "selects 3 series" in series_answer.text
    assert "query_max_series" in series_answer.text
    assert samples_answer.status_code == 422
    assert "query_max_samples" in samples_answer.text


def test_bucket_only_querier_reads_what_a_gateway_flushed(tmp_path: Path) -> None:
    expected = workload()
    app = gateway_app(tmp_path)

    async def fill(client: httpx.AsyncClient) -> None:
        await write(client, expected)
        flushed = await client.post("/api/v1/admin/flush")
        assert flushed.status_code == 200, flushed.text
        assert flushed.json()["uploadedBlocks"] >= 3  # five hours: three 2 h windows

    run(app, fill)
    querier = create_query_app(GatewayConfig(data_dir=tmp_path), CollectorRegistry())
    everything = (START_MS, START_MS + 10 * HOUR_MS, [matcher("__name__", "load")])

    async def read(client: httpx.AsyncClient) -> list[dict[LabelSet, list[tuple[int, int]]]]:
        return await read_samples(client, [everything])

    assert run(querier, read) == [expected]


def test_a_query_past_its_time_budget_is_a_503(tmp_path: Path) -> None:
    app = gateway_app(tmp_path, query_timeout_s=1e-9)

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        await write(client, workload())
        query = read_request([(START_MS, START_MS + 10 * HOUR_MS, [matcher("job", "node")])])
        return await client.post("/api/v1/read", content=query, headers=READ_HEADERS)

    answer = run(app, scenario)
    assert answer.status_code == 503
    assert "timed out" in answer.text
    assert "Retry-After" in answer.headers


def test_reads_beyond_the_concurrency_limit_wait_then_get_a_503(tmp_path: Path) -> None:
    app = gateway_app(tmp_path, query_concurrency=1, query_timeout_s=0.2)
    query = read_request([(START_MS, START_MS + HOUR_MS, [matcher("job", "node")])])

    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        await write(client, workload())
        slots = gateway_of(app).reader._slots
        await slots.acquire()  # a long read holds the only slot
        try:
            waited = await client.post("/api/v1/read", content=query, headers=READ_HEADERS)
        finally:
            slots.release()
        return waited, await client.post("/api/v1/read", content=query, headers=READ_HEADERS)

    refused, served = run(app, scenario)
    assert refused.status_code == 503
    assert "query_concurrency" in refused.text
    assert served.status_code == 200


def test_a_queued_block_uploaded_during_a_read_is_read_from_the_bucket(tmp_path: Path) -> None:
    expected = workload()
    app = gateway_app(tmp_path, cut_grace_ms=0)
    gateway = gateway_of(app)

    async def scenario(client: httpx.AsyncClient) -> dict[LabelSet, list[tuple[int, int]]]:
        await write(client, expected)
        real_put = gateway.store.put

        def bucket_down(key: str, data: bytes) -> None:
            raise StorageError("put", key, "injected outage")

        gateway.store.put = bucket_down  # type: ignore[method-assign]
        await gateway.shipper.cut_due(force=True)
        await gateway.shipper.upload_queued()
        assert gateway.shipper.queue_size() >= 1
        # The read captures the queue, then the block is uploaded and leaves it.
        view = gateway.local_view("default")
        gateway.store.put = real_put  # type: ignore[method-assign]
        gateway.shipper._next_upload = 0.0
        await gateway.shipper.upload_queued()
        assert gateway.shipper.queue_size() == 0
        matchers = [Matcher(MatchType.EQ, "job", "node")]
        plan = gateway.reader.engine.plan(
            "default", 0, matchers, START_MS, START_MS + 10 * HOUR_MS, view, Deadline(60)
        )
        got: dict[LabelSet, list[tuple[int, int]]] = {}
        for batch in gateway.reader.engine.batches(plan, Deadline(60)):
            for labels, (ts, values) in batch:
                got[labels] = list(zip(ts.tolist(), values.view(np.uint64).tolist(), strict=True))
        return got

    assert run(app, scenario) == expected
