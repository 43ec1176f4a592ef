"""Strata against Prometheus 2.42 and VictoriaMetrics 1.79 on the same machine and data.

    python -m bench.peers                    # corpus + fleets of 10k, 100k, 1M series, 3 runs
    python -m bench.peers --quick            # small workloads, 1 run: a few minutes
    python -m bench.peers --workloads corpus,fleet-10k --runs 5 --reps 20

Installs the peers' Debian packages if their binaries are missing, then, per run and
workload, starts each system on loopback in a fresh directory (pinned to CPU 0, the load
generator ../shared/tools/loadgen.py pinned to CPU 1 with 4 connections), replays the
workload's remote-write requests into it and measures: samples/s accepted, peak and
steady RSS (/proc/PID/status), CPU seconds per million samples (/proc/PID/stat), bytes
at rest once each has persisted what it holds (bench.peers_systems), and remote-read
latency of the same queries from Strata and Prometheus (VictoriaMetrics has no
remote-read server), after checking that both answer them with the same samples.
Workloads are the real corpus and a synthetic node_exporter fleet (bench.fleet).

Prints one table of medians with Strata/peer ratios (bench.peers_table) and a table of
read latency per query; writes every figure of every run to bench/results/peers.json.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.block_bytes import CORPUS_SAMPLES, CORPUS_SERIES, load_corpus, tool_version
from bench.common import CORPUS, REPO, RESULTS, machine
from bench.fleet import INTERVAL_MS, SERIES_PER_HOST, cached_fleet, instance_of
from bench.peers_systems import (
    CLIENT_CPU,
    CONNECTIONS,
    STARTERS,
    SYSTEMS,
    Ingest,
    StrataSystem,
    System,
    install_peers,
    replay_into,
)
from bench.peers_table import run_ratios, table
from bench.read_latency import KINDS, Client, Matcher, compare, read, samples_answer
from bench.read_latency import Workload as Query

FLEET_END_MS = 1_795_564_800_000
"""2026-11-24 12:00 UTC: a 12-hour boundary, so the 12 h fleet fills one compaction range."""
CORPUS_START_MS, CORPUS_END_MS = 1_795_574_522_483, 1_795_576_111_122
HOUR_MS = 3_600_000
SCRAPES_PER_HOUR = HOUR_MS // INTERVAL_MS
WARMUP_READS = 2
FLOOR = "floor/ready"
FLOOR_TITLE = "floor: GET /-/ready, no work"


@dataclass(frozen=True, slots=True)
class Workload:
    """One workload: where its requests are and what it holds."""

    key: str
    title: str
    covers: str
    """What the workload stands for, in words."""
    source: Callable[[], Path]
    """The .rwlog file, generated on first call for the fleets."""
    samples: int
    series: int
    queries: tuple[Query, ...]
    """Remote-read queries; the first one's latency goes into the main table."""
    max_seconds: float


def corpus_queries() -> tuple[Query, ...]:
    """The corpus's node job, and one of its series, over the whole capture."""
    node: tuple[Matcher, ...] = (("job", "=", "node"),)
    one: tuple[Matcher, ...] = (("__name__", "=", "node_load1"),)
    return (
        Query("node", "job=node, 512 series x 26 min", node, CORPUS_START_MS, CORPUS_END_MS),
        Query("one", "node_load1, 1 series x 26 min", one, CORPUS_START_MS, CORPUS_END_MS),
    )


def fleet_queries(scrapes: int) -> tuple[Query, ...]:
    """One host's 100 series, 20 histograms' buckets and one series, over the data's end."""
    end = FLEET_END_MS
    span = min(scrapes * INTERVAL_MS, 12 * HOUR_MS)
    host: tuple[Matcher, ...] = (("instance", "=", instance_of(1)),)
    buckets: tuple[Matcher, ...] = (
        ("__name__", "=", "http_request_duration_seconds_bucket"),
        ("instance", "=~", "host-0000[0-9]:9100"),
    )
    one: tuple[Matcher, ...] = (
        ("__name__", "=", "node_cpu_seconds_total"),
        ("instance", "=", instance_of(0)),
        ("cpu", "=", "0"),
        ("mode", "=", "idle"),
    )
    hours = f"{span / HOUR_MS:g} h" if span >= HOUR_MS else f"{span / 60_000:g} min"
    return (
        Query("host", f"1 host, {SERIES_PER_HOST} series x {hours}", host, end - span, end),
        Query("buckets", f"10 hosts' buckets, 200 series x {hours}", buckets, end - span, end),
        Query("one", f"1 series x {hours}", one, end - span, end),
    )


