"""Ingest benchmark: samples/s accepted and peak RSS of `strata serve`.

    python -m bench.ingest                       # corpus + synthetic 100k series, 3 runs
    python -m bench.ingest --workload corpus --runs 5

Strata runs pinned to CPU 0 with the WAL fsynced (the shipped default), the load
generator (../shared/tools/loadgen.py) pinned to CPU 1. Prints medians as a Markdown
table and writes every run to bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import CORPUS, RESULTS, Strata, machine, proc_status_kib, run_loadgen

WORKLOADS = ("corpus", "synth100k")
SYNTH_SERIES = 100_000
SYNTH_SPAN = "30m"  # 120 samples per series at 15 s: what a head holds for half an hour


def synth_file(series: int, span: str) -> Path:
    """The synthetic workload, generated once and reused across runs."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"synth-{series}-{span}.rwlog"
    if not path.exists():
        print(f"generating {path.name} (once)...", flush=True)
        run_loadgen(
            [
                "gen",
                "--series",
                str(series),
                "--span",
                span,
                "--interval",
                "15s",
                "--end",
                "1795574400000",
                "--out",
                str(path),
            ],
            cpu=1,
            timeout_s=1800,
        )
    return path


def one_run(workload: str, concurrency: int, fsync: bool) -> dict[str, float]:
    """One fresh server, one replay; the figures of that run."""
    source = CORPUS if workload == "corpus" else synth_file(SYNTH_SERIES, SYNTH_SPAN)
    with tempfile.TemporaryDirectory(prefix="strata-bench-") as tmp:
        extra = [] if fsync else ["--wal-fsync", "false"]
        server = Strata(Path(tmp) / "data", cpu=0, extra=extra)
        try:
            baseline_kib = proc_status_kib(server.proc.pid, "VmRSS")
            started = time.monotonic()
            report = run_loadgen(
                [
                    "replay",
                    "--file",
                    str(source),
                    "--url",
                    server.url + "/api/v1/write",
                    "-c",
                    str(concurrency),
                    "--max-seconds",
                    "900",
                ],
                cpu=1,
                timeout_s=1200,
            )
            wall = time.monotonic() - started
            peak_kib = proc_status_kib(server.proc.pid, "VmHWM")
            series = server.metric("strata_head_series")
            cpu_s = _cpu_seconds(server.proc.pid)
        finally:
            server.stop()
    accepted = float(report["samples_accepted"])  # type: ignore[arg-type]
    sent = float(report["samples_sent"])  # type: ignore[arg-type]
    return {
        "samples_sent": sent,
        "samples_accepted": accepted,
        "samples_per_s": float(report["samples_per_second_accepted"]),  # type: ignore[arg-type]
        "wall_s": wall,
        "cpu_s_per_million": cpu_s / (accepted / 1e6) if accepted else 0.0,
        "peak_rss_mib": peak_kib / 1024,
        "series": series,
        "rss_bytes_per_series": (peak_kib - baseline_kib) * 1024 / series if series else 0.0,
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / 100.0


def main() -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=(*WORKLOADS, "all"), default="all")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--no-fsync", action="store_true", help="WAL without fsync (not durable)")
    args = parser.parse_args()
    workloads = WORKLOADS if args.workload == "all" else (args.workload,)
    results: dict[str, list[dict[str, float]]] = {}
    for workload in workloads:
        for run in range(args.runs):
            print(f"{workload}: run {run + 1}/{args.runs}...", flush=True)
            figures = one_run(workload, args.concurrency, not args.no_fsync)
            print("  " + json.dumps({k: round(v, 1) for k, v in figures.items()}), flush=True)
            results.setdefault(workload, []).append(figures)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = {"machine": machine(), "concurrency": args.concurrency, "runs": results}
    (RESULTS / "ingest.json").write_text(json.dumps(out, indent=2))
    print(f"\nmachine: {machine()}")
    print(
        "| workload | samples | samples/s (median) | CPU s / M samples | peak RSS MiB "
        "| series | RSS bytes / series |"
    )
    print("|---|---|---|---|---|---|---|")
    for workload, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {workload} | {med['samples_accepted']:,.0f} | {med['samples_per_s']:,.0f} "
            f"| {med['cpu_s_per_million']:.2f} | {med['peak_rss_mib']:.0f} "
            f"| {med['series']:,.0f} | {med['rss_bytes_per_series']:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
