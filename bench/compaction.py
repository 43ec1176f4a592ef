"""Compaction and downsampling: throughput, bucket bytes, and remote read over 30 days
with and without downsampled blocks.

    python -m bench.compaction                   # all three parts, about 5 minutes
    python -m bench.compaction --runs 3 --pass-runs 1 --days 10 --rounds 1 --reps 2
    python -m bench.compaction --parts corpus,pass          # no servers

Part `corpus`: the real corpus (../shared/corpus/node-1s.rwlog, 26 minutes at 1 s) is cut
the way the gateway cuts its head (gateway.head_cut.build_blocks), but into 5-minute
windows so that a merge has several sources holding the same series, and uploaded into
a local bucket. Then, timed `--runs` times each (the block written into a work
directory, not uploaded): compactor.rewrite.write_merge of those blocks into one
(a hand-made Merge action), write_downsample of the merged block to 5 m, and of that
5 m block to 1 h (hand-made Downsample actions).

Part `pass`: a synthetic node_exporter fleet, 2 hosts x 50 series at 15 s over `--days`
days ending two hours before the current 2-hour window, is cut into level-1 2-hour
blocks as gateways cut them (tenant "bench") in a local bucket (blocks.objstore.local),
and one full compaction pass runs in process (compactor.run.Compactor.run_pass with
the real clock, raw and 5 m retention off, no delete delay), `--pass-runs` times, each
on a fresh copy of that bucket. Per action kind the rewrites' seconds and samples are
recorded by wrapping the executor's write_merge / write_downsample.

Part `read`: two `strata query` processes over the compacted bucket, one with
`--query-downsampled false` (raw blocks only), one with the default (true), pinned to
CPU 0, this client on CPU 1. One remote-read query for all 100 series over the whole
range carrying the ReadHints Prometheus sends for `rate(x[1h])` at step 1h, and one for
a plain selector at step 1h, each as SAMPLES and STREAMED_XOR_CHUNKS; warm-up reads,
then `--rounds` rounds of `--reps` reads per cell, servers alternated. Before timing,
every answer is checked: 100 series; the raw server returns every sample; the
downsampled server fewer, from 5 m blocks; one counter's increase over the whole range
equal on both servers and to the generated data.

Prints Markdown tables and writes every figure to bench/results/compaction.json.
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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import snappy
from prometheus_client import CollectorRegistry

from bench.block_bytes import Corpus, dir_bytes, load_corpus
from bench.common import CORPUS, REPO, RESULTS, Strata, machine
from bench.read_latency import (
    KINDS,
    SEED,
    STEP_MS,
    Cell,
    Client,
    data_end_ms,
    host_metrics,
    metric_values,
    p90,
    read,
    samples_answer,
    streamed_counts,
    time_cell,
)
from blocks.bucket_index import add_blocks, scan_tenant
from blocks.meta import BlockMeta, Resolution
from blocks.objstore.base import ObjectStore
from blocks.objstore.local import LocalStore
from blocks.upload import upload_block
from compactor.config import CompactorConfig
from compactor.levels import DAY_MS, HOUR_MS
from compactor.metrics import CompactorMetrics
from compactor.planner import Action, Downsample, Merge
from compactor.rewrite import Progress, Written, write_downsample, write_merge
from compactor.run import Compactor
from gateway.head import series_key_of
from gateway.head_cut import build_blocks
from gateway.validate import encode_labels
from proto import remote_pb2, types_pb2

PARTS = ("corpus", "pass", "read")
TENANT = "bench"
SERVER_CPU = 0
CLIENT_CPU = 1
# The corpus is cut into windows this long: about 6 blocks holding the same series.
CORPUS_CUT_MS = 5 * 60_000
# What the corpus README promises; a different count means a different or damaged file.
CORPUS_SAMPLES = 2_785_500
HOSTS = 2  # x 50 series each: the 100 series
WINDOW_MS = 2 * HOUR_MS
LEVEL_2_MS = 12 * HOUR_MS
# Prometheus's hints for a range query at step 1h: rate(x[1h]), and a plain selector x.
QUERY_STEP_MS = HOUR_MS
QUERIES = {
    "rate": ("rate(x[1h]), step 1h", "rate", HOUR_MS),
    "plain": ("x (plain selector), step 1h", "", 0),
}
# The counter whose increase over the whole range both servers must agree on.
CHECKED_COUNTER = (
    ("__name__", "node_cpu_seconds_total"),
    ("cpu", "0"),
    ("instance", "host-000:9100"),
    ("job", "node"),
    ("mode", "idle"),
)
# The bench's tenant for requests without X-Scope-OrgID; and room for the raw answer of
# 30 days x 100 series (17.3 M samples, about 175 MB of SAMPLES), which the default
# limits (20 M samples, 256 MiB) only just admit.
QUERY_FLAGS = ["--default-tenant", TENANT, "--query-max-samples", "100000000"]
QUERY_FLAGS += ["--query-max-response-bytes", str(1 << 30)]
HELP_TIMEOUT_S = 60.0
COUNTER_RTOL = 1e-9
RESOLUTION_NAMES = {Resolution.RAW: "raw", Resolution.FIVE_MINUTES: "5m", Resolution.ONE_HOUR: "1h"}

Labels = tuple[tuple[str, str], ...]


# --- part 1a: the corpus, step by step -------------------------------------------------


@dataclass(slots=True)
class Step:
    """One rewrite timed over several runs: what went in and came out, and how long."""

    name: str
    blocks_in: int
    series_in: int
    samples_in: int
    bytes_in: int
    series_out: int = 0
    samples_out: int = 0
    bytes_out: int = 0
    seconds: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        """Median seconds over the runs."""
        return statistics.median(self.seconds)

    @property
    def m_samples_per_s(self) -> float:
        """Samples read per second (median run), in millions."""
        return self.samples_in / self.median_s / 1e6


def block_bytes(store_root: Path, meta: BlockMeta) -> int:
    """Bytes of a block's objects in a local bucket: chunk segments, index, meta.json."""
    return dir_bytes(store_root / meta.tenant / meta.block_id)


