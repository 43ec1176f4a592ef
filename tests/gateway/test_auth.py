"""Authentication in process: the auth file, who gets 401 and 403 on which endpoint, the
tenant a credential implies, the metrics of refusals, and the settings around it.

The gateway and the querier run through httpx's ASGI transport, with an auth file written
by the test (scrypt at a low cost, so that tests stay fast).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import snappy
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

import gateway.auth
from blocks.objstore.local import LocalStore
from gateway.app import FLUSH_PATH, WRITE_PATHS, create_app
from gateway.auth import (
    FAILURE_REASONS,
    Credentials,
    PasswordHash,
    hash_password,
    load_credentials,
    token_sha256,
)
from gateway.config import ConfigError, GatewayConfig
from gateway.server import check_tls_files
from proto import remote_pb2, types_pb2
from querier.app import create_query_app
from querier.read_api import READ_PATH
from tests.gateway.writes import WRITE_HEADERS, time_series

REPO = Path(__file__).resolve().parents[2]
READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}
HOUR_MS = 3_600_000
# Low scrypt cost for tests; the file format carries the cost, so any is accepted.
TEST_SCRYPT_N = 1 << 10

WRITER_A = "tok-writer-a"  # writes team-a
READER_AB = "tok-reader-ab"  # reads team-a and team-b
OPS = "tok-ops"  # writes and reads every tenant, admin
GRAFANA = ("grafana", "s3cret pässword")  # basic auth, reads team-a


def auth_document() -> dict[str, Any]:
    return {
        "tokens": [
            {"name": "writer-a", "sha256": token_sha256(WRITER_A), "write": ["team-a"]},
            {
                "name": "reader-ab",
                "sha256": token_sha256(READER_AB),
                "read": ["team-a", "team-b"],
            },
            {
                "name": "ops",
                "sha256": token_sha256(OPS),
                "write": ["*"],
                "read": ["*"],
                "admin": True,
            },
        ],
        "users": [
            {
                "username": GRAFANA[0],
                "password": hash_password(GRAFANA[1], n=TEST_SCRYPT_N),
                "read": ["team-a"],
            }
        ],
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(username: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}"}


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(auth_document()))
    return path


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def gateway_config(tmp_path: Path, auth_file: Path, **settings: Any) -> GatewayConfig:
    return GatewayConfig(
        data_dir=tmp_path / "data", cut_interval_s=3600.0, auth_file=str(auth_file), **settings
    )


@asynccontextmanager
async def started(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the started app once /-/ready answers (it needs no credentials)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strata") as client:
            deadline = time.monotonic() + 10
            while (await client.get("/-/ready")).status_code != 200:
                assert time.monotonic() < deadline, "never ready"
                await asyncio.sleep(0.005)
            yield client


def run(app: FastAPI, scenario: Callable[[httpx.AsyncClient], Any]) -> Any:
    async def main() -> Any:
        async with started(app) as client:
            return await scenario(client)

    return asyncio.run(main())


def write_body(value: int, ts_ms: int | None = None) -> bytes:
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    labels = [("__name__", "probe"), ("value", str(value))]
    request = remote_pb2.WriteRequest(timeseries=[time_series(labels, [(ts_ms, value)])])
    return bytes(snappy.compress(request.SerializeToString()))


def read_body() -> bytes:
    now_ms = int(time.time() * 1000)
    matcher = types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name="__name__", value="probe")
    query = remote_pb2.Query(
        start_timestamp_ms=now_ms - HOUR_MS, end_timestamp_ms=now_ms + HOUR_MS, matchers=[matcher]
    )
    return bytes(snappy.compress(remote_pb2.ReadRequest(queries=[query]).SerializeToString()))


async def write(
    client: httpx.AsyncClient, headers: dict[str, str], value: int = 1, path: str = WRITE_PATHS[0]
) -> httpx.Response:
    return await client.post(path, content=write_body(value), headers={**WRITE_HEADERS, **headers})


async def read(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post(READ_PATH, content=read_body(), headers={**READ_HEADERS, **headers})


def values_read(answer: httpx.Response) -> set[int]:
    """The `value` label of each series of a SAMPLES answer."""
    assert answer.status_code == 200, answer.text
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.content))
    return {
        int(label.value)
        for result in response.results
        for series in result.timeseries
        for label in series.labels
        if label.name == "value"
    }


def failures(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("strata_auth_failures_total", {"reason": reason})
    assert value is not None, f"no strata_auth_failures_total{{reason={reason!r}}}"
    return value


def test_auth_is_off_by_default(tmp_path: Path, registry: CollectorRegistry) -> None:
    app = create_app(GatewayConfig(data_dir=tmp_path), registry)

    async def scenario(client: httpx.AsyncClient) -> list[int]:
        return [(await write(client, {})).status_code, (await read(client, {})).status_code]

    assert run(app, scenario) == [204, 200]
    missing = {"reason": "missing_credentials"}
    assert registry.get_sample_value("strata_auth_failures_total", missing) is None


@pytest.mark.parametrize(
    ("method", "path"),
    [*[("POST", p) for p in WRITE_PATHS], ("POST", READ_PATH), ("POST", FLUSH_PATH)],
)
def test_every_data_and_admin_endpoint_answers_401_without_credentials(
    tmp_path: Path, auth_file: Path, registry: CollectorRegistry, method: str, path: str
) -> None:
    app = create_app(gateway_config(tmp_path, auth_file), registry)

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        return await client.request(method, path, content=write_body(1), headers=WRITE_HEADERS)

    answer = run(app, scenario)
    assert answer.status_code == 401
    assert answer.text == "credentials required: a bearer token or basic auth\n"
    challenges = answer.headers.get_list("www-authenticate")
    assert [c.split()[0] for c in challenges] == ["Bearer", "Basic"]
    assert failures(registry, "missing_credentials") == 1
    assert gateway_head_tenants(app) == set()


def gateway_head_tenants(app: FastAPI) -> set[str]:
    """Tenants with series in the gateway's head."""
    return {t for t, head in app.state.gateway.head.tenants.items() if head.series_count}


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (bearer("not-a-token"), "invalid_credentials"),
        (bearer(WRITER_A[:-1]), "invalid_credentials"),
        (bearer(WRITER_A.upper()), "invalid_credentials"),
        (basic(GRAFANA[0], "wrong"), "invalid_credentials"),
        (basic("nobody", GRAFANA[1]), "invalid_credentials"),
        (basic(GRAFANA[0].upper(), GRAFANA[1]), "invalid_credentials"),
        ({"Authorization": "Token " + WRITER_A}, "malformed_credentials"),
        ({"Authorization": "Bearer"}, "malformed_credentials"),
        ({"Authorization": "Basic !!notbase64!!"}, "malformed_credentials"),
        (
            {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()},
            "malformed_credentials",
        ),
        ({"Authorization": WRITER_A}, "malformed_credentials"),
    ],
)
def test_bad_credentials_answer_401_and_are_counted_by_reason(
    tmp_path: Path,
    auth_file: Path,
    registry: CollectorRegistry,
    headers: dict[str, str],
    reason: str,
) -> None:
    app = create_app(gateway_config(tmp_path, auth_file), registry)

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await write(client, headers), await read(client, headers)]

    for answer in run(app, scenario):
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"]
    assert failures(registry, reason) == 2
    assert sum(failures(registry, r) for r in FAILURE_REASONS) == 2


