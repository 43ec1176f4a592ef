"""Bytes per sample at rest: Strata blocks against Prometheus 2.42 and VictoriaMetrics 1.79.

    python -m bench.block_bytes                  # all three systems, 3 Strata timing runs
    python -m bench.block_bytes --runs 5 --runs-peers 2
    python -m bench.block_bytes --systems strata      # no servers, just Strata's blocks

The real corpus (../shared/corpus/node-1s.rwlog) is decoded in process and cut into
Strata blocks the way the gateway cuts its head (gateway.head_cut.build_blocks: one block
per aligned 2-hour window), then read back with blocks.reader.BlockReader and checked bit
for bit. Prometheus and VictoriaMetrics run as subprocesses on loopback, receive the
corpus unchanged through remote write (../shared/tools/loadgen.py, pinned to CPU 1) and
are made to persist it: Prometheus through a TSDB snapshot that includes the head,
VictoriaMetrics through a forced flush and a forced merge. Bytes per sample divide by the
corpus's 2,785,500 samples for every system. Prints a Markdown table and writes every
figure to bench/results/block_bytes.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import re
import shutil
import signal
import statistics
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import snappy

from bench.common import CORPUS, RESULTS, free_port, machine, run_loadgen
from blocks.meta import CHUNKS_DIRNAME, INDEX_FILENAME, META_FILENAME, BlockMeta
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from gateway.config import GatewayConfig
from gateway.head import series_key_of
from gateway.head_cut import build_blocks
from gateway.validate import LabelRules, canonical_labels, encode_labels
from proto.write_raw_pb2 import RawWriteRequest

SYSTEMS = ("strata", "prometheus", "victoriametrics")
TENANT = "bench"
# What the corpus README promises; a different count means a different or damaged file.
CORPUS_SAMPLES = 2_785_500
CORPUS_SERIES = 1_762
# Prometheus's staleness marker. VictoriaMetrics keeps it but drops every other NaN.
STALE_NAN_BITS = 0x7FF0000000000002
# Bounds on every wait, so a wedged server fails the run instead of hanging it.
READY_TIMEOUT_S = 60.0
REPLAY_TIMEOUT_S = 1200.0
SNAPSHOT_TIMEOUT_S = 300.0
STOP_GRACE_S = 30.0
FLUSH_TIMEOUT_S = 120.0
MERGE_TIMEOUT_S = 600.0
# VictoriaMetrics merges in the background after /internal/force_merge returns; its data
# directory counts as settled once no merge runs and its size has held this long.
SETTLE_S = 10.0
POLL_S = 0.5
PROMETHEUS_CONFIG = "global:\n  scrape_interval: 15s\nscrape_configs: []\n"

Decoded = list[tuple[BlockReader, dict[int, tuple[np.ndarray, np.ndarray]]]]


@dataclass(frozen=True, slots=True)
class Corpus:
    """The corpus as the head holds it: canonical label bytes, samples sorted by (ref, ts)."""

    labels: list[bytes]
    refs: np.ndarray
    ts: np.ndarray
    values: np.ndarray
    duplicates: int

    def without_plain_nan(self) -> tuple[int, int]:
        """Samples and series left once NaNs other than staleness markers are dropped."""
        keep = ~np.isnan(self.values) | (self.values.view(np.uint64) == STALE_NAN_BITS)
        return int(keep.sum()), len(np.unique(self.refs[keep]))


@dataclass(frozen=True, slots=True)
class AtRest:
    """What one system keeps on disk for the corpus (one run)."""

    bytes: int
    samples_stored: int
    whole_dir_bytes: int | None = None
    """Everything under the storage directory, where that is more than `bytes`."""
    details: dict[str, object] = field(default_factory=dict)


# --- the corpus ---------------------------------------------------------------------


def iter_bodies(path: Path) -> Iterator[bytes]:
    """Uncompressed WriteRequest bytes of each record (../shared/corpus/README.md)."""
    with path.open("rb") as f:
        while (header := f.read(4)) and len(header) == 4:
            yield snappy.decompress(f.read(struct.unpack(">I", header)[0]))


def load_corpus(path: Path) -> Corpus:
    """Decode every request; series refs in first-seen order, labels as the gateway keys them."""
    rules = LabelRules.from_config(GatewayConfig())
    ref_by_raw: dict[tuple[bytes, ...], int] = {}
    ref_by_key: dict[bytes, int] = {}
    labels: list[bytes] = []
    refs: list[int] = []
    ts: list[int] = []
    values: list[float] = []
    for body in iter_bodies(path):
        for series in RawWriteRequest.FromString(body).timeseries:
            raw = tuple(series.labels)
            ref = ref_by_raw.get(raw)
            if ref is None:
                key = canonical_labels(list(raw), rules)
                ref = ref_by_raw[raw] = ref_by_key.setdefault(key, len(labels))
                if ref == len(labels):
                    labels.append(key)
            for sample in series.samples:
                refs.append(ref)
                ts.append(sample.timestamp)
                values.append(sample.value)
    return sort_like_head(labels, np.array(refs), np.array(ts), np.array(values))


def sort_like_head(
    labels: list[bytes], refs: np.ndarray, ts: np.ndarray, values: np.ndarray
) -> Corpus:
    """Sorted by (ref, timestamp), exact duplicates dropped (gateway.head.HeadSnapshot)."""
    order = np.lexsort((ts, refs))
    refs, ts, values = refs[order], ts[order], values[order]
    repeat = np.zeros(len(refs), dtype=bool)
    repeat[1:] = (refs[1:] == refs[:-1]) & (ts[1:] == ts[:-1])
    keep = ~repeat
    return Corpus(labels, refs[keep], ts[keep], values[keep], int(repeat.sum()))


def check_corpus(corpus: Corpus) -> None:
    """The corpus is the one the README describes, or stop."""
    samples, series = len(corpus.ts), len(corpus.labels)
    print(f"  {samples:,} samples, {series:,} series, {corpus.duplicates} duplicates dropped")
    if (samples, series) != (CORPUS_SAMPLES, CORPUS_SERIES):
        raise RuntimeError(f"corpus has {samples:,} samples / {series:,} series, not as documented")


# --- Strata -------------------------------------------------------------------------


def encode_blocks(corpus: Corpus, parent: Path) -> tuple[list[BlockMeta], float]:
    """Cut the whole corpus into blocks under `parent`; their metas and the seconds taken."""
    started = time.perf_counter()
    keys = [series_key_of(labels) for labels in corpus.labels]
    metas = build_blocks(parent, TENANT, keys, corpus.refs, corpus.ts, corpus.values)
    return metas, time.perf_counter() - started


def decode_blocks(parent: Path, metas: list[BlockMeta]) -> tuple[Decoded, float]:
    """Open each block from disk and read every series of it; the samples and seconds taken."""
    source = LocalStore(parent)
    started = time.perf_counter()
    out: Decoded = []
    for meta in metas:
        reader = BlockReader(source, meta.block_id)
        ids = range(reader.index.series_count)
        # read_series bounds are inclusive, a block's maxt is exclusive.
        out.append((reader, reader.read_series(ids, meta.mint, meta.maxt - 1)))
    return out, time.perf_counter() - started


def verify_bit_exact(corpus: Corpus, decoded: Decoded) -> None:
    """Every sample comes back with its timestamp and the same float64 bits, or raise."""
    ref_by_key = {key: ref for ref, key in enumerate(corpus.labels)}
    starts = np.searchsorted(corpus.refs, np.arange(len(corpus.labels) + 1))
    total = 0
    for reader, series in decoded:
        meta = reader.meta
        for series_id, (ts, values) in series.items():
            key = encode_labels(reader.index.labels(series_id))
            lo, hi = starts[ref_by_key[key]], starts[ref_by_key[key] + 1]
            inside = (corpus.ts[lo:hi] >= meta.mint) & (corpus.ts[lo:hi] < meta.maxt)
            want_ts, want_values = corpus.ts[lo:hi][inside], corpus.values[lo:hi][inside]
            if not np.array_equal(ts, want_ts) or not np.array_equal(
                values.view(np.uint64), want_values.view(np.uint64)
            ):
                raise RuntimeError(f"block {meta.block_id} series {key!r} is not bit-exact")
            total += len(ts)
    if total != len(corpus.ts):
        raise RuntimeError(f"read back {total:,} samples of {len(corpus.ts):,}")


def block_files(parent: Path, metas: list[BlockMeta]) -> dict[str, int]:
    """Bytes of the blocks' chunk segments, indexes and meta.json files."""
    sizes = {CHUNKS_DIRNAME: 0, INDEX_FILENAME: 0, META_FILENAME: 0}
    for meta in metas:
        block = parent / meta.block_id
        sizes[CHUNKS_DIRNAME] += dir_bytes(block / CHUNKS_DIRNAME)
        sizes[INDEX_FILENAME] += (block / INDEX_FILENAME).stat().st_size
        sizes[META_FILENAME] += (block / META_FILENAME).stat().st_size
    return sizes


