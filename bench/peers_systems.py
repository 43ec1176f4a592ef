"""The three systems of bench.peers: start each on loopback, feed it, measure it, persist it.

Strata (`strata serve`, WAL fsynced before every answer, then `/api/v1/admin/flush` and
`strata compact`), Prometheus 2.42 as a remote-write receiver (then a TSDB snapshot that
writes its head into a block) and VictoriaMetrics 1.79 (then `/internal/force_flush` and
a forced merge). Every server runs pinned to one CPU and the load generator to the other.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bench.block_bytes import (
    PROMETHEUS_CONFIG,
    dir_bytes,
    entry_sizes,
    flush_and_merge,
    http,
    prometheus_at_rest,
    start,
    stop,
    vm_metrics,
    vm_sum,
)
from bench.common import REPO, Strata, free_port, proc_status_kib, run_loadgen

SERVER_CPU = 0
CLIENT_CPU = 1
CONNECTIONS = 4
"""Remote-write connections, as the issue's reference figures were measured."""
RSS_POLL_S = 0.5
FLUSH_TIMEOUT_S = 900.0
COMPACT_TIMEOUT_S = 900.0
CLOCK_TICKS_PER_S = 100


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


class RssWatch:
    """VmRSS of a process sampled every RSS_POLL_S in a thread, until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples_kib: list[int] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(RSS_POLL_S):
            self.samples_kib.append(proc_status_kib(self.pid, "VmRSS"))

    def stop(self) -> list[int]:
        """Stop sampling; the samples taken."""
        self.done.set()
        self.thread.join(5)
        return self.samples_kib


@dataclass(frozen=True, slots=True)
class Ingest:
    """What one replay into one server measured."""

    samples_sent: int
    samples_accepted: int
    samples_per_s: float
    wall_s: float
    cpu_s: float
    idle_rss_kib: int
    peak_rss_kib: int
    steady_rss_kib: int
    """Median VmRSS over the second half of the replay."""
    failed_requests: int
    status_counts: dict[str, int] = field(default_factory=dict)


def replay_into(pid: int, write_url: str, source: Path, max_seconds: float) -> Ingest:
    """Send a .rwlog file to a server (loadgen, CONNECTIONS connections) while watching it."""
    idle = proc_status_kib(pid, "VmRSS")
    cpu_before = cpu_seconds(pid)
    watch = RssWatch(pid)
    args = ["replay", "--file", str(source), "--url", write_url, "-c", str(CONNECTIONS)]
    args += ["--max-seconds", str(max_seconds), "--timeout", "120"]
    try:
        report = run_loadgen(
            args, cpu=CLIENT_CPU, timeout_s=max_seconds + 600, failed_requests_ok=True
        )
    finally:
        samples = watch.stop()
    cpu = cpu_seconds(pid) - cpu_before
    peak = max([proc_status_kib(pid, "VmHWM"), *samples])
    steady = int(statistics.median(samples[len(samples) // 2 :])) if samples else peak
    return Ingest(
        samples_sent=int(str(report["samples_sent"])),
        samples_accepted=int(str(report["samples_accepted"])),
        samples_per_s=float(str(report["samples_per_second_accepted"])),
        wall_s=float(str(report["wall_seconds"])),
        cpu_s=cpu,
        idle_rss_kib=idle,
        peak_rss_kib=peak,
        steady_rss_kib=steady,
        failed_requests=int(str(report["requests_failed"])),
        status_counts=dict(report["status_counts"]),  # type: ignore[call-overload]
    )


@dataclass(frozen=True, slots=True)
class AtRestBytes:
    """Bytes a system keeps for the data once persisted, and how they were found."""

    bytes: int
    samples_stored: int
    details: dict[str, object] = field(default_factory=dict)


class System(Protocol):
    """A started server of one of the systems."""

    name: str
    pid: int
    write_url: str
    read_url: str | None
    """None: no remote-read server (VictoriaMetrics)."""

    def persist(self, samples: int, series: int) -> AtRestBytes:
        """Make the server write what it holds to its storage; the bytes at rest."""
        ...

    def stop(self) -> None:
        """Stop the server."""
        ...


# --- Strata --------------------------------------------------------------------------


class StrataSystem:
    """`strata serve` with the shipped defaults, its bucket a local directory."""

    name = "strata"

    source = REPO
    """Where the code of `strata` is imported from: the working tree, or a copy of it."""

    def __init__(self, tmp: Path) -> None:
        self.data_dir = tmp / "strata"
        self.server = Strata(self.data_dir, cpu=SERVER_CPU, source=self.source)
        self.pid = self.server.proc.pid
        self.write_url = self.server.url + "/api/v1/write"
        self.read_url: str | None = self.server.url

    def persist(self, samples: int, series: int) -> AtRestBytes:
        """Flush the head into blocks; the bucket's bytes (the WAL's recorded beside them)."""
        wal = dir_bytes(self.data_dir / "wal")
        started = time.monotonic()
        answer = json.loads(
            http(self.server.url + "/api/v1/admin/flush", method="POST", timeout_s=FLUSH_TIMEOUT_S)
        )
        flush_s = time.monotonic() - started
        bucket = self.data_dir / "bucket"
        details: dict[str, object] = {
            "wal_bytes_before_flush": wal,
            "flush_s": flush_s,
            "uploaded_blocks": answer.get("uploadedBlocks"),
            "head_series": self.server.metric("strata_head_series"),
        }
        return AtRestBytes(dir_bytes(bucket), samples, details)

    def compact(self) -> dict[str, object]:
        """One `strata compact` pass over the stopped server's bucket; bytes after it.

        Ranges are merged as soon as they are complete (no consistency delay) and replaced
        blocks are deleted within the pass, so the bytes are those compaction leaves.
        """
        cmd = [sys.executable, "-m", "gateway.cli", "compact", "--data-dir", str(self.data_dir)]
        cmd += ["--consistency-delay", "0s", "--delete-delay", "0s", "--retention-raw", "0"]
        cmd += ["--downsampling", "false"]
        started = time.monotonic()
        done = subprocess.run(
            ["taskset", "-c", str(SERVER_CPU), *cmd],
            cwd=self.source,
            capture_output=True,
            text=True,
            timeout=COMPACT_TIMEOUT_S,
        )
        seconds = time.monotonic() - started
        if done.returncode != 0:
            return {"error": done.stderr[-2000:], "seconds": seconds}
        return {"bytes": dir_bytes(self.data_dir / "bucket"), "seconds": seconds}

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 30 s."""
        self.server.stop()


