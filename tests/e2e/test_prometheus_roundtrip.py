"""A real Prometheus scrapes awkward metrics and remote-writes them to a real `strata serve`.

The target is served by the test, so every value Prometheus scraped is known; Prometheus's
own TSDB says which scrapes it ingested and at which timestamps. Strata must end up with
exactly what Prometheus sent: every sample, bit for bit, staleness markers included.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import numpy as np
import pytest

from tests.e2e.samples import (
    STALE_NAN_BITS,
    LabelSet,
    Stored,
    count_samples,
    float_bits,
    labelset,
    read_stored,
)
from tests.e2e.servers import (
    HOST,
    PrometheusServer,
    StrataServer,
    metric_value,
    parse_metrics_text,
    prometheus_config,
)

TARGET_JOB = "awkward"
SCRAPES_WANTED = 20
SCRAPE_WAIT_S = 60.0  # Prometheus starts scraping ~5 s after start, then once a second
# After the reload that removes every scrape job, Prometheus writes staleness markers
# two intervals later; the queue is drained when nothing has moved for this long.
QUIET_S = 5.0
DRAIN_TIMEOUT_S = 30.0
# Go's strconv.ParseFloat("NaN") is math.NaN(): this payload, not Python's 0x7ff8...0.
GO_NAN_BITS = 0x7FF8000000000001

AWKWARD = (
    0.1,
    -0.0,
    1 / 3,
    0.1 + 0.2,
    5e-324,  # smallest subnormal
    2.225073858507201e-308,  # largest subnormal
    2.2250738585072014e-308,  # smallest normal
    1.7976931348623157e308,
    -1.7976931348623157e308,
    math.inf,
    -math.inf,
    math.nan,
    0.0,
    9007199254740993.0,  # 2**53 + 1, not representable
    -273.15,
    6.02214076e23,
)
TRICKY_NOTE = 'a "quoted" \\ back\nslash, é'


def exposition_float(value: float) -> str:
    """A float as the text format writes it; repr() round-trips every finite float."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def escape_label_value(value: str) -> str:
    """Label value escaping of the text format."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def scrape_values(n: int) -> dict[LabelSet, float]:
    """What the target serves at its n-th scrape (1-based), without job and instance."""
    values = {
        labelset({"__name__": "e2e_scrapes_total"}): float(n),
        labelset({"__name__": "e2e_awkward", "kind": "cycle"}): AWKWARD[n % len(AWKWARD)],
        labelset({"__name__": "e2e_awkward", "kind": "offset", "note": TRICKY_NOTE}): AWKWARD[
            (7 * n + 3) % len(AWKWARD)
        ],
    }
    if n % 3 != 0:  # comes and goes: Prometheus marks it stale on the scrapes it is absent
        values[labelset({"__name__": "e2e_awkward", "kind": "blink"})] = n * 0.1
    return values


def exposition(n: int) -> str:
    """The text-format page of the n-th scrape."""
    lines = ["# TYPE e2e_scrapes_total counter", "# TYPE e2e_awkward gauge"]
    for labels, value in scrape_values(n).items():
        name = dict(labels)["__name__"]
        pairs = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels if k != "__name__")
        lines.append(f"{name}{{{pairs}}} {exposition_float(value)}")
    return "\n".join(lines) + "\n"


def sent_bits(value: float) -> int:
    """The bits Prometheus 2.42 sends for a value it parsed from `exposition_float(value)`.

    NaN parses to Go's math.NaN(). -0.0 arrives as +0.0: the sender's gogoproto encoder
    leaves out a double field that == 0 (the proto3 default), and -0.0 == 0. (Strata itself
    keeps -0.0; test_kill9_loses_nothing sends it directly.)
    """
    if math.isnan(value):
        return GO_NAN_BITS
    return 0 if value == 0 else float_bits(value)


class _TargetHTTPServer(ThreadingHTTPServer):
    """The scrape target: counts the pages it served; page n is `exposition(n)`."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((HOST, 0), _TargetHandler)
        self.scrapes = 0
        self.lock = threading.Lock()