def test_two_authorization_headers_are_refused(tmp_path: Path, auth_file: Path) -> None:
    app = create_app(gateway_config(tmp_path, auth_file), CollectorRegistry())

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        headers = [(k, v) for k, v in WRITE_HEADERS.items()]
        headers += [("Authorization", f"Bearer {OPS}"), ("Authorization", f"Bearer {WRITER_A}")]
        return await client.post(WRITE_PATHS[0], content=write_body(1), headers=headers)

    answer = run(app, scenario)
    assert (answer.status_code, answer.text) == (401, "several Authorization headers\n")


def test_status_endpoints_stay_open_and_other_paths_need_credentials(
    tmp_path: Path, auth_file: Path
) -> None:
    app = create_app(gateway_config(tmp_path, auth_file), CollectorRegistry())

    async def scenario(client: httpx.AsyncClient) -> dict[str, int]:
        paths = ["/-/healthy", "/-/ready", "/metrics", "/nothing-here", "/api/v1/write/"]
        answers = {p: (await client.get(p)).status_code for p in paths}
        answers["/nothing-here with a token"] = (
            await client.get("/nothing-here", headers=bearer(WRITER_A))
        ).status_code
        return answers

    assert run(app, scenario) == {
        "/-/healthy": 200,
        "/-/ready": 200,
        "/metrics": 200,
        "/nothing-here": 401,
        "/api/v1/write/": 401,
        "/nothing-here with a token": 404,
    }


