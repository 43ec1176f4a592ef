"""`strata query` serves GET /api/v1/metadata from the tenants' metadata copies in the
bucket (the same answers as `strata serve`, fetched again only once the copy is older than
the bucket-index refresh), with the read routes' auth and tenant rules, and answers
/api/v1/query_exemplars with a Prometheus-shaped 404: exemplars live on gateways (issue 8).

In process through the real apps; `test_over_loopback_*` runs both as processes.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import snappy
from prometheus_client import CollectorRegistry

from blocks.errors import StorageError
from blocks.objstore.local import LocalStore
from gateway import metadata_store
from gateway.auth import token_sha256
from gateway.config import GatewayConfig
from gateway.metadata_api import EXEMPLARS_ELSEWHERE, EXEMPLARS_PATH, METADATA_PATH
from gateway.metadata_store import (
    BucketMetadata,
    MetadataRecord,
    bucket_key,
    encode_document,
)
from querier.app import create_query_app
from tests.e2e.conftest import attach_log
from tests.e2e.servers import (
    HOST,
    STRATA_READY_TIMEOUT_S,
    Process,
    StrataServer,
    free_port,
    strata_command,
    wait_until_ready,
)
from tests.gateway.test_metadata_exemplars import FORM, body_json, get, open_app, seed
from tests.gateway.writes import WRITE_HEADERS, write_request
from tests.support.asgi import InProcessApp

# Every parameter form and one refusal, as `strata serve`'s tests ask them.
ASKED = [
    "",
    "?metric=temperature",
    "?metric=nope",
    "?limit=2",
    "?limit_per_metric=1",
    "?limit=1&limit_per_metric=1",
    "?limit=ten",
]
TENANTS = ["default", "team-b", "team-c"]
NOT_HERE = {"status": "error", "errorType": "not_found", "error": EXEMPLARS_ELSEWHERE}
REFRESH_S = 2.0
CHANGE_TIMEOUT_S = 10.0


def open_querier(data_dir: Path, **settings: Any) -> InProcessApp:
    config = GatewayConfig(data_dir=data_dir, **settings)
    return InProcessApp(create_query_app(config, CollectorRegistry()))


def answers(app: InProcessApp) -> dict[tuple[str, str], tuple[int, Any]]:
    """Status and JSON of every asked form, for every tenant."""
    out = {}
    for tenant in TENANTS:
        for asked in ASKED:
            answer = get(app, METADATA_PATH + asked, {"X-Scope-OrgID": tenant})
            out[tenant, asked] = (answer.status, body_json(answer))
    return out


def put_document(store: LocalStore, tenant: str, **types: str) -> None:
    """A bucket copy describing each metric as the given type."""
    records = [(name, MetadataRecord(kind, "", f"{name}.", 1)) for name, kind in types.items()]
    store.put(bucket_key(tenant), encode_document(tenant, records))


def test_strata_query_answers_metadata_as_strata_serve_does(tmp_path: Path) -> None:
    with open_app(tmp_path) as gateway:
        seed(gateway)
        only_b = snappy.compress(write_request(metadata=["only_b"]).SerializeToString())
        headers = {**WRITE_HEADERS, "X-Scope-OrgID": "team-b"}
        assert gateway.post("/api/v1/write", only_b, headers).status == 204
        served = answers(gateway)
    # The gateway's shutdown copied its metadata to the bucket.
    with open_querier(tmp_path) as querier:
        assert answers(querier) == served
    assert list(served["default", ""][1]["data"]) == ["http_requests_total", "temperature", "up"]
    assert list(served["team-b", ""][1]["data"]) == ["only_b"]
    assert served["team-c", ""] == (200, {"status": "success", "data": {}})
    assert served["default", "?limit=ten"][1]["errorType"] == "bad_data"


def test_query_exemplars_is_a_prometheus_shaped_404_naming_strata_serve(tmp_path: Path) -> None:
    LocalStore(tmp_path / "bucket").close()
    with open_querier(tmp_path) as querier:
        asked = [
            querier.request("GET", EXEMPLARS_PATH),
            get(querier, EXEMPLARS_PATH + "?query=up&start=0"),
            querier.post(EXEMPLARS_PATH, b"query=up", FORM),
        ]
    for answer in asked:
        assert answer.status == 404
        assert body_json(answer) == NOT_HERE
    assert "`strata serve`" in NOT_HERE["error"]


def test_the_bucket_copy_is_fetched_again_once_older_than_the_refresh(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "bucket")
    put_document(store, "default", jobs="gauge")
    with open_querier(tmp_path, bucket_index_refresh_s=REFRESH_S) as querier:
        first = body_json(get(querier, METADATA_PATH))["data"]
        assert first == {"jobs": [{"type": "gauge", "help": "jobs.", "unit": ""}]}
        put_document(store, "default", jobs="counter")
        # Cached: the copy is not read again for every request.
        assert body_json(get(querier, METADATA_PATH))["data"] == first
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        while body_json(get(querier, METADATA_PATH))["data"] == first:
            assert time.monotonic() < deadline, "the bucket copy was never fetched again"
            time.sleep(0.1)
        assert body_json(get(querier, METADATA_PATH))["data"]["jobs"][0]["type"] == "counter"
    store.close()


def test_a_failing_bucket_is_a_prometheus_shaped_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    LocalStore(tmp_path / "bucket").close()

    def failing_get(store: LocalStore, key: str) -> bytes:
        raise StorageError("get", key, "the disk is gone")

    with open_querier(tmp_path) as querier:
        monkeypatch.setattr(LocalStore, "get", failing_get)
        answer = get(querier, METADATA_PATH)
    assert answer.status == 503
    assert "retry-after" in answer.headers
    assert body_json(answer) == {
        "status": "error",
        "errorType": "unavailable",
        "error": f"storage get failed for {bucket_key('default')}: the disk is gone",
    }


class CountingStore(LocalStore):
    """A local bucket that counts whole-object reads."""

    gets = 0

    def get(self, key: str) -> bytes:
        self.gets += 1
        return super().get(key)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """metadata_store's monotonic clock, moved by hand."""
    now = SimpleNamespace(s=1000.0)
    monkeypatch.setattr(metadata_store, "time", SimpleNamespace(monotonic=lambda: now.s))
    return now


