"""What a bucket holds, for people: one row per block, and one series' samples with their bits.

`strata inspect` prints these (docs/operations.md#strata-inspect). Which blocks exist is
decided in `block_refs` alone, so that a bucket index can take the listing's place there.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from blocks.errors import CorruptBlock, InvalidRequest, NotFound
from blocks.index import BlockIndex
from blocks.meta import META_FILENAME, BlockMeta, Resolution
from blocks.objstore.base import ObjectStore
from blocks.reader import BlockReader
from blocks.ulid import is_ulid
from blocks.upload import list_blocks
from proto.write_v2_pb2 import Histogram
from querier import postings
from querier.matchers import Matcher, MatchType

# Each meta.json is one round trip; on S3 a few in flight turn a thousand-block listing
# from tens of seconds into a few, and stay far below any server's request limits.
META_READS_IN_FLIGHT = 8
# Series read in one go: neighbours share pages, and memory holds one batch's pages.
SERIES_PER_READ = 64
# Prometheus's staleness marker, flagged in dumps because it looks like any other NaN.
STALE_NAN_BITS = 0x7FF0000000000002
RESOLUTION_NAMES = {Resolution.RAW: "raw", Resolution.FIVE_MINUTES: "5m", Resolution.ONE_HOUR: "1h"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_TIME, MAX_TIME = -(2**63), 2**63 - 1
COLUMNS = (
    "TENANT",
    "BLOCK",
    "MINT",
    "MAXT",
    "DURATION",
    "RES",
    "LEVEL",
    "SERIES",
    "SAMPLES",
    "CHUNKS",
    "BYTES",
    "BYTES/SAMPLE",
)
# Numbers line up on their last digit.
RIGHT_ALIGNED = frozenset(range(6, len(COLUMNS)))
_PLAIN_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockRow:
    """One block as `strata inspect blocks` shows it; times in ms, maxt exclusive."""

    tenant: str
    block_id: str
    mint: int
    maxt: int
    resolution: Resolution
    level: int
    series: int
    samples: int
    chunks: int
    bytes: int

    @classmethod
    def from_meta(cls, tenant: str, meta: BlockMeta) -> BlockRow:
        """The row of a block, its tenant taken from where the block lies."""
        return cls(
            tenant=tenant,
            block_id=meta.block_id,
            mint=meta.mint,
            maxt=meta.maxt,
            resolution=meta.resolution,
            level=meta.level,
            series=meta.stats.series,
            samples=meta.stats.samples,
            chunks=meta.stats.chunks,
            bytes=meta.stats.bytes,
        )

    @property
    def bytes_per_sample(self) -> float | None:
        """Stored bytes (chunks and index) per sample; None for a block without samples."""
        return self.bytes / self.samples if self.samples else None

    def to_json(self) -> str:
        """One line of JSON; resolution in ms as in meta.json."""
        return json.dumps(
            {
                "tenant": self.tenant,
                "block_id": self.block_id,
                "mint": self.mint,
                "maxt": self.maxt,
                "resolution": int(self.resolution),
                "level": self.level,
                "series": self.series,
                "samples": self.samples,
                "chunks": self.chunks,
                "bytes": self.bytes,
                "bytes_per_sample": self.bytes_per_sample,
            }
        )


@dataclass(frozen=True, slots=True)
class Listing:
    """The rows found, and the blocks whose meta.json could not be read ("tenant/id: why")."""

    rows: list[BlockRow]
    skipped: list[str]


def bucket_tenants(store: ObjectStore) -> list[str]:
    """Tenants with block objects: keys `<tenant>/<ulid>/…`; other keys are not blocks."""
    tenants = set()
    for key in store.list(""):
        parts = key.split("/", 2)
        if len(parts) == 3 and is_ulid(parts[1]):
            tenants.add(parts[0])
    return sorted(tenants)


def block_refs(store: ObjectStore, tenant: str | None = None) -> list[tuple[str, str]]:
    """(tenant, block id) of every complete block, of one tenant or of all of them."""
    tenants = [tenant] if tenant is not None else bucket_tenants(store)
    return [(t, block_id) for t in tenants for block_id in list_blocks(store, t)]


def collect_rows(
    store: ObjectStore,
    *,
    tenant: str | None = None,
    mint: int = MIN_TIME,
    maxt: int = MAX_TIME,
) -> Listing:
    """Rows of the blocks with data in [mint, maxt] (inclusive), by tenant, then time."""
    refs = block_refs(store, tenant)
    with ThreadPoolExecutor(max_workers=META_READS_IN_FLIGHT) as pool:
        found = list(pool.map(lambda ref: _read_row(store, *ref), refs))
    rows = [r for r in found if isinstance(r, BlockRow) and r.mint <= maxt and r.maxt > mint]
    rows.sort(key=lambda r: (r.tenant, r.mint, r.block_id))
    return Listing(rows=rows, skipped=[r for r in found if isinstance(r, str)])


def _read_row(store: ObjectStore, tenant: str, block_id: str) -> BlockRow | str | None:
    try:
        meta = BlockMeta.from_json(store.get(f"{tenant}/{block_id}/{META_FILENAME}"))
    except NotFound:
        # Deleted between the listing and now (a compactor at work): it no longer exists.
        return None
    except CorruptBlock as exc:
        return f"{tenant}/{block_id}: {exc.reason}"
    return BlockRow.from_meta(tenant, meta)


def format_table(rows: Sequence[BlockRow]) -> list[str]:
    """An aligned text table: a header, one line per block, a totals line."""
    return _aligned([list(COLUMNS), *(_row_cells(r) for r in rows), _total_cells(rows)])


def format_summary(rows: Sequence[BlockRow]) -> list[str]:
    """The table with one line per tenant and resolution instead of one per block (the
    BLOCK column counts them), and the totals line."""
    groups: dict[tuple[str, Resolution], list[BlockRow]] = {}
    for row in rows:
        groups.setdefault((row.tenant, row.resolution), []).append(row)
    lines = []
    for (tenant, resolution), group in sorted(groups.items()):
        cells = _total_cells(group)
        cells[0] = tenant
        cells[1] = _count(len(group), "block")
        cells[5] = RESOLUTION_NAMES[resolution]
        lines.append(cells)
    return _aligned([list(COLUMNS), *lines, _total_cells(rows)])


def _aligned(table: list[list[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    return [
        "  ".join(
            cell.rjust(width) if i in RIGHT_ALIGNED else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in table
    ]


def format_json_lines(rows: Iterable[BlockRow]) -> Iterator[str]:
    """One JSON object per block and line, for scripts."""
    return (row.to_json() for row in rows)


def _row_cells(row: BlockRow) -> list[str]:
    return [
        row.tenant,
        row.block_id,
        format_time(row.mint),
        format_time(row.maxt),
        format_duration(row.maxt - row.mint),
        RESOLUTION_NAMES[row.resolution],
        str(row.level),
        str(row.series),
        str(row.samples),
        str(row.chunks),
        str(row.bytes),
        _ratio(row.bytes, row.samples),
    ]


def _total_cells(rows: Sequence[BlockRow]) -> list[str]:
    tenants = len({r.tenant for r in rows})
    mint = min((r.mint for r in rows), default=None)
    maxt = max((r.maxt for r in rows), default=None)
    samples = sum(r.samples for r in rows)
    size = sum(r.bytes for r in rows)
    return [
        "total",
        f"{_count(len(rows), 'block')}, {_count(tenants, 'tenant')}",
        "-" if mint is None else format_time(mint),
        "-" if maxt is None else format_time(maxt),
        "-" if mint is None or maxt is None else format_duration(maxt - mint),
        "",
        "",
        str(sum(r.series for r in rows)),
        str(samples),
        str(sum(r.chunks for r in rows)),
        str(size),
        _ratio(size, samples),
    ]


def _ratio(size: int, samples: int) -> str:
    return f"{size / samples:.2f}" if samples else "-"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def format_time(ms: int, *, always_millis: bool = False) -> str:
    """UTC ISO-8601 with a Z; milliseconds shown when not zero (or always)."""
    try:
        moment = EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return f"{ms}ms"  # beyond the calendar years 1-9999; the number is all there is
    spec = "milliseconds" if always_millis or ms % 1000 else "seconds"
    return moment.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def format_duration(ms: int) -> str:
    """A span as 1d2h3m4.005s, zero units left out."""
    if ms < 0:
        return "-" + format_duration(-ms)
    seconds, millis = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    text = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)
    if millis:
        text += f"{seconds}.{millis:03d}s"
    elif seconds or not text:
        text += f"{seconds}s"
    return text


def parse_time(text: str) -> int:
    """Milliseconds since the epoch, or ISO-8601 (UTC unless it names a zone) to ms."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(
            f"not a time: {text!r} (milliseconds since the epoch, or ISO-8601 such as "
            "2024-05-01T00:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(milliseconds=1)