class _TargetHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = cast(_TargetHTTPServer, self.server)
        with server.lock:
            server.scrapes += 1
            body = exposition(server.scrapes).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: Prometheus scrapes every second."""


@pytest.fixture
def target() -> Iterator[_TargetHTTPServer]:
    """The scrape target, served from a thread on a free loopback port."""
    server = _TargetHTTPServer()
    thread = threading.Thread(target=server.serve_forever, name="scrape-target", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5.0)


@dataclass
class SentCounts:
    """Prometheus's remote-write counters for the strata queue, read from its /metrics."""

    sent: float
    samples_in: float
    failed: float
    retried: float
    dropped: float
    pending: float
    raw: dict[str, float] = field(repr=False)


def remote_write_counts(prometheus: PrometheusServer) -> SentCounts:
    """The queue's counters now (2.42 names)."""
    m = prometheus.own_metrics()
    q = {"remote_name": "strata"}
    return SentCounts(
        sent=metric_value(m, "prometheus_remote_storage_samples_total", **q),
        samples_in=metric_value(m, "prometheus_remote_storage_samples_in_total"),
        failed=metric_value(m, "prometheus_remote_storage_samples_failed_total", **q),
        retried=metric_value(m, "prometheus_remote_storage_samples_retried_total", **q),
        dropped=metric_value(m, "prometheus_remote_storage_samples_dropped_total", **q),
        pending=metric_value(m, "prometheus_remote_storage_samples_pending", **q),
        raw=m,
    )


def wait_for_scrapes(target: _TargetHTTPServer, prometheus: PrometheusServer) -> None:
    """Until the target has served SCRAPES_WANTED pages (bounded)."""
    deadline = time.monotonic() + SCRAPE_WAIT_S
    while target.scrapes < SCRAPES_WANTED:
        if time.monotonic() > deadline:
            pytest.fail(
                f"prometheus scraped the target {target.scrapes} times in {SCRAPE_WAIT_S} s"
            )
        if not prometheus.process.running:
            pytest.fail("prometheus exited while scraping")
        time.sleep(0.2)


def wait_until_drained(prometheus: PrometheusServer) -> SentCounts:
    """Until nothing is pending and nothing was sent for QUIET_S; the final counters."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    counts = remote_write_counts(prometheus)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = remote_write_counts(prometheus)
        if now.sent != counts.sent or now.samples_in != counts.samples_in or now.pending:
            quiet_since = time.monotonic()
        counts = now
        if time.monotonic() - quiet_since >= QUIET_S:
            return counts
    pytest.fail(f"prometheus's remote-write queue did not drain in {DRAIN_TIMEOUT_S} s: {counts}")


def prometheus_tsdb(prometheus: PrometheusServer) -> dict[LabelSet, list[tuple[int, str]]]:
    """Every sample in Prometheus's own TSDB (staleness markers are invisible to queries)."""
    series: dict[LabelSet, list[tuple[int, str]]] = {}
    for item in prometheus.query('{__name__=~".+"}[1h]', at_s=time.time()):
        points = [(round(float(ts) * 1000), value) for ts, value in item["values"]]
        series[labelset(item["metric"])] = points
    return series


def value_matches(stored_bits: int, text: str) -> bool:
    """A stored value equals what Prometheus sent for one its query API printed."""
    return stored_bits == sent_bits(float(text))


def check_against_prometheus_tsdb(
    stored: Stored, tsdb: Mapping[LabelSet, list[tuple[int, str]]]
) -> None:
    """Strata holds each series Prometheus holds: its samples bit for bit, plus stale markers."""
    assert set(stored) == set(tsdb), (
        f"series only in strata: {sorted(set(stored) - set(tsdb))[:5]}; "
        f"only in prometheus: {sorted(set(tsdb) - set(stored))[:5]}"
    )
    for labels, points in tsdb.items():
        ts, bits = stored[labels]
        live = bits != np.uint64(STALE_NAN_BITS)
        got = list(zip(ts[live].tolist(), bits[live].tolist(), strict=True))
        assert [t for t, _ in got] == [t for t, _ in points], f"timestamps differ for {labels}"
        for (t, stored_bits), (_, text) in zip(got, points, strict=True):
            assert value_matches(stored_bits, text), (
                f"{labels} at {t}: strata has {stored_bits:#018x}, prometheus has {text}"
            )


