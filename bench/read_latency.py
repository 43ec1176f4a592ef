"""Remote-read latency: Strata against Prometheus 2.42's own remote read, on the same data.

    python -m bench.read_latency                 # 5 rounds of 20 reads a cell, ~10 minutes
    python -m bench.read_latency --runs 3 --reps 5 --max-seconds 300

One synthetic node_exporter fleet (20 hosts x 50 series at 15 s over one day, one of the
series going back 30 days; counters and gauges with decimal values; the data ends at
least 2 hours before the run) is sent as identical remote-write requests, in time order,
to `strata serve` and to a Prometheus with its remote-write receiver. Strata cuts its
whole head into blocks (POST /api/v1/admin/flush); Prometheus takes a TSDB snapshot with
its head, which two fresh Prometheus servers then read: one left to compact its blocks
as it would (`prometheus`), one told not to (`prometheus-2h`, as many 2-hour blocks as
Strata has, since Strata has no compactor yet). So every server reads blocks only.
Before any timing each holds every sample, and every server's answer to every query
equals the generated samples bit for bit.

Remote reads (snappy ReadRequest, SAMPLES and STREAMED_XOR_CHUNKS, whole body read) are
then timed against `strata query` over the bucket, `strata serve` and both Prometheus
servers, after warm-up reads, in rounds that interleave the systems. Servers run pinned
to CPU 0, this client on CPU 1. Last, the memory of a large read (all 1,000 series over
the day) per answer type, each from a freshly started `strata query` or Prometheus:
VmRSS before, and the peak while it answers (VmHWM, reset through /proc/PID/clear_refs,
and VmRSS sampled every 2 ms). Prints Markdown tables and writes every figure to
bench/results/read_latency.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c
import numpy as np
import snappy

from bench.block_bytes import PROMETHEUS_CONFIG, answers, stop, tool_version, wait_for
from bench.block_bytes import http as fetch
from bench.common import RESULTS, Strata, free_port, machine, proc_status_kib
from blocks.catalog import collect_rows
from blocks.meta import Resolution
from blocks.objstore.local import LocalStore
from proto import remote_pb2, types_pb2
from querier.xor_chunk import decode_xor_chunk

SERVER_CPU = 0
CLIENT_CPU = 1
SEED = 42
STEP_MS = 15_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
BLOCK_MS = 2 * HOUR_MS
HOSTS = 20
SELECTED_HOSTS = 2  # 100 of the 1,000 series: workloads b and c
LONG_DAYS = 30
# The long series is host-000's first metric, node_cpu_seconds_total{cpu="0",mode="idle"}.
LONG_HOST, LONG_METRIC = 0, 0
# Remote-write requests: 2,000 samples, as Prometheus's default queue sends at most.
LONG_SAMPLES_PER_REQUEST = 2_000
FLEET_SCRAPES_PER_REQUEST = 2
TENANT = "default"
SYSTEMS = ("strata-query", "strata-compacted", "strata-serve", "prometheus", "prometheus-2h")
"""strata-compacted: `strata query` over a copy of the bucket after one `strata compact`
pass (raw retention off, so every sample stays), as Prometheus compacts its own blocks.
prometheus-2h: a second Prometheus on the same snapshot, told not to compact its 2-hour
blocks, so that it holds the data in as many blocks as Strata's gateway cut."""
NO_COMPACTION = ["--storage.tsdb.min-block-duration=2h", "--storage.tsdb.max-block-duration=2h"]
KINDS = {
    "samples": remote_pb2.ReadRequest.SAMPLES,
    "streamed": remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS,
}
# Bounds on every wait, so a wedged server fails the run instead of hanging it.
HTTP_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 30.0
# Prometheus compacts its blocks in a loop that first runs a minute after start.
COMPACTION_TIMEOUT_S = 300.0
COMPACTION_QUIET_S = 10.0
# A gauge wanders around its level (memory, load) rather than drifting away from it.
GAUGE_PULL = 0.01
MIN_REPS = 3
RSS_POLL_S = 0.002
MATCHER_TYPES = {"=": types_pb2.LabelMatcher.EQ, "=~": types_pb2.LabelMatcher.RE}

Labels = tuple[tuple[str, str], ...]
Matcher = tuple[str, str, str]
"""(name, "=" or "=~", value)"""


# --- the data ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metric:
    """One series of a host: how its values move."""

    name: str
    labels: Labels
    counter: bool
    start: float
    change: float
    """Counter: mean increase per second. Gauge: wander step per scrape (0: constant)."""
    scale: float
    """Values are whole multiples of 1/scale: 100 for hundredths (CPU seconds, load),
    1/1024 for bytes read from /proc/meminfo in kB."""