def put_blocks(store: LocalStore, metas: Sequence[BlockMeta], parent: Path) -> None:
    """Upload blocks built under `parent`, index them, and drop the local copies."""
    for meta in metas:
        upload_block(store, parent / meta.block_id, meta.tenant)
        shutil.rmtree(parent / meta.block_id)
    add_blocks(store, TENANT, metas)


def timed_rewrite(step: Step, runs: int, work: Path, write: Callable[[Path], Written]) -> BlockMeta:
    """Run `write` `runs` times into `work`; the last output's meta.

    Every run's output must hold the same series and samples. Each is removed before the
    next run; the last one stays for the caller to upload as the next step's source.
    """
    written: Written | None = None
    for run in range(runs):
        if written is not None:
            shutil.rmtree(written.path)
        started = time.perf_counter()
        written = write(work)
        step.seconds.append(time.perf_counter() - started)
        stats = written.meta.stats
        if run and (stats.series, stats.samples) != (step.series_out, step.samples_out):
            raise RuntimeError(f"{step.name}: run {run + 1} wrote {stats}, run 1 did not")
        step.series_out, step.samples_out = stats.series, stats.samples
        step.bytes_out = dir_bytes(written.path)
        print(
            f"  {step.name} run {run + 1}/{runs}: {step.seconds[-1]:.2f} s, "
            f"{step.samples_in / step.seconds[-1] / 1e6:.2f} M samples/s",
            flush=True,
        )
    assert written is not None
    return written.meta


def corpus_steps(tmp: Path, runs: int) -> tuple[list[Step], dict[str, object]]:
    """Merge the corpus's 5-minute blocks, downsample the result to 5 m, that to 1 h."""
    print("decoding the corpus...", flush=True)
    corpus = load_corpus(CORPUS)
    if len(corpus.ts) != CORPUS_SAMPLES:
        raise RuntimeError(f"corpus has {len(corpus.ts):,} samples, not {CORPUS_SAMPLES:,}")
    root, work = tmp / "corpus-bucket", tmp / "corpus-work"
    root.mkdir()
    work.mkdir()
    with LocalStore(root) as store:
        return rewrite_corpus(store, root, work, corpus, runs)