def parse_block_ref(text: str) -> tuple[str, str]:
    """TENANT/BLOCK_ID to (tenant, block id)."""
    tenant, _, block_id = text.strip("/").rpartition("/")
    if not tenant or not is_ulid(block_id):
        raise InvalidRequest(f"not TENANT/BLOCK_ID: {text!r}")
    return tenant, block_id


def parse_matcher(text: str) -> tuple[str, str]:
    """NAME=VALUE to (name, value); an empty value means "has no such label"."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise InvalidRequest(f"not NAME=VALUE: {text!r}")
    return name, value


def open_block(store: ObjectStore, tenant: str, block_id: str) -> BlockReader:
    """A reader of a complete block; NotFound naming the block if it has no meta.json."""
    prefix = f"{tenant}/{block_id}"
    try:
        meta_bytes = store.get(f"{prefix}/{META_FILENAME}")
    except NotFound:
        raise NotFound(f"no block {prefix} in the bucket (no {META_FILENAME})") from None
    meta = BlockMeta.from_json(meta_bytes)
    try:
        return BlockReader(store, prefix, meta=meta)
    except NotFound as exc:
        raise CorruptBlock(f"{META_FILENAME} is there but {exc.reason}", block_id=prefix) from None


def select_series(index: BlockIndex, matchers: Iterable[tuple[str, str]]) -> list[int]:
    """Ids of the series that have every name=value (empty value: lack the name): the
    querier's equality matchers, so inspect selects exactly what a query would."""
    equal = [Matcher(MatchType.EQ, name, value) for name, value in matchers]
    return [int(i) for i in postings.select_series(index, equal)]


