"""A client that goes away in the middle of a long streamed answer stops the work on it
and gives its read's concurrency slot back: `strata query` with one slot answers the
next read, `strata_read_in_flight` falls to 0, and `strata_read_samples_total` counts
far fewer samples than the whole answer holds. Over loopback, because only a real
server sees a connection close."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import snappy

from blocks.bucket_index import rebuild_bucket_index
from blocks.objstore.local import LocalStore
from blocks.ulid import new_ulid
from blocks.writer import BlockWriter
from proto import remote_pb2, types_pb2
from tests.e2e.conftest import attach_log
from tests.e2e.servers import (
    HOST,
    STRATA_READY_TIMEOUT_S,
    Process,
    free_port,
    strata_command,
    wait_until_ready,
)

SERIES = 1_000  # 16 batches of series, about 10 MB streamed
SAMPLES = 1_440  # 6 hours at 15 s
END_MS = 1_795_564_800_000
READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}
SETTLE_S = 10.0


def write_bucket(data_dir: Path) -> None:
    """One block of SERIES series whose values change in most bits every sample, so the
    streamed answer is several times WHOLE_ANSWER_BYTES."""
    root = data_dir / "bucket"
    writer = BlockWriter(root / "default", new_ulid())
    ts = END_MS - (SAMPLES - np.arange(SAMPLES, dtype=np.int64)) * 15_000
    rng = np.random.default_rng(7)
    for i in range(SERIES):
        labels = [("__name__", "noise"), ("job", "node"), ("n", f"{i:04d}")]
        writer.add_series(labels, ts, rng.normal(size=SAMPLES))
    writer.finish(tenant="default")
    rebuild_bucket_index(LocalStore(root), "default")


def read_body(streamed: bool, matchers: list[types_pb2.LabelMatcher]) -> bytes:
    query = remote_pb2.Query(start_timestamp_ms=0, end_timestamp_ms=END_MS, matchers=matchers)
    request = remote_pb2.ReadRequest(queries=[query])
    if streamed:
        request.accepted_response_types.append(remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS)
    return bytes(snappy.compress(request.SerializeToString()))


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} is not exported"
    return float(found.group(1))


@pytest.fixture
def querier(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """`strata query` over the block, one read at a time, a 2 s wait for a slot."""
    write_bucket(tmp_path)
    process = Process("strata query", tmp_path / "query.log")
    attach_log(request.node, "strata query", process.log_path)
    port = free_port()
    argv = [*strata_command(), "query", "--data-dir", str(tmp_path), "--listen", f"{HOST}:{port}"]
    argv += ["--query-concurrency", "1", "--query-timeout-s", "2"]
    try:
        process.spawn(argv)
        url = f"http://{HOST}:{port}"
        wait_until_ready(process, f"{url}/-/ready", STRATA_READY_TIMEOUT_S)
        yield url
    finally:
        if process.running:
            process.signal_and_wait(signal.SIGTERM)


@pytest.mark.e2e
def test_a_client_gone_mid_stream_frees_its_slot(querier: str) -> None:
    body = read_body(True, [types_pb2.LabelMatcher(name="job", value="node")])
    head = (
        f"POST /api/v1/read HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in READ_HEADERS.items())
        + "\r\n"
    ).encode()
    port = int(querier.rsplit(":", 1)[1])
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(head + body)
        received = b""
        while len(received) < 4096:  # the answer has started: status line and first frames
            chunk = sock.recv(4096)
            assert chunk, "the server closed before answering"
            received += chunk
        assert received.startswith(b"HTTP/1.1 200"), received[:200]
        assert b"transfer-encoding: chunked" in received.lower(), "not streamed"
    # Gone after 4 kB of an answer about five times WHOLE_ANSWER_BYTES long.
    deadline = time.monotonic() + SETTLE_S
    while metric(querier, "strata_read_in_flight") != 0:
        assert time.monotonic() < deadline, "the abandoned read still holds its slot"
        time.sleep(0.05)
    counted = metric(querier, "strata_read_samples_total")
    assert 0 < counted < SERIES * SAMPLES / 2, f"{counted} samples produced for a gone client"
    one = [
        types_pb2.LabelMatcher(name="job", value="node"),
        types_pb2.LabelMatcher(name="n", value="0001"),
    ]
    answer = httpx.post(
        f"{querier}/api/v1/read", content=read_body(False, one), headers=READ_HEADERS, timeout=10
    )
    assert answer.status_code == 200, answer.text
    result = remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.content))
    assert [len(ts.samples) for ts in result.results[0].timeseries] == [SAMPLES]