def host_metrics() -> list[Metric]:
    """The 50 series of one host, shaped like node_exporter's."""
    out = []
    cpu_modes = [("idle", 0.9), ("user", 0.06), ("system", 0.03), ("iowait", 0.004)]
    cpu_modes += [("softirq", 0.003), ("nice", 0.0005), ("irq", 0.0002), ("steal", 0.0)]
    uptime_s = 40 * 86_400
    for cpu in ("0", "1"):
        for mode, share in cpu_modes:
            cpu_labels = (("cpu", cpu), ("mode", mode))
            out.append(
                Metric("node_cpu_seconds_total", cpu_labels, True, uptime_s * share, share, 100)
            )
    gib = float(1 << 30)
    memory = [("MemTotal", 8.0, 0.0), ("MemFree", 2.0, 2e6), ("MemAvailable", 5.0, 2e6)]
    memory += [("Buffers", 0.2, 1e5), ("Cached", 2.5, 1e6), ("Active", 3.0, 1e6)]
    memory += [("Inactive", 1.5, 5e5), ("SwapTotal", 1.0, 0.0), ("SwapFree", 0.9, 0.0)]
    memory += [("Dirty", 0.001, 3e5)]
    for name, size, step in memory:
        out.append(Metric(f"node_memory_{name}_bytes", (), False, size * gib, step, 1 / 1024))
    for device, share in (("eth0", 1.0), ("lo", 0.2)):
        for way in ("receive", "transmit"):
            labels = (("device", device),)
            rate = 5e4 * share
            out.append(Metric(f"node_network_{way}_bytes_total", labels, True, 2e4 * rate, rate, 1))
            rate = 60 * share
            out.append(
                Metric(f"node_network_{way}_packets_total", labels, True, 2e4 * rate, rate, 1)
            )
    disk = [("reads_completed", 3.0, 1.0), ("writes_completed", 12.0, 1.0)]
    disk += [("read_bytes", 4e4, 1 / 512), ("written_bytes", 2e5, 1 / 512)]
    disk += [("io_time_seconds", 0.02, 1000.0)]
    for name, rate, scale in disk:
        out.append(
            Metric(f"node_disk_{name}_total", (("device", "vda"),), True, 1e5 * rate, rate, scale)
        )
    fs = (("device", "/dev/vda"), ("fstype", "ext4"), ("mountpoint", "/"))
    out.append(Metric("node_filesystem_size_bytes", fs, False, 100 * gib, 0.0, 1 / 4096))
    out.append(Metric("node_filesystem_avail_bytes", fs, False, 40 * gib, 5e5, 1 / 4096))
    out.append(Metric("node_filesystem_free_bytes", fs, False, 45 * gib, 5e5, 1 / 4096))
    for name, load in (("node_load1", 0.5), ("node_load5", 0.45), ("node_load15", 0.4)):
        out.append(Metric(name, (), False, load, 0.05, 100))
    for name, rate in (("context_switches", 800), ("intr", 400), ("forks", 2)):
        out.append(Metric(f"node_{name}_total", (), True, 1e5 * rate, rate, 1))
    out.append(Metric("node_procs_running", (), False, 2, 0.7, 1))
    out.append(Metric("node_procs_blocked", (), False, 0, 0.3, 1))
    return out


@dataclass(frozen=True, slots=True)
class Series:
    """One generated series: labels sorted by name, timestamps and values."""

    labels: Labels
    ts: np.ndarray
    values: np.ndarray


@dataclass(frozen=True, slots=True)
class DataSet:
    """Every series sent, and where its time ranges lie."""

    series: list[Series]
    end_ms: int
    fleet_start_ms: int
    long_start_ms: int

    @property
    def samples(self) -> int:
        """Samples in all series."""
        return sum(len(s.ts) for s in self.series)


def mean_reverting(steps: np.ndarray, pull: float) -> np.ndarray:
    """A random walk drawn back towards 0 by `pull` of its distance every step."""
    out, y = [], 0.0
    for step in steps.tolist():
        y += step - pull * y
        out.append(y)
    return np.array(out)