def fleet_workload(key: str, series: int, scrapes: int, covers: str, max_s: float) -> Workload:
    """A fleet workload, its file generated in bench/results on first use."""

    def source() -> Path:
        return cached_fleet(RESULTS, series, scrapes, FLEET_END_MS).path

    minutes = scrapes * INTERVAL_MS / 60_000
    span = f"{scrapes} scrapes" if minutes < 5 else f"{minutes:g} min"
    span = f"{minutes / 60:g} h" if minutes >= 60 else span
    count = f"{series // 1_000_000}M" if series >= 1_000_000 else f"{series // 1000}k"
    title = f"fleet {count} series x {span}"
    return Workload(
        key, title, covers, source, series * scrapes, series, fleet_queries(scrapes), max_s
    )


def workloads(quick: bool) -> dict[str, Workload]:
    """The workloads of a full or a --quick run."""
    corpus = Workload(
        "corpus",
        "corpus node-1s.rwlog",
        "26.5 min of real traffic, 1,762 series at 1 s, 500 samples a request",
        lambda: CORPUS,
        CORPUS_SAMPLES,
        CORPUS_SERIES,
        corpus_queries(),
        600,
    )
    if quick:
        return {
            "corpus": corpus,
            "fleet-10k": fleet_workload("fleet-10k", 10_000, 240, "10k series x 1 h", 300),
            "fleet-100k": fleet_workload("fleet-100k", 100_000, 8, "100k series x 8 scrapes", 300),
        }
    return {
        "corpus": corpus,
        "fleet-10k": fleet_workload(
            "fleet-10k", 10_000, 12 * SCRAPES_PER_HOUR, "10k series x 12 h backfilled", 900
        ),
        "fleet-100k": fleet_workload(
            "fleet-100k", 100_000, SCRAPES_PER_HOUR // 2, "100k series x 30 min backfilled", 900
        ),
        "fleet-1m": fleet_workload(
            "fleet-1m", 1_000_000, 4, "1M series x 4 scrapes (series creation)", 900
        ),
    }


@functools.cache
def vm_expected(workload: str) -> tuple[int, int]:
    """Samples and series VictoriaMetrics should keep: it drops the corpus's plain NaNs."""
    if workload != "corpus":
        raise KeyError(workload)
    print("decoding the corpus for VictoriaMetrics' expected counts...", flush=True)
    return load_corpus(CORPUS).without_plain_nan()


# --- one run -------------------------------------------------------------------------


def ingest_figures(ingest: Ingest, series: int) -> dict[str, float]:
    """The table's ingest, memory and CPU figures of one replay."""
    accepted = ingest.samples_accepted
    return {
        "samples_per_s": ingest.samples_per_s,
        "wall_s": ingest.wall_s,
        "samples_accepted": accepted,
        "failed_requests": ingest.failed_requests,
        "cpu_s_per_million": ingest.cpu_s / (accepted / 1e6) if accepted else 0.0,
        "idle_rss_mib": ingest.idle_rss_kib / 1024,
        "peak_rss_mib": ingest.peak_rss_kib / 1024,
        "steady_rss_mib": ingest.steady_rss_kib / 1024,
        "rss_bytes_per_series": (ingest.peak_rss_kib - ingest.idle_rss_kib) * 1024 / series,
    }


