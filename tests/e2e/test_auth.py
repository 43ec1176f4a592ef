"""Authentication and TLS end to end: `strata serve` and `strata query` over HTTPS with an
auth file, and real Prometheus 2.42 clients.

Prometheus A scrapes itself and remote-writes over HTTPS through four queues: with
`bearer_token` (its token may write team-a only, so no X-Scope-OrgID is needed), with
`authorization` (a token for team-b only), with no credentials, and with a token that may
write two tenants and so, without a header, is for the default tenant, which it may not
write. The first two must deliver, the last two must be refused (401, 403) and counted on
both sides. (Debian's Prometheus 2.42 sends no `headers:` of its config at all,
prometheus/prometheus#13030: a credential bound to one tenant is how it picks one.)
Prometheus B reads through `remote_read` with `basic_auth` and answers PromQL from
Strata. Every endpoint refuses a request without credentials; `strata query` over the
flushed bucket does too, and answers the same user's reads.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import snappy

from gateway.auth import hash_password, token_sha256
from proto import remote_pb2, types_pb2
from tests.e2e.conftest import attach_log
from tests.e2e.servers import (
    HOST,
    Process,
    PrometheusServer,
    free_port,
    log_tail,
    metric_value,
    parse_metrics_text,
    prometheus_config,
    strata_command,
)
from tests.e2e.test_remote_read_promql import started_prometheus

pytestmark = pytest.mark.e2e

TOKEN_TEAM_A = "e2e-token-for-team-a-0123456789"
TOKEN_TEAM_B = "e2e-token-for-team-b-9876543210"
TOKEN_OPS = "e2e-token-for-ops-5555555555"
TOKEN_TWO_TENANTS = "e2e-token-for-two-tenants-7777777"
READER = ("grafana", "correct horse battery staple")
READY_TIMEOUT_S = 30.0
DELIVERY_TIMEOUT_S = 40.0
FAILED_SAMPLES = "prometheus_remote_storage_samples_failed_total"
WRITE_PATHS = ("/api/v1/write", "/api/v1/push", "/api/v1/receive")
READ_PATH = "/api/v1/read"
FLUSH_PATH = "/api/v1/admin/flush"
HOUR_MS = 3_600_000


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made by openssl (missing: a failure)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed: `apt-get install openssl`")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={HOST}",
            "-addext",
            f"subjectAltName=IP:{HOST}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def auth_document() -> dict[str, Any]:
    return {
        "tokens": [
            {"name": "prometheus-a", "sha256": token_sha256(TOKEN_TEAM_A), "write": ["team-a"]},
            {"name": "prometheus-b", "sha256": token_sha256(TOKEN_TEAM_B), "write": ["team-b"]},
            {
                "name": "two-tenants",
                "sha256": token_sha256(TOKEN_TWO_TENANTS),
                "write": ["team-x", "team-y"],
            },
            {
                "name": "ops",
                "sha256": token_sha256(TOKEN_OPS),
                "write": ["*"],
                "read": ["*"],
                "admin": True,
            },
        ],
        "users": [
            {"username": READER[0], "password": hash_password(READER[1]), "read": ["team-a"]}
        ],
    }


class HttpsServer:
    """`strata serve` or `strata query` with TLS and an auth file, stopped by pid."""

    def __init__(self, command: str, base: Path, args: list[str], context: ssl.SSLContext) -> None:
        self.command = command
        self.port = free_port()
        self.args = args
        self.process = Process(f"strata {command}", base / f"strata-{command}.log")
        self.client = httpx.Client(base_url=self.url, verify=context, timeout=10.0)

    @property
    def url(self) -> str:
        """Base URL, https."""
        return f"https://{HOST}:{self.port}"

    def start(self) -> None:
        """Start, and return once /-/ready answers 200 over HTTPS without credentials."""
        self.process.spawn(
            [*strata_command(), self.command, "--listen", f"{HOST}:{self.port}", *self.args]
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            code = self.process.exited_early()
            if code is not None:
                pytest.fail(f"strata exited with {code}:\n{log_tail(self.process.log_path)}")
            try:
                answer = self.client.get("/-/ready")
            except httpx.TransportError as exc:
                last = repr(exc)
            else:
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text}"
            time.sleep(0.05)
        pytest.fail(f"strata {self.command} not ready over HTTPS ({last})")

    def stop(self) -> None:
        """SIGTERM, SIGKILL after a grace period; closes the client."""
        if self.process.running:
            self.process.signal_and_wait(signal.SIGTERM)
        self.client.close()

    def metrics(self) -> dict[str, float]:
        """Its /metrics, open without credentials by default."""
        answer = self.client.get("/metrics")
        assert answer.status_code == 200, answer.text
        return parse_metrics_text(answer.text)


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, Path, ssl.SSLContext]:
    cert, key = self_signed_certificate(tmp_path)
    return cert, key, ssl.create_default_context(cafile=str(cert))


@pytest.fixture
def server_args(tmp_path: Path, tls: tuple[Path, Path, ssl.SSLContext]) -> list[str]:
    cert, key, _ = tls
    auth_file = tmp_path / "auth.json"
    auth_file.write_text(json.dumps(auth_document()))
    return [
        "--data-dir",
        str(tmp_path / "strata-data"),
        "--auth-file",
        str(auth_file),
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
    ]


@pytest.fixture
def strata(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tls: tuple[Path, Path, ssl.SSLContext],
    server_args: list[str],
) -> Iterator[HttpsServer]:
    # No cuts while the test runs: the flush at the end moves everything to the bucket.
    server = HttpsServer("serve", tmp_path, [*server_args, "--cut-interval-s", "3600"], tls[2])
    attach_log(request.node, "strata serve", server.process.log_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def remote_write_queue(name: str, url: str, ca_file: Path, **client: Any) -> dict[str, Any]:
    return {
        "url": url,
        "name": name,
        "tls_config": {"ca_file": str(ca_file)},
        "queue_config": {
            "batch_send_deadline": "200ms",
            "max_samples_per_send": 500,
            "min_backoff": "50ms",
            "max_backoff": "1s",
        },
        "metadata_config": {"send": False},
        **client,
    }


@pytest.fixture
def writer(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tls: tuple[Path, Path, ssl.SSLContext],
    strata: HttpsServer,
) -> Iterator[PrometheusServer]:
    """Prometheus A: scrapes itself, remote-writes through four queues (module docstring)."""
    url = f"{strata.url}/api/v1/write"
    ca = tls[0]

    def config_of(server: PrometheusServer) -> dict[str, Any]:
        config = prometheus_config({"prometheus": [server.address]}, None)
        config["remote_write"] = [
            remote_write_queue("bearer-token", url, ca, bearer_token=TOKEN_TEAM_A),
            remote_write_queue(
                "authorization", url, ca, authorization={"credentials": TOKEN_TEAM_B}
            ),
            remote_write_queue("anonymous", url, ca),
            remote_write_queue(
                "default-tenant", url, ca, authorization={"credentials": TOKEN_TWO_TENANTS}
            ),
        ]
        return config

    yield from started_prometheus(request, tmp_path / "prom-writer", config_of)


@pytest.fixture
def reader(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    tls: tuple[Path, Path, ssl.SSLContext],
    strata: HttpsServer,
) -> Iterator[PrometheusServer]:
    """Prometheus B: scrapes nothing, reads team-a (the user's only tenant) with basic auth."""

    def config_of(_: PrometheusServer) -> dict[str, Any]:
        config = prometheus_config({}, None)
        config["remote_read"] = [
            {
                "url": f"{strata.url}/api/v1/read",
                "read_recent": True,
                "basic_auth": {"username": READER[0], "password": READER[1]},
                "tls_config": {"ca_file": str(tls[0])},
            }
        ]
        return config

    yield from started_prometheus(request, tmp_path / "prom-reader", config_of)


def wait_for_delivery(strata: HttpsServer, writer: PrometheusServer) -> dict[str, float]:
    """Until both credited queues delivered and both others were refused; Strata's metrics."""
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    state: dict[str, float] = {}
    while time.monotonic() < deadline:
        ours, theirs = strata.metrics(), writer.own_metrics()
        state = {
            "team-a": metric_value(ours, "strata_samples_received_total", tenant="team-a"),
            "team-b": metric_value(ours, "strata_samples_received_total", tenant="team-b"),
            "anonymous failed": metric_value(theirs, FAILED_SAMPLES, remote_name="anonymous"),
            "default-tenant failed": metric_value(
                theirs, FAILED_SAMPLES, remote_name="default-tenant"
            ),
        }
        if all(value > 0 for value in state.values()):  # NaN (absent) is not > 0
            return ours
        time.sleep(0.5)
    pytest.fail(f"not every queue got its answer within {DELIVERY_TIMEOUT_S:.0f} s: {state}")


def query_until_answered(reader: PrometheusServer, expr: str) -> list[dict[str, Any]]:
    """The first non-empty answer to `expr`, within DELIVERY_TIMEOUT_S.

    Delivery is seen when team-a's first batch arrives, but a scrape's `up` sample is
    appended after the scraped ones and may ride in a later batch: keep asking.
    """
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while True:
        result = reader.query(expr)
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def read_body() -> bytes:
    now_ms = int(time.time() * 1000)
    matcher = types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name="__name__", value="up")
    query = remote_pb2.Query(
        start_timestamp_ms=now_ms - HOUR_MS, end_timestamp_ms=now_ms + HOUR_MS, matchers=[matcher]
    )
    return bytes(snappy.compress(remote_pb2.ReadRequest(queries=[query]).SerializeToString()))