def scrape_timestamps(stored: Stored, job_labels: LabelSet) -> dict[int, int]:
    """Scrape number -> timestamp, from the target's counter as Strata stored it."""
    ts, bits = stored[labelset({"__name__": "e2e_scrapes_total", **dict(job_labels)})]
    live = bits != np.uint64(STALE_NAN_BITS)
    numbers = bits[live].view(np.float64)
    assert np.all(np.diff(numbers) > 0), f"the scrape counter is not increasing: {numbers}"
    return {int(n): int(t) for n, t in zip(numbers.tolist(), ts[live].tolist(), strict=True)}


def check_served_values(stored: Stored, job_labels: LabelSet, served: int) -> None:
    """Every value of every scrape Prometheus ingested is stored at that scrape's timestamp."""
    at = scrape_timestamps(stored, job_labels)
    assert len(at) >= SCRAPES_WANTED - 2, f"only scrapes {sorted(at)} reached strata"
    assert max(at) <= served
    lookup = {
        labels: dict(zip(ts.tolist(), bits.tolist(), strict=True))
        for labels, (ts, bits) in stored.items()
    }
    for n, t in at.items():
        page = scrape_values(n)
        for labels, value in page.items():
            full = labelset({**dict(labels), **dict(job_labels)})
            got = lookup[full].get(t)
            assert got == sent_bits(value), (
                f"scrape {n} {full}: served {exposition_float(value)} "
                f"(bits {sent_bits(value):#018x}), strata has {got and hex(got)}"
            )
    # The blink series is absent from every third page. Prometheus marks it stale at a
    # scrape where it went missing; which one it picks under load is Prometheus's
    # business (the markers are compared with its own storage above), so here: markers
    # exist, and none stands at a scrape whose page served the series.
    blink = labelset({"__name__": "e2e_awkward", "kind": "blink", **dict(job_labels)})
    served_at = {t for n, t in at.items() if n % 3 != 0}
    markers = {t for t, b in lookup[blink].items() if b == STALE_NAN_BITS}
    assert markers, "the blinking series never got a staleness marker"
    assert not markers & served_at, f"staleness markers where it was served: {markers & served_at}"
    for labels, (_, bits) in stored.items():
        if dict(labels).get("job") == TARGET_JOB:
            assert int(bits[-1]) == STALE_NAN_BITS, f"{labels} not marked stale at the end"


@pytest.mark.e2e
def test_prometheus_remote_write_arrives_complete_and_bit_exact(
    strata: StrataServer, prometheus: PrometheusServer, target: _TargetHTTPServer
) -> None:
    target_address = f"{HOST}:{target.server_address[1]}"
    jobs = {TARGET_JOB: [target_address], "prometheus": [prometheus.address]}
    prometheus.start(prometheus_config(jobs, strata.write_url))
    wait_for_scrapes(target, prometheus)

    # The targets vanish from the jobs (removing a job would skip the end-of-run staleness
    # markers): Prometheus stops scraping, marks every series stale two intervals later and
    # sends the markers; then nothing moves any more.
    prometheus.reload(prometheus_config({job: [] for job in jobs}, strata.write_url))
    prometheus.wait_until_no_active_targets()
    counts = wait_until_drained(prometheus)
    tsdb = prometheus_tsdb(prometheus)
    strata_metrics = parse_metrics_text(strata.metrics())
    prometheus.stop()
    strata.stop_gracefully()
    served = target.scrapes

    assert (counts.failed, counts.retried, counts.dropped, counts.pending) == (0, 0, 0, 0), counts
    assert counts.sent == counts.samples_in > 0, counts
    all_stored = read_stored(strata.data_dir)
    assert set(all_stored) == {"default"}
    stored = all_stored["default"]
    assert count_samples(stored) == counts.sent
    received = metric_value(strata_metrics, "strata_samples_received_total", tenant="default")
    assert received == counts.sent
    head_series = metric_value(strata_metrics, "strata_head_series", tenant="default")
    assert head_series == len(stored)

    check_against_prometheus_tsdb(stored, tsdb)
    check_served_values(stored, labelset({"job": TARGET_JOB, "instance": target_address}), served)