def measure_system(
    name: str, spec: Workload, tmp: Path
) -> tuple[System, dict[str, float], dict[str, object]]:
    """Start one system, replay the workload, persist; the running server and its figures."""
    print(f"  {name}: replaying {spec.samples:,} samples...", flush=True)
    system: System = STARTERS[name](tmp)  # type: ignore[assignment]
    try:
        ingest = replay_into(system.pid, system.write_url, spec.source(), spec.max_seconds)
        figures = ingest_figures(ingest, spec.series)
        if ingest.failed_requests:
            print(f"  WARNING: {ingest.failed_requests} requests refused: {ingest.status_counts}")
        if name == "victoriametrics" and spec.key == "corpus":
            keeps = vm_expected(spec.key)
        else:
            keeps = (ingest.samples_accepted, spec.series)
        at_rest = system.persist(*keeps)
    except BaseException:
        system.stop()
        raise
    figures["bytes_at_rest"] = at_rest.bytes
    figures["bytes_per_sample"] = at_rest.bytes / spec.samples
    details: dict[str, object] = {
        "ingest": asdict(ingest),
        "at_rest": at_rest.details | {"bytes": at_rest.bytes},
    }
    print(
        f"    {figures['samples_per_s']:,.0f} samples/s, peak {figures['peak_rss_mib']:,.0f} MiB, "
        f"{figures['cpu_s_per_million']:.2f} CPU s/M, {figures['bytes_per_sample']:.3f} B/sample",
        flush=True,
    )
    return system, figures, details


def check_same_answers(spec: Workload, clients: dict[str, Client]) -> dict[str, object]:
    """Strata's SAMPLES answer to each query equals Prometheus's, bit for bit; counts."""
    out: dict[str, object] = {}
    for query in spec.queries:
        answers = {s: samples_answer(read(c, query.body("samples"))[1]) for s, c in clients.items()}
        counts = {s: sum(len(series.ts) for series in a) for s, a in answers.items()}
        try:
            compare(
                f"strata vs prometheus, {query.title}", answers["strata"], answers["prometheus"]
            )
            same = True
        except RuntimeError as exc:
            print(f"  WARNING: {exc}", flush=True)
            same = False
        out[query.key] = {"series": len(answers["strata"]), "samples": counts, "same": same}
        print(f"    {query.title}: {counts} samples, same answers: {same}", flush=True)
    return out


def time_reads(spec: Workload, clients: dict[str, Client], reps: int) -> dict[str, list[float]]:
    """Warm-up reads, then `reps` rounds taking each cell in turn, systems alternated.

    Each round ends with the floor: a GET of /-/ready, which every system answers with no
    work, timed in the same alternation as the reads (each server idle for as long
    while the other answers). It is what a read costs before any of it is a read."""
    cells: dict[str, list[float]] = {}
    bodies = {(q.key, kind): q.body(kind) for q in spec.queries for kind in KINDS}
    for body in bodies.values():
        for client in clients.values():
            for _ in range(WARMUP_READS):
                read(client, body)
    for client in clients.values():
        for _ in range(WARMUP_READS):
            floor(client)
    systems = list(clients)
    for rep in range(reps):
        order = systems[rep % 2 :] + systems[: rep % 2]
        for (key, kind), body in bodies.items():
            for system in order:
                elapsed, _ = read(clients[system], body)
                cells.setdefault(f"{key}/{kind}/{system}", []).append(elapsed * 1000)
        for system in order:
            cells.setdefault(f"{FLOOR}/{system}", []).append(floor(clients[system]) * 1000)
    return cells


def floor(client: Client) -> float:
    """Seconds of one GET /-/ready to its last byte; raise unless 200."""
    elapsed, status, answer = client.get("/-/ready")
    if status != 200:
        raise RuntimeError(f"/-/ready answered {status}: {answer[:300]!r}")
    return elapsed


