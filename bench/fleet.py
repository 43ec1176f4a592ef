"""A synthetic node_exporter-like fleet, as remote-write request files for the benchmarks.

    python -m bench.fleet --series 10000 --scrapes 2880 --out /tmp/fleet.rwlog   # 12 h

Every host exposes SERIES_PER_HOST series shaped like a node_exporter's and its process's:
CPU-seconds, network, disk and process counters; memory, filesystem, load and process
gauges, some constant; a boot time that jumps when the host restarts; and one classic
histogram per HTTP handler (cumulative `_bucket{le}` series, `_sum`, `_count`). Hosts
restart now and then (RESTARTS_PER_HOST_PER_DAY): every counter and histogram of the
host then starts again from zero, as a real exporter's do.

Values are computed for the whole fleet one scrape at a time with numpy, and each
scrape is written as uncompressed WriteRequest bytes into one preallocated buffer in
which only the value and timestamp bytes change (every TimeSeries entry holds one
sample, as Prometheus 2.x sends). The output is the corpus's .rwlog format (4-byte
big-endian length, snappy body) with the `.idx.json` sidecar that
../shared/tools/loadgen.py replays without decoding anything: samples per request and,
per request, the latest earlier request holding a sample of one of its series.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import numpy as np
import snappy

SERIES_PER_HOST = 100
INTERVAL_MS = 15_000
SAMPLES_PER_REQUEST = 2_000
"""As the ingest benchmark sends (Prometheus 2.42's max_samples_per_send is 500)."""
RESTARTS_PER_HOST_PER_DAY = 1.0
SEED = 7
FORMAT_VERSION = 3
"""Part of cached file names: bump when the generated data changes."""
# Every timestamp's varint must have the same length, so each sample's bytes sit at a
# fixed offset of the scrape buffer: 6 bytes hold milliseconds from 2^35 to 2^42,
# 1971 to 2109.
TIMESTAMP_VARINT_BYTES = 6
HISTOGRAM_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
HISTOGRAM_HANDLERS = ("/api/v1/query", "/metrics")
# Request durations are log-normal around this median (seconds), as web latencies are.
LATENCY_MEDIAN_S = 0.04
LATENCY_SIGMA = 1.0

Labels = tuple[tuple[str, str], ...]


class Kind(IntEnum):
    """How a series' value moves from one scrape to the next."""

    COUNTER = 0
    GAUGE = 1
    CONSTANT = 2
    BOOT_TIME = 3
    """Seconds since the epoch at the host's last restart."""
    CLOCK = 4
    """The scrape's own time in seconds (node_time_seconds)."""
    BUCKET = 5
    HIST_SUM = 6
    HIST_COUNT = 7


@dataclass(frozen=True, slots=True)
class SeriesTemplate:
    """One series of a host: name, extra labels, how it moves and in what steps."""

    name: str
    labels: Labels
    kind: Kind
    base: float = 0.0
    rate: float = 0.0
    """Counter: mean increase per second. Gauge: random-walk step per sqrt(second)."""
    quantum: float = 1.0
    """Values are whole multiples of this (0.01 for CPU seconds, 4096 for pages); below 1,
    the float64 nearest to a decimal, as an exporter's text parses into."""
    low: float = 0.0
    high: float = 0.0
    handler: int = -1
    """Histogram series: which handler's histogram."""
    bucket: int = -1
    """Bucket series: index into HISTOGRAM_BOUNDS, len(HISTOGRAM_BOUNDS) for +Inf."""


def _counter(name: str, labels: Labels, base: float, rate: float, q: float) -> SeriesTemplate:
    return SeriesTemplate(name, labels, Kind.COUNTER, base, rate, q)


def _gauge(
    name: str, labels: Labels, base: float, step: float, q: float, hi: float
) -> SeriesTemplate:
    return SeriesTemplate(name, labels, Kind.GAUGE, base, step, q, 0.0, hi)


def _const(name: str, labels: Labels, value: float) -> SeriesTemplate:
    return SeriesTemplate(name, labels, Kind.CONSTANT, value)


def host_template() -> list[SeriesTemplate]:
    """The SERIES_PER_HOST series of one host."""
    out = []
    cpu_modes = {"idle": 0.9, "iowait": 0.004, "irq": 0.0002, "nice": 0.0005}
    cpu_modes |= {"softirq": 0.003, "steal": 0.0, "system": 0.03, "user": 0.06}
    for cpu in ("0", "1"):
        for mode, share in cpu_modes.items():
            labels = (("cpu", cpu), ("mode", mode))
            out.append(_counter("node_cpu_seconds_total", labels, 4e5 * share, share, 0.01))
    gib = float(1 << 30)
    memory = {"MemFree": (2.0, 2e6), "MemAvailable": (5.0, 2e6), "Buffers": (0.2, 1e5)}
    memory |= {"Cached": (2.5, 1e6), "Active": (3.0, 1e6), "Inactive": (1.5, 5e5)}
    memory |= {"Dirty": (0.001, 3e5), "SwapFree": (0.9, 1e4)}
    out.append(_const("node_memory_MemTotal_bytes", (), 8 * gib))
    out.append(_const("node_memory_SwapTotal_bytes", (), 1 * gib))
    for name, (size, step) in memory.items():
        out.append(_gauge(f"node_memory_{name}_bytes", (), size * gib, step, 1024, 8 * gib))
    for device, scale in (("eth0", 1.0), ("lo", 0.2)):
        dev = (("device", device),)
        for way in ("receive", "transmit"):
            out.append(_counter(f"node_network_{way}_bytes_total", dev, 1e9, 5e4 * scale, 1))
            out.append(_counter(f"node_network_{way}_packets_total", dev, 1e6, 60 * scale, 1))
            out.append(_counter(f"node_network_{way}_errs_total", dev, 0, 0.0, 1))
    for device in ("vda", "vdb"):
        dev = (("device", device),)
        for name, rate, q in (
            ("reads_completed", 3, 1),
            ("writes_completed", 12, 1),
            ("read_bytes", 4e4, 512),
            ("written_bytes", 2e5, 512),
            ("io_time_seconds", 0.02, 0.001),
        ):
            out.append(_counter(f"node_disk_{name}_total", dev, 1e5 * rate, rate, q))
    for mount, device in (("/", "/dev/vda1"), ("/data", "/dev/vdb")):
        fs = (("device", device), ("fstype", "ext4"), ("mountpoint", mount))
        out.append(_const("node_filesystem_size_bytes", fs, 100 * gib))
        out.append(_gauge("node_filesystem_avail_bytes", fs, 40 * gib, 5e5, 4096, 100 * gib))
        out.append(_gauge("node_filesystem_free_bytes", fs, 45 * gib, 5e5, 4096, 100 * gib))
    for name, load in (("node_load1", 0.5), ("node_load5", 0.45), ("node_load15", 0.4)):
        out.append(_gauge(name, (), load, 0.05, 0.01, 8))
    for name, rate in (("context_switches", 800), ("intr", 400), ("forks", 2)):
        out.append(_counter(f"node_{name}_total", (), 1e5 * rate, rate, 1))
    out.append(_gauge("node_procs_running", (), 2, 0.7, 1, 8))
    out.append(_gauge("node_procs_blocked", (), 0, 0.3, 1, 3))
    out.append(SeriesTemplate("node_boot_time_seconds", (), Kind.BOOT_TIME))
    out.append(SeriesTemplate("node_time_seconds", (), Kind.CLOCK))
    out.append(_const("node_exporter_build_info", (("version", "1.5.0"),), 1))
    out.append(_gauge("go_goroutines", (), 9, 1, 1, 40))
    out.append(_gauge("go_threads", (), 7, 0.1, 1, 12))
    out.append(_gauge("go_memstats_alloc_bytes", (), 3e6, 2e5, 8, 2e7))
    out.append(_gauge("go_memstats_heap_inuse_bytes", (), 5e6, 1e5, 8192, 3e7))
    out.append(_counter("go_memstats_alloc_bytes_total", (), 1e9, 4e4, 8))
    out.append(_gauge("process_resident_memory_bytes", (), 2e7, 1e5, 4096, 6e7))
    out.append(_counter("process_cpu_seconds_total", (), 300, 0.002, 0.01))
    out.append(_gauge("process_open_fds", (), 10, 0.2, 1, 30))
    out.append(SeriesTemplate("process_start_time_seconds", (), Kind.BOOT_TIME))
    code = (("code", "200"),)
    out.append(_counter("promhttp_metric_handler_requests_total", code, 1000, 1 / 15, 1))
    out.append(_const("promhttp_metric_handler_requests_in_flight", (), 1))
    for h, handler in enumerate(HISTOGRAM_HANDLERS):
        hl = (("handler", handler),)
        bounds = [*(f"{b:g}" for b in HISTOGRAM_BOUNDS), "+Inf"]
        for b, le in enumerate(bounds):
            out.append(
                SeriesTemplate(
                    "http_request_duration_seconds_bucket",
                    (*hl, ("le", le)),
                    Kind.BUCKET,
                    handler=h,
                    bucket=b,
                )
            )
        out.append(
            SeriesTemplate("http_request_duration_seconds_sum", hl, Kind.HIST_SUM, handler=h)
        )
        out.append(
            SeriesTemplate("http_request_duration_seconds_count", hl, Kind.HIST_COUNT, handler=h)
        )
    if len(out) != SERIES_PER_HOST:
        raise AssertionError(f"host template has {len(out)} series")
    return out


HOST_TEMPLATE = host_template()
HANDLER_REQUESTS_PER_S = (2.0, 1 / 15)
"""Mean requests per second of each handler of HISTOGRAM_HANDLERS."""


def instance_of(host: int) -> str:
    """The `instance` label of a host."""
    return f"host-{host:05d}:9100"


def series_labels(series: int) -> list[Labels]:
    """Labels (sorted by name, as Prometheus sends them) of the fleet's first `series` series."""
    out: list[Labels] = []
    for index in range(series):
        host, t = divmod(index, SERIES_PER_HOST)
        template = HOST_TEMPLATE[t]
        base = (("__name__", template.name), ("instance", instance_of(host)), ("job", "node"))
        out.append(tuple(sorted(base + template.labels)))
    return out


def bucket_shares() -> np.ndarray:
    """Share of requests in each bucket (not cumulative), +Inf last."""
    mu = math.log(LATENCY_MEDIAN_S)
    cdf = [
        0.5 * (1 + math.erf((math.log(b) - mu) / (LATENCY_SIGMA * math.sqrt(2))))
        for b in HISTOGRAM_BOUNDS
    ]
    cumulative = np.array([*cdf, 1.0])
    return np.diff(cumulative, prepend=0.0)


class Fleet:
    """The values of `series` series, advanced one scrape at a time."""

    def __init__(
        self,
        series: int,
        *,
        interval_ms: int = INTERVAL_MS,
        seed: int = SEED,
        restarts_per_host_per_day: float = RESTARTS_PER_HOST_PER_DAY,
    ) -> None:
        self.series = series
        self.interval_ms = interval_ms
        self.hosts = -(-series // SERIES_PER_HOST)
        self.rng = np.random.default_rng(seed)
        self.restart_p = restarts_per_host_per_day * interval_ms / 86_400_000
        self.labels = series_labels(series)
        templates = [HOST_TEMPLATE[i % SERIES_PER_HOST] for i in range(series)]
        self.host = np.arange(series) // SERIES_PER_HOST
        self.kind = np.array([t.kind for t in templates], dtype=np.int8)
        self.quantum = np.array([t.quantum for t in templates])
        self.rate = np.array([t.rate for t in templates]) * self.rng.uniform(0.5, 1.5, series)
        self.low = np.array([t.low for t in templates])
        self.high = np.array([t.high for t in templates])
        base = np.array([t.base for t in templates]) * self.rng.uniform(0.8, 1.2, series)
        # 1/quantum for decimal quanta (0.01 -> 100), 0 for whole ones.
        self.per_unit = np.where(self.quantum < 1, np.round(1 / self.quantum), 0.0)
        self.value = self.quantize(base)
        # Each host is scraped at its own offset inside the interval, as real targets are.
        self.phase_ms = self.rng.integers(0, interval_ms, self.hosts)
        self.boot_s = np.zeros(self.hosts)
        self._histograms(templates)
        self.is_counter = self.kind == Kind.COUNTER
        self.is_gauge = self.kind == Kind.GAUGE
        self.is_boot = self.kind == Kind.BOOT_TIME
        self.is_clock = self.kind == Kind.CLOCK
        self.restarts = 0

    def _histograms(self, templates: list[SeriesTemplate]) -> None:
        """Index arrays from each histogram series to its (host, handler) and bucket."""
        handlers = len(HISTOGRAM_HANDLERS)
        self.hist_bucket = np.flatnonzero(self.kind == Kind.BUCKET)
        self.hist_sum = np.flatnonzero(self.kind == Kind.HIST_SUM)
        self.hist_count = np.flatnonzero(self.kind == Kind.HIST_COUNT)
        group = self.host * handlers + np.array([t.handler for t in templates])
        self.bucket_group = group[self.hist_bucket]
        self.bucket_index = np.array([templates[i].bucket for i in self.hist_bucket], dtype=int)
        self.sum_group, self.count_group = group[self.hist_sum], group[self.hist_count]
        groups = self.hosts * handlers
        self.group_rate = np.tile(np.array(HANDLER_REQUESTS_PER_S), self.hosts)
        self.group_buckets = np.zeros((groups, len(HISTOGRAM_BOUNDS) + 1))
        self.group_sum = np.zeros(groups)
        self.group_count = np.zeros(groups)
        self.shares = bucket_shares()
        # Start as if the process had served a day already, as the counters do.
        served = self.rng.poisson(self.group_rate * 86_400)
        self.group_buckets += np.cumsum(self.rng.multinomial(served, self.shares), axis=1)
        self.group_count += served
        self.group_sum += served * LATENCY_MEDIAN_S * 1.6

    def quantize(self, raw: np.ndarray) -> np.ndarray:
        """Each value as a whole multiple of its series' quantum.

        Decimal quanta divide by a power of ten, which gives the float64 nearest the
        decimal, as parsing "1234.56" does; multiplying by 0.01 would be an ulp off.
        """
        decimal = self.per_unit > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            tenths = np.round(raw * self.per_unit) / self.per_unit
        out: np.ndarray = np.where(decimal, tenths, np.round(raw / self.quantum) * self.quantum)
        return out

    def timestamps(self, scrape_ms: int) -> np.ndarray:
        """Each series' timestamp in the scrape that starts at `scrape_ms`."""
        stamps: np.ndarray = scrape_ms + self.phase_ms[self.host]
        return stamps

    def advance(self, scrape_ms: int) -> np.ndarray:
        """The values of every series at the scrape starting at `scrape_ms`, float64 (n,)."""
        dt = self.interval_ms / 1000
        restarted = self.rng.random(self.hosts) < self.restart_p
        reset = restarted[self.host]
        self.restarts += int(restarted.sum())
        now_s = self.timestamps(scrape_ms) / 1000
        noise = self.rng.normal(0.0, 1.0, self.series)
        step = np.where(self.is_counter, np.maximum(0.0, self.rate * dt * (1 + 0.3 * noise)), 0.0)
        counters = np.where(reset, 0.0, self.value) + step
        walked = np.clip(self.value + self.rate * math.sqrt(dt) * noise, self.low, self.high)
        value = np.where(self.is_counter, counters, np.where(self.is_gauge, walked, self.value))
        value = self.quantize(value)
        first = self.boot_s == 0
        self.boot_s = np.where(
            restarted | first, scrape_ms / 1000 - np.where(first, 86_400.0, 1.0), self.boot_s
        )
        value = np.where(self.is_boot, np.floor(self.boot_s[self.host]), value)
        value = np.where(self.is_clock, now_s, value)
        self.value = value
        self._advance_histograms(restarted, dt)
        value[self.hist_bucket] = self.group_buckets[self.bucket_group, self.bucket_index]
        value[self.hist_sum] = self.group_sum[self.sum_group]
        value[self.hist_count] = self.group_count[self.count_group]
        return value

    def _advance_histograms(self, restarted: np.ndarray, dt: float) -> None:
        reset = np.repeat(restarted, len(HISTOGRAM_HANDLERS))
        self.group_buckets[reset] = 0.0
        self.group_sum[reset] = 0.0
        self.group_count[reset] = 0.0
        requests = self.rng.poisson(self.group_rate * dt)
        per_bucket = self.rng.multinomial(requests, self.shares)
        self.group_buckets += np.cumsum(per_bucket, axis=1)
        self.group_count += requests
        # The sum of the requests' durations: about median x requests, never exact decimals.
        spread = self.rng.lognormal(0.0, 0.3, len(requests))
        self.group_sum += requests * LATENCY_MEDIAN_S * 1.6 * spread


# --- WriteRequest bytes --------------------------------------------------------------


def uvarint(n: int) -> bytes:
    """Protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + uvarint(len(payload)) + payload


def encode_labels(labels: Labels) -> bytes:
    """The repeated `labels` fields of a TimeSeries."""
    return b"".join(
        _field(0x0A, _field(0x0A, n.encode()) + _field(0x12, v.encode())) for n, v in labels
    )


SAMPLE_BYTES = 1 + 8 + 1 + TIMESTAMP_VARINT_BYTES
"""Sample: 0x09 (value, fixed64), 8 bytes, 0x10 (timestamp, varint), the varint."""


class EntryLayout:
    """TimeSeries entries of every series back to back, one sample each, in one buffer.

    Built once; a scrape overwrites only each entry's timestamp varint and, when the
    layout has them, its 8 value bytes.
    """

    def __init__(self, labels: list[Labels], *, with_value: bool) -> None:
        sample_bytes = SAMPLE_BYTES if with_value else SAMPLE_BYTES - 9
        sample_field = bytes([0x12]) + uvarint(sample_bytes)
        value = b"\x09" + bytes(8) if with_value else b""
        parts, sample_at = [], []
        offset = 0
        for one in labels:
            inner = encode_labels(one) + sample_field
            head = bytes([0x0A]) + uvarint(len(inner) + sample_bytes) + inner
            parts.append(head + value + b"\x10" + bytes(TIMESTAMP_VARINT_BYTES))
            sample_at.append(offset + len(head))
            offset += len(parts[-1])
        self.buffer = np.frombuffer(bytearray(b"".join(parts)), dtype=np.uint8).copy()
        self.view = self.buffer.data
        at = np.array(sample_at, dtype=np.int64)
        self.value_slots = at[:, None] + 1 + np.arange(8) if with_value else None
        ts_at = at + (10 if with_value else 1)
        self.ts_slots = ts_at[:, None] + np.arange(TIMESTAMP_VARINT_BYTES)
        self.starts = np.concatenate(([0], np.cumsum([len(p) for p in parts]))).tolist()

    def fill(self, groups: np.ndarray, values: np.ndarray) -> None:
        """Write the timestamp varints (n, TIMESTAMP_VARINT_BYTES) and values (n,)."""
        self.buffer[self.ts_slots] = groups
        if self.value_slots is not None:
            self.buffer[self.value_slots] = values.astype("<f8").view(np.uint8).reshape(-1, 8)


class ScrapeEncoder:
    """Uncompressed WriteRequest bytes of one scrape of every series, split into requests.

    As Prometheus's encoder does, a sample whose value is 0 leaves its value field out
    (proto3 writes no default value): those entries come from a second layout without
    value fields, every other entry from the full one, runs of them in one slice.
    """

    def __init__(self, labels: list[Labels], samples_per_request: int = SAMPLES_PER_REQUEST):
        self.full = EntryLayout(labels, with_value=True)
        self.zero = EntryLayout(labels, with_value=False)
        self.request_entries = [
            (lo, min(lo + samples_per_request, len(labels)))
            for lo in range(0, len(labels), samples_per_request)
        ]
        self.request_samples = [hi - lo for lo, hi in self.request_entries]

    def encode(self, ts: np.ndarray, values: np.ndarray) -> list[bytes]:
        """Uncompressed WriteRequests holding sample (ts[i], values[i]) of every series i."""
        if ts.min() < 1 << 35 or ts.max() >= 1 << 42:
            raise ValueError("timestamps outside 1971-2109 need another varint length")
        shifts = 7 * np.arange(TIMESTAMP_VARINT_BYTES, dtype=np.int64)
        groups = (ts.astype(np.int64)[:, None] >> shifts) & 0x7F
        groups[:, :-1] |= 0x80
        groups = groups.astype(np.uint8)
        self.full.fill(groups, values)
        self.zero.fill(groups, values)
        zeros = np.flatnonzero(values == 0).tolist()
        out, z = [], 0
        full, zero = self.full, self.zero
        for lo, hi in self.request_entries:
            parts, at = [], lo
            while z < len(zeros) and zeros[z] < hi:
                entry = zeros[z]
                parts.append(full.view[full.starts[at] : full.starts[entry]])
                parts.append(zero.view[zero.starts[entry] : zero.starts[entry + 1]])
                at, z = entry + 1, z + 1
            parts.append(full.view[full.starts[at] : full.starts[hi]])
            out.append(b"".join(parts))
        return out


# --- files ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FleetFile:
    """A generated workload on disk and what is in it."""

    path: Path
    series: int
    scrapes: int
    samples: int
    requests: int
    start_ms: int
    end_ms: int
    """Scrape start of the last scrape plus the interval: no timestamp reaches it."""
    restarts: int


def iter_scrapes(
    fleet: Fleet, start_ms: int, scrapes: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(timestamps, values) of each scrape in time order."""
    for k in range(scrapes):
        scrape_ms = start_ms + k * fleet.interval_ms
        values = fleet.advance(scrape_ms)
        yield fleet.timestamps(scrape_ms), values


def write_fleet(
    path: Path,
    series: int,
    scrapes: int,
    end_ms: int,
    *,
    samples_per_request: int = SAMPLES_PER_REQUEST,
    seed: int = SEED,
) -> FleetFile:
    """Write `scrapes` scrapes of the fleet ending before `end_ms` as an .rwlog + sidecar."""
    fleet = Fleet(series, seed=seed)
    encoder = ScrapeEncoder(fleet.labels, samples_per_request)
    start_ms = end_ms - scrapes * fleet.interval_ms
    per_scrape = len(encoder.request_samples)
    counts: list[int] = []
    deps: list[int] = []
    size = 0
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as out:
        for k, (ts, values) in enumerate(iter_scrapes(fleet, start_ms, scrapes)):
            for r, body in enumerate(encoder.encode(ts, values)):
                compressed = snappy.compress(body)
                out.write(struct.pack(">I", len(compressed)))
                out.write(compressed)
                size += 4 + len(compressed)
                counts.append(encoder.request_samples[r])
                # The same series were in the same request of the previous scrape.
                deps.append((k - 1) * per_scrape + r if k else -1)
    summary = FleetFile(
        path, series, scrapes, sum(counts), len(counts), start_ms, end_ms, fleet.restarts
    )
    sidecar = {
        "kind": "fleet",
        "series": series,
        "scrapes": scrapes,
        "interval_ms": fleet.interval_ms,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "restarts": fleet.restarts,
        "samples": summary.samples,
        "requests": summary.requests,
        "format_version": FORMAT_VERSION,
        "file_bytes": size,
        "request_samples": counts,
        "request_deps": deps,
    }
    Path(str(path) + ".idx.json").write_text(json.dumps(sidecar))
    tmp.replace(path)
    return summary


def cached_fleet(directory: Path, series: int, scrapes: int, end_ms: int) -> FleetFile:
    """The fleet file for these parameters, generated on first use."""
    name = f"fleet-v{FORMAT_VERSION}-{series}x{scrapes}-{end_ms}.rwlog"
    path = directory / name
    sidecar = Path(str(path) + ".idx.json")
    if path.exists() and sidecar.exists():
        meta = json.loads(sidecar.read_text())
        if meta.get("file_bytes") == path.stat().st_size:
            return FleetFile(
                path,
                series,
                scrapes,
                meta["samples"],
                meta["requests"],
                meta["start_ms"],
                meta["end_ms"],
                meta["restarts"],
            )
    directory.mkdir(parents=True, exist_ok=True)
    return write_fleet(path, series, scrapes, end_ms)


def main() -> int:
    """Write one fleet file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=240, help="15 s scrapes (240: 1 hour)")
    parser.add_argument("--end-ms", type=int, default=1_795_564_800_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    made = write_fleet(args.out, args.series, args.scrapes, args.end_ms)
    print(json.dumps(dataclasses.asdict(made) | {"path": str(made.path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
