"""The remote-write API in process: answers, what reaches the head, metrics, restarts."""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import httpx
import numpy as np
import pytest
import snappy
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import gateway.app
from gateway.app import WRITE_PATHS, Gateway, create_app
from gateway.config import GatewayConfig
from gateway.head import Head
from gateway.metrics import GatewayMetrics
from gateway.validate import decode_labels
from gateway.wal_replay import ReplayReport
from proto import types_pb2
from proto.write_raw_pb2 import LabelPair, RawSample, RawTimeSeries, RawWriteRequest
from tests.gateway.writes import (
    SPECIAL_BITS,
    STALE_NAN,
    WRITE_HEADERS,
    body_of,
    label_bytes,
    time_series,
)

T = TypeVar("T")
Scenario = Callable[[httpx.AsyncClient], Awaitable[T]]
# labels -> [(timestamp, value bits)]
Series = dict[tuple[tuple[str, str], ...], list[tuple[int, int]]]

NOW_MS = int(time.time() * 1000)
UP = [("__name__", "up"), ("job", "node")]


async def wait_ready(client: httpx.AsyncClient, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (await client.get("/-/ready")).status_code != 200:
        assert time.monotonic() < deadline, "the gateway never became ready"
        await asyncio.sleep(0.005)


async def serve(app: FastAPI, scenario: Scenario[T], *, ready: bool = True) -> T:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strata") as client:
            if ready:
                await wait_ready(client)
            return await scenario(client)


def run(app: FastAPI, scenario: Scenario[T], *, ready: bool = True) -> T:
    """Start the app (WAL replay included), run the scenario against it, shut it down."""
    return asyncio.run(serve(app, scenario, ready=ready))


def gateway_of(app: FastAPI) -> Gateway:
    found: Gateway = app.state.gateway
    return found


def head_series(app: FastAPI, tenant: str = "default") -> Series:
    out: Series = {}
    tenant_head = gateway_of(app).head.tenants.get(tenant)
    if tenant_head is None:
        return out
    for labels, ts, values in tenant_head.series_samples():
        points = zip(ts.tolist(), values.view(np.uint64).tolist(), strict=True)
        out[tuple(decode_labels(labels))] = list(points)
    return out


def post(
    client: httpx.AsyncClient,
    body: bytes,
    path: str = "/api/v1/write",
    **headers: str,
) -> Awaitable[httpx.Response]:
    sent = dict(WRITE_HEADERS)
    sent.update({k.replace("_", "-"): v for k, v in headers.items()})
    return client.post(path, content=body, headers=sent)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def config(tmp_path: Path) -> GatewayConfig:
    return GatewayConfig(data_dir=tmp_path)


@pytest.fixture
def app(config: GatewayConfig, registry: CollectorRegistry) -> FastAPI:
    return create_app(config, registry)


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_good_request_is_answered_204_and_stored_bit_exact(
    app: FastAPI, registry: CollectorRegistry, path: str
) -> None:
    samples = [(NOW_MS - 60_000 + i, bits) for i, bits in enumerate(SPECIAL_BITS)]
    body = body_of(time_series(UP, samples), time_series([("__name__", "x")], [(NOW_MS, 1)]))

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, body, path)

    answer = run(app, scenario)
    assert answer.status_code == 204
    assert answer.content == b""
    assert head_series(app) == {tuple(UP): samples, (("__name__", "x"),): [(NOW_MS, 1)]}
    received = registry.get_sample_value("strata_samples_received_total", {"tenant": "default"})
    assert received == len(samples) + 1
    assert registry.get_sample_value("strata_write_requests_total", {"code": "204"}) == 1


def test_unsorted_labels_from_a_sender_are_the_same_series(app: FastAPI) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[int]:
        first = await post(client, body_of(time_series(UP, [(NOW_MS, 1)])))
        second = await post(client, body_of(time_series(UP[::-1], [(NOW_MS + 1, 2)])))
        return [first.status_code, second.status_code]

    assert run(app, scenario) == [204, 204]
    assert head_series(app) == {tuple(UP): [(NOW_MS, 1), (NOW_MS + 1, 2)]}