def test_auth_metrics_puts_metrics_behind_any_valid_credential(
    tmp_path: Path, auth_file: Path
) -> None:
    app = create_app(gateway_config(tmp_path, auth_file, auth_metrics=True), CollectorRegistry())

    async def scenario(client: httpx.AsyncClient) -> list[int]:
        return [
            (await client.get("/metrics")).status_code,
            (await client.get("/metrics", headers=bearer("wrong"))).status_code,
            (await client.get("/metrics", headers=bearer(WRITER_A))).status_code,
            (await client.get("/-/healthy")).status_code,
        ]

    assert run(app, scenario) == [401, 401, 200, 200]


def test_a_token_writes_its_tenant_and_no_other(
    tmp_path: Path, auth_file: Path, registry: CollectorRegistry
) -> None:
    app = create_app(gateway_config(tmp_path, auth_file), registry)

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [
            await write(client, bearer(WRITER_A), 1),  # no header: its only tenant, team-a
            await write(client, {**bearer(WRITER_A), "X-Scope-OrgID": "team-a"}, 2, WRITE_PATHS[1]),
            await write(client, {**bearer(WRITER_A), "X-Scope-OrgID": "team-b"}, 3, WRITE_PATHS[2]),
            await write(client, {**bearer(READER_AB), "X-Scope-OrgID": "team-a"}, 4),
            await read(client, {**bearer(OPS), "X-Scope-OrgID": "team-a"}),
        ]

    implied, explicit, other, reader, readback = run(app, scenario)
    assert implied.status_code == explicit.status_code == 204
    assert (other.status_code, other.text) == (
        403,
        "credential 'writer-a' may not write tenant 'team-b'\n",
    )
    assert (reader.status_code, reader.text) == (
        403,
        "credential 'reader-ab' may not write tenant 'team-a'\n",
    )
    assert values_read(readback) == {1, 2}
    assert gateway_head_tenants(app) == {"team-a"}
    assert failures(registry, "tenant_not_allowed") == 2


def test_reads_see_only_the_tenants_a_credential_may_read(tmp_path: Path, auth_file: Path) -> None:
    app = create_app(gateway_config(tmp_path, auth_file), CollectorRegistry())

    async def scenario(client: httpx.AsyncClient) -> dict[str, httpx.Response]:
        for value, tenant in ((1, "team-a"), (2, "team-b"), (3, "default"), (4, "team-c")):
            answer = await write(client, {**bearer(OPS), "X-Scope-OrgID": tenant}, value)
            assert answer.status_code == 204, answer.text
        grafana = basic(*GRAFANA)
        return {
            "grafana, implied": await read(client, grafana),
            "grafana, team-a": await read(client, {**grafana, "X-Scope-OrgID": "team-a"}),
            "grafana, team-b": await read(client, {**grafana, "X-Scope-OrgID": "team-b"}),
            "reader-ab, team-b": await read(
                client, {**bearer(READER_AB), "X-Scope-OrgID": "team-b"}
            ),
            "reader-ab, no header": await read(client, bearer(READER_AB)),
            "reader-ab, team-c": await read(
                client, {**bearer(READER_AB), "X-Scope-OrgID": "team-c"}
            ),
            "writer-a, implied": await read(client, bearer(WRITER_A)),
            "ops, team-c": await read(client, {**bearer(OPS), "X-Scope-OrgID": "team-c"}),
        }

    answers = run(app, scenario)
    assert values_read(answers["grafana, implied"]) == {1}
    assert values_read(answers["grafana, team-a"]) == {1}
    assert values_read(answers["reader-ab, team-b"]) == {2}
    assert values_read(answers["ops, team-c"]) == {4}
    refused = {
        "grafana, team-b": "credential 'grafana' may not read tenant 'team-b'",
        # Two tenants to choose from: no header means the default tenant.
        "reader-ab, no header": "credential 'reader-ab' may not read tenant 'default'",
        "reader-ab, team-c": "credential 'reader-ab' may not read tenant 'team-c'",
        # Writing team-a implies nothing for reads.
        "writer-a, implied": "credential 'writer-a' may not read tenant 'default'",
    }
    for name, reason in refused.items():
        assert (answers[name].status_code, answers[name].text) == (403, reason + "\n"), name