def check_series_ids(index: BlockIndex, ids: Iterable[int]) -> list[int]:
    """The ids, each once, if the block has them all; NotFound naming the valid range else."""
    ids = list(dict.fromkeys(ids))
    count = index.series_count
    for series in ids:
        if not 0 <= series < count:
            raise NotFound(f"no series id {series}: the block has {count} (ids 0 to {count - 1})")
    return ids


def dump_series(
    reader: BlockReader, ids: Sequence[int], mint: int = MIN_TIME, maxt: int = MAX_TIME
) -> Iterator[str]:
    """Per series a `# series ID {labels} samples=N` line (` histograms=M` added when
    the block holds native histograms), then one line per sample and per histogram."""
    for start in range(0, len(ids), SERIES_PER_READ):
        batch = ids[start : start + SERIES_PER_READ]
        data = reader.read_series(batch, mint, maxt)
        histograms = reader.read_histograms(batch, mint, maxt)
        for position, series in enumerate(batch, start):
            ts, values = data[series]
            h_ts, messages = histograms[series]
            if position:
                yield ""
            labels = format_labels(reader.index.labels(series))
            counted = f" histograms={len(h_ts)}" if reader.index.histograms is not None else ""
            yield f"# series {series} {labels} samples={len(ts)}{counted}"
            for t, bits in zip(ts.tolist(), values.view(np.uint64).tolist(), strict=True):
                yield format_sample(t, bits)
            for t, message in zip(h_ts.tolist(), messages, strict=True):
                yield format_histogram(t, message)


def format_labels(labels: Iterable[tuple[str, str]]) -> str:
    """{name="value", …} as PromQL writes it; names that need it quoted too."""
    pairs = (f"{n if _PLAIN_LABEL_NAME.fullmatch(n) else _quote(n)}={_quote(v)}" for n, v in labels)
    return "{" + ", ".join(pairs) + "}"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def format_sample(ts: int, bits: int) -> str:
    """`timestamp_ms  iso_time  value  0x<bits>`, and `stale` for the staleness marker."""
    (value,) = struct.unpack("<d", struct.pack("<Q", bits))
    when = format_time(ts, always_millis=True)
    line = f"{ts:>13}  {when}  {format_value(value):<24}  0x{bits:016x}"
    return line + "  stale" if bits == STALE_NAN_BITS else line


def format_histogram(ts: int, message: bytes) -> str:
    """`timestamp_ms  iso_time  histogram count=… sum=… schema=… buckets=…`, `stale` for
    the staleness marker as sum."""
    h = Histogram.FromString(message)
    is_float = h.WhichOneof("count") == "count_float"
    count = format_value(h.count_float) if is_float else str(h.count_int)
    buckets = sum(s.length for s in (*h.positive_spans, *h.negative_spans))
    sum_bits = struct.unpack("<Q", struct.pack("<d", h.sum))[0]
    when = format_time(ts, always_millis=True)
    line = (
        f"{ts:>13}  {when}  histogram count={count} "
        f"sum={format_value(h.sum)} schema={h.schema} buckets={buckets}"
    )
    return line + "  stale" if sum_bits == STALE_NAN_BITS else line


def format_value(value: float) -> str:
    """The shortest text that reads back to the same float; NaN and ±Inf as Prometheus."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)