def test_metadata_only_request_is_answered_204(app: FastAPI, registry: CollectorRegistry) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, body_of(metadata=["up", "node_cpu_seconds_total"]))

    assert run(app, scenario).status_code == 204
    assert registry.get_sample_value("strata_metadata_received_total", {"tenant": "default"}) == 2
    assert head_series(app) == {}


def test_empty_request_is_answered_204(app: FastAPI) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, snappy.compress(b""))

    assert run(app, scenario).status_code == 204


def test_partly_bad_request_is_400_naming_the_problem_and_keeps_the_valid_series(
    app: FastAPI, registry: CollectorRegistry
) -> None:
    good = [(NOW_MS - 2000, STALE_NAN), (NOW_MS - 1000, 7)]
    body = body_of(
        time_series(UP, good),
        time_series([("job", "no-name")], [(NOW_MS, 1), (NOW_MS + 1, 2), (NOW_MS + 2, 3)]),
    )

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, body)

    answer = run(app, scenario)
    assert answer.status_code == 400
    reason = answer.text.rstrip("\n")
    assert "\n" not in reason
    assert reason.startswith("rejected 3 samples (3 missing_metric_name), kept 2; first: ")
    assert "no-name" in reason
    assert head_series(app) == {tuple(UP): good}
    assert (
        registry.get_sample_value(
            "strata_samples_rejected_total", {"tenant": "default", "reason": "missing_metric_name"}
        )
        == 3
    )
    assert (
        registry.get_sample_value(
            "strata_series_rejected_total", {"tenant": "default", "reason": "missing_metric_name"}
        )
        == 1
    )
    assert registry.get_sample_value("strata_samples_received_total", {"tenant": "default"}) == 2
    assert registry.get_sample_value("strata_write_requests_total", {"code": "400"}) == 1


def test_histograms_samples_and_exemplars_of_one_series_are_all_kept(app: FastAPI) -> None:
    series = time_series(UP, [(NOW_MS, 1)])
    series.histograms.append(types_pb2.Histogram(count_int=3, timestamp=NOW_MS))
    series.exemplars.append(types_pb2.Exemplar(value=1.0, timestamp=NOW_MS))

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, body_of(series))

    answer = run(app, scenario)
    assert answer.status_code == 204, answer.text
    assert head_series(app) == {tuple(UP): [(NOW_MS, 1)]}
    tenant_head = gateway_of(app).head.tenant("default")
    ref = next(iter(tenant_head.ref_by_key.values()))
    stored = tenant_head.histograms.get(ref, NOW_MS)
    assert stored is not None
    assert types_pb2.Histogram.FromString(stored).count_int == 3
    kept = gateway_of(app).ingester.exemplars.tenants["default"].ring
    assert [(e.series, e.timestamp) for e in kept] == [(tuple(UP), NOW_MS)]


def test_resend_is_204_and_a_different_value_at_a_stored_timestamp_is_400(
    app: FastAPI, registry: CollectorRegistry
) -> None:
    body = body_of(time_series(UP, [(NOW_MS, STALE_NAN), (NOW_MS + 1, 1)]))
    changed = body_of(time_series(UP, [(NOW_MS, 0x7FF8000000000000)]))

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await post(client, body), await post(client, body), await post(client, changed)]

    first, resend, conflict = run(app, scenario)
    assert (first.status_code, resend.status_code, conflict.status_code) == (204, 204, 400)
    assert "duplicate_timestamp" in conflict.text
    assert head_series(app) == {tuple(UP): [(NOW_MS, STALE_NAN), (NOW_MS + 1, 1)]}
    assert (
        registry.get_sample_value(
            "strata_samples_rejected_total", {"tenant": "default", "reason": "duplicate_timestamp"}
        )
        == 1
    )


