"""`strata verify`: check a bucket's blocks for damage and inconsistency, reading only.

Per tenant: every block's meta.json parses; its index decodes and agrees with the meta's
stats and time range; every chunk segment the index points into (float pages and native
histogram chunks) exists and is long enough; with `full`, every page and histogram chunk
is read back (zstd checksums, chunk sizes, sample counts; counted in the report); partial
uploads; blocks of one resolution that overlap; a bucket index that disagrees with the
listing. Findings are errors (data a query would fail on or miss) or warnings (states a
running system passes through: overlaps before compaction, uploads in flight, an index
a little behind). Table of findings: docs/operations.md#verifying-the-bucket.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from blocks.bucket_index import read_bucket_index, scan_tenant
from blocks.catalog import bucket_tenants
from blocks.errors import CorruptBlock, NotFound
from blocks.index import BlockIndex, decode_index
from blocks.meta import INDEX_FILENAME, BlockMeta, Resolution
from blocks.objstore.base import ObjectStore
from blocks.partial_uploads import partial_blocks
from blocks.reader import BlockReader
from blocks.upload import list_blocks
from blocks.writer import segment_name

log = logging.getLogger(__name__)

ERROR = "error"
WARNING = "warning"
# Series decoded at a time in a full check: bounded memory for any block size.
SERIES_PER_READ = 1024


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem: how bad, where, what."""

    severity: str
    tenant: str
    block: str
    what: str

    def line(self) -> str:
        """`error   tenant/block: what`."""
        where = f"{self.tenant}/{self.block}" if self.block else self.tenant
        return f"{self.severity:<8}{where}: {self.what}"


@dataclass(slots=True)
class VerifyReport:
    """Findings and what was looked at."""

    findings: list[Finding]
    tenants: int = 0
    blocks: int = 0
    samples_read: int = 0
    histograms_read: int = 0

    @property
    def errors(self) -> int:
        """How many findings are errors."""
        return sum(f.severity == ERROR for f in self.findings)

    @property
    def warnings(self) -> int:
        """How many findings are warnings."""
        return sum(f.severity == WARNING for f in self.findings)


def verify_bucket(
    store: ObjectStore,
    tenant: str | None = None,
    *,
    full: bool = True,
    progress: Callable[[str], None] = log.info,
) -> VerifyReport:
    """Check every block of one tenant (or of all); never writes."""
    report = VerifyReport([])
    for name in [tenant] if tenant is not None else bucket_tenants(store):
        report.tenants += 1
        _verify_tenant(store, name, full, report, progress)
    return report


def _verify_tenant(
    store: ObjectStore,
    tenant: str,
    full: bool,
    report: VerifyReport,
    progress: Callable[[str], None],
) -> None:
    findings = report.findings
    for block_id, keys in sorted(partial_blocks(store, tenant).items()):
        findings.append(
            Finding(WARNING, tenant, block_id, f"partial upload: {len(keys)} objects, no meta.json")
        )
    listed = scan_tenant(store, tenant)  # also reads every meta.json
    for block_id in _unreadable_metas(store, tenant, listed.blocks):
        findings.append(Finding(ERROR, tenant, block_id, "meta.json unreadable"))
    metas = sorted(listed.blocks.values(), key=lambda m: (m.mint, m.block_id))
    for number, meta in enumerate(metas, 1):
        progress(f"{tenant}: block {number}/{len(metas)} {meta.block_id}")
        report.blocks += 1
        for severity, what in _verify_block(store, meta, full, report):
            findings.append(Finding(severity, tenant, meta.block_id, what))
    live = [m for m in metas if m.block_id not in listed.deletion_marks]
    for first, second in overlapping_pairs(live):
        findings.append(
            Finding(
                WARNING,
                tenant,
                first.block_id,
                f"overlaps {second.block_id} ({_resolution(first)}): compaction merges them",
            )
        )
    findings.extend(_index_drift(store, tenant, listed.blocks, listed.deletion_marks))


def _unreadable_metas(store: ObjectStore, tenant: str, readable: Iterable[str]) -> list[str]:
    """Blocks with a meta.json that scan_tenant could not parse."""
    return sorted(set(list_blocks(store, tenant)) - set(readable))


