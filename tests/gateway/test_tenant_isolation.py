"""Tenants stay apart: a generated tenant id, however hostile, is either refused with 400
naming the problem, or writes only inside its own directory and bucket prefix; and a read
as one tenant never returns another's series.

Each example runs the real gateway (WAL, head, upload queue, local bucket) through httpx's
ASGI transport, writes one series per tenant id, reads every id back, flushes the head to
the bucket, reads again, and then inspects every file the gateway left on disk.
"""

from __future__ import annotations

import asyncio
import re
import string
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import snappy
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from blocks.catalog import block_refs, open_block
from blocks.objstore.base import RESERVED_SEGMENT_PREFIX
from blocks.objstore.local import LocalStore
from gateway.app import create_app
from gateway.config import GatewayConfig
from proto import remote_pb2, types_pb2
from tests.gateway.writes import WRITE_HEADERS, time_series

READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}
METRIC = "isolation_probe"
# What a directory of the data dir may hold besides tenants: the store's own lock file.
STORE_LOCK = RESERVED_SEGMENT_PREFIX + "lock"
HOUR_MS = 3_600_000

# Ids that have climbed out of directories or prefixes elsewhere, or that collide with
# what Strata keeps beside the tenants.
HOSTILE_IDS = (
    "..",
    ".",
    "",
    " ",
    "/",
    "a/b",
    "../escape",
    "../../etc/passwd",
    "%2e%2e",
    "%2F..%2F",
    "..\\..",
    "a\\b",
    "team a",
    " team-a ",
    "\tteam-a",
    "é",
    "テナント",
    "a\x00b",
    "\x00",
    "x" * 150,
    "x" * 151,
    "y" * 5000,
    ".strata-lock",
    ".strata-tmp-1",
    ".lock",
    "bucket-index.json.zst",
    "default",
    "~",
    "*",
    "\x1cteam-a",  # whitespace to Python's str.strip, not to HTTP
    "team-a\u00a0",
    "team-a\r\nX-Scope-OrgID: team-b",
)
SAFE_CHARACTERS = string.ascii_letters + string.digits + "_.-"
tenant_ids = st.one_of(
    st.text(alphabet=SAFE_CHARACTERS, min_size=1, max_size=160),
    st.sampled_from(HOSTILE_IDS),
    st.text(max_size=200),  # any unicode: controls, NUL, surrogates escaped below
)


def header_bytes(tenant: str) -> bytes:
    """The header value a client would send for this id (as UTF-8; lone surrogates too)."""
    return tenant.encode("utf-8", errors="surrogatepass")


def as_received(tenant: str) -> str:
    """The id the server sees: header bytes decoded as latin-1 (ASGI), spaces and tabs
    around it stripped."""
    return header_bytes(tenant).decode("latin-1").strip(" \t")


def cannot_escape(tenant: str) -> bool:
    """What a directory name or key prefix needs to stay where it is put; independent of
    the gateway's own rule, which is stricter."""
    return (
        tenant not in ("", ".", "..")
        and not tenant.startswith(".")
        and not any(c in tenant for c in "/\\\x00")
        and tenant.isprintable()
        and len(tenant.encode()) <= 255
    )


def write_body(writer: int, ts_ms: int) -> bytes:
    labels = [("__name__", METRIC), ("writer", str(writer))]
    request = remote_pb2.WriteRequest(timeseries=[time_series(labels, [(ts_ms, writer)])])
    return bytes(snappy.compress(request.SerializeToString()))


def read_body(mint: int, maxt: int) -> bytes:
    matcher = types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name="__name__", value=METRIC)
    query = remote_pb2.Query(start_timestamp_ms=mint, end_timestamp_ms=maxt, matchers=[matcher])
    request = remote_pb2.ReadRequest(queries=[query])
    return bytes(snappy.compress(request.SerializeToString()))


def writers_in(answer: httpx.Response) -> set[int]:
    """The `writer` label of every series in a SAMPLES answer."""
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.content))
    found = set()
    for result in response.results:
        for series in result.timeseries:
            labels = {label.name: label.value for label in series.labels}
            assert labels["__name__"] == METRIC
            found.add(int(labels["writer"]))
    return found


class Outcome:
    """What the gateway did with each id: refused, or stored under a tenant."""

    def __init__(self) -> None:
        self.tenant_of: dict[int, str] = {}  # writer -> tenant it was accepted for

    def writers_of(self, tenant: str) -> set[int]:
        return {w for w, t in self.tenant_of.items() if t == tenant}

    @property
    def tenants(self) -> set[str]:
        return set(self.tenant_of.values())


async def check_reads(
    client: httpx.AsyncClient, ids: Sequence[str], outcome: Outcome, mint: int, maxt: int
) -> None:
    """Every accepted id reads exactly the series written under it; a refused one, 400."""
    for writer, tenant in enumerate(ids):
        headers = {k.encode(): v.encode() for k, v in READ_HEADERS.items()}
        headers[b"x-scope-orgid"] = header_bytes(tenant)
        answer = await client.post("/api/v1/read", content=read_body(mint, maxt), headers=headers)
        if writer in outcome.tenant_of:
            assert answer.status_code == 200, answer.text
            assert writers_in(answer) == outcome.writers_of(outcome.tenant_of[writer])
        else:
            assert answer.status_code == 400, answer.text
            assert "tenant id" in answer.text