def rewrite_corpus(
    store: LocalStore, root: Path, work: Path, corpus: Corpus, runs: int
) -> tuple[list[Step], dict[str, object]]:
    """Cut, upload, and time the three rewrites; the steps and what they worked on."""
    metas = build_blocks(
        work,
        TENANT,
        [series_key_of(labels) for labels in corpus.labels],
        corpus.refs,
        corpus.ts,
        corpus.values,
        duration_ms=CORPUS_CUT_MS,
    )
    put_blocks(store, metas, work)
    sources = tuple(sorted(metas, key=lambda m: (m.mint, m.block_id)))
    # The merged block spans the aligned 12-hour range holding the corpus, as a level-2
    # merge of whole 2-hour windows would.
    mint = sources[0].mint - sources[0].mint % LEVEL_2_MS
    merge = Merge(TENANT, Resolution.RAW, sources, mint, mint + LEVEL_2_MS, level=2)
    merge_step = Step(
        f"merge {len(sources)} raw blocks (5-minute cuts) into one",
        len(sources),
        len(corpus.labels),
        sum(m.stats.samples for m in sources),
        sum(block_bytes(root, m) for m in sources),
    )
    if merge_step.samples_in != CORPUS_SAMPLES:
        raise RuntimeError(f"the cut blocks hold {merge_step.samples_in:,} samples")
    merged = timed_rewrite(merge_step, runs, work, lambda w: write_merge(store, merge, w))
    if merge_step.samples_out != CORPUS_SAMPLES:
        raise RuntimeError(f"the merged block holds {merge_step.samples_out:,} samples")
    put_blocks(store, [merged], work)
    steps = [merge_step]
    source = merged
    for to in (Resolution.FIVE_MINUTES, Resolution.ONE_HOUR):
        step = Step(
            f"downsample {RESOLUTION_NAMES[source.resolution]} -> {RESOLUTION_NAMES[to]}",
            1,
            source.stats.series,
            source.stats.samples,
            block_bytes(root, source),
        )
        action = Downsample(TENANT, source, to)
        source = timed_rewrite(step, runs, work, functools.partial(downsample_into, store, action))
        put_blocks(store, [source], work)
        steps.append(step)
    details: dict[str, object] = {
        "corpus": {"path": str(CORPUS), "samples": CORPUS_SAMPLES, "series": len(corpus.labels)},
        "cut_ms": CORPUS_CUT_MS,
        "source_blocks": [meta_summary(m) for m in sources],
        "merge_range": [merge.mint, merge.maxt],
    }
    return steps, details


def downsample_into(store: LocalStore, action: Downsample, work: Path) -> Written:
    """write_downsample with the work directory last, for timed_rewrite."""
    return write_downsample(store, action, work)


def meta_summary(meta: BlockMeta) -> dict[str, object]:
    """A block's range, resolution, level and stats, for the results file."""
    return {
        "mint": meta.mint,
        "maxt": meta.maxt,
        "resolution": int(meta.resolution),
        "level": meta.level,
        **asdict(meta.stats),
    }


# --- part 1b: a compaction pass over 30 days --------------------------------------------


@dataclass(frozen=True, slots=True)
class Fleet:
    """The synthetic series: canonical labels, samples sorted by (series, time)."""

    labels: list[Labels]
    ts: list[np.ndarray]
    values: list[np.ndarray]
    start_ms: int
    end_ms: int

    @property
    def samples(self) -> int:
        """Samples in all series."""
        return sum(len(t) for t in self.ts)


def make_fleet(days: int, end_ms: int) -> Fleet:
    """HOSTS x 50 node_exporter-like series at 15 s over the `days` days before end_ms."""
    start = end_ms - days * DAY_MS
    count = (end_ms - start) // STEP_MS
    out_labels: list[Labels] = []
    out_ts, out_values = [], []
    for host in range(HOSTS):
        # Each target is scraped at its own offset inside the interval, as in a real fleet.
        phase = int(np.random.default_rng([SEED, host]).integers(0, STEP_MS))
        instance = f"host-{host:03d}:9100"
        for index, metric in enumerate(host_metrics()):
            base = (("__name__", metric.name), ("instance", instance), ("job", "node"))
            out_labels.append(tuple(sorted(base + metric.labels)))
            out_ts.append(start + phase + np.arange(count, dtype=np.int64) * STEP_MS)
            out_values.append(
                metric_values(metric, count, np.random.default_rng([SEED, host, index]))
            )
    order = sorted(range(len(out_labels)), key=lambda i: out_labels[i])
    return Fleet(
        [out_labels[i] for i in order],
        [out_ts[i] for i in order],
        [out_values[i] for i in order],
        start,
        end_ms,
    )


def fill_bucket(fleet: Fleet, root: Path, work: Path) -> list[BlockMeta]:
    """The fleet as level-1 2-hour blocks in a local bucket, cut a day at a time."""
    with LocalStore(root) as store:
        return cut_and_upload(fleet, store, work)


def cut_and_upload(fleet: Fleet, store: LocalStore, work: Path) -> list[BlockMeta]:
    """Blocks of every 2-hour window, as build_blocks cuts a gateway's head, uploaded."""
    keys = [series_key_of(encode_labels(list(labels))) for labels in fleet.labels]
    metas: list[BlockMeta] = []
    for day in range(fleet.start_ms, fleet.end_ms, DAY_MS):
        refs, ts, values = [], [], []
        for ref, (t, v) in enumerate(zip(fleet.ts, fleet.values, strict=True)):
            lo, hi = np.searchsorted(t, [day, day + DAY_MS])
            refs.append(np.full(hi - lo, ref, dtype=np.int64))
            ts.append(t[lo:hi])
            values.append(v[lo:hi])
        day_metas = build_blocks(
            work, TENANT, keys, np.concatenate(refs), np.concatenate(ts), np.concatenate(values)
        )
        for meta in day_metas:
            upload_block(store, work / meta.block_id, TENANT)
            shutil.rmtree(work / meta.block_id)
        metas += day_metas
    add_blocks(store, TENANT, metas)
    return metas


