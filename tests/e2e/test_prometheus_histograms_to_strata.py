"""Native histograms from a real Prometheus through Strata and back (issue 8, item 2).

Prometheus 2.42 with native histograms on scrapes tests/support/histogram_target.py (the
script of tests/e2e/test_prometheus_histogram_chunks.py: integer and float counter
histograms with new buckets, a reset, schema and zero-threshold changes, a gauge
histogram, then staleness) and remote-writes them to `strata serve`
(`send_native_histograms: true`). Strata's remote read must then give, histogram by
histogram, what that Prometheus's own `/api/v1/read` streams for the same selector:
from the head, and again from blocks after a flush.

Compared: Prometheus's streamed chunks decoded with querier/histogram_chunk.py against
Strata's streamed chunks (decoded the same way) and Strata's SAMPLES histograms, field by
field and bucket by bucket (tests/querier/histogram_reads.py: `chunk_form`), and the chunk
bytes themselves. 2.42 cannot go further: its SAMPLES answer leaves histograms out and its
remote-read client drops them (docs/remote-read.md#histogram-chunks), so no PromQL is
compared through a second Prometheus.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import FLUSH_PATH
from proto import remote_pb2
from querier.histogram_chunk import FLOAT_HISTOGRAM, HISTOGRAM, decode_histogram_chunk
from querier.stream_frames import iter_responses
from tests.e2e.servers import StrataServer
from tests.e2e.test_prometheus_histogram_chunks import (
    READ_HEADERS,
    SERIES,
    STEPS,
    NativeHistogramPrometheus,
    read_chunks,
    read_request,
    scraped_script,
)
from tests.querier.histogram_reads import chunk_forms, samples_answer, streamed_answer

ARRIVAL_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 10.0
STREAMED = remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS


@pytest.fixture
def scraped_into_strata(
    request: pytest.FixtureRequest, tmp_path: Path, strata: StrataServer
) -> Iterator[NativeHistogramPrometheus]:
    """A Prometheus that scraped the whole script, marked the series stale and
    remote-writes to `strata`."""
    remote_write = {
        "url": strata.write_url,
        "name": "strata",
        "send_native_histograms": True,
        "queue_config": {"batch_send_deadline": "200ms", "min_backoff": "50ms"},
    }
    yield from scraped_script(request, tmp_path, {"remote_write": [remote_write]})


def prometheus_histograms(client: httpx.Client) -> dict[str, list[tuple[int, bytes]]]:
    """Prometheus's streamed histograms by metric name, decoded from its chunks."""
    out: dict[str, list[tuple[int, bytes]]] = {}
    for name, chunks in read_chunks(client).items():
        for chunk in chunks:
            assert chunk.type in (HISTOGRAM, FLOAT_HISTOGRAM)
            out.setdefault(name, []).extend(decode_histogram_chunk(chunk.data, chunk.type).samples)
    return out


def prometheus_chunk_bytes(client: httpx.Client) -> dict[str, list[tuple[int, int, int, bytes]]]:
    """Prometheus's streamed chunks by metric name: (type, mint, maxt, data)."""
    return {
        name: [(c.type, c.min_time_ms, c.max_time_ms, c.data) for c in chunks]
        for name, chunks in read_chunks(client).items()
    }


def strata_read(strata: StrataServer, streamed: bool) -> dict[str, list[tuple[int, bytes]]]:
    """Strata's histograms by metric name, from a SAMPLES or a streamed answer."""
    kind = STREAMED if streamed else remote_pb2.ReadRequest.SAMPLES
    answer = httpx.post(
        f"{strata.url}/api/v1/read",
        content=read_request(kind),
        headers=READ_HEADERS,
        timeout=READ_TIMEOUT_S,
    )
    assert answer.status_code == 200, answer.text
    if streamed:
        floats, histograms, _ = streamed_answer(answer.content)
    else:
        floats, histograms = samples_answer(answer.content)
    assert not floats, f"float samples in histogram series: {floats}"
    return {dict(labels)["__name__"]: rows for labels, rows in histograms.items()}


def strata_chunk_bytes(strata: StrataServer) -> dict[str, list[tuple[int, int, int, bytes]]]:
    """Strata's streamed chunks by metric name: (type, mint, maxt, data)."""
    answer = httpx.post(
        f"{strata.url}/api/v1/read",
        content=read_request(STREAMED),
        headers=READ_HEADERS,
        timeout=READ_TIMEOUT_S,
    )
    assert answer.status_code == 200, answer.text
    out: dict[str, list[tuple[int, int, int, bytes]]] = {}
    for response in iter_responses([answer.content]):
        for series in response.chunked_series:
            name = {label.name: label.value for label in series.labels}["__name__"]
            out.setdefault(name, []).extend(
                (c.type, c.min_time_ms, c.max_time_ms, c.data) for c in series.chunks
            )
    return out


def wait_for_arrival(
    strata: StrataServer, expected: dict[str, list[tuple[int, bytes]]]
) -> dict[str, list[tuple[int, bytes]]]:
    """Strata's streamed histograms once it holds as many as Prometheus (bounded)."""
    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while True:
        got = strata_read(strata, streamed=True)
        counts = {name: len(rows) for name, rows in got.items()}
        if counts == {name: len(rows) for name, rows in expected.items()}:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"strata holds {counts} histograms after {ARRIVAL_TIMEOUT_S} s")
        time.sleep(0.25)


def check_same(strata: StrataServer, expected: dict[str, list[tuple[int, bytes]]]) -> None:
    """Strata's streamed and SAMPLES histograms equal Prometheus's, one by one."""
    want = {name: chunk_forms(rows) for name, rows in expected.items()}
    streamed = strata_read(strata, streamed=True)
    assert {name: chunk_forms(rows) for name, rows in streamed.items()} == want
    samples = strata_read(strata, streamed=False)
    assert {name: chunk_forms(rows) for name, rows in samples.items()} == want


@pytest.mark.e2e
def test_strata_reads_back_what_prometheus_streams_histogram_by_histogram(
    scraped_into_strata: NativeHistogramPrometheus, strata: StrataServer
) -> None:
    client = scraped_into_strata.client
    expected = prometheus_histograms(client)
    assert sorted(expected) == sorted(SERIES)
    # Every scrape and the staleness marker: Prometheus's own store holds them all.
    assert all(len(rows) == STEPS + 1 for rows in expected.values())
    wait_for_arrival(strata, expected)
    check_same(strata, expected)
    # Chunk by chunk the same bytes, but for the header of Prometheus's open head chunk,
    # which its 2.42 querier re-encodes without it (docs/remote-read.md).
    theirs = prometheus_chunk_bytes(client)
    ours = strata_chunk_bytes(strata)
    for name in SERIES:
        *closed, last = ours[name]
        assert closed == theirs[name][:-1], name
        kind, mint, maxt, data = last
        assert (kind, mint, maxt, data[:2] + bytes([data[2] & 0x3F]) + data[3:]) == theirs[name][
            -1
        ], name
    # Cut into blocks and uploaded: read back the same.
    flushed = httpx.post(f"{strata.url}{FLUSH_PATH}", timeout=60)
    assert flushed.status_code == 200, flushed.text
    check_same(strata, expected)