def _verify_block(
    store: ObjectStore, meta: BlockMeta, full: bool, report: VerifyReport
) -> list[tuple[str, str]]:
    prefix = f"{meta.tenant}/{meta.block_id}"
    try:
        index = decode_index(store.get(f"{prefix}/{INDEX_FILENAME}"))
    except NotFound:
        return [(ERROR, "index missing")]
    except CorruptBlock as exc:
        return [(ERROR, f"index unreadable: {exc.reason}")]
    problems: list[tuple[str, str]] = []
    stats = meta.stats
    counted = {
        "series": (stats.series, index.series_count),
        "chunks": (stats.chunks, len(index.chunks.page)),
        "pages": (stats.pages, len(index.pages.offset)),
    }
    for what, (said, found) in counted.items():
        if said != found:
            problems.append((ERROR, f"meta.json says {said} {what}, the index has {found}"))
    if len(index.chunks.mint) and (
        int(index.chunks.mint.min()) < meta.mint or int(index.chunks.maxt.max()) >= meta.maxt
    ):
        problems.append((ERROR, "chunks outside the block's time range"))
    histograms = index.histograms
    if (
        histograms is not None
        and len(histograms.mint)
        and (int(histograms.mint.min()) < meta.mint or int(histograms.maxt.max()) >= meta.maxt)
    ):
        problems.append((ERROR, "histogram chunks outside the block's time range"))
    problems += _check_segments(store, prefix, index)
    if full and not any(severity == ERROR for severity, _ in problems):
        problems += _read_everything(store, prefix, meta, index, report)
    return problems


def _check_segments(store: ObjectStore, prefix: str, index: BlockIndex) -> list[tuple[str, str]]:
    """Each chunk segment exists and holds every byte the index points to."""
    problems = []
    segments = index.pages.segment
    ends = index.pages.offset.astype(np.int64) + index.pages.length.astype(np.int64)
    histograms = index.histograms
    if histograms is not None:
        segments = np.concatenate((segments, histograms.segment))
        ends = np.concatenate(
            (ends, histograms.offset.astype(np.int64) + histograms.length.astype(np.int64))
        )
    for segment in sorted(set(segments.tolist())):
        needed = int(ends[segments == segment].max())
        key = f"{prefix}/{segment_name(segment)}"
        try:
            size = store.size(key)
        except NotFound:
            problems.append((ERROR, f"{segment_name(segment)} missing"))
            continue
        if size < needed:
            problems.append(
                (
                    ERROR,
                    f"{segment_name(segment)} truncated: {size} bytes, the index needs {needed}",
                )
            )
    return problems


def _read_everything(
    store: ObjectStore, prefix: str, meta: BlockMeta, index: BlockIndex, report: VerifyReport
) -> list[tuple[str, str]]:
    """Decode every page and histogram chunk: zstd checksums, layouts and sizes checked."""
    reader = BlockReader(store, prefix, meta=meta, index=index)
    lowest, highest = np.iinfo(np.int64).min, np.iinfo(np.int64).max
    for start in range(0, index.series_count, SERIES_PER_READ):
        ids = range(start, min(start + SERIES_PER_READ, index.series_count))
        try:
            read = reader.read_series(ids, lowest, highest)
        except CorruptBlock as exc:
            return [(ERROR, f"chunk data unreadable: {exc.reason}")]
        report.samples_read += sum(len(ts) for ts, _ in read.values())
        if index.histograms is None:
            continue
        try:
            histograms = reader.read_histograms(ids, lowest, highest)
        except CorruptBlock as exc:
            return [(ERROR, f"histogram data unreadable: {exc.reason}")]
        report.histograms_read += sum(len(ts) for ts, _ in histograms.values())
    return []


def overlapping_pairs(metas: Iterable[BlockMeta]) -> list[tuple[BlockMeta, BlockMeta]]:
    """Pairs of blocks of one resolution sharing time, each pair once, by (mint, id)."""
    pairs = []
    by_resolution: dict[Resolution, list[BlockMeta]] = {}
    for meta in metas:
        by_resolution.setdefault(meta.resolution, []).append(meta)
    for group in by_resolution.values():
        group.sort(key=lambda m: (m.mint, m.block_id))
        for i, first in enumerate(group):
            for second in group[i + 1 :]:
                if second.mint >= first.maxt:
                    break
                pairs.append((first, second))
    return pairs


def _index_drift(
    store: ObjectStore, tenant: str, blocks: dict[str, BlockMeta], marks: dict[str, int]
) -> list[Finding]:
    try:
        index = read_bucket_index(store, tenant)
    except CorruptBlock as exc:
        return [
            Finding(WARNING, tenant, "", f"bucket index unreadable ({exc.reason}): readers list")
        ]
    if index is None:
        return [Finding(WARNING, tenant, "", "no bucket index: readers list the bucket")]
    findings = []
    for block_id in sorted(set(index.blocks) - set(blocks)):
        findings.append(
            Finding(ERROR, tenant, block_id, "in the bucket index but not in the bucket")
        )
    for block_id in sorted(set(blocks) - set(index.blocks)):
        findings.append(
            Finding(WARNING, tenant, block_id, "not in the bucket index yet (compaction adds it)")
        )
    if {b: t for b, t in index.deletion_marks.items() if b in blocks} != marks:
        findings.append(Finding(WARNING, tenant, "", "deletion marks differ from the bucket index"))
    return findings


def _resolution(meta: BlockMeta) -> str:
    return "raw" if not meta.resolution else f"{int(meta.resolution) // 60_000}m"