@dataclass(frozen=True, slots=True)
class Rewrite:
    """One merge or downsampling the pass carried out."""

    kind: str
    seconds: float
    samples_read: int
    samples_written: int
    bytes_written: int


def rewrite_kind(action: Action) -> str:
    """A row name for an action: what it reads and what it makes."""
    if isinstance(action, Merge):
        return f"merge {RESOLUTION_NAMES[action.resolution]} into level {action.level}"
    assert isinstance(action, Downsample)
    return (
        f"downsample {RESOLUTION_NAMES[action.source.resolution]} -> {RESOLUTION_NAMES[action.to]}"
    )


@contextmanager
def recording_rewrites() -> Iterator[list[Rewrite]]:
    """Wrap the executor's block writers to record each rewrite, restored afterwards.

    The pass logs what it writes but not what it read; wrapping the executor's two
    writers gets both without changing the compactor.
    """
    done: list[Rewrite] = []

    def record(action: Merge | Downsample, written: Written) -> Written:
        stats = written.meta.stats
        done.append(
            Rewrite(
                rewrite_kind(action),
                written.seconds,
                written.samples_read,
                stats.samples,
                stats.bytes,
            )
        )
        return written

    def write_merge_recorded(
        store: ObjectStore, action: Merge, work: Path, progress: Progress | None = None
    ) -> Written:
        return record(action, write_merge(store, action, work, progress))

    def write_downsample_recorded(
        store: ObjectStore, action: Downsample, work: Path, progress: Progress | None = None
    ) -> Written:
        return record(action, write_downsample(store, action, work, progress))

    with (
        mock.patch("compactor.execute.write_merge", write_merge_recorded),
        mock.patch("compactor.execute.write_downsample", write_downsample_recorded),
    ):
        yield done


@dataclass(slots=True)
class Holdings:
    """A bucket's blocks of one resolution."""

    blocks: int = 0
    samples: int = 0
    bytes: int = 0
    levels: dict[int, int] = field(default_factory=dict)


def bucket_holdings(root: Path) -> tuple[dict[str, Holdings], int, int]:
    """Blocks by resolution (bytes of their objects), deletion marks, and all bytes."""
    with LocalStore(root) as store:
        index = scan_tenant(store, TENANT)
    out: dict[str, Holdings] = {}
    for meta in index.blocks.values():
        held = out.setdefault(RESOLUTION_NAMES[meta.resolution], Holdings())
        held.blocks += 1
        held.samples += meta.stats.samples
        held.bytes += block_bytes(root, meta)
        held.levels[meta.level] = held.levels.get(meta.level, 0) + 1
    return out, len(index.deletion_marks), dir_bytes(root)


@dataclass(frozen=True, slots=True)
class PassRun:
    """One compaction pass: its summary, counters, rewrites and the bucket after it."""

    seconds: float
    summary: dict[str, object]
    samples_read: int
    samples_written: int
    rewrites: list[Rewrite]
    after: dict[str, Holdings]
    marks_left: int
    bucket_bytes: int


def compact_once(level1: Path, run_dir: Path) -> PassRun:
    """Copy the level-1 bucket to `run_dir`/bucket and run one pass over the copy."""
    root = run_dir / "bucket"
    shutil.copytree(level1, root)
    config = CompactorConfig(
        data_dir=run_dir / "data", retention_raw="0", retention_5m="0", delete_delay="0"
    )
    registry = CollectorRegistry()
    with LocalStore(root) as store, recording_rewrites() as rewrites:
        started = time.perf_counter()
        summary = Compactor(store, config, CompactorMetrics(registry)).run_pass()
        seconds = time.perf_counter() - started
    if not summary.ok:
        raise RuntimeError(f"compaction pass failed: {summary.line()}")
    after, marks, total = bucket_holdings(root)

    def counter(name: str) -> int:
        return int(registry.get_sample_value(name) or 0)

    return PassRun(
        seconds,
        asdict(summary),
        counter("strata_compactor_samples_read_total"),
        counter("strata_compactor_samples_written_total"),
        rewrites,
        after,
        marks,
        total,
    )


