"""Real servers for end-to-end tests: `strata serve` and Prometheus, on loopback ports.

Each runs as a subprocess we own by pid: started with its output appended to a log file,
stopped with SIGTERM and, after a grace period, SIGKILL. A server that cannot start
fails the test with the tail of its log; nothing here ever skips.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STRATA_READY_TIMEOUT_S = 30.0
PROMETHEUS_READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 10.0
_POLL_S = 0.05


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago (bound to port 0, then closed)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 60) -> str:
    """The last lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, even by kill -9.

    Without it an interrupted run leaves servers holding ports and temp directories.
    Linux ties this to the forking thread, so servers are started from the main thread.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class Process:
    """One subprocess with its output appended to a log file; stopped by pid."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The pid of the running process."""
        return self.popen.pid

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        """The running process; fails the test when there is none."""
        if self._popen is None:
            pytest.fail(f"{self.name} is not running")
        return self._popen

    @property
    def running(self) -> bool:
        """Started and not exited."""
        return self._popen is not None and self._popen.poll() is None

    def spawn(self, argv: list[str]) -> None:
        """Start the command, appending a start marker and its output to the log."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            log.write(f"==== start {' '.join(argv)}\n".encode())
            log.flush()
            self._popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def signal_and_wait(self, sig: signal.Signals, grace_s: float = STOP_GRACE_S) -> int:
        """Send `sig`; SIGKILL after `grace_s` if it is still alive. Returns the exit code."""
        process, self._popen = self._popen, None
        if process is None:
            raise RuntimeError(f"{self.name} is not running")
        if process.poll() is None:
            process.send_signal(sig)
        try:
            return process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            self._note(f"did not stop within {grace_s:.0f} s of {sig.name}; killed")
            return -signal.SIGKILL

    def exited_early(self) -> int | None:
        """The exit code if the process has already exited on its own, else None."""
        return None if self._popen is None else self._popen.poll()

    def _note(self, text: str) -> None:
        with self.log_path.open("a") as log:
            log.write(f"==== test: {text}\n")


def strata_command() -> list[str]:
    """`strata`, or the same entry point through `python -m gateway.cli` before installing."""
    path = shutil.which("strata")
    if path is not None:
        return [path]
    if importlib.util.find_spec("gateway.cli") is None:
        pytest.fail("`strata` is not installed and gateway.cli is not importable")
    return [sys.executable, "-m", "gateway.cli"]


def prometheus_binary() -> str:
    """The `prometheus` executable; missing fails the run (the e2e tests need a real one)."""
    path = shutil.which("prometheus")
    if path is None:
        pytest.fail("Prometheus is not installed: `apt-get install prometheus` (2.42)")
    return path


def wait_until_ready(process: Process, url: str, timeout_s: float) -> float:
    """Poll `url` until it answers 200; seconds it took. Fails on exit or timeout."""
    started = time.monotonic()
    deadline = started + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            code = process.exited_early()
            if code is not None:
                pytest.fail(
                    f"{process.name} exited with {code} before it was ready; "
                    f"log:\n{log_tail(process.log_path)}"
                )
            try:
                answer = client.get(url)
            except httpx.TransportError as exc:
                last = repr(exc)
            else:
                if answer.status_code == 200:
                    return time.monotonic() - started
                last = f"{answer.status_code} {answer.text.strip()}"
            time.sleep(_POLL_S)
    pytest.fail(
        f"{process.name}: {url} not 200 within {timeout_s:.0f} s (last: {last}); "
        f"log:\n{log_tail(process.log_path)}"
    )


class StrataServer:
    """`strata serve` on one data directory and one port, across any number of restarts."""

    def __init__(self, data_dir: Path, log_path: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.extra_args = extra_args
        self.process = Process("strata serve", log_path)
        self.starts = 0
        self.ready_s: list[float] = []

    @property
    def url(self) -> str:
        """Base URL, no trailing slash."""
        return f"http://{HOST}:{self.port}"

    @property
    def write_url(self) -> str:
        """The remote-write endpoint."""
        return f"{self.url}/api/v1/write"

    @property
    def log_path(self) -> Path:
        """stderr and stdout of every run, appended."""
        return self.process.log_path

    @property
    def pid(self) -> int:
        """The pid of the running server."""
        return self.process.pid

    def start(self, timeout_s: float = STRATA_READY_TIMEOUT_S) -> None:
        """Start on the same data directory and port; returns once /-/ready answers 200."""
        argv = [
            *strata_command(),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"{HOST}:{self.port}",
            *self.extra_args,
        ]
        self.process.spawn(argv)
        self.starts += 1
        self.ready_s.append(wait_until_ready(self.process, f"{self.url}/-/ready", timeout_s))

    def kill9(self) -> None:
        """SIGKILL: the process gets no chance to flush or clean up anything."""
        self.process.signal_and_wait(signal.SIGKILL)

    def terminate(self, grace_s: float = STOP_GRACE_S) -> int:
        """SIGTERM, a graceful stop; SIGKILL after `grace_s`. Returns the exit code."""
        return self.process.signal_and_wait(signal.SIGTERM, grace_s)

    def stop_gracefully(self) -> None:
        """SIGTERM; fails the test unless the server exits by itself within the grace period.

        Exiting with 0 or by the re-raised SIGTERM both count as clean: uvicorn re-raises
        the signal it caught once it has shut down, as daemons conventionally do.
        """
        code = self.terminate()
        if code not in (0, -signal.SIGTERM):
            pytest.fail(f"strata exited with {code} on SIGTERM; log:\n{log_tail(self.log_path)}")

    def restart(self) -> None:
        """Graceful stop, then start again on the same data and wait until ready."""
        self.stop_gracefully()
        self.start()

    def stop(self) -> None:
        """Stop if running (SIGTERM, then SIGKILL); for teardown."""
        if self.process.running:
            self.terminate()

    def metrics(self) -> str:
        """The text of /metrics (served at /metrics/; /metrics answers a redirect)."""
        return httpx.get(f"{self.url}/metrics", follow_redirects=True, timeout=5.0).text


def prometheus_config(
    scrape_jobs: Mapping[str, Sequence[str]],
    remote_write_url: str | None,
    scrape_interval: str = "1s",
) -> dict[str, Any]:
    """A prometheus.yml as a dict (JSON is YAML): job -> HOST:PORT targets, remote_write."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "scrape_timeout": scrape_interval},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in scrape_jobs.items()
        ],
    }
    if remote_write_url is not None:
        config["remote_write"] = [
            {
                "url": remote_write_url,
                "name": "strata",
                # Small batches sent often, so the queue catches up within a second.
                "queue_config": {
                    "batch_send_deadline": "200ms",
                    "max_samples_per_send": 500,
                    "min_backoff": "50ms",
                    "max_backoff": "1s",
                },
                "metadata_config": {"send": True, "send_interval": "5s"},
            }
        ]
    return config