def test_bucket_metadata_reads_a_copy_once_per_refresh_and_forgets_old_tenants(
    tmp_path: Path, clock: SimpleNamespace
) -> None:
    with CountingStore(tmp_path / "bucket") as store:
        put_document(store, "a", up="gauge")
        cache = BucketMetadata(store, refresh_s=30.0)
        for _ in range(5):
            assert list(cache.query("a", None, 0, 0)) == ["up"]
        assert store.gets == 1
        for number in range(50):
            assert cache.query(f"t{number}", None, 0, 0) == {}
        assert (store.gets, len(cache)) == (51, 51)
        clock.s += 30.0
        put_document(store, "a", up="counter", down="gauge")
        assert cache.query("a", "up", 0, 0) == {
            "up": [{"type": "counter", "help": "up.", "unit": ""}]
        }
        # Expired tenants went when "a" was fetched again: held are those of one interval.
        assert (store.gets, len(cache)) == (52, 1)


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth.json"
    tokens = [
        {"name": "w", "sha256": token_sha256("tok-w"), "write": ["team-a"]},
        {"name": "r", "sha256": token_sha256("tok-r"), "read": ["team-a"]},
    ]
    path.write_text(json.dumps({"tokens": tokens}))
    return path


def test_auth_and_tenants_are_those_of_remote_read(tmp_path: Path, auth_file: Path) -> None:
    with LocalStore(tmp_path / "bucket") as store:
        put_document(store, "team-a", a_only="counter")
        put_document(store, "team-b", b_only="counter")
    reader = {"Authorization": "Bearer tok-r"}
    with open_querier(tmp_path, auth_file=str(auth_file)) as querier:
        statuses = [
            get(querier, METADATA_PATH).status,
            get(querier, METADATA_PATH, {"Authorization": "Bearer tok-w"}).status,
            get(querier, METADATA_PATH, {**reader, "X-Scope-OrgID": "team-b"}).status,
            get(querier, EXEMPLARS_PATH).status,
            get(querier, EXEMPLARS_PATH, reader).status,
        ]
        # A credential reading one tenant implies it, as for /api/v1/read.
        implied = body_json(get(querier, METADATA_PATH, reader))
        named = body_json(get(querier, METADATA_PATH, {**reader, "X-Scope-OrgID": "team-a"}))
    assert statuses == [401, 403, 403, 401, 404]
    assert (
        implied
        == named
        == {
            "status": "success",
            "data": {"a_only": [{"type": "counter", "help": "a_only.", "unit": ""}]},
        }
    )


@pytest.fixture
def gateway_and_querier(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[StrataServer, str]]:
    """`strata serve` and `strata query` on one data directory, loopback ports."""
    data_dir = tmp_path / "data"
    gateway = StrataServer(data_dir, tmp_path / "serve.log")
    attach_log(request.node, "strata serve", gateway.log_path)
    querier = Process("strata query", tmp_path / "query.log")
    attach_log(request.node, "strata query", querier.log_path)
    port = free_port()
    try:
        gateway.start()
        querier.spawn(
            [
                *strata_command(),
                "query",
                "--data-dir",
                str(data_dir),
                "--listen",
                f"{HOST}:{port}",
                "--bucket-index-refresh-s",
                "0.5",
            ]
        )
        url = f"http://{HOST}:{port}"
        wait_until_ready(querier, f"{url}/-/ready", STRATA_READY_TIMEOUT_S)
        yield gateway, url
    finally:
        if querier.running:
            querier.signal_and_wait(signal.SIGTERM)
        gateway.stop()


@pytest.mark.e2e
def test_over_loopback_strata_query_serves_what_the_gateway_copied(
    gateway_and_querier: tuple[StrataServer, str],
) -> None:
    gateway, querier_url = gateway_and_querier
    body = snappy.compress(write_request(metadata=["jobs_total", "queue"]).SerializeToString())
    headers = {**WRITE_HEADERS, "X-Scope-OrgID": "team-a"}
    assert (
        httpx.post(gateway.write_url, content=body, headers=headers, timeout=10).status_code == 204
    )
    tenant = {"X-Scope-OrgID": "team-a"}
    want = httpx.get(f"{gateway.url}{METADATA_PATH}", headers=tenant, timeout=10).json()
    assert list(want["data"]) == ["jobs_total", "queue"]
    # A tenant's first metadata is copied to the bucket at once, in the background.
    deadline = time.monotonic() + CHANGE_TIMEOUT_S
    while True:
        got = httpx.get(f"{querier_url}{METADATA_PATH}", headers=tenant, timeout=10)
        assert got.status_code == 200, got.text
        if got.json() == want:
            break
        assert time.monotonic() < deadline, f"strata query answers {got.json()}, not {want}"
        time.sleep(0.2)
    exemplars = httpx.get(f"{querier_url}{EXEMPLARS_PATH}?query=up", headers=tenant, timeout=10)
    assert exemplars.status_code == 404
    assert exemplars.json() == NOT_HERE