def pass_part(tmp: Path, days: int, runs: int) -> dict[str, object]:
    """Build the level-1 bucket, compact copies of it `runs` times; every figure."""
    print(f"generating {HOSTS * 50} series x {days} d at 15 s...", flush=True)
    fleet = make_fleet(days, data_end_ms())
    level1, work = tmp / "level1-bucket", tmp / "level1-work"
    work.mkdir()
    started = time.perf_counter()
    metas = fill_bucket(fleet, level1, work)
    fill_s = time.perf_counter() - started
    before, _, before_total = bucket_holdings(level1)
    print(
        f"  {len(metas)} level-1 blocks, {fleet.samples:,} samples, "
        f"{before['raw'].bytes:,} bytes ({fill_s:.1f} s to cut and upload)",
        flush=True,
    )
    if before["raw"].samples != fleet.samples:
        raise RuntimeError(f"the bucket holds {before['raw'].samples:,} of {fleet.samples:,}")
    passes: list[PassRun] = []
    for run in range(runs):
        run_dir = tmp / f"pass-{run}"
        done = compact_once(level1, run_dir)
        passes.append(done)
        print(
            f"  pass {run + 1}/{runs}: {done.seconds:.1f} s, {done.samples_read:,} samples read, "
            f"{done.samples_written:,} written, {done.samples_read / done.seconds / 1e6:.2f} "
            f"M samples/s; blocks {describe_holdings(done.after)}",
            flush=True,
        )
        if done.after.get("raw", Holdings()).samples != fleet.samples or done.marks_left:
            raise RuntimeError(f"after the pass: {done.after}, {done.marks_left} marks left")
        if run < runs - 1:
            shutil.rmtree(run_dir)

    def shape(done: PassRun) -> list[tuple[str, int, int, int]]:
        return sorted((name, h.blocks, h.samples, h.bytes) for name, h in done.after.items())

    same = all(shape(p) == shape(passes[0]) for p in passes)
    return {
        "fleet": fleet,
        "bucket": tmp / f"pass-{runs - 1}" / "bucket",
        "level1_blocks": len(metas),
        "fill_seconds": fill_s,
        "before": before,
        "before_bucket_bytes": before_total,
        "passes": passes,
        "same_blocks_every_pass": same,
    }


def describe_holdings(held: dict[str, Holdings]) -> str:
    """`raw 9 (levels {4: 2, ...}), 5m 3, 1h 2`."""
    return ", ".join(
        f"{name} {h.blocks} (levels {dict(sorted(h.levels.items()))})" for name, h in held.items()
    )


# --- part 2: remote read with and without downsampled blocks ----------------------------


def has_downsampled_flag() -> bool:
    """Whether this checkout's `strata query` knows --query-downsampled."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "query", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT_S,
    )
    return "--query-downsampled" in out.stdout


def read_body(
    matchers: Sequence[tuple[str, str]], mint: int, maxt: int, query: str, kind: str
) -> bytes:
    """A snappy ReadRequest with equality matchers and the hints of QUERIES[query]."""
    _, func, range_ms = QUERIES[query]
    hints = types_pb2.ReadHints(
        step_ms=QUERY_STEP_MS, func=func, start_ms=mint, end_ms=maxt, range_ms=range_ms
    )
    request = remote_pb2.ReadRequest(
        queries=[
            remote_pb2.Query(
                start_timestamp_ms=mint,
                end_timestamp_ms=maxt,
                matchers=[
                    types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name=n, value=v)
                    for n, v in matchers
                ],
                hints=hints,
            )
        ],
        accepted_response_types=[KINDS[kind]],
    )
    return bytes(snappy.compress(request.SerializeToString()))


def samples_counts(body: bytes) -> tuple[int, int]:
    """Series and samples of a SAMPLES answer, without decoding each sample."""
    response = remote_pb2.ReadResponse.FromString(snappy.decompress(body))
    series = response.results[0].timeseries
    return len(series), sum(len(s.samples) for s in series)


def blocks_read(server: Strata) -> dict[str, float]:
    """strata_read_blocks_total by resolution so far."""
    return {
        name: server.metric(f'strata_read_blocks_total{{resolution="{name}"}}')
        for name in RESOLUTION_NAMES.values()
    }


def check_answers(
    fleet: Fleet, servers: dict[str, Strata], clients: dict[str, Client]
) -> dict[str, dict[str, object]]:
    """Each server's answer to each query and kind, counted and checked; their figures."""
    mint, maxt = fleet.start_ms, fleet.end_ms - 1
    out: dict[str, dict[str, object]] = {}
    for query in QUERIES:
        for kind in KINDS:
            for system, client in clients.items():
                before = blocks_read(servers[system])
                _, body = read(client, read_body([("job", "node")], mint, maxt, query, kind))
                used = blocks_read(servers[system])
                count = samples_counts if kind == "samples" else streamed_counts
                series, samples = count(body)
                figures: dict[str, object] = {
                    "series": series,
                    "samples": samples,
                    "bytes": len(body),
                    "blocks_read": {k: used[k] - before[k] for k in used},
                }
                print(f"  {system} {query} {kind}: {json.dumps(figures)}", flush=True)
                if series != len(fleet.labels) or samples == 0:
                    raise RuntimeError(f"{system} {query} {kind}: {series} series, {samples}")
                if system == "raw" and samples < fleet.samples:
                    raise RuntimeError(f"raw {query} {kind}: {samples:,} of {fleet.samples:,}")
                if system == "downsampled" and not used["5m"] - before["5m"]:
                    raise RuntimeError(f"downsampled {query} {kind}: no 5m block read")
                out[f"{query}/{kind}/{system}"] = figures
    for query in QUERIES:
        for kind in KINDS:
            raw, down = out[f"{query}/{kind}/raw"], out[f"{query}/{kind}/downsampled"]
            if not int(str(down["samples"])) < int(str(raw["samples"])):
                raise RuntimeError(f"{query} {kind}: downsampled answer is not smaller: {down}")
    out["counter_increase"] = check_counter(fleet, clients)
    return out