def run_workload(
    spec: Workload, run: int, systems: list[str], reps: int
) -> tuple[dict[str, dict[str, float]], dict[str, object]]:
    """One run of one workload over the systems: figures per system and details."""
    order = systems[run % len(systems) :] + systems[: run % len(systems)]
    figures: dict[str, dict[str, float]] = {}
    details: dict[str, object] = {"order": order}
    live: dict[str, System] = {}
    tmps: list[Path] = []
    try:
        for name in order:
            tmps.append(Path(tempfile.mkdtemp(prefix=f"bench-peers-{name}-")))
            system, figures[name], details[name] = measure_system(name, spec, tmps[-1])
            if system.read_url is None:
                system.stop()
            else:
                live[name] = system
        if {"strata", "prometheus"} <= live.keys():
            read_figures(spec, live, reps, figures, details)
        strata = live.pop("strata", None)
        for system in live.values():
            system.stop()
        if isinstance(strata, StrataSystem):
            strata.stop()
            compact_figures(strata, spec, figures["strata"], details)
    finally:
        for system in live.values():
            system.stop()
        for tmp in tmps:
            shutil.rmtree(tmp, ignore_errors=True)
    return figures, details


def read_figures(
    spec: Workload,
    live: dict[str, System],
    reps: int,
    figures: dict[str, dict[str, float]],
    details: dict[str, object],
) -> None:
    """Check and time the remote reads of Strata and Prometheus; medians into the figures."""
    print("  remote read: checking answers, then timing...", flush=True)
    os.sched_setaffinity(0, {CLIENT_CPU})
    clients = {s: Client(str(live[s].read_url)) for s in ("strata", "prometheus")}
    try:
        details["answers"] = check_same_answers(spec, clients)
        cells = time_reads(spec, clients, reps)
    finally:
        for client in clients.values():
            client.close()
    details["read_ms"] = cells
    main = spec.queries[0].key
    for system in clients:
        for kind in KINDS:
            for query in spec.queries:
                ms = statistics.median(cells[f"{query.key}/{kind}/{system}"])
                figures[system][f"read_{query.key}_{kind}_ms"] = ms
            figures[system][f"read_{kind}_ms"] = figures[system][f"read_{main}_{kind}_ms"]
        figures[system]["floor_ms"] = statistics.median(cells[f"{FLOOR}/{system}"])


def compact_figures(
    strata: StrataSystem, spec: Workload, figures: dict[str, float], details: dict[str, object]
) -> None:
    """Run `strata compact` over the stopped server's bucket; at rest is what it leaves."""
    compacted = strata.compact()
    strata_details = details["strata"]
    if isinstance(strata_details, dict):
        strata_details["compact"] = compacted
    if "bytes" not in compacted:
        print(f"  WARNING: strata compact failed: {compacted.get('error')}", flush=True)
        return
    after = int(str(compacted["bytes"]))
    figures["bytes_at_rest_flushed"] = figures["bytes_at_rest"]
    figures["bytes_at_rest"] = after
    figures["bytes_per_sample"] = after / spec.samples
    print(
        f"    strata compact: {figures['bytes_at_rest_flushed']:,.0f} -> {after:,} bytes "
        f"({after / spec.samples:.3f} B/sample)",
        flush=True,
    )


# --- the report ----------------------------------------------------------------------


def read_table(
    specs: dict[str, Workload], results: dict[str, dict[str, list[dict[str, float]]]]
) -> list[str]:
    """Markdown: remote-read medians per query and answer type, Strata / Prometheus."""
    lines = [
        "| workload | query | answer | Strata ms | Prometheus ms | Strata / Prometheus |",
        "|---|---|---|---|---|---|",
    ]
    for key, systems in results.items():
        for query in specs[key].queries:
            for kind in KINDS:
                both = _medians(systems, f"read_{query.key}_{kind}_ms")
                if both is not None:
                    a, b = both
                    lines.append(
                        f"| {specs[key].title} | {query.title} | {kind.upper()} "
                        f"| {a:.1f} | {b:.1f} | **{a / b:.2f}** |"
                    )
        both = _medians(systems, "floor_ms")
        if both is not None:
            a, b = both
            lines.append(
                f"| {specs[key].title} | {FLOOR_TITLE} | - | {a:.2f} | {b:.2f} | **{a / b:.2f}** |"
            )
    return lines


def _medians(systems: dict[str, list[dict[str, float]]], name: str) -> tuple[float, float] | None:
    """Strata's and Prometheus's medians of one figure over their runs; None unless both
    have it."""
    ours = [r[name] for r in systems.get("strata", []) if name in r]
    theirs = [r[name] for r in systems.get("prometheus", []) if name in r]
    if not ours or not theirs:
        return None
    return statistics.median(ours), statistics.median(theirs)