@dataclass(frozen=True, slots=True)
class StrataRun:
    """One build and read-back of the corpus's blocks."""

    files: dict[str, int]
    metas: list[BlockMeta]
    encode_s: float
    decode_s: float


def strata_run(corpus: Corpus) -> StrataRun:
    """Build the blocks in a fresh directory, read them back, check them, throw them away."""
    with tempfile.TemporaryDirectory(prefix="strata-blocks-") as tmp:
        metas, encode_s = encode_blocks(corpus, Path(tmp))
        files = block_files(Path(tmp), metas)
        decoded, decode_s = decode_blocks(Path(tmp), metas)
        verify_bit_exact(corpus, decoded)
    return StrataRun(files, metas, encode_s, decode_s)


def measure_strata(corpus: Corpus, runs: int) -> AtRest:
    """Sizes of the blocks and median speeds over `runs` builds, each read back bit-exact."""
    done: list[StrataRun] = []
    for run in range(runs):
        done.append(strata_run(corpus))
        print(
            f"  strata run {run + 1}/{runs}: {sum(done[-1].files.values()):,} bytes, "
            f"encode {len(corpus.ts) / done[-1].encode_s / 1e6:.2f} M/s, "
            f"decode {len(corpus.ts) / done[-1].decode_s / 1e6:.2f} M/s, bit-exact",
            flush=True,
        )
    first = done[0]
    encode_s, decode_s = [r.encode_s for r in done], [r.decode_s for r in done]
    details: dict[str, object] = {
        "files": first.files,
        "sizes_identical_across_runs": all(r.files == first.files for r in done),
        "blocks": [meta_summary(m) for m in first.metas],
        "encode_seconds": encode_s,
        "decode_seconds": decode_s,
        "encode_m_samples_per_s": len(corpus.ts) / statistics.median(encode_s) / 1e6,
        "decode_m_samples_per_s": len(corpus.ts) / statistics.median(decode_s) / 1e6,
        "bit_exact": True,
    }
    return AtRest(sum(first.files.values()), len(corpus.ts), details=details)