def series_read(answer: httpx.Response) -> list[dict[str, str]]:
    assert answer.status_code == 200, answer.text
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.content))
    return [
        {label.name: label.value for label in series.labels}
        for result in response.results
        for series in result.timeseries
        if series.samples
    ]


def check_every_endpoint_refuses_strangers(strata: HttpsServer) -> None:
    """401 with a challenge on every data and admin endpoint; probes and /metrics open."""
    for path in (*WRITE_PATHS, READ_PATH, FLUSH_PATH):
        for headers in ({}, {"Authorization": "Bearer not-a-token"}):
            answer = strata.client.post(path, content=b"x", headers=headers)
            assert answer.status_code == 401, (path, headers, answer.text)
            assert "Bearer" in answer.headers["www-authenticate"]
    for path in ("/-/healthy", "/-/ready", "/metrics"):
        assert strata.client.get(path).status_code == 200, path
    grafana = httpx.BasicAuth(*READER)
    refused = strata.client.post(FLUSH_PATH, auth=grafana)
    assert (refused.status_code, refused.text) == (
        403,
        "credential 'grafana' may not use admin endpoints\n",
    )


def test_prometheus_writes_and_reads_with_credentials_over_https(
    tmp_path: Path,
    tls: tuple[Path, Path, ssl.SSLContext],
    server_args: list[str],
    strata: HttpsServer,
    writer: PrometheusServer,
    reader: PrometheusServer,
    request: pytest.FixtureRequest,
) -> None:
    ours = wait_for_delivery(strata, writer)
    assert metric_value(ours, "strata_auth_failures_total", reason="missing_credentials") > 0
    assert metric_value(ours, "strata_auth_failures_total", reason="tenant_not_allowed") > 0
    received_by_default = metric_value(ours, "strata_samples_received_total", tenant="default")
    assert math.isnan(received_by_default), "nothing reached the default tenant"

    # PromQL in Prometheus B, answered by Strata's remote read with basic auth.
    result = query_until_answered(reader, 'up{job="prometheus"}')
    assert [s["metric"]["job"] for s in result] == ["prometheus"]
    assert result[0]["value"][1] == "1"
    reads_ok = metric_value(strata.metrics(), "strata_read_requests_total", status="200")
    assert reads_ok >= 1

    check_every_endpoint_refuses_strangers(strata)

    flushed = strata.client.post(FLUSH_PATH, headers={"Authorization": f"Bearer {TOKEN_OPS}"})
    assert flushed.status_code == 200, flushed.text
    assert flushed.json()["uploadedBlocks"] >= 2  # team-a and team-b

    # `strata query` over the same bucket: HTTPS, and the same credentials.
    query = HttpsServer("query", tmp_path, server_args, tls[2])
    attach_log(request.node, "strata query", query.process.log_path)
    try:
        query.start()
        body, headers = read_body(), {"Content-Encoding": "snappy"}
        assert query.client.post(READ_PATH, content=body, headers=headers).status_code == 401
        grafana = httpx.BasicAuth(*READER)
        team_a = query.client.post(READ_PATH, content=body, headers=headers, auth=grafana)
        assert {s["job"] for s in series_read(team_a)} == {"prometheus"}
        other = query.client.post(
            READ_PATH, content=body, headers={**headers, "X-Scope-OrgID": "team-b"}, auth=grafana
        )
        assert (other.status_code, other.text) == (
            403,
            "credential 'grafana' may not read tenant 'team-b'\n",
        )
        ops = {**headers, "X-Scope-OrgID": "team-b", "Authorization": f"Bearer {TOKEN_OPS}"}
        team_b = query.client.post(READ_PATH, content=body, headers=ops)
        assert {s["job"] for s in series_read(team_b)} == {"prometheus"}
    finally:
        query.stop()
    with pytest.raises(httpx.TransportError):
        # HTTPS only: a plain-HTTP request gets no HTTP answer.
        httpx.get(f"http://{HOST}:{strata.port}/-/healthy", timeout=5.0)