def check_counter(fleet: Fleet, clients: dict[str, Client]) -> dict[str, object]:
    """One counter's increase over the whole range, rate hints: both servers, and the data."""
    mint, maxt = fleet.start_ms, fleet.end_ms - 1
    values = fleet.values[fleet.labels.index(CHECKED_COUNTER)]
    want = float(values[-1] - values[0])
    got: dict[str, object] = {"generated": want}
    for system, client in clients.items():
        _, body = read(client, read_body(CHECKED_COUNTER, mint, maxt, "rate", "samples"))
        (series,) = samples_answer(body)
        increase = float(series.values[-1] - series.values[0])
        got[system] = {"increase": increase, "samples": len(series.ts)}
        if not np.isclose(increase, want, rtol=COUNTER_RTOL, atol=0):
            raise RuntimeError(f"{system}: counter increase {increase!r}, generated {want!r}")
    print(f"  counter increase over the range: {json.dumps(got)}", flush=True)
    return got


def time_reads(fleet: Fleet, clients: dict[str, Client], args: argparse.Namespace) -> list[Cell]:
    """Warm-up reads, then rounds taking each cell in turn, servers alternated per round."""
    mint, maxt = fleet.start_ms, fleet.end_ms - 1
    bodies = {
        (q, k): read_body([("job", "node")], mint, maxt, q, k) for q in QUERIES for k in KINDS
    }
    cells = {(q, k, s): Cell(q, k, s) for q in QUERIES for k in KINDS for s in clients}
    for q, k, s in cells:
        for _ in range(args.warmup):
            read(clients[s], bodies[(q, k)])
    systems = list(clients)
    started = time.monotonic()
    per_cell_s = args.max_seconds / max(1, args.rounds * len(cells))
    for run in range(args.rounds):
        if run and time.monotonic() - started > args.max_seconds:
            print(f"time budget spent after {run} rounds", flush=True)
            break
        order = systems[run % len(systems) :] + systems[: run % len(systems)]
        for q in QUERIES:
            for k in KINDS:
                for s in order:
                    cell = cells[(q, k, s)]
                    ms = time_cell(clients[s], bodies[(q, k)], args.reps, per_cell_s)
                    cell.ms += ms
                    cell.rounds.append(statistics.median(ms))
        print(
            f"round {run + 1}/{args.rounds} done ({time.monotonic() - started:.0f} s)", flush=True
        )
    return list(cells.values())


def read_part(
    tmp: Path, fleet: Fleet, bucket: Path, args: argparse.Namespace
) -> tuple[dict[str, dict[str, object]], list[Cell]]:
    """Start both servers over the compacted bucket, check their answers, time them."""
    servers: dict[str, Strata] = {}
    try:
        for system, flag in (("raw", "false"), ("downsampled", "true")):
            servers[system] = Strata(
                tmp / f"query-{system}",
                cpu=SERVER_CPU,
                command="query",
                extra=[
                    "--bucket-url",
                    f"file://{bucket}",
                    "--query-downsampled",
                    flag,
                    *QUERY_FLAGS,
                ],
            )
        clients = {system: Client(server.url) for system, server in servers.items()}
        print("checking the answers...", flush=True)
        answers = check_answers(fleet, servers, clients)
        print("timing...", flush=True)
        cells = time_reads(fleet, clients, args)
        for client in clients.values():
            client.close()
    finally:
        for server in servers.values():
            server.stop()
    return answers, cells