def meta_summary(meta: BlockMeta) -> dict[str, int]:
    """A block's time range and stats, for the results file."""
    stats = dataclasses.asdict(meta.stats)
    return {"mint": meta.mint, "maxt": meta.maxt, **stats}


# --- subprocesses, HTTP and directories ----------------------------------------------


def http(url: str, *, method: str = "GET", timeout_s: float = 30.0) -> bytes:
    """The body of a loopback request; raises on a non-2xx answer."""
    request = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        body: bytes = response.read()
        return body


def start(
    cmd: list[str], log: Path, ready_url: str, *, cpu: int | None = None
) -> subprocess.Popen[bytes]:
    """Start a server and wait until `ready_url` answers 2xx; stopped again if it never does.

    With `cpu`, the server runs pinned to that CPU (a Go server then sets GOMAXPROCS 1).
    """
    pin = None if cpu is None else functools.partial(os.sched_setaffinity, 0, {cpu})
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin)
    try:
        ready = functools.partial(answers, proc, ready_url)
        wait_for(f"{cmd[0]} to be ready (log: {log})", ready, READY_TIMEOUT_S)
    except BaseException:
        stop(proc)
        raise
    return proc


def answers(proc: subprocess.Popen[bytes], url: str) -> bool:
    """Whether the server answers `url`; raise if it has exited."""
    if proc.poll() is not None:
        raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
    try:
        http(url, timeout_s=1)
    except OSError:
        return False
    return True


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM by pid, then SIGKILL after the grace period."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_GRACE_S)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    """Poll `check` until it is true; the seconds waited. Raise after `timeout_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic() - started


def replay(url: str, concurrency: int) -> dict[str, object]:
    """Send the corpus unchanged to a remote-write URL; loadgen's report. Raise on a loss."""
    args = ["replay", "--file", str(CORPUS), "--url", url, "-c", str(concurrency)]
    args += ["--max-seconds", str(int(REPLAY_TIMEOUT_S) - 60)]
    report = run_loadgen(args, cpu=1, timeout_s=REPLAY_TIMEOUT_S)
    accepted, statuses = report["samples_accepted"], report["status_counts"]
    print(f"  replayed: {accepted:,} samples accepted, HTTP status {statuses}", flush=True)
    if accepted != CORPUS_SAMPLES:
        raise RuntimeError(f"{url} accepted {accepted} of {CORPUS_SAMPLES:,} samples: {report}")
    return report


def dir_bytes(path: Path) -> int:
    """Apparent size of the regular files under `path` (directory entries not counted)."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum((Path(root) / f).lstat().st_size for f in files)
    return total


def entry_sizes(path: Path) -> dict[str, int]:
    """Bytes under each entry of a directory."""
    return {p.name: dir_bytes(p) if p.is_dir() else p.lstat().st_size for p in path.iterdir()}


def tool_version(cmd: list[str], package: str) -> dict[str, str]:
    """What the binary says of itself, and the Debian package version that installed it."""
    said = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    dpkg = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package],
        capture_output=True,
        text=True,
        timeout=30,
    )
    lines = (said.stdout or said.stderr).strip().splitlines()
    return {"binary": lines[0] if lines else "", "package": dpkg.stdout.strip()}


# --- Prometheus ----------------------------------------------------------------------


def measure_prometheus(tmp: Path, concurrency: int, corpus: Corpus) -> AtRest:
    """Replay into a fresh Prometheus, snapshot the head into a block, size that block."""
    config = tmp / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-remote-write-receiver",
        "--web.enable-admin-api",
    ]
    proc = start(cmd, tmp / "prometheus.log", url + "/-/ready")
    try:
        report = replay(url + "/api/v1/write", concurrency)
        # Without skip_head=false the snapshot would hold no block: nothing has been
        # compacted out of the head yet, as it spans far less than one block range.
        snapshot_url = url + "/api/v1/admin/tsdb/snapshot?skip_head=false"
        answer = json.loads(http(snapshot_url, method="POST", timeout_s=SNAPSHOT_TIMEOUT_S))
        snapshot = tmp / "tsdb" / "snapshots" / answer["data"]["name"]
        whole_tsdb = entry_sizes(tmp / "tsdb")
    finally:
        stop(proc)
    return prometheus_at_rest(snapshot, report, whole_tsdb, len(corpus.ts))


def prometheus_at_rest(
    snapshot: Path, report: dict[str, object], whole_tsdb: dict[str, int], sent: int
) -> AtRest:
    """Sizes (chunks, index, meta.json, tombstones) and meta.json stats of a snapshot's blocks."""
    files: dict[str, int] = {}
    metas: list[dict[str, object]] = []
    for block in sorted(p for p in snapshot.iterdir() if (p / "meta.json").is_file()):
        for name, size in entry_sizes(block).items():
            files[name] = files.get(name, 0) + size
        meta = json.loads((block / "meta.json").read_text())
        metas.append({"ulid": meta["ulid"], "mint": meta["minTime"], "maxt": meta["maxTime"]})
        metas[-1].update(meta["stats"])
    samples = sum(int(str(m.get("numSamples", 0))) for m in metas)
    if samples != sent:
        print(f"  WARNING: the snapshot holds {samples:,} samples, not {sent:,}")
    details: dict[str, object] = {
        "files": files,
        "blocks": metas,
        "samples_match_corpus": samples == sent,
        "tsdb_dir_at_snapshot": whole_tsdb,
        "replay": report,
    }
    return AtRest(sum(files.values()), samples, details=details)


# --- VictoriaMetrics -----------------------------------------------------------------


def vm_metrics(url: str) -> dict[str, float]:
    """VictoriaMetrics' /metrics, one entry per line (name with its labels)."""
    out: dict[str, float] = {}
    for line in http(url + "/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def vm_sum(metrics: dict[str, float], pattern: str) -> float:
    """Sum of the /metrics lines whose name-with-labels fully matches `pattern`."""
    return sum(v for k, v in metrics.items() if re.fullmatch(pattern, k))


def vm_stored_rows(url: str) -> int:
    """Samples in the data parts, small and big."""
    return int(vm_sum(vm_metrics(url), r'vm_rows\{type="storage/(small|big)"\}'))


def vm_parts(url: str) -> dict[str, float]:
    """Part counts by kind (indexdb, storage/small, storage/big)."""
    return {k: v for k, v in vm_metrics(url).items() if k.startswith("vm_parts{")}


def vm_series_count(url: str) -> int:
    """Series in the index, from /api/v1/series/count."""
    count: int = json.loads(http(url + "/api/v1/series/count"))["data"][0]
    return count


def wait_settled(url: str, data: Path) -> float:
    """Wait until no merge runs and the data size has held for SETTLE_S; the seconds waited."""
    last_size, since = -1, time.monotonic()

    def settled() -> bool:
        nonlocal last_size, since
        merges = vm_sum(vm_metrics(url), r"vm_active_(force_)?merges(\{.*\})?")
        size = dir_bytes(data)
        if merges or size != last_size:
            last_size, since = size, time.monotonic()
            return False
        return time.monotonic() - since >= SETTLE_S

    return wait_for("VictoriaMetrics merges to settle", settled, MERGE_TIMEOUT_S)


def measure_victoriametrics(tmp: Path, concurrency: int, corpus: Corpus) -> AtRest:
    """Replay into a fresh VictoriaMetrics, flush, force a merge, size its directories."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    storage = tmp / "vm"
    cmd = [
        "victoria-metrics",
        f"-storageDataPath={storage}",
        f"-httpListenAddr=127.0.0.1:{port}",
        "-retentionPeriod=100y",
    ]
    proc = start(cmd, tmp / "victoria-metrics.log", url + "/health")
    try:
        report = replay(url + "/api/v1/write", concurrency)
        dirs, rows, details = flush_and_merge(url, storage, corpus.without_plain_nan())
    finally:
        stop(proc)
    # On shutdown VictoriaMetrics writes its in-memory caches to cache/: recorded, not counted.
    details |= {"replay": report, "dirs_after_shutdown": entry_sizes(storage)}
    headline = dirs.get("data", 0) + dirs.get("indexdb", 0)
    return AtRest(headline, rows, sum(dirs.values()), details)


def flush_and_merge(
    url: str, storage: Path, expected: tuple[int, int]
) -> tuple[dict[str, int], int, dict[str, object]]:
    """Flush, force a merge; the directory sizes after it, samples stored, figures on the way.

    `expected` is the samples and series the corpus leaves once VictoriaMetrics has
    dropped its NaNs: the flush is awaited until that many samples are in parts.
    """
    corpus_rows, corpus_series = expected
    http(url + "/internal/force_flush")
    flush_s = wait_for(
        "every accepted sample in VictoriaMetrics' parts",
        lambda: vm_stored_rows(url) >= corpus_rows,
        FLUSH_TIMEOUT_S,
    )
    # The flushed parts reach the disk and get merged in the background for a while;
    # let that finish so the sizes before the forced merge mean something.
    flush_s += wait_settled(url, storage / "data")
    before = entry_sizes(storage)
    parts_before = vm_parts(url)
    http(url + "/internal/force_merge")
    merge_s = wait_settled(url, storage / "data")
    rows, series = vm_stored_rows(url), vm_series_count(url)
    if (rows, series) != (corpus_rows, corpus_series):
        print(f"  WARNING: VictoriaMetrics holds {rows:,} samples in {series:,} series")
    after = entry_sizes(storage)
    return (
        after,
        rows,
        {
            "dirs_before_merge": before,
            "dirs_after_merge": after,
            "flush_wait_s": flush_s,
            "merge_wait_s": merge_s,
            "series": series,
            "parts_before_merge": parts_before,
            "parts_after_merge": vm_parts(url),
        },
    )


# --- the run -------------------------------------------------------------------------


def run_peer(
    name: str,
    measure: Callable[[Path, int, Corpus], AtRest],
    corpus: Corpus,
    runs: int,
    concurrency: int,
) -> list[AtRest]:
    """Each run against a fresh server in a fresh temporary directory, removed afterwards."""
    out = []
    for run in range(runs):
        print(f"{name}: run {run + 1}/{runs}...", flush=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        try:
            out.append(measure(tmp, concurrency, corpus))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"  {out[-1].bytes:,} bytes, {out[-1].bytes / CORPUS_SAMPLES:.3f} B/sample")
    return out


LABELS = {
    "strata": "Strata blocks (chunks + index + meta.json)",
    "prometheus": "Prometheus 2.42 snapshot block (chunks + index + meta + tombstones)",
    "victoriametrics": "VictoriaMetrics 1.79 data + indexdb, after force merge",
}
WHOLE_DIR_LABELS = {"victoriametrics": "VictoriaMetrics 1.79 whole storage dir (no cache/ yet)"}


def table(results: dict[str, list[AtRest]]) -> list[str]:
    """Markdown: system | bytes | samples stored | bytes/sample | ratio Strata/system."""
    rows: list[tuple[str, float, float]] = []
    for name, runs in results.items():
        stored = statistics.median(r.samples_stored for r in runs)
        rows.append((LABELS[name], statistics.median(r.bytes for r in runs), stored))
        whole = [r.whole_dir_bytes for r in runs if r.whole_dir_bytes is not None]
        if whole:
            rows.append((WHOLE_DIR_LABELS[name], statistics.median(whole), stored))
    ours = statistics.median(r.bytes for r in results["strata"]) if "strata" in results else None
    lines = [
        "| system | bytes | samples stored | bytes/sample | ratio Strata/system |",
        "|---|---|---|---|---|",
    ]
    for label, size, stored in rows:
        ratio = f"{ours / size:.2f}" if ours is not None else "-"
        lines.append(
            f"| {label} | {size:,.0f} | {stored:,.0f} | {size / CORPUS_SAMPLES:.3f} | {ratio} |"
        )
    return lines


def versions_of(systems: list[str]) -> dict[str, dict[str, str]]:
    """Versions of the peer binaries."""
    versions = {}
    if "prometheus" in systems:
        versions["prometheus"] = tool_version(["prometheus", "--version"], "prometheus")
    if "victoriametrics" in systems:
        versions["victoriametrics"] = tool_version(
            ["victoria-metrics", "-version"], "victoria-metrics"
        )
    return versions


def strata_speeds(strata: AtRest, runs: int) -> str:
    """Strata's encode and decode medians, one line."""
    d = strata.details
    return (
        f"Strata encode {d['encode_m_samples_per_s']:.2f} M samples/s, "
        f"decode {d['decode_m_samples_per_s']:.2f} M samples/s "
        f"(medians of {runs} runs; every run read back bit-exact)"
    )


def main() -> int:
    """Run the benchmark, print the table, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument("--runs", type=int, default=3, help="Strata encode/decode timing runs")
    parser.add_argument("--runs-peers", type=int, default=1, help="runs per peer system")
    parser.add_argument("-c", "--concurrency", type=int, default=1, help="replay connections")
    args = parser.parse_args()
    systems = [s for s in SYSTEMS if s in args.systems.split(",")]
    if unknown := set(args.systems.split(",")) - set(SYSTEMS):
        parser.error(f"unknown systems: {sorted(unknown)}")
    if min(args.runs, args.runs_peers, args.concurrency) < 1:
        parser.error("--runs, --runs-peers and --concurrency must be at least 1")
    print("decoding the corpus...", flush=True)
    corpus = load_corpus(CORPUS)
    check_corpus(corpus)
    results: dict[str, list[AtRest]] = {}
    if "strata" in systems:
        results["strata"] = [measure_strata(corpus, args.runs)]
    if "prometheus" in systems:
        results["prometheus"] = run_peer(
            "prometheus", measure_prometheus, corpus, args.runs_peers, args.concurrency
        )
    if "victoriametrics" in systems:
        results["victoriametrics"] = run_peer(
            "victoriametrics", measure_victoriametrics, corpus, args.runs_peers, args.concurrency
        )
    report(args, results, versions_of(systems))
    return 0


def report(
    args: argparse.Namespace, results: dict[str, list[AtRest]], versions: dict[str, dict[str, str]]
) -> None:
    """Write bench/results/block_bytes.json; print machine, versions, table, speeds."""
    lines = table(results)
    out = {
        "machine": machine(),
        "versions": versions,
        "corpus": {"path": str(CORPUS), "samples": CORPUS_SAMPLES, "series": CORPUS_SERIES},
        "runs": args.runs,
        "runs_peers": args.runs_peers,
        "concurrency": args.concurrency,
        "table": lines,
        "results": {k: [dataclasses.asdict(r) for r in v] for k, v in results.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "block_bytes.json").write_text(json.dumps(out, indent=2))
    print(f"\nmachine: {machine()}")
    for name, version in versions.items():
        print(f"{name}: {version}")
    print("\n" + "\n".join(lines))
    if "strata" in results:
        print("\n" + strata_speeds(results["strata"][0], args.runs))


if __name__ == "__main__":
    raise SystemExit(main())
