"""Shared pieces of the benchmarks: starting strata, reading its memory, the machine."""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpus" / "node-1s.rwlog"
LOADGEN = SHARED / "tools" / "loadgen.py"
RESULTS = REPO / "bench" / "results"


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def machine() -> dict[str, str | int]:
    """What the numbers were measured on."""
    model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count() or 0,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def proc_status_kib(pid: int, key: str) -> int:
    """A kB figure (VmRSS, VmHWM) from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


class Strata:
    """A `strata serve` (or, with command="query", `strata query`) subprocess pinned to one CPU."""

    def __init__(
        self,
        data_dir: Path,
        *,
        cpu: int,
        extra: list[str] | None = None,
        command: str = "serve",
        source: Path = REPO,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (data_dir.parent / f"{data_dir.name}.log").open("wb")
        cmd = [sys.executable, "-m", "gateway.cli", command, "--data-dir", str(data_dir)]
        cmd += ["--listen", f"127.0.0.1:{self.port}", *(extra or [])]
        self.proc = subprocess.Popen(
            cmd,
            # `python -m` imports from the working directory first: `source` may be
            # another copy of the code (e.g. a `git archive` of one commit).
            cwd=source,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("strata did not become ready in 60 s")

    def metric(self, name: str) -> float:
        """Sum of a metric's samples on /metrics."""
        with urllib.request.urlopen(self.url + "/metrics", timeout=5) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def run_loadgen(
    args: list[str], *, cpu: int, timeout_s: float, failed_requests_ok: bool = False
) -> dict[str, object]:
    """Run the shared load generator pinned to `cpu`; its JSON report.

    With `failed_requests_ok`, a replay some of whose requests were refused (loadgen's exit
    status 1) still returns its report, which counts them.
    """
    proc = subprocess.run(
        [sys.executable, str(LOADGEN), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),
    )
    refused = failed_requests_ok and proc.returncode == 1 and "{" in proc.stdout
    if proc.returncode != 0 and not refused:
        raise RuntimeError(f"loadgen failed: {proc.stderr[-2000:]}")
    report: dict[str, object] = json.loads(proc.stdout[proc.stdout.index("{") :])
    return report
