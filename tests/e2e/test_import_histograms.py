"""`strata import` brings native histograms from a real Prometheus 2.42, bit for bit (issue 8).

Prometheus with native histograms on scrapes tests/support/histogram_target.py (the script
of tests/e2e/test_prometheus_histogram_chunks.py: integer and float counters with new
buckets, resets, schema and zero-threshold changes, a gauge histogram, then staleness).
2.42 streams them over /api/v1/read as HISTOGRAM / FLOAT_HISTOGRAM chunks (its SAMPLES
answer leaves them out), and that is what the import reads. Afterwards Strata's remote
read of the imported tenant must equal that Prometheus's own answer for the same range:

- SAMPLES: every histogram message, as bytes, is the one Prometheus's chunks decode to
  (every field: schema, zero threshold and count, spans, deltas or float counts, reset
  hint), and every float sample of the scrape's own series bit for bit;
- streamed: the very chunk bytes, but for the header of Prometheus's open head chunk,
  which its 2.42 querier re-encodes without it (docs/remote-read.md#histogram-chunks).

`strata verify` then reads every imported histogram back.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from blocks.histogram_codec import canonical_histogram
from proto import types_pb2
from querier.histogram_chunk import FLOAT_HISTOGRAM, HISTOGRAM
from querier.stream_frames import iter_responses
from tests.e2e.conftest import attach_log
from tests.e2e.servers import StrataServer, strata_command
from tests.e2e.test_prometheus_histogram_chunks import (
    READ_HEADERS,
    SERIES,
    STEPS,
    NativeHistogramPrometheus,
    scraped_script,
)
from tests.querier.histogram_reads import (
    FloatSeries,
    HistogramSeries,
    LabelSet,
    read_request,
    samples_answer,
    streamed_answer,
)

pytestmark = pytest.mark.e2e

TENANT = "history"
RUN_TIMEOUT_S = 120
READ_TIMEOUT_S = 30.0
# Longer than a scrape may take (200 ms): samples before the import's end are all stored.
SETTLE_S = 1.0
# Far enough back to hold the whole scrape, short enough to be one or two windows.
LOOKBACK_MS = 10 * 60_000
EVERYTHING = [types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.RE, name="__name__", value=".+")]
Chunks = dict[LabelSet, list[tuple[int, int, int, bytes]]]
WINDOW_LINE = re.compile(r"(\d+) series, (\d+) samples, (\d+) histograms -> ")


@pytest.fixture
def histogram_source(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[NativeHistogramPrometheus]:
    """A Prometheus that has scraped the whole script and marked the series stale."""
    yield from scraped_script(request, tmp_path, {})


def post_read(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    answer = httpx.post(f"{url}/api/v1/read", content=body, headers=headers, timeout=READ_TIMEOUT_S)
    assert answer.status_code == 200, answer.text
    return answer.content


def chunks_of(body: bytes) -> Chunks:
    """A streamed answer's histogram chunks by series: (type, mint, maxt, data)."""
    out: Chunks = {}
    for response in iter_responses([body]):
        for series in response.chunked_series:
            labels = tuple((label.name, label.value) for label in series.labels)
            for c in series.chunks:
                if c.type in (HISTOGRAM, FLOAT_HISTOGRAM):
                    out.setdefault(labels, []).append(
                        (c.type, c.min_time_ms, c.max_time_ms, c.data)
                    )
    return out


def without_header(chunk: tuple[int, int, int, bytes]) -> tuple[int, int, int, bytes]:
    """The chunk with its counter-reset header bits cleared."""
    kind, mint, maxt, data = chunk
    return kind, mint, maxt, data[:2] + bytes([data[2] & 0x3F]) + data[3:]


def run_strata(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*strata_command(), *args], capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )


def test_imported_histograms_read_back_as_prometheus_streams_them(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    histogram_source: NativeHistogramPrometheus,
) -> None:
    end_ms = int(time.time() * 1000)
    start_ms = end_ms - LOOKBACK_MS
    time.sleep(SETTLE_S)
    # Prometheus's own answer for the range the import takes ([start, end), so end - 1).
    streamed = read_request(start_ms, end_ms - 1, EVERYTHING, streamed=True)
    theirs_body = post_read(histogram_source.url, streamed, READ_HEADERS)
    their_floats, their_histograms, _ = streamed_answer(theirs_body)
    their_chunks = chunks_of(theirs_body)
    by_name = {dict(labels)["__name__"]: rows for labels, rows in their_histograms.items()}
    assert sorted(by_name) == sorted(SERIES)
    assert all(len(rows) == STEPS + 1 for rows in by_name.values())  # and the stale marker
    assert their_floats, "the scrape's own series (up, scrape_duration_seconds, ...)"

    data_dir = tmp_path / "strata"
    imported = run_strata(
        "import",
        "--source",
        histogram_source.url,
        "--data-dir",
        str(data_dir),
        "--from",
        str(start_ms),
        "--to",
        str(end_ms),
        "--tenant",
        TENANT,
    )
    assert imported.returncode == 0, imported.stdout + imported.stderr
    histograms = sum(len(rows) for rows in their_histograms.values())
    samples = sum(len(rows) for rows in their_floats.values())
    windows = [tuple(map(int, m.groups())) for m in WINDOW_LINE.finditer(imported.stdout)]
    assert sum(w[2] for w in windows) == histograms, imported.stdout
    assert sum(w[1] for w in windows) == samples, imported.stdout
    assert f"samples={samples} histograms={histograms} " in imported.stdout

    strata = StrataServer(data_dir, tmp_path / "strata.log")
    attach_log(request.node, "strata", strata.log_path)
    try:
        strata.start()
        ours_headers = {**READ_HEADERS, "X-Scope-OrgID": TENANT}
        samples_body = read_request(start_ms, end_ms - 1, EVERYTHING, streamed=False)
        our_floats, our_histograms = samples_answer(
            post_read(strata.url, samples_body, ours_headers)
        )
        ours_body = post_read(strata.url, streamed, ours_headers)
    finally:
        strata.stop()

    assert our_floats == their_floats
    want: HistogramSeries = {
        labels: [(t, canonical_histogram(data)) for t, data in rows]
        for labels, rows in their_histograms.items()
    }
    assert our_histograms == want
    streamed_floats: FloatSeries = streamed_answer(ours_body)[0]
    assert streamed_floats == their_floats
    our_chunks = chunks_of(ours_body)
    assert sorted(our_chunks) == sorted(their_chunks)
    for labels, chunks in their_chunks.items():
        *closed, last = our_chunks[labels]
        assert closed == chunks[:-1], labels
        assert without_header(last) == chunks[-1], labels

    verified = run_strata("verify", "--data-dir", str(data_dir), "--tenant", TENANT)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"{samples} samples and {histograms} histograms read" in verified.stdout