# --- tables ----------------------------------------------------------------------------


def corpus_table(steps: list[Step], runs: int) -> list[str]:
    """Markdown: one row per rewrite of the corpus."""
    lines = [
        f"| step | series in -> out | samples in | samples out | seconds (median of {runs}) "
        "| M samples/s (in) | bytes in | bytes out |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        lines.append(
            f"| {s.name} | {s.series_in:,} -> {s.series_out:,} | {s.samples_in:,} "
            f"| {s.samples_out:,} | {s.median_s:.2f} | {s.m_samples_per_s:.2f} "
            f"| {s.bytes_in:,} | {s.bytes_out:,} |"
        )
    return lines


def pass_tables(figures: dict[str, object]) -> tuple[list[str], list[str], list[str]]:
    """Markdown: the pass as a whole, its rewrites by kind, the bucket's bytes."""
    passes: list[PassRun] = figures["passes"]  # type: ignore[assignment]
    fleet: Fleet = figures["fleet"]  # type: ignore[assignment]
    n = len(passes)
    seconds = statistics.median(p.seconds for p in passes)
    read_n = statistics.median(p.samples_read for p in passes)
    written_n = statistics.median(p.samples_written for p in passes)
    summary = passes[-1].summary
    whole = [
        f"| raw samples | level-1 blocks | merges | downsamplings | blocks deleted "
        f"| seconds (median of {n}) | samples read | samples written | M samples read/s "
        "| M raw samples/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {fleet.samples:,} | {figures['level1_blocks']} | {summary['merges']} "
        f"| {summary['downsamplings']} | {summary['deleted']} | {seconds:.1f} "
        f"| {read_n:,.0f} | {written_n:,.0f} | {read_n / seconds / 1e6:.2f} "
        f"| {fleet.samples / seconds / 1e6:.2f} |",
    ]
    kinds = list(dict.fromkeys(r.kind for r in passes[0].rewrites))
    by_kind = [
        "| rewrite | blocks written | samples read | samples written | seconds "
        f"(median of {n}) | M samples read/s | share of the pass |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in kinds:
        per_pass = [[r for r in p.rewrites if r.kind == kind] for p in passes]
        secs = statistics.median(sum(r.seconds for r in rs) for rs in per_pass)
        read_k = sum(r.samples_read for r in per_pass[0])
        by_kind.append(
            f"| {kind} | {len(per_pass[0])} | {read_k:,} "
            f"| {sum(r.samples_written for r in per_pass[0]):,} | {secs:.1f} "
            f"| {read_k / secs / 1e6:.2f} | {secs / seconds:.0%} |"
        )
    before: dict[str, Holdings] = figures["before"]  # type: ignore[assignment]
    after = passes[-1].after
    raw_samples = fleet.samples
    rows: list[tuple[str, Holdings]] = [("before: raw, level-1 2 h blocks", before["raw"])]
    for name in ("raw", "5m", "1h"):
        if name in after:
            levels = ", ".join(f"{c} x L{lv}" for lv, c in sorted(after[name].levels.items()))
            rows.append((f"after: {name} ({levels})", after[name]))
    total = Holdings(
        sum(h.blocks for h in after.values()),
        sum(h.samples for h in after.values()),
        sum(h.bytes for h in after.values()),
    )
    rows.append(("after: all resolutions", total))
    kept = [h for name, h in after.items() if name != "raw"]
    rows.append(
        (
            "after raw retention: 5m + 1h only",
            Holdings(
                sum(h.blocks for h in kept),
                sum(h.samples for h in kept),
                sum(h.bytes for h in kept),
            ),
        )
    )
    sizes = [
        "| blocks | count | samples held | bytes | bytes / raw sample | bytes / before |",
        "|---|---|---|---|---|---|",
    ]
    for label, h in rows:
        sizes.append(
            f"| {label} | {h.blocks} | {h.samples:,} | {h.bytes:,} "
            f"| {h.bytes / raw_samples:.4f} | {h.bytes / before['raw'].bytes:.3f} |"
        )
    return whole, by_kind, sizes


def read_table(cells: list[Cell], answers: dict[str, dict[str, object]]) -> list[str]:
    """Markdown: per query and answer type, both servers' medians (p90), samples, bytes."""
    by = {(c.workload, c.kind, c.system): c for c in cells}
    lines = [
        "| query (hints) | answer | raw only: ms median (p90) | samples | bytes "
        "| downsampled: ms median (p90) | samples | bytes | blocks read (raw + 5m) "
        "| raw / downsampled latency |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for query, (title, _, _) in QUERIES.items():
        for kind in KINDS:
            row = [title, "SAMPLES" if kind == "samples" else "STREAMED"]
            medians = {}
            for system in ("raw", "downsampled"):
                cell = by[(query, kind, system)]
                medians[system] = statistics.median(cell.ms)
                seen = answers[f"{query}/{kind}/{system}"]
                row += [
                    f"{medians[system]:,.0f} ({p90(cell.ms):,.0f})",
                    f"{seen['samples']:,}",
                    f"{seen['bytes']:,}",
                ]
            used = answers[f"{query}/{kind}/downsampled"]["blocks_read"]
            assert isinstance(used, dict)
            row.append(f"{used['raw']:.0f} + {used['5m']:.0f}")
            row.append(f"{medians['raw'] / medians['downsampled']:.1f}")
            lines.append("| " + " | ".join(row) + " |")
    return lines


# --- the run ---------------------------------------------------------------------------


def revision() -> dict[str, object]:
    """The commit measured, and the files changed in the working tree on top of it."""

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=HELP_TIMEOUT_S
        )
        return out.stdout

    # Porcelain lines are "XY path": two status letters (either may be a space), a space.
    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {"commit": git("rev-parse", "HEAD").strip(), "uncommitted": changed}


def jsonable(value: object) -> object:
    """Dataclasses, paths and arrays turned into JSON values."""
    if isinstance(value, Fleet):
        return {
            "series": len(value.labels),
            "samples": value.samples,
            "start_ms": value.start_ms,
            "end_ms": value.end_ms,
            "step_ms": STEP_MS,
        }
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def main() -> int:
    """Run the parts asked for, print the tables, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated subset")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each corpus step")
    parser.add_argument("--days", type=int, default=30, help="days of the synthetic fleet")
    parser.add_argument("--pass-runs", type=int, default=3, help="compaction passes, each fresh")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds of the reads")
    parser.add_argument("--reps", type=int, default=3, help="timed reads per cell and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed reads per cell first")
    parser.add_argument(
        "--max-seconds", type=float, default=300, help="time budget of the read rounds"
    )
    args = parser.parse_args()
    parts = args.parts.split(",")
    if unknown := set(parts) - set(PARTS):
        parser.error(f"unknown parts: {sorted(unknown)}")
    if "read" in parts and "pass" not in parts:
        parser.error("the read part reads the bucket the pass part compacts")
    if min(args.runs, args.days, args.pass_runs, args.rounds, args.reps) < 1 or args.warmup < 0:
        parser.error("--runs, --days, --pass-runs, --rounds and --reps must be at least 1")
    if "read" in parts and not has_downsampled_flag():
        parser.error("strata query has no --query-downsampled yet: run --parts corpus,pass")
    os.sched_setaffinity(0, {CLIENT_CPU})
    out: dict[str, object] = {
        "machine": machine(),
        "command": " ".join([Path(sys.executable).name, "-m", "bench.compaction", *sys.argv[1:]]),
        "args": vars(args),
        "revision": revision(),
    }
    tables: list[tuple[str, list[str]]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="strata-compaction-bench-") as name:
        tmp = Path(name)
        if "corpus" in parts:
            steps, details = corpus_steps(tmp, args.runs)
            out["corpus"] = {**details, "steps": jsonable(steps)}
            lines = corpus_table(steps, args.runs)
            out["corpus_table"] = lines
            tables.append(("the corpus, step by step", lines))
        if "pass" in parts:
            figures = pass_part(tmp, args.days, args.pass_runs)
            whole, by_kind, sizes = pass_tables(figures)
            out["pass"] = jsonable({k: v for k, v in figures.items() if k != "bucket"})
            out["pass_tables"] = {"pass": whole, "rewrites": by_kind, "bucket_bytes": sizes}
            tables += [
                (f"one compaction pass, {args.days} d x 100 series", whole),
                ("its rewrites by kind", by_kind),
                ("bucket bytes", sizes),
            ]
            if "read" in parts:
                fleet: Fleet = figures["fleet"]  # type: ignore[assignment]
                bucket: Path = figures["bucket"]  # type: ignore[assignment]
                answers, cells = read_part(tmp, fleet, bucket, args)
                lines = read_table(cells, answers)
                out["read"] = {
                    "answers": answers,
                    "latency": [
                        {"query": c.workload, "kind": c.kind, "server": c.system, "ms": c.ms}
                        for c in cells
                    ],
                }
                out["read_table"] = lines
                tables.append((f"remote read, 100 series x {args.days} d", lines))
    out["seconds"] = time.monotonic() - started
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compaction.json").write_text(json.dumps(out, indent=2))
    print(f"\nmachine: {machine()}  ({out['seconds']:.0f} s)")
    for title, lines in tables:
        print(f"\n{title}:\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