def versions() -> dict[str, object]:
    """Versions of the three systems (Strata's: the working tree's commit, and its source)."""
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    )
    return {
        "strata": {"tree": commit.stdout.strip(), "source": str(StrataSystem.source)},
        "prometheus": tool_version(["prometheus", "--version"], "prometheus"),
        "victoriametrics": tool_version(["victoria-metrics", "-version"], "victoria-metrics"),
    }


def report(
    args: argparse.Namespace,
    specs: dict[str, Workload],
    results: dict[str, dict[str, list[dict[str, float]]]],
    details: dict[str, list[object]],
    seconds: float,
    *,
    final: bool,
) -> None:
    """Write bench/results/peers.json (after every workload run); print the tables at the end."""
    titles = {k: specs[k].title for k in results}
    main_table, reads = table(results, titles), read_table(specs, results)
    out = {
        "machine": machine(),
        "versions": versions(),
        "command": " ".join(["python", "-m", "bench.peers", *sys.argv[1:]]),
        "complete": final,
        "connections": CONNECTIONS,
        "args": vars(args),
        "seconds": seconds,
        "workloads": {
            k: {"title": s.title, "covers": s.covers, "samples": s.samples, "series": s.series}
            for k, s in specs.items()
            if k in results
        },
        "table": main_table,
        "read_table": reads,
        "same_run_ratios": {
            key: run_ratios(results, key)
            for key in ("samples_per_s", "cpu_s_per_million", "bytes_per_sample", "peak_rss_mib")
        },
        "results": results,
        "details": details,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "peers.json").write_text(json.dumps(out, indent=2, default=str))
    if not final:
        return
    print(f"\nmachine: {out['machine']}\nversions: {out['versions']}")
    print(f"took {seconds:.0f} s\n")
    print("\n".join(main_table))
    print("\nremote read, medians of the timed reads:\n" + "\n".join(reads))


def main() -> int:
    """Run the benchmark, print the tables, write bench/results/peers.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small workloads, 1 run, 3 reads")
    parser.add_argument("--runs", type=int, default=None, help="runs per workload (default 3)")
    parser.add_argument("--reps", type=int, default=None, help="timed reads a cell (default 10)")
    parser.add_argument("--workloads", default="", help="comma-separated subset")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument(
        "--strata-source",
        type=Path,
        default=REPO,
        help="run strata from this copy of the code, e.g. `git archive HEAD | tar -x -C DIR`",
    )
    args = parser.parse_args()
    StrataSystem.source = args.strata_source.resolve()
    runs = args.runs or (1 if args.quick else 3)
    reps = args.reps or (3 if args.quick else 10)
    specs = workloads(args.quick)
    chosen = [w for w in args.workloads.split(",") if w] or list(specs)
    systems = [s for s in SYSTEMS if s in args.systems.split(",")]
    if unknown := (set(chosen) - set(specs)) | (set(args.systems.split(",")) - set(SYSTEMS)):
        parser.error(f"unknown workloads or systems: {sorted(unknown)}")
    if min(runs, reps) < 1:
        parser.error("--runs and --reps must be at least 1")
    install_peers()
    started = time.monotonic()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    details: dict[str, list[object]] = {}
    for key in chosen:
        print(f"{specs[key].title} ({specs[key].covers}): preparing...", flush=True)
        specs[key].source()
    # Runs outermost, so that a run cut short still leaves every workload's earlier runs.
    for run in range(runs):
        for key in chosen:
            print(f"{specs[key].title}: run {run + 1}/{runs}", flush=True)
            figures, run_details = run_workload(specs[key], run, systems, reps)
            for system, f in figures.items():
                results.setdefault(key, {}).setdefault(system, []).append(f)
            details.setdefault(key, []).append(run_details)
            report(args, specs, results, details, time.monotonic() - started, final=False)
    report(args, specs, results, details, time.monotonic() - started, final=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
