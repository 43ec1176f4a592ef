"""Per-tenant limits: the settings as defaults, a file of overrides checked at start, and
the ingestion rate as token buckets."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable
from pathlib import Path

import httpx
import numpy as np
import pytest
import snappy

from gateway.config import ConfigError, GatewayConfig
from gateway.tenant_limits import Limits, RateLimited, RateLimiter, defaults_of
from proto import remote_pb2
from tests.gateway.writes import WRITE_HEADERS, time_series
from tests.querier.test_read_api import (
    READ_HEADERS,
    LabelSet,
    gateway_app,
    matcher,
    read_request,
    read_samples,
    run,
)


def config_with(tmp_path: Path, overrides: object, **settings: object) -> GatewayConfig:
    path = tmp_path / "limits.json"
    path.write_text(json.dumps(overrides))
    return GatewayConfig(data_dir=tmp_path, limits_file=str(path), **settings)  # type: ignore[arg-type]


def test_a_tenant_in_the_file_gets_its_values_and_the_rest_the_settings(tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        {"big": {"max_active_series": 500_000, "ingestion_rate": 1000}},
        max_active_series=1000,
        ingestion_rate=100.0,
    )
    limits = Limits(config)
    assert limits.of("other") == defaults_of(config)
    big = limits.of("big")
    assert big.max_active_series == 500_000
    assert big.ingestion_rate == 1000.0
    assert big.ingestion_burst == 1000  # a rate without a burst: one second's worth
    assert big.max_labels_per_series == config.max_labels_per_series


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ([1], "JSON object of tenants"),
        ({"t": 5}, "not an object"),
        ({"t": {"max_series": 5}}, "unknown \\['max_series'\\]"),
        ({"t": {"ingestion_rate": "fast"}}, "ingestion_rate: must be a number"),
        ({"t": {"max_active_series": -1}}, "must not be negative"),
        ({"t": {"max_active_series": True}}, "must be a number"),
    ],
)
def test_a_bad_limits_file_is_refused_naming_tenant_and_key(
    tmp_path: Path, overrides: object, why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        Limits(config_with(tmp_path, overrides))


def test_the_rate_limiter_allows_the_burst_then_the_rate(tmp_path: Path) -> None:
    limits = defaults_of(
        GatewayConfig(data_dir=tmp_path, ingestion_rate=1000.0, ingestion_burst=500)
    )
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    limiter.take("t", 500, limits)
    with pytest.raises(RateLimited, match=r"ingestion_rate=1000 samples/s, ingestion_burst=500"):
        limiter.take("t", 100, limits)
    limiter.take("u", 500, limits)  # another tenant has its own bucket
    now[0] += 0.15  # 150 tokens come back
    limiter.take("t", 100, limits)
    with pytest.raises(RateLimited):
        limiter.take("t", 501, limits)  # never more than the burst at once


def test_no_rate_means_no_limit(tmp_path: Path) -> None:
    limits = defaults_of(GatewayConfig(data_dir=tmp_path))
    limiter = RateLimiter()
    for _ in range(100):
        limiter.take("t", 1_000_000, limits)


# --- through the HTTP path ---------------------------------------------------------------


def post_write(
    client: httpx.AsyncClient, series: dict[LabelSet, list[tuple[int, int]]], tenant: str
) -> Awaitable[httpx.Response]:
    request = remote_pb2.WriteRequest(
        timeseries=[time_series(labels, samples) for labels, samples in series.items()]
    )
    return client.post(
        "/api/v1/write",
        content=snappy.compress(request.SerializeToString()),
        headers={**WRITE_HEADERS, "X-Scope-OrgID": tenant},
    )


def one(name: str, ts: int, value: float = 1.0) -> dict[LabelSet, list[tuple[int, int]]]:
    bits = int(np.float64(value).view(np.uint64))
    return {(("__name__", name), ("job", "j")): [(ts, bits)]}


def test_over_the_rate_a_request_gets_429_naming_the_limit(tmp_path: Path) -> None:
    app = gateway_app(tmp_path, ingestion_rate=5.0, ingestion_burst=10)
    now = int(time.time() * 1000)
    many: dict[LabelSet, list[tuple[int, int]]] = {
        (("__name__", f"m{i}"),): [(now, 0)] for i in range(8)
    }

    async def scenario(client: httpx.AsyncClient) -> None:
        assert (await post_write(client, many, "t")).status_code == 204
        refused = await post_write(client, many, "t")
        assert refused.status_code == 429, refused.text
        assert "ingestion_rate=5 samples/s, ingestion_burst=10" in refused.text
        assert (await post_write(client, many, "other")).status_code == 204
        metrics = (await client.get("/metrics", follow_redirects=True)).text
        assert 'strata_samples_rejected_total{reason="rate_limited",tenant="t"} 8.0' in metrics

    run(app, scenario)


def test_limits_file_caps_one_tenants_active_series_and_query_series(tmp_path: Path) -> None:
    limits = tmp_path / "limits.json"
    limits.write_text(
        json.dumps(
            {"small": {"max_active_series": 2, "query_max_series": 1, "max_request_bytes": 60}}
        )
    )
    app = gateway_app(tmp_path / "data", limits_file=str(limits))
    now = int(time.time() * 1000)

    async def scenario(client: httpx.AsyncClient) -> None:
        for tenant in ("small", "big"):
            for name in ("a", "b"):
                assert (await post_write(client, one(name, now), tenant)).status_code == 204
        refused = await post_write(client, one("c", now), "small")
        assert refused.status_code == 400
        assert "1 max_active_series" in refused.text
        assert "max_active_series=2" in refused.text
        assert (await post_write(client, one("c", now), "big")).status_code == 204
        assert (await post_write(client, one("a", now + 1000), "small")).status_code == 204
        big_body: dict[LabelSet, list[tuple[int, int]]] = {
            (("__name__", hashlib.sha256(b"name").hexdigest() * 3),): [(now, 0)]
        }
        too_large = await post_write(client, big_body, "small")
        assert too_large.status_code == 413, too_large.text
        assert "over the limit of 60" in too_large.text
        assert (await post_write(client, big_body, "big")).status_code == 204

        query = (now - 60_000, now + 60_000, [matcher("job", "j")])
        answer = await client.post(
            "/api/v1/read",
            content=read_request([query]),
            headers={**READ_HEADERS, "X-Scope-OrgID": "small"},
        )
        assert answer.status_code == 422, answer.text
        assert "query_max_series" in answer.text
        [big] = await read_samples(client, [query], tenant="big")
        assert len(big) == 3

    run(app, scenario)


def test_samples_older_than_the_age_limit_are_refused_the_rest_kept(tmp_path: Path) -> None:
    app = gateway_app(tmp_path, max_sample_age_ms=3_600_000)
    now = int(time.time() * 1000)
    series: dict[LabelSet, list[tuple[int, int]]] = {
        (("__name__", "x"),): [(now - 2 * 3_600_000, 0), (now, 0)]
    }

    async def scenario(client: httpx.AsyncClient) -> None:
        answer = await post_write(client, series, "t")
        assert answer.status_code == 400
        assert "rejected 1 samples (1 too_old), kept 1" in answer.text
        assert "older than max_sample_age_ms=3600000" in answer.text

    run(app, scenario)