@asynccontextmanager
async def running_gateway(data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a started gateway on `data_dir`, once it is ready; stopped after."""
    config = GatewayConfig(data_dir=data_dir, cut_interval_s=3600.0)
    app = create_app(config, CollectorRegistry())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strata") as client:
            deadline = time.monotonic() + 10
            while (await client.get("/-/ready")).status_code != 200:
                assert time.monotonic() < deadline, "never ready"
                await asyncio.sleep(0.005)
            yield client


async def write_read_flush(data_dir: Path, ids: Sequence[str]) -> Outcome:
    outcome = Outcome()
    now_ms = int(time.time() * 1000)
    async with running_gateway(data_dir) as client:
        for writer, tenant in enumerate(ids):
            headers = {k.encode(): v.encode() for k, v in WRITE_HEADERS.items()}
            headers[b"x-scope-orgid"] = header_bytes(tenant)
            answer = await client.post(
                "/api/v1/write", content=write_body(writer, now_ms), headers=headers
            )
            if answer.status_code == 204:
                received = as_received(tenant)
                assert cannot_escape(received), f"accepted {received!r}"
                outcome.tenant_of[writer] = received
            else:
                assert answer.status_code == 400, answer.text
                assert "tenant id" in answer.text, answer.text
                assert len(answer.text) < 300, "the reason is one short line"
        mint, maxt = now_ms - HOUR_MS, now_ms + HOUR_MS
        await check_reads(client, ids, outcome, mint, maxt)  # from the head
        flushed = await client.post("/api/v1/admin/flush")
        assert flushed.status_code == 200, flushed.text
        assert flushed.json()["uploadedBlocks"] == len(outcome.tenants)
        await check_reads(client, ids, outcome, mint, maxt)  # from the bucket
    return outcome


def check_disk(root: Path, outcome: Outcome) -> None:
    """Everything the gateway wrote is under root/data, tenant data in tenant places."""
    assert [p.name for p in root.iterdir()] == ["data"]
    data = root / "data"
    assert {p.name for p in data.iterdir()} <= {"wal", "upload", "bucket", "index-cache"}
    # The index files are named by process and number, never by tenant.
    for path in (data / "index-cache").rglob("*"):
        parts = path.relative_to(data / "index-cache").parts
        assert re.fullmatch(r"p[0-9]+", parts[0]), path
        assert len(parts) == 1 or parts[1].isdigit() or parts[1].startswith(".staging-"), path
    for place in ("upload", "bucket"):
        names = {p.name for p in (data / place).iterdir()}
        assert names - {STORE_LOCK} <= outcome.tenants, f"{place}: {sorted(names)}"
        for tenant_dir in (data / place).iterdir():
            if tenant_dir.name != STORE_LOCK:
                # Resolved paths: no symlink or '..' leads out of the tenant's directory.
                for path in tenant_dir.rglob("*"):
                    assert path.resolve().is_relative_to(tenant_dir.resolve())
    with LocalStore(data / "bucket") as bucket:
        keys = bucket.list("")
        assert {key.split("/", 1)[0] for key in keys} == outcome.tenants
        for tenant in outcome.tenants:
            stored = set()
            for _, block_id in block_refs(bucket, tenant):
                index = open_block(bucket, tenant, block_id).index
                for series in range(index.series_count):
                    stored.add(int(dict(index.labels(series))["writer"]))
            assert stored == outcome.writers_of(tenant)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(tenant_ids, min_size=1, max_size=5))
@example(list(HOSTILE_IDS[:5]))
@example(list(HOSTILE_IDS[5:10]))
@example(list(HOSTILE_IDS[10:15]))
@example(list(HOSTILE_IDS[15:20]))
@example(list(HOSTILE_IDS[20:25]))
@example([*HOSTILE_IDS[25:], "team-a", "team-b", "team-a"])
def test_no_tenant_id_writes_outside_its_place_or_reads_another(ids: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        outcome = asyncio.run(write_read_flush(root / "data", ids))
        check_disk(root, outcome)


def test_tenants_stay_apart_after_a_restart_replays_the_wal(tmp_path: Path) -> None:
    ids = ["team-a", "team-b", "team-a", "team_c.1"]

    async def write_then_stop() -> Outcome:
        outcome = Outcome()
        async with running_gateway(tmp_path) as client:
            for writer, tenant in enumerate(ids):
                headers = {**WRITE_HEADERS, "X-Scope-OrgID": tenant}
                body = write_body(writer, now_ms)
                answer = await client.post("/api/v1/write", content=body, headers=headers)
                assert answer.status_code == 204, answer.text
                outcome.tenant_of[writer] = tenant
        return outcome

    async def read_after_replay(outcome: Outcome) -> None:
        async with running_gateway(tmp_path) as client:
            await check_reads(client, ids, outcome, now_ms - HOUR_MS, now_ms + HOUR_MS)

    now_ms = int(time.time() * 1000)
    outcome = asyncio.run(write_then_stop())
    assert outcome.writers_of("team-a") == {0, 2}
    asyncio.run(read_after_replay(outcome))