@pytest.mark.parametrize(
    ("timestamp", "reason"),
    [
        (NOW_MS + 3_600_000, "too_far_in_future"),
        (np.iinfo(np.int64).min, "timestamp_out_of_range"),
    ],
)
def test_samples_with_unacceptable_timestamps_are_rejected(
    app: FastAPI, registry: CollectorRegistry, timestamp: int, reason: str
) -> None:
    body = body_of(time_series(UP, [(timestamp, 1), (NOW_MS, 2)]))

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, body)

    answer = run(app, scenario)
    assert answer.status_code == 400
    assert reason in answer.text
    assert head_series(app) == {tuple(UP): [(NOW_MS, 2)]}
    assert (
        registry.get_sample_value(
            "strata_samples_rejected_total", {"tenant": "default", "reason": reason}
        )
        == 1
    )


def test_samples_a_little_ahead_of_the_clock_are_accepted(app: FastAPI) -> None:
    ahead = int(time.time() * 1000) + 60_000  # within max_future_ms (10 minutes)

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, body_of(time_series(UP, [(ahead, 1)])))

    assert run(app, scenario).status_code == 204


def test_body_over_max_request_bytes_is_413(tmp_path: Path, registry: CollectorRegistry) -> None:
    app = create_app(GatewayConfig(data_dir=tmp_path, max_request_bytes=1000), registry)
    big = snappy.compress(os.urandom(1500))

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 100):
            yield big[start : start + 100]

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        declared = await post(client, big)
        streamed = await client.post("/api/v1/write", content=chunks(), headers=WRITE_HEADERS)
        return [declared, streamed]

    declared, streamed = run(app, scenario)
    assert declared.status_code == 413
    assert "1000" in declared.text
    assert streamed.status_code == 413
    assert registry.get_sample_value("strata_write_requests_total", {"code": "413"}) == 2


def test_body_declaring_too_much_decompressed_data_is_413(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    config = GatewayConfig(data_dir=tmp_path, max_decompressed_bytes=1000)
    app = create_app(config, registry)
    large = body_of(time_series([("__name__", "x" * 1200)], [(NOW_MS, 1)]))

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        bomb = await post(client, b"\x80\x80\x80\x80\x10\x00")
        return [bomb, await post(client, large)]

    bomb, too_large = run(app, scenario)
    assert bomb.status_code == too_large.status_code == 413
    assert str(1 << 32) in bomb.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Encoding": "gzip"},
        {"Content-Encoding": ""},
        {"Content-Type": "application/json"},
        {"Content-Type": "application/x-protobuf;proto=io.prometheus.write.v3.Request"},
    ],
)
def test_unsupported_encoding_or_message_is_415(app: FastAPI, headers: dict[str, str]) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        sent = {**WRITE_HEADERS, **headers}
        return await client.post(
            "/api/v1/write", content=body_of(time_series(UP, [(NOW_MS, 1)])), headers=sent
        )

    answer = run(app, scenario)
    assert answer.status_code == 415
    assert head_series(app) == {}


def test_request_without_content_encoding_is_415(app: FastAPI) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            "/api/v1/write",
            content=body_of(time_series(UP, [(NOW_MS, 1)])),
            headers={"Content-Type": "application/x-protobuf"},
        )

    assert run(app, scenario).status_code == 415


GARBAGE = [
    b"",
    b"garbage",
    b"\xff\xff\xff\xff\xff\xff",
    snappy.compress(b"\xff\xff\xff"),
    snappy.compress(b"\x0a\x05ab"),
    body_of(time_series(UP, [(NOW_MS, 1)]))[:-4],
    snappy.compress(
        RawWriteRequest(
            timeseries=[RawTimeSeries(labels=[b"\x0a\x02\xff\xfe"], samples=[RawSample()])]
        ).SerializeToString()
    ),
]


@pytest.mark.parametrize("body", GARBAGE)
def test_garbage_is_400(app: FastAPI, body: bytes) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, body)

    answer = run(app, scenario)
    assert answer.status_code == 400
    assert "\n" not in answer.text.rstrip("\n")
    assert "Traceback" not in answer.text