def test_flush_needs_an_admin_credential(
    tmp_path: Path, auth_file: Path, registry: CollectorRegistry
) -> None:
    app = create_app(gateway_config(tmp_path, auth_file), registry)

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        assert (await write(client, bearer(WRITER_A))).status_code == 204
        return [
            await client.post(FLUSH_PATH, headers=bearer(WRITER_A)),
            await client.post(FLUSH_PATH, headers=basic(*GRAFANA)),
            await client.post(FLUSH_PATH, headers=bearer(OPS)),
        ]

    writer, grafana, ops = run(app, scenario)
    assert (writer.status_code, writer.text) == (
        403,
        "credential 'writer-a' may not use admin endpoints\n",
    )
    assert grafana.status_code == 403
    assert (ops.status_code, ops.json()) == (200, {"uploadedBlocks": 1})
    assert failures(registry, "admin_required") == 2


@pytest.mark.parametrize(
    ("tenant_headers", "reason"),
    [
        ([("X-Scope-OrgID", "..")], "invalid tenant id '..': must not start with '.'"),
        ([("X-Scope-OrgID", "a/b")], "invalid tenant id 'a/b'"),
        ([("X-Scope-OrgID", "")], "empty tenant id"),
        ([("X-Scope-OrgID", "team-a"), ("X-Scope-OrgID", "team-b")], "2 X-Scope-OrgID headers"),
    ],
)
def test_a_bad_tenant_header_is_400_even_with_a_wildcard_credential(
    tmp_path: Path, auth_file: Path, tenant_headers: list[tuple[str, str]], reason: str
) -> None:
    app = create_app(gateway_config(tmp_path, auth_file), CollectorRegistry())

    async def scenario(client: httpx.AsyncClient) -> httpx.Response:
        headers = [*WRITE_HEADERS.items(), *bearer(OPS).items(), *tenant_headers]
        return await client.post(WRITE_PATHS[0], content=write_body(1), headers=headers)

    answer = run(app, scenario)
    assert answer.status_code == 400
    assert answer.text.startswith(reason)
    assert gateway_head_tenants(app) == set()