class PrometheusServer:
    """A real Prometheus with its own TSDB under `base_dir`; config reloadable over HTTP."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.port = free_port()
        self.config_path = base_dir / "prometheus.yml"
        self.process = Process("prometheus", base_dir / "prometheus.log")
        self.client = httpx.Client(base_url=self.url, timeout=10.0)

    @property
    def url(self) -> str:
        """Base URL, no trailing slash."""
        return f"http://{HOST}:{self.port}"

    @property
    def address(self) -> str:
        """HOST:PORT, as a scrape target of itself."""
        return f"{HOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        """Prometheus's log."""
        return self.process.log_path

    def write_config(self, config: Mapping[str, Any]) -> None:
        """Write prometheus.yml atomically (Prometheus may be reading it)."""
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2))
        tmp.replace(self.config_path)

    def start(self, config: Mapping[str, Any]) -> None:
        """Write the config, start, and return once /-/ready answers 200."""
        self.write_config(config)
        argv = [
            prometheus_binary(),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.base_dir / 'tsdb'}",
            f"--web.listen-address={self.address}",
            "--web.enable-lifecycle",
            "--log.level=info",
        ]
        self.process.spawn(argv)
        wait_until_ready(self.process, f"{self.url}/-/ready", PROMETHEUS_READY_TIMEOUT_S)

    def reload(self, config: Mapping[str, Any]) -> None:
        """Apply a new config through /-/reload; fails when Prometheus refuses it."""
        self.write_config(config)
        answer = self.client.post("/-/reload")
        if answer.status_code != 200:
            pytest.fail(f"prometheus refused the reload: {answer.status_code} {answer.text}")

    def wait_until_no_active_targets(self, timeout_s: float = 20.0) -> None:
        """Until every scrape loop has stopped (target changes apply every 5 s)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer = self.client.get("/api/v1/targets", params={"state": "active"})
            if answer.status_code == 200 and not answer.json()["data"]["activeTargets"]:
                return
            time.sleep(0.2)
        pytest.fail(f"prometheus still scrapes targets {timeout_s:.0f} s after losing them")

    def stop(self) -> None:
        """Graceful stop (it flushes its remote-write queue); SIGKILL after a grace period."""
        if self.process.running:
            self.process.signal_and_wait(signal.SIGTERM)

    def close(self) -> None:
        """Stop and release the HTTP client."""
        self.stop()
        self.client.close()

    def query(self, expr: str, at_s: float | None = None) -> list[dict[str, Any]]:
        """The `result` of an instant query (vector or matrix) through /api/v1/query."""
        params: dict[str, str | float] = {"query": expr}
        if at_s is not None:
            params["time"] = at_s
        answer = self.client.get("/api/v1/query", params=params)
        body = answer.json()
        if answer.status_code != 200 or body.get("status") != "success":
            pytest.fail(f"prometheus query {expr!r} failed: {answer.status_code} {answer.text}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def own_metrics(self) -> dict[str, float]:
        """Its /metrics, read directly (not through its TSDB): name{labels} -> value."""
        answer = self.client.get("/metrics")
        answer.raise_for_status()
        return parse_metrics_text(answer.text)


def parse_metrics_text(text: str) -> dict[str, float]:
    """Prometheus text exposition as `name{labels}` (exactly as printed) -> value."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        # The value is the last field: these servers print no timestamps.
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def metric_value(metrics: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`; NaN if there are none."""
    total = math.nan
    for key, value in metrics.items():
        metric, _, label_text = key.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total = value if math.isnan(total) else total + value
    return total