def test_random_bodies_never_get_a_5xx(app: FastAPI) -> None:
    rng = np.random.default_rng(7)
    bodies = [rng.bytes(int(n)) for n in rng.integers(1, 200, 150)]
    bodies += [snappy.compress(rng.bytes(int(n))) for n in rng.integers(1, 200, 150)]
    valid = write_request_bytes()
    for _ in range(150):
        mutated = bytearray(valid)
        mutated[int(rng.integers(len(mutated)))] = int(rng.integers(256))
        bodies.append(snappy.compress(bytes(mutated)))

    async def scenario(client: httpx.AsyncClient) -> list[int]:
        return [(await post(client, body)).status_code for body in bodies]

    statuses = run(app, scenario)
    assert set(statuses) <= {204, 400, 413}
    assert statuses.count(400) > len(bodies) // 2


def write_request_bytes() -> bytes:
    decompressed: bytes = snappy.decompress(
        body_of(time_series(UP, [(NOW_MS, 1), (NOW_MS + 1, STALE_NAN)]))
    )
    return decompressed


def test_tenants_keep_their_data_apart(app: FastAPI, registry: CollectorRegistry) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[int]:
        answers = [
            await post(client, body_of(time_series(UP, [(NOW_MS, 1)])), x_scope_orgid="team-a"),
            await post(client, body_of(time_series(UP, [(NOW_MS, 2)])), x_scope_orgid="team_b.2"),
            await post(client, body_of(time_series(UP, [(NOW_MS, 3)]))),
        ]
        return [a.status_code for a in answers]

    assert run(app, scenario) == [204, 204, 204]
    assert head_series(app, "team-a") == {tuple(UP): [(NOW_MS, 1)]}
    assert head_series(app, "team_b.2") == {tuple(UP): [(NOW_MS, 2)]}
    assert head_series(app, "default") == {tuple(UP): [(NOW_MS, 3)]}
    assert registry.get_sample_value("strata_samples_received_total", {"tenant": "team-a"}) == 1


def test_default_tenant_is_configurable(tmp_path: Path, registry: CollectorRegistry) -> None:
    app = create_app(GatewayConfig(data_dir=tmp_path, default_tenant="home"), registry)

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, body_of(time_series(UP, [(NOW_MS, 1)])))

    assert run(app, scenario).status_code == 204
    assert head_series(app, "home") == {tuple(UP): [(NOW_MS, 1)]}


@pytest.mark.parametrize(
    "tenant", ["..", ".", "a/b", "../etc", "a b", "x" * 151, "é".encode(), "", "a\\b"]
)
def test_bad_tenant_id_is_400(app: FastAPI, tenant: str | bytes) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        body = body_of(time_series(UP, [(NOW_MS, 1)]))
        headers = {k.encode(): v.encode() for k, v in WRITE_HEADERS.items()}
        headers[b"X-Scope-OrgID"] = tenant if isinstance(tenant, bytes) else tenant.encode()
        return await client.post("/api/v1/write", content=body, headers=headers)

    answer = run(app, scenario)
    assert answer.status_code == 400
    assert "tenant" in answer.text
    assert gateway_of(app).head.tenants == {}


def test_health_and_readiness(app: FastAPI, registry: CollectorRegistry) -> None:
    async def scenario(client: httpx.AsyncClient) -> list[int]:
        return [
            (await client.get("/-/healthy")).status_code,
            (await client.get("/-/ready")).status_code,
        ]

    assert run(app, scenario) == [200, 200]
    assert registry.get_sample_value("strata_ready") == 0  # after shutdown