def test_a_verified_password_is_remembered_a_wrong_one_never(
    tmp_path: Path, auth_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checks: list[bytes] = []
    real_verify = PasswordHash.verify

    def counting_verify(self: PasswordHash, password: bytes) -> bool:
        checks.append(password)
        return real_verify(self, password)

    monkeypatch.setattr(gateway.auth.PasswordHash, "verify", counting_verify)
    app = create_app(gateway_config(tmp_path, auth_file), CollectorRegistry())

    async def scenario(client: httpx.AsyncClient) -> list[int]:
        headers = [basic(*GRAFANA), basic(*GRAFANA), basic(GRAFANA[0], "x"), basic("x", "x")]
        answers = [await read(client, h) for h in headers * 2]
        return [a.status_code for a in answers]

    assert run(app, scenario) == [200, 200, 401, 401] * 2
    # Once for the right password, each time for a wrong one, unknown users included.
    assert checks == [GRAFANA[1].encode(), b"x", b"x", b"x", b"x"]


def test_the_querier_needs_credentials_for_reads(
    tmp_path: Path, auth_file: Path, registry: CollectorRegistry
) -> None:
    LocalStore(tmp_path / "data" / "bucket").close()
    app = create_query_app(gateway_config(tmp_path, auth_file), registry)

    async def scenario(client: httpx.AsyncClient) -> list[int]:
        return [
            (await read(client, {})).status_code,
            (await read(client, bearer("wrong"))).status_code,
            (await read(client, bearer(WRITER_A))).status_code,
            (await read(client, basic(*GRAFANA))).status_code,
            (await client.get("/-/healthy")).status_code,
        ]

    assert run(app, scenario) == [401, 401, 403, 200, 200]
    assert failures(registry, "missing_credentials") == 1
    assert failures(registry, "tenant_not_allowed") == 1


def write_auth_file(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "auth.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def token_entry(**fields: Any) -> dict[str, Any]:
    return {"name": "t", "sha256": token_sha256("x"), "write": ["a"], **fields}


@pytest.mark.parametrize(
    ("doc", "why"),
    [
        ("{not json", "not JSON"),
        ([], "must be a JSON object"),
        ({}, "no tokens and no users"),
        ({"token": []}, "the file: unknown key 'token'"),
        ({"tokens": {}}, "tokens must be a list"),
        ({"tokens": [token_entry(reads=["a"])]}, "tokens[0]: unknown key 'reads'"),
        ({"tokens": [token_entry(name="")]}, "tokens[0]: 'name'"),
        ({"tokens": [token_entry(sha256="abc")]}, "tokens[0]: 'sha256' must be the 64 hex"),
        ({"tokens": [token_entry(sha256="z" * 64)]}, "tokens[0]: 'sha256' must be hex"),
        ({"tokens": [token_entry(write="a")]}, "tokens[0]: 'write' must be a list"),
        ({"tokens": [token_entry(read=[".."])]}, "tokens[0]: 'read': invalid tenant id '..'"),
        ({"tokens": [token_entry(admin="yes")]}, "tokens[0]: 'admin' must be true or false"),
        ({"tokens": [token_entry(), token_entry(name="u")]}, "a token is listed twice"),
        ({"users": [{"username": "a:b", "password": "x"}]}, "users[0]: 'username'"),
        ({"users": [{"username": "a", "password": "plain"}]}, "users[0]: password must be"),
        (
            {"users": [{"username": "a", "password": "scrypt:1000:8:1:00112233445566:00"}]},
            "users[0]: password: N must be a power of 2",
        ),
        (
            {
                "users": [
                    {"username": "a", "password": f"scrypt:{1 << 20}:64:1:{'0' * 32}:{'0' * 64}"}
                ]
            },
            "users[0]: password: scrypt N·R·P asks more than",
        ),
        (
            {"users": [{"username": "a", "password": f"scrypt:1024:8:1:00:{'0' * 64}"}]},
            "users[0]: password: salt of at least 8 bytes",
        ),
    ],
)
def test_a_bad_auth_file_is_a_config_error_naming_the_entry(
    tmp_path: Path, doc: Any, why: str
) -> None:
    path = write_auth_file(tmp_path, doc)
    with pytest.raises(ConfigError) as raised:
        load_credentials(path)
    assert raised.value.key == "auth_file"
    assert why in raised.value.reason


def test_a_bad_auth_file_stops_the_gateway_before_it_opens_anything(tmp_path: Path) -> None:
    config = gateway_config(tmp_path, write_auth_file(tmp_path, {"tokens": [token_entry(x=1)]}))
    with pytest.raises(ConfigError, match="unknown key 'x'"):
        create_app(config, CollectorRegistry())
    assert not (tmp_path / "data").exists()
    missing = gateway_config(tmp_path, tmp_path / "absent.json")
    with pytest.raises(ConfigError, match=r"absent\.json"):
        create_app(missing, CollectorRegistry())


def test_tokens_and_passwords_are_found_only_by_exact_match() -> None:
    credentials = load_credentials_from(auth_document())
    found_token = credentials.by_token(WRITER_A.encode())
    assert found_token is not None
    assert found_token.name == "writer-a"
    assert credentials.by_token(WRITER_A[:-1].encode()) is None
    assert credentials.by_token(b"") is None
    user, password = GRAFANA[0].encode(), GRAFANA[1].encode()
    found = credentials.by_password(user, password)
    assert found is not None
    assert found.read == frozenset({"team-a"})
    assert credentials.by_password(user, password + b"x") is None
    assert credentials.by_password(user + b"x", password) is None


def load_credentials_from(doc: dict[str, Any]) -> Credentials:
    return gateway.auth.parse_credentials(doc)


def test_a_password_hash_is_salted_and_verifies_only_its_password() -> None:
    first, second = hash_password("pw", n=TEST_SCRYPT_N), hash_password("pw", n=TEST_SCRYPT_N)
    assert first != second
    assert first.startswith(f"scrypt:{TEST_SCRYPT_N}:8:1:")
    assert PasswordHash.parse(first).verify(b"pw")
    assert not PasswordHash.parse(first).verify(b"pW")


def documented_commands() -> list[str]:
    """The python3 one-liners of docs/security.md that make auth file entries."""
    text = (REPO / "docs" / "security.md").read_text()
    commands = re.findall(r"^(python3 -c '.*')$", text, flags=re.MULTILINE)
    assert len(commands) == 2, commands
    return commands


def test_the_documented_commands_make_entries_the_gateway_accepts(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    token_command, password_command = documented_commands()
    python = [sys.executable, "-c"]
    made = subprocess.run(
        [*python, token_command.split("'")[1]], capture_output=True, text=True, check=True
    )
    token, digest = made.stdout.split()
    # The documented command asks for the password with getpass; without a terminal it
    # reads standard input.
    hashed = subprocess.run(
        [*python, password_command.split("'")[1]],
        input="the password\n",
        start_new_session=True,  # no controlling terminal: getpass reads stdin
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    path = write_auth_file(
        tmp_path,
        {
            "tokens": [{"name": "made", "sha256": digest, "write": ["team-a"]}],
            "users": [{"username": "made", "password": hashed, "read": ["team-a"]}],
        },
    )
    app = create_app(gateway_config(tmp_path, path), registry)

    async def scenario(client: httpx.AsyncClient) -> list[int]:
        return [
            (await write(client, bearer(token))).status_code,
            (await read(client, basic("made", "the password"))).status_code,
        ]

    assert run(app, scenario) == [204, 200]


def test_tls_files_are_set_together_and_must_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        GatewayConfig(tls_cert_file="cert.pem")
    assert raised.value.key == "tls_key_file"
    with pytest.raises(ConfigError) as raised:
        GatewayConfig(tls_key_file="key.pem")
    assert raised.value.key == "tls_cert_file"
    absent = GatewayConfig(tls_cert_file=str(tmp_path / "c.pem"), tls_key_file="k.pem")
    with pytest.raises(ConfigError, match=r"c\.pem'?: no such file"):
        check_tls_files(absent)
    (tmp_path / "c.pem").write_text("not a certificate")
    (tmp_path / "k.pem").write_text("not a key")
    garbage = GatewayConfig(
        tls_cert_file=str(tmp_path / "c.pem"), tls_key_file=str(tmp_path / "k.pem")
    )
    with pytest.raises(ConfigError, match="does not load with tls_key_file"):
        check_tls_files(garbage)


@pytest.mark.parametrize("tenant", ["..", "a/b", "", ".hidden"])
def test_a_bad_default_tenant_is_a_config_error(tenant: str) -> None:
    with pytest.raises(ConfigError) as raised:
        GatewayConfig(default_tenant=tenant)
    assert raised.value.key == "default_tenant"