# --- Prometheus ----------------------------------------------------------------------


class PrometheusSystem:
    """Prometheus 2.42 with its remote-write receiver and admin API, WAL as shipped."""

    name = "prometheus"

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.tsdb = tmp / "prometheus"
        config = tmp / "prometheus.yml"
        config.write_text(PROMETHEUS_CONFIG)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={self.tsdb}",
            f"--web.listen-address=127.0.0.1:{port}",
            # Retention counts back from the newest block; keep everything sent.
            "--storage.tsdb.retention.time=10y",
            "--web.enable-remote-write-receiver",
            "--web.enable-admin-api",
        ]
        self.proc = start(cmd, tmp / "prometheus.log", self.url + "/-/ready", cpu=SERVER_CPU)
        self.pid = self.proc.pid
        self.write_url = self.url + "/api/v1/write"
        self.read_url: str | None = self.url

    def persist(self, samples: int, series: int) -> AtRestBytes:
        """A snapshot with the head: every block plus the head written as one; their bytes."""
        whole = entry_sizes(self.tsdb)
        started = time.monotonic()
        snapshot_url = self.url + "/api/v1/admin/tsdb/snapshot?skip_head=false"
        answer = json.loads(http(snapshot_url, method="POST", timeout_s=FLUSH_TIMEOUT_S))
        seconds = time.monotonic() - started
        snapshot = self.tsdb / "snapshots" / answer["data"]["name"]
        at_rest = prometheus_at_rest(snapshot, {}, whole, samples)
        details = dict(at_rest.details)
        details.pop("replay", None)
        details["snapshot_s"] = seconds
        details["wal_bytes_before_snapshot"] = whole.get("wal", 0) + whole.get("chunks_head", 0)
        return AtRestBytes(at_rest.bytes, at_rest.samples_stored, details)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after the grace period."""
        stop(self.proc)


# --- VictoriaMetrics -----------------------------------------------------------------


class VictoriaMetricsSystem:
    """VictoriaMetrics 1.79 single node, its in-memory buffers as shipped (flushed each second)."""

    name = "victoriametrics"

    def __init__(self, tmp: Path) -> None:
        self.storage = tmp / "victoria-metrics"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        cmd = [
            "victoria-metrics",
            f"-storageDataPath={self.storage}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=100y",
        ]
        self.proc = start(cmd, tmp / "victoria-metrics.log", self.url + "/health", cpu=SERVER_CPU)
        self.pid = self.proc.pid
        self.write_url = self.url + "/api/v1/write"
        self.read_url: str | None = None

    def persist(self, samples: int, series: int) -> AtRestBytes:
        """Force a flush and a merge; bytes of data/ and indexdb/ after the merge.

        `samples` and `series` are what VictoriaMetrics should hold (it drops NaNs).
        """
        dirs, rows, details = flush_and_merge(self.url, self.storage, (samples, series))
        # What VictoriaMetrics itself reports as its data size, beside the directory sizes.
        details["vm_data_size_bytes"] = vm_sum(vm_metrics(self.url), r"vm_data_size_bytes\{.*\}")
        return AtRestBytes(dirs.get("data", 0) + dirs.get("indexdb", 0), rows, details)

    def stop(self) -> None:
        """SIGTERM, SIGKILL after the grace period."""
        stop(self.proc)


SYSTEMS = ("strata", "prometheus", "victoriametrics")
STARTERS = {
    "strata": StrataSystem,
    "prometheus": PrometheusSystem,
    "victoriametrics": VictoriaMetricsSystem,
}


def install_peers() -> None:
    """apt-get install the peers' Debian packages if their binaries are missing."""
    missing = [p for p in ("prometheus", "victoria-metrics") if shutil.which(p) is None]
    if missing:
        print(f"installing {missing} with apt-get...", flush=True)
        subprocess.run(["apt-get", "install", "-y", *missing], check=True, timeout=900)