def metric_values(metric: Metric, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` scrapes of a metric: a counter that only grows, or a gauge that wanders."""
    noise = rng.normal(0.0, 1.0, count)
    if metric.counter:
        steps = np.maximum(0.0, metric.change * STEP_MS / 1000 * (1 + 0.3 * noise))
        raw = metric.start * rng.uniform(0.8, 1.2) + np.cumsum(steps)
    else:
        wander = mean_reverting(metric.change * noise, GAUGE_PULL)
        raw = np.clip(metric.start * rng.uniform(0.8, 1.2) + wander, 0, None)
    # Division by a power of ten gives the float64 nearest the decimal, as an exporter's
    # parse of "1234.56" does; by a power of two (1/1024) it is exact.
    values: np.ndarray = np.round(raw * metric.scale) / metric.scale
    return values


def make_data(end_ms: int) -> DataSet:
    """The fleet: HOSTS x 50 series over the day before end_ms, one of them over 30 days."""
    fleet_start = end_ms - DAY_MS
    long_start = end_ms - LONG_DAYS * DAY_MS
    metrics = host_metrics()
    series = []
    for host in range(HOSTS):
        # Each target is scraped at its own offset inside the interval, as in a real fleet.
        phase = int(np.random.default_rng([SEED, host]).integers(0, STEP_MS))
        instance = f"host-{host:03d}:9100"
        for index, metric in enumerate(metrics):
            start = long_start if (host, index) == (LONG_HOST, LONG_METRIC) else fleet_start
            count = (end_ms - start) // STEP_MS
            ts = start + phase + np.arange(count, dtype=np.int64) * STEP_MS
            rng = np.random.default_rng([SEED, host, index])
            base = (("__name__", metric.name), ("instance", instance), ("job", "node"))
            labels = tuple(sorted(base + metric.labels))
            series.append(Series(labels, ts, metric_values(metric, count, rng)))
    return DataSet(series, end_ms, fleet_start, long_start)


def data_end_ms() -> int:
    """The end of the data: two hours before the start of the current 2-hour window."""
    now_ms = int(time.time() * 1000)
    return now_ms - now_ms % BLOCK_MS - BLOCK_MS


# --- remote write --------------------------------------------------------------------


def write_bodies(data: DataSet) -> Iterator[tuple[bytes, int]]:
    """Snappy WriteRequests in time order, with their sample counts.

    First the long series alone (2,000 samples a request), then the fleet's day, two
    scrapes of every series a request: no request holds a sample older than one sent
    before it for the same series, so Prometheus's head takes them all.
    """
    label_msgs = [[types_pb2.Label(name=n, value=v) for n, v in s.labels] for s in data.series]
    long_index = LONG_HOST * len(host_metrics()) + LONG_METRIC
    long = data.series[long_index]
    split = int(np.searchsorted(long.ts, data.fleet_start_ms))
    for lo in range(0, split, LONG_SAMPLES_PER_REQUEST):
        hi = min(split, lo + LONG_SAMPLES_PER_REQUEST)
        yield _write_request([(label_msgs[long_index], long, lo, hi)]), hi - lo
    scrapes = DAY_MS // STEP_MS
    offsets = [split if i == long_index else 0 for i in range(len(data.series))]
    for k in range(0, scrapes, FLEET_SCRAPES_PER_REQUEST):
        parts = [
            (label_msgs[i], s, offsets[i] + k, offsets[i] + k + FLEET_SCRAPES_PER_REQUEST)
            for i, s in enumerate(data.series)
        ]
        yield _write_request(parts), sum(hi - lo for _, _, lo, hi in parts)


def _write_request(parts: list[tuple[list[types_pb2.Label], Series, int, int]]) -> bytes:
    request = remote_pb2.WriteRequest()
    for labels, series, lo, hi in parts:
        request.timeseries.append(
            types_pb2.TimeSeries(
                labels=labels,
                samples=[
                    types_pb2.Sample(value=v, timestamp=t)
                    for v, t in zip(
                        series.values[lo:hi].tolist(), series.ts[lo:hi].tolist(), strict=True
                    )
                ],
            )
        )
    return bytes(snappy.compress(request.SerializeToString()))


WRITE_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}


class Client:
    """One kept-alive HTTP connection to a loopback server."""

    def __init__(self, url: str) -> None:
        self.host, _, port = url.removeprefix("http://").partition(":")
        self.port = int(port)
        self.conn: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[float, int, bytes]:
        """Seconds from sending to the last byte of the answer, status, body."""
        return self.request("POST", path, body, headers)

    def get(self, path: str) -> tuple[float, int, bytes]:
        """As post, for a GET with no body."""
        return self.request("GET", path, None, {})

    def request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[float, int, bytes]:
        """One request on the kept-alive connection: seconds to the last byte of the
        answer, status, body.

        A kept-alive connection the server has closed while idle (uvicorn does after 5 s)
        fails before any answer; the request is then sent once more on a new one.
        """
        reused = self.conn is not None
        try:
            return self._request(method, path, body, headers)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            if not reused:
                raise
        return self._request(method, path, body, headers)

    def _request(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[float, int, bytes]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=HTTP_TIMEOUT_S)
        try:
            started = time.perf_counter()
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - started
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return elapsed, response.status, data

    def close(self) -> None:
        """Drop the connection; the next request opens another."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def ingest(data: DataSet, urls: Sequence[str]) -> dict[str, float]:
    """Send every write request to every URL in turn; raise on any answer but 2xx."""
    clients = [Client(url) for url in urls]
    requests = samples = 0
    seconds = [0.0] * len(urls)
    for body, count in write_bodies(data):
        for i, client in enumerate(clients):
            elapsed, status, answer = client.post("/api/v1/write", body, WRITE_HEADERS)
            if status // 100 != 2:
                raise RuntimeError(f"{urls[i]} answered {status} to a write: {answer[:300]!r}")
            seconds[i] += elapsed
        requests += 1
        samples += count
    for client in clients:
        client.close()
    if samples != data.samples:
        raise RuntimeError(f"sent {samples:,} samples, generated {data.samples:,}")
    return {"requests": requests, "samples": samples} | {
        f"seconds_{i}": s for i, s in enumerate(seconds)
    }


# --- Prometheus ----------------------------------------------------------------------


class Prometheus:
    """A Prometheus 2.42 subprocess pinned to one CPU (so GOMAXPROCS is 1 as well)."""

    def __init__(
        self, tsdb: Path, log: Path, *, cpu: int, receiver: bool, extra: Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tsdb.parent / "prometheus.yml"
        config.write_text(PROMETHEUS_CONFIG)
        cmd = [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # Retention counts back from the newest block: 30 days of data need more
            # than the 15 d default, or the oldest half would be deleted.
            "--storage.tsdb.retention.time=10y",
        ]
        if receiver:
            cmd += ["--web.enable-remote-write-receiver", "--web.enable-admin-api"]
        cmd += extra
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
            )
        try:
            wait_for(
                f"prometheus to be ready (log: {log})",
                lambda: answers(self.proc, self.url + "/-/ready"),
                READY_TIMEOUT_S,
            )
        except BaseException:
            stop(self.proc)
            raise

    def metric(self, name: str) -> float:
        """Sum of a metric's samples on /metrics."""
        total = 0.0
        for line in fetch(self.url + "/metrics").decode().splitlines():
            if line.startswith((name + "{", name + " ")):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def snapshot(self) -> str:
        """A TSDB snapshot including the head; its directory name under snapshots/."""
        url = self.url + "/api/v1/admin/tsdb/snapshot?skip_head=false"
        name: str = json.loads(fetch(url, method="POST", timeout_s=HTTP_TIMEOUT_S))["data"]["name"]
        return name

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        stop(self.proc)


def wait_compacted(prom: Prometheus) -> float:
    """Wait until Prometheus's compaction loop has run and its blocks have stopped changing."""
    last: tuple[float, float] = (-1.0, -1.0)
    since = time.monotonic()

    def settled() -> bool:
        nonlocal last, since
        if prom.metric("prometheus_tsdb_compactions_triggered_total") < 1:
            return False
        now = (
            prom.metric("prometheus_tsdb_blocks_loaded"),
            prom.metric("prometheus_tsdb_compactions_total"),
        )
        if now != last:
            last, since = now, time.monotonic()
            return False
        return time.monotonic() - since >= COMPACTION_QUIET_S

    return wait_for("Prometheus's compaction to settle", settled, COMPACTION_TIMEOUT_S)


def prometheus_blocks(tsdb: Path) -> list[dict[str, int]]:
    """Time range and stats of the blocks in a TSDB directory (not those being deleted)."""
    out = []
    for block in sorted(tsdb.iterdir()):
        meta_file = block / "meta.json"
        if len(block.name) != 26 or not meta_file.is_file():
            continue
        meta = json.loads(meta_file.read_text())
        stats = meta["stats"]
        out.append(
            {
                "mint": meta["minTime"],
                "maxt": meta["maxTime"],
                "series": stats.get("numSeries", 0),
                "samples": stats.get("numSamples", 0),
                "level": meta["compaction"]["level"],
            }
        )
    return out


def strata_blocks(bucket: Path) -> list[dict[str, int]]:
    """Time range and stats of the tenant's raw blocks in Strata's bucket."""
    with LocalStore(bucket) as store:
        rows = collect_rows(store, tenant=TENANT).rows
    return [
        {"mint": r.mint, "maxt": r.maxt, "series": r.series, "samples": r.samples, "level": r.level}
        for r in rows
        if r.resolution == Resolution.RAW
    ]


COMPACT_COMMAND = (sys.executable, "-m", "gateway.cli", "compact", "--delete-delay", "0")


def compacted_copy(bucket: Path, data_dir: Path) -> Path:
    """A copy of the bucket after one `strata compact` pass that keeps every raw sample."""
    shutil.copytree(bucket, data_dir / "bucket")
    done = subprocess.run(
        [*COMPACT_COMMAND, "--data-dir", str(data_dir), "--retention-raw", "0"],
        capture_output=True,
        text=True,
        timeout=HTTP_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"strata compact failed: {done.stderr[-2000:]}")
    print(f"  {done.stderr.strip().splitlines()[-1]}", flush=True)
    return data_dir / "bucket"


# --- remote read ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    """One remote-read query."""

    key: str
    title: str
    matchers: tuple[Matcher, ...]
    mint: int
    maxt: int
    """Inclusive, as remote read's end_timestamp_ms."""

    def body(self, kind: str) -> bytes:
        """The snappy ReadRequest asking for this query's answer as `kind`."""
        query = remote_pb2.Query(
            start_timestamp_ms=self.mint,
            end_timestamp_ms=self.maxt,
            matchers=[
                types_pb2.LabelMatcher(type=MATCHER_TYPES[op], name=n, value=v)
                for n, op, v in self.matchers
            ],
        )
        request = remote_pb2.ReadRequest(queries=[query], accepted_response_types=[KINDS[kind]])
        return bytes(snappy.compress(request.SerializeToString()))

    def selects(self, labels: Labels) -> bool:
        """Whether the query's matchers select a series (equality and regex only)."""
        values = dict(labels)
        for name, op, value in self.matchers:
            have = values.get(name, "")
            if (op == "=" and have != value) or (op == "=~" and not re.fullmatch(value, have)):
                return False
        return True

    def expected(self, data: DataSet) -> list[Series]:
        """The samples the query must return, series sorted by labels."""
        out = []
        for s in sorted(data.series, key=lambda s: s.labels):
            if self.selects(s.labels):
                keep = (s.ts >= self.mint) & (s.ts <= self.maxt)
                if keep.any():
                    out.append(Series(s.labels, s.ts[keep], s.values[keep]))
        return out


def workloads(data: DataSet) -> dict[str, Workload]:
    """The timed queries (a, b, c) and the large read whose memory is taken."""
    end = data.end_ms
    long_matchers: tuple[Matcher, ...] = (
        ("__name__", "=", "node_cpu_seconds_total"),
        ("instance", "=", "host-000:9100"),
        ("cpu", "=", "0"),
        ("mode", "=", "idle"),
    )
    hosts = "|".join(f"host-{h:03d}:9100" for h in range(SELECTED_HOSTS))
    fleet = (("job", "=", "node"), ("instance", "=~", hosts))
    return {
        "a": Workload("a", "1 series x 30 d", long_matchers, end - LONG_DAYS * DAY_MS, end),
        "b": Workload("b", "100 series x 1 d", fleet, end - DAY_MS, end),
        "c": Workload("c", "100 series x 12 h", fleet, end - 12 * HOUR_MS, end),
        "large": Workload(
            "large", "1,000 series x 1 d", (("job", "=", "node"),), end - DAY_MS, end
        ),
    }


def read(client: Client, body: bytes) -> tuple[float, bytes]:
    """One remote read: seconds to the last byte and the body; raise unless 200."""
    elapsed, status, answer = client.post("/api/v1/read", body, READ_HEADERS)
    if status != 200:
        raise RuntimeError(f"remote read answered {status}: {answer[:300]!r}")
    return elapsed, answer


def samples_answer(body: bytes) -> list[Series]:
    """The series of a SAMPLES answer to one query."""
    response = remote_pb2.ReadResponse.FromString(snappy.decompress(body))
    out = []
    for series in response.results[0].timeseries:
        labels = tuple((label.name, label.value) for label in series.labels)
        ts = np.array([s.timestamp for s in series.samples], dtype=np.int64)
        values = np.array([s.value for s in series.samples], dtype=np.float64)
        out.append(Series(labels, ts, values))
    return out


def stream_chunks(body: bytes) -> Iterator[tuple[Labels, list[bytes]]]:
    """(labels, chunk bytes) of every series in every frame of a streamed answer.

    A frame is a uvarint length, the big-endian CRC32C of the message, the message.
    """
    pos = 0
    while pos < len(body):
        size = shift = 0
        while True:
            byte = body[pos]
            pos += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        crc, message = body[pos : pos + 4], body[pos + 4 : pos + 4 + size]
        pos += 4 + size
        if len(message) != size or google_crc32c.value(message) != int.from_bytes(crc, "big"):
            raise RuntimeError("streamed answer holds a broken frame")
        for series in remote_pb2.ChunkedReadResponse.FromString(message).chunked_series:
            labels = tuple((label.name, label.value) for label in series.labels)
            yield labels, [chunk.data for chunk in series.chunks]


def streamed_counts(body: bytes) -> tuple[int, int]:
    """Series and samples of a streamed answer (chunk headers only, nothing decoded)."""
    labels = set()
    samples = 0
    for series_labels, chunks in stream_chunks(body):
        labels.add(series_labels)
        samples += sum(int.from_bytes(data[:2], "big") for data in chunks)
    return len(labels), samples


def streamed_answer(body: bytes, mint: int, maxt: int) -> tuple[list[Series], int]:
    """The series of a streamed answer, cut to [mint, maxt], and the samples cut off.

    Prometheus sends whole stored chunks, some reaching outside the range; its own
    client drops those samples, and so does this one.
    """
    parts: dict[Labels, list[tuple[np.ndarray, np.ndarray]]] = {}
    for labels, chunks in stream_chunks(body):
        parts.setdefault(labels, []).extend(decode_xor_chunk(data) for data in chunks)
    out, outside = [], 0
    for labels, decoded in parts.items():
        ts = np.concatenate([t for t, _ in decoded])
        values = np.concatenate([v for _, v in decoded])
        keep = (ts >= mint) & (ts <= maxt)
        outside += int((~keep).sum())
        out.append(Series(labels, ts[keep], values[keep]))
    return out, outside


def compare(what: str, got: list[Series], want: list[Series]) -> None:
    """Same series in the same order, same timestamps, same value bits; or raise."""
    if [s.labels for s in got] != [s.labels for s in want]:
        raise RuntimeError(
            f"{what}: {len(got)} series, not the {len(want)} expected (or misordered)"
        )
    for g, w in zip(got, want, strict=True):
        if not np.array_equal(g.ts, w.ts) or not np.array_equal(
            g.values.view(np.uint64), w.values.view(np.uint64)
        ):
            raise RuntimeError(f"{what}: series {dict(g.labels)} differs from what was written")


def check_answers(
    data: DataSet, loads: dict[str, Workload], clients: dict[str, Client]
) -> dict[str, dict[str, object]]:
    """Every server's answer to every query equals the generated samples; figures of them."""
    out: dict[str, dict[str, object]] = {}
    for key, workload in loads.items():
        want = workload.expected(data)
        want_samples = sum(len(s.ts) for s in want)
        figures: dict[str, object] = {"series": len(want), "samples": want_samples}
        for system, client in clients.items():
            what = f"{system}, workload {key}"
            _, samples_body = read(client, workload.body("samples"))
            _, streamed_body = read(client, workload.body("streamed"))
            if key == "large":
                # Counts only: decoding five million samples in Python proves little more.
                got = sum(len(s.ts) for s in samples_answer(samples_body))
                series, sent = streamed_counts(streamed_body)
                if got != want_samples or series != len(want) or sent < want_samples:
                    raise RuntimeError(f"{what}: {got:,} / {sent:,} samples, want {want_samples:,}")
                outside = sent - want_samples
            else:
                compare(what + " SAMPLES", samples_answer(samples_body), want)
                got_streamed, outside = streamed_answer(streamed_body, workload.mint, workload.maxt)
                compare(what + " STREAMED_XOR_CHUNKS", got_streamed, want)
            figures[system] = {
                "samples_bytes": len(samples_body),
                "streamed_bytes": len(streamed_body),
                "streamed_samples_outside_range": outside,
            }
            print(f"  {what}: {len(want)} series, {want_samples:,} samples, exact", flush=True)
        out[key] = figures
    return out


# --- timing --------------------------------------------------------------------------


@dataclass(slots=True)
class Cell:
    """Latencies of one (workload, answer type, system)."""

    workload: str
    kind: str
    system: str
    ms: list[float] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)
    """Median of each round."""


def time_cell(client: Client, body: bytes, reps: int, budget_s: float) -> list[float]:
    """Up to `reps` timed reads (at least MIN_REPS, then only while within the budget)."""
    out: list[float] = []
    deadline = time.monotonic() + budget_s
    for _ in range(reps):
        if len(out) >= MIN_REPS and time.monotonic() > deadline:
            break
        elapsed, _ = read(client, body)
        out.append(elapsed * 1000)
    return out


def measure_latency(
    loads: list[Workload], clients: dict[str, Client], args: argparse.Namespace
) -> list[Cell]:
    """Warm-up reads, then rounds that take each cell in turn, systems rotated per round."""
    cells = {
        (w.key, kind, system): Cell(w.key, kind, system)
        for w in loads
        for kind in KINDS
        for system in clients
    }
    bodies = {(w.key, kind): w.body(kind) for w in loads for kind in KINDS}
    for key, kind, system in cells:
        for _ in range(args.warmup):
            read(clients[system], bodies[(key, kind)])
    systems = list(clients)
    started = time.monotonic()
    per_cell_s = args.max_seconds / max(1, args.runs * len(cells))
    for run in range(args.runs):
        if run and time.monotonic() - started > args.max_seconds:
            print(f"time budget spent after {run} rounds", flush=True)
            break
        order = systems[run % len(systems) :] + systems[: run % len(systems)]
        for w in loads:
            for kind in KINDS:
                for system in order:
                    cell = cells[(w.key, kind, system)]
                    ms = time_cell(clients[system], bodies[(w.key, kind)], args.reps, per_cell_s)
                    cell.ms += ms
                    cell.rounds.append(statistics.median(ms))
        print(f"round {run + 1}/{args.runs} done ({time.monotonic() - started:.0f} s)", flush=True)
    return list(cells.values())


def p90(values: list[float]) -> float:
    """90th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, int(0.9 * len(ordered) + 0.5) - 1)]


RATIOS = (
    ("strata-compacted", "prometheus"),
    ("strata-query", "prometheus"),
    ("strata-serve", "prometheus"),
    ("strata-query", "prometheus-2h"),
)


def latency_table(cells: list[Cell], loads: dict[str, Workload]) -> list[str]:
    """Markdown: one line per workload and answer type, medians (p90), ratios of medians."""
    by = {(c.workload, c.kind, c.system): c for c in cells}
    head = "| workload | answer | " + " | ".join(f"{s} ms median (p90)" for s in SYSTEMS)
    head += " | " + " | ".join(f"{a} / {b}" for a, b in RATIOS) + " |"
    lines = [head, "|" + "---|" * (2 + len(SYSTEMS) + len(RATIOS))]
    for key in dict.fromkeys(c.workload for c in cells):
        for kind in KINDS:
            medians = {s: statistics.median(by[(key, kind, s)].ms) for s in SYSTEMS}
            row = [loads[key].title, "SAMPLES" if kind == "samples" else "STREAMED"]
            row += [f"{medians[s]:.1f} ({p90(by[(key, kind, s)].ms):.1f})" for s in SYSTEMS]
            row += [f"{medians[a] / medians[b]:.2f}" for a, b in RATIOS]
            lines.append("| " + " | ".join(row) + " |")
    return lines


# --- memory of a large read ----------------------------------------------------------


def read_with_rss(pid: int, client: Client, body: bytes) -> dict[str, float]:
    """One read while the server's RSS is watched: before, and the peak during it."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = proc_status_kib(pid, "VmRSS")
    peak = before
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.wait(RSS_POLL_S):
            peak = max(peak, proc_status_kib(pid, "VmRSS"))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        elapsed, answer = read(client, body)
    finally:
        done.set()
        watcher.join(5)
    peak = max(peak, proc_status_kib(pid, "VmHWM"))
    return {
        "rss_anon_after_mib": proc_status_kib(pid, "RssAnon") / 1024,
        "threads_after": proc_status_kib(pid, "Threads"),
        "rss_before_mib": before / 1024,
        "peak_rss_mib": peak / 1024,
        "growth_mib": (peak - before) / 1024,
        "latency_ms": elapsed * 1000,
        "response_bytes": len(answer),
    }


def start_fresh(
    system: str, tmp: Path, loaded: Loaded, tag: str
) -> tuple[int, str, Callable[[], None]]:
    """A new server of `system` on the loaded data: its pid, URL and stop."""
    if system == "strata-query":
        server = Strata(
            tmp / f"query-mem-{tag}",
            cpu=SERVER_CPU,
            command="query",
            extra=["--bucket-url", f"file://{loaded.bucket}"],
        )
        return server.proc.pid, server.url, server.stop
    prom = Prometheus(loaded.tsdb, tmp / f"prom-mem-{tag}.log", cpu=SERVER_CPU, receiver=False)
    return prom.proc.pid, prom.url, prom.stop


def measure_memory(
    tmp: Path, loaded: Loaded, loads: dict[str, Workload], runs: int
) -> list[dict[str, object]]:
    """The large read, twice, from a fresh server per system, answer type and run."""
    out: list[dict[str, object]] = []
    large, warm = loads["large"], loads["a"]
    for run in range(runs):
        for system in ("strata-query", "prometheus"):
            for kind in KINDS:
                pid, url, stop_server = start_fresh(system, tmp, loaded, f"{kind}-{run}")
                client = Client(url)
                try:
                    # Indexes loaded and cached, as in a server that has answered before.
                    read(client, warm.body("samples"))
                    first = read_with_rss(pid, client, large.body(kind))
                    again = read_with_rss(pid, client, large.body(kind))
                finally:
                    client.close()
                    stop_server()
                out.append(
                    {"system": system, "kind": kind, "run": run, "first": first, "again": again}
                )
                print(f"  {system} {kind}: {json.dumps(_rounded(first))}", flush=True)
    return out


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in figures.items()}


def med(figures: list[dict[str, float]], key: str) -> float:
    """Median of one figure over runs."""
    return statistics.median(f[key] for f in figures)


def memory_table(memory: list[dict[str, object]]) -> list[str]:
    """Markdown: RSS before and growth during the large read; medians (range) over runs."""
    lines = [
        "| server | answer | RSS before MiB | peak RSS MiB | growth MiB, median (min-max) "
        "| growth MiB, 2nd read | latency ms | body bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for system in ("strata-query", "prometheus"):
        for kind in KINDS:
            runs = [m for m in memory if m["system"] == system and m["kind"] == kind]
            first = [r["first"] for r in runs if isinstance(r["first"], dict)]
            again = [r["again"] for r in runs if isinstance(r["again"], dict)]
            if not first:
                continue
            growth = [f["growth_mib"] for f in first]
            lines.append(
                f"| {system} | {'SAMPLES' if kind == 'samples' else 'STREAMED'} "
                f"| {med(first, 'rss_before_mib'):.0f} | {med(first, 'peak_rss_mib'):.0f} "
                f"| {statistics.median(growth):.0f} ({min(growth):.0f}-{max(growth):.0f}) "
                f"| {med(again, 'growth_mib'):.0f} | {med(first, 'latency_ms'):.0f} "
                f"| {med(first, 'response_bytes'):,.0f} |"
            )
    return lines


# --- the run -------------------------------------------------------------------------


@dataclass(slots=True)
class Servers:
    """What one run has started; stopped in reverse order."""

    stoppers: list[Callable[[], None]] = field(default_factory=list)

    def stop_all(self) -> None:
        """Stop everything started, newest first."""
        while self.stoppers:
            self.stoppers.pop()()


@dataclass(frozen=True, slots=True)
class Loaded:
    """The servers holding the data, and where they keep it."""

    strata: Strata
    prometheus: Prometheus
    prometheus_2h: Prometheus
    bucket: Path
    tsdb: Path
    tsdb_2h: Path
    blocks: dict[str, list[dict[str, int]]]
    details: dict[str, object]


def load_everywhere(tmp: Path, data: DataSet, servers: Servers) -> Loaded:
    """The data in Strata's bucket and in Prometheuses reading only blocks; counts checked."""
    strata = Strata(tmp / "serve", cpu=SERVER_CPU, extra=["--wal-fsync", "false"])
    servers.stoppers.append(strata.stop)
    (tmp / "prom-ingest").mkdir()
    # Not compacting, so that the snapshot holds 2-hour blocks (and one of the head).
    receiver = Prometheus(
        tmp / "prom-ingest" / "tsdb",
        tmp / "prom-ingest.log",
        cpu=SERVER_CPU,
        receiver=True,
        extra=NO_COMPACTION,
    )
    servers.stoppers.append(receiver.stop)
    print(f"writing {data.samples:,} samples to Strata and Prometheus...", flush=True)
    sent = ingest(data, [strata.url, receiver.url])
    print(f"  {sent['requests']:,} requests each", flush=True)
    flushed = json.loads(
        fetch(strata.url + "/api/v1/admin/flush", method="POST", timeout_s=HTTP_TIMEOUT_S)
    )
    snapshot = receiver.snapshot()
    receiver.stop()
    tsdb, tsdb_2h = tmp / "prom" / "tsdb", tmp / "prom-2h" / "tsdb"
    tsdb.parent.mkdir()
    shutil.move(tmp / "prom-ingest" / "tsdb" / "snapshots" / snapshot, tsdb)
    shutil.rmtree(tmp / "prom-ingest")
    shutil.copytree(tsdb, tsdb_2h)
    prom = Prometheus(tsdb, tmp / "prom.log", cpu=SERVER_CPU, receiver=False)
    servers.stoppers.append(prom.stop)
    prom_2h = Prometheus(
        tsdb_2h, tmp / "prom-2h.log", cpu=SERVER_CPU, receiver=False, extra=NO_COMPACTION
    )
    servers.stoppers.append(prom_2h.stop)
    print("waiting for Prometheus to compact its blocks...", flush=True)
    waited = wait_compacted(prom)
    bucket = tmp / "serve" / "bucket"
    held = {
        "strata": strata_blocks(bucket),
        "prometheus": prometheus_blocks(tsdb),
        "prometheus-2h": prometheus_blocks(tsdb_2h),
    }
    for system, blocks in held.items():
        samples = sum(b["samples"] for b in blocks)
        print(f"  {system}: {len(blocks)} blocks, {samples:,} samples", flush=True)
        if samples != data.samples:
            raise RuntimeError(f"{system} holds {samples:,} samples, {data.samples:,} were sent")
    details: dict[str, object] = {
        "ingest": sent,
        "strata_flush": flushed,
        "prometheus_compaction_wait_s": waited,
    }
    return Loaded(strata, prom, prom_2h, bucket, tsdb, tsdb_2h, held, details)


def querier(data_dir: Path, bucket: Path, servers: Servers) -> Strata:
    """`strata query` over `bucket`, stopped with the run's other servers."""
    query = Strata(
        data_dir, cpu=SERVER_CPU, command="query", extra=[f"--bucket-url=file://{bucket}"]
    )
    servers.stoppers.append(query.stop)
    return query


def run(
    args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, object], list[Cell], dict[str, Workload], list[dict[str, object]]]:
    """Load, check, time, measure memory: the run's figures, latency cells, queries, memory."""
    data = make_data(data_end_ms())
    loads = workloads(data)
    print(
        f"data: {len(data.series):,} series, {data.samples:,} samples, ends {data.end_ms}",
        flush=True,
    )
    servers = Servers()
    try:
        loaded = load_everywhere(tmp, data, servers)
        query = querier(tmp / "query", loaded.bucket, servers)
        print("compacting a copy of Strata's bucket...", flush=True)
        compacted_bucket = compacted_copy(loaded.bucket, tmp / "compacted")
        compacted_blocks = strata_blocks(compacted_bucket)
        print(f"  strata-compacted: {len(compacted_blocks)} raw blocks", flush=True)
        compacted = querier(tmp / "compacted-query", compacted_bucket, servers)
        urls = {
            "strata-query": query.url,
            "strata-compacted": compacted.url,
            "strata-serve": loaded.strata.url,
            "prometheus": loaded.prometheus.url,
            "prometheus-2h": loaded.prometheus_2h.url,
        }
        clients = {s: Client(urls[s]) for s in SYSTEMS}
        print("checking every answer against the data...", flush=True)
        answers_seen = check_answers(data, loads, clients)
        print("timing...", flush=True)
        timed = [loads[k] for k in ("a", "b", "c")]
        cells = measure_latency(timed, clients, args)
        for client in clients.values():
            client.close()
        changed = [
            name
            for name, tsdb in (("prometheus", loaded.tsdb), ("prometheus-2h", loaded.tsdb_2h))
            if prometheus_blocks(tsdb) != loaded.blocks[name]
        ]
        if changed:
            print(f"  WARNING: blocks of {changed} changed while timing", flush=True)
        # Only one Prometheus may open a TSDB directory: the memory runs start their own.
        servers.stop_all()
        print("memory of the large read...", flush=True)
        memory = measure_memory(tmp, loaded, loads, args.memory_runs)
    finally:
        servers.stop_all()
    figures = {
        "data": {
            "series": len(data.series),
            "samples": data.samples,
            "end_ms": data.end_ms,
            "fleet_start_ms": data.fleet_start_ms,
            "long_start_ms": data.long_start_ms,
            "step_ms": STEP_MS,
        },
        "workloads": {
            k: {"title": w.title, "matchers": w.matchers, "mint": w.mint, "maxt": w.maxt}
            for k, w in loads.items()
        },
        "answers": answers_seen,
        "latency": [
            {
                "workload": c.workload,
                "kind": c.kind,
                "system": c.system,
                "ms": c.ms,
                "round_medians": c.rounds,
            }
            for c in cells
        ],
        **loaded.details,
        "blocks": {**loaded.blocks, "strata-compacted": compacted_blocks},
        "blocks_changed_while_timing": changed,
    }
    return figures, cells, loads, memory


def main() -> int:
    """Run the benchmark, print the tables, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timing rounds (each cell in turn)")
    parser.add_argument("--reps", type=int, default=20, help="timed reads per cell and round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed reads per cell first")
    parser.add_argument("--memory-runs", type=int, default=3, help="large reads per answer type")
    parser.add_argument(
        "--max-seconds", type=float, default=900, help="time budget of the timing rounds"
    )
    args = parser.parse_args()
    if min(args.runs, args.reps, args.memory_runs) < 1 or args.warmup < 0:
        parser.error("--runs, --reps and --memory-runs must be at least 1")
    os.sched_setaffinity(0, {CLIENT_CPU})
    with tempfile.TemporaryDirectory(prefix="strata-read-bench-") as tmp:
        result, cells, loads, memory_runs = run(args, Path(tmp))
    lines = latency_table(cells, loads)
    memory = memory_table(memory_runs)
    versions = {"prometheus": tool_version(["prometheus", "--version"], "prometheus")}
    out = {
        "machine": machine(),
        "versions": versions,
        "command": " ".join([Path(sys.executable).name, "-m", "bench.read_latency", *sys.argv[1:]]),
        "args": vars(args),
        "latency_table": lines,
        "memory_table": memory,
        **result,
        "memory": memory_runs,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "read_latency.json").write_text(json.dumps(out, indent=2))
    print(f"\nmachine: {machine()}\nprometheus: {versions['prometheus']}")
    print("\n" + "\n".join(lines))
    print("\nmemory of the large read (1,000 series x 1 d):\n" + "\n".join(memory))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