def test_not_ready_and_writes_refused_with_503_while_replaying(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaying = threading.Event()
    release = threading.Event()

    def slow_replay(wal_dir: Path, head: Head, metrics: GatewayMetrics) -> ReplayReport:
        replaying.set()
        release.wait(10)
        return ReplayReport()

    monkeypatch.setattr(gateway.app, "replay", slow_replay)

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        await asyncio.to_thread(replaying.wait, 10)
        answers = [
            await client.get("/-/healthy"),
            await client.get("/-/ready"),
            await post(client, body_of(time_series(UP, [(NOW_MS, 1)]))),
        ]
        release.set()
        await wait_ready(client)
        answers.append(await post(client, body_of(time_series(UP, [(NOW_MS, 1)]))))
        return answers

    healthy, ready, refused, accepted = run(app, scenario, ready=False)
    assert (healthy.status_code, ready.status_code) == (200, 503)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert accepted.status_code == 204


def scraped(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value of a /metrics page."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_show_received_and_rejected_samples(app: FastAPI) -> None:
    body = body_of(time_series(UP, [(NOW_MS, 1)]), time_series([("a", "b")], [(NOW_MS, 1)]))

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        await post(client, body)
        return await client.get("/metrics")

    answer = run(app, scenario)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    values = scraped(answer.text)
    default = frozenset({("tenant", "default")})
    rejected = default | {("reason", "missing_metric_name")}
    assert values["strata_samples_received_total", default] == 1
    assert values["strata_samples_rejected_total", rejected] == 1
    assert values["strata_head_series", default] == 1
    assert values["strata_wal_fsync_duration_seconds_count", frozenset()] >= 1
    assert values["strata_ready", frozenset()] == 1


def test_metrics_are_served_at_metrics_without_a_redirect(app: FastAPI) -> None:
    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.get("/metrics")

    answer = run(app, scenario)
    assert answer.status_code == 200, f"GET /metrics answered {answer.status_code}"
    assert "strata_ready" in answer.text


def test_restart_serves_the_same_head_bit_exact(tmp_path: Path) -> None:
    # The day-old sample would be cut into a block at the first shipper round; this test
    # is about WAL replay into the head, so no window is ever due here.
    config = GatewayConfig(data_dir=tmp_path, cut_grace_ms=10**15)
    first = create_app(config, CollectorRegistry())
    stale = [(NOW_MS - 30_000 + i, bits) for i, bits in enumerate(SPECIAL_BITS)]
    bodies = [
        body_of(time_series(UP, stale)),
        body_of(time_series([("__name__", "late")], [(NOW_MS - 86_400_000, STALE_NAN)])),
        body_of(time_series(UP[::-1], [(NOW_MS - 60_000, 42)])),
    ]

    async def write_all(client: httpx.AsyncClient) -> list[int]:
        answers = [await post(client, body) for body in bodies]
        answers.append(await post(client, bodies[0], x_scope_orgid="other"))
        return [a.status_code for a in answers]

    assert run(first, write_all) == [204] * 4
    before = {t: head_series(first, t) for t in ("default", "other")}
    assert before["default"][tuple(UP)][0] == (NOW_MS - 60_000, 42)
    assert before["default"][(("__name__", "late"),)] == [(NOW_MS - 86_400_000, STALE_NAN)]

    registry = CollectorRegistry()
    second = create_app(config, registry)

    async def resend(client: httpx.AsyncClient) -> int:
        return (await post(client, bodies[0])).status_code

    assert run(second, resend) == 204
    after = {t: head_series(second, t) for t in ("default", "other")}
    assert after == before
    assert (registry.get_sample_value("strata_wal_replay_records_total") or 0) >= 4
    assert registry.get_sample_value("strata_wal_corruptions_total") == 0


class DiskFull:
    """os.fsync fails with ENOSPC while `full` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = threading.Event()
        self._real_fsync = os.fsync
        monkeypatch.setattr("gateway.wal.os.fsync", self.fsync)

    def fsync(self, fd: int) -> None:
        if self.full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        self._real_fsync(fd)


async def nothing(client: httpx.AsyncClient) -> None:
    return None


def test_disk_full_is_503_with_retry_after_and_the_retry_is_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = GatewayConfig(data_dir=tmp_path)
    app = create_app(config, CollectorRegistry())
    disk = DiskFull(monkeypatch)
    first = body_of(time_series(UP, [(NOW_MS - 1000, 1)]))
    body = body_of(time_series(UP, [(NOW_MS, STALE_NAN)]))

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        answers = [await post(client, first)]
        disk.full.set()
        answers.append(await asyncio.wait_for(post(client, body), 5))
        disk.full.clear()
        answers.append(await post(client, body))
        return answers

    stored, refused, retried = run(app, scenario)
    assert stored.status_code == 204
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert "No space left on device" in refused.text
    assert retried.status_code == 204

    restarted = create_app(config, CollectorRegistry())
    run(restarted, nothing)
    assert head_series(restarted) == {tuple(UP): [(NOW_MS - 1000, 1), (NOW_MS, STALE_NAN)]}


def test_disk_full_when_the_first_segment_is_opened_is_503_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first write after start opens a new segment (header write, fsync): a full disk
    # there must fail the request like any other failed write.
    app = create_app(GatewayConfig(data_dir=tmp_path), CollectorRegistry())
    disk = DiskFull(monkeypatch)
    body = body_of(time_series(UP, [(NOW_MS, STALE_NAN)]))

    async def scenario(client: httpx.AsyncClient) -> list[int]:
        disk.full.set()
        try:
            refused = (await asyncio.wait_for(post(client, body), 5)).status_code
        except TimeoutError:
            refused = -1  # still waiting for the WAL after 5 s
        disk.full.clear()
        return [refused, (await post(client, body)).status_code]

    assert run(app, scenario) == [503, 204]


def test_head_over_its_memory_budget_answers_503(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    app = create_app(GatewayConfig(data_dir=tmp_path, head_max_bytes=1), registry)

    async def scenario(client: httpx.AsyncClient) -> list[int]:
        first = await post(client, body_of(time_series(UP, [(NOW_MS, 1)])))
        second = await post(client, body_of(time_series(UP, [(NOW_MS + 1, 1)])))
        return [first.status_code, second.status_code]

    assert run(app, scenario) == [204, 503]
    assert head_series(app) == {tuple(UP): [(NOW_MS, 1)]}


def test_label_bytes_split_differently_are_validated_not_matched(app: FastAPI) -> None:
    # {__name__="m", a="b"} and a series whose labels are __name__="m", a label with the
    # name "a" and no value, and a label with no name and the value "b": the label
    # messages concatenate to the same bytes, but the second label set is invalid.
    name = label_bytes("__name__", "m")
    split = RawWriteRequest(
        timeseries=[
            RawTimeSeries(
                labels=[name, LabelPair(name="a").SerializeToString(), label_bytes("", "b")],
                samples=[RawSample(value=2.0, timestamp=NOW_MS + 1)],
            )
        ]
    )

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        valid = await post(
            client, body_of(time_series([("__name__", "m"), ("a", "b")], [(NOW_MS, 1)]))
        )
        alone = await post(client, snappy.compress(split.SerializeToString()), x_scope_orgid="t2")
        after = await post(client, snappy.compress(split.SerializeToString()))
        return [valid, alone, after]

    valid, alone, after = run(app, scenario)
    assert valid.status_code == 204
    assert alone.status_code == 400
    assert "invalid_label_name" in alone.text
    # The same invalid label set must get the same answer when a valid series happens to
    # have the same concatenated bytes.
    assert after.status_code == 400, "an invalid label set was stored as {__name__='m', a='b'}"
    assert head_series(app) == {(("__name__", "m"), ("a", "b")): [(NOW_MS, 1)]}


def test_the_aggregate_label_of_downsampled_series_is_refused(
    app: FastAPI, registry: CollectorRegistry
) -> None:
    posing = [("__name__", "up"), ("__strata_aggr__", "max"), ("job", "node")]
    body = body_of(time_series(UP, [(NOW_MS, 1)]), time_series(posing, [(NOW_MS, 9)]))

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await post(client, body)

    answer = run(app, scenario)
    assert answer.status_code == 400
    assert answer.text.startswith("rejected 1 samples (1 reserved_label), kept 1; first: ")
    assert "'__strata_aggr__' is reserved" in answer.text
    assert head_series(app) == {tuple(UP): [(NOW_MS, 1)]}
    rejected = {"tenant": "default", "reason": "reserved_label"}
    assert registry.get_sample_value("strata_series_rejected_total", rejected) == 1
