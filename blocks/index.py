"""The series index of a block; layout in docs/block-format.md#index.

Symbols (every label name and value once, sorted), series (sorted label sets as symbol
refs, each with its chunks), pages (where each chunk page lies), postings (for each
label pair, the series that have it) and, in blocks holding native histograms, an
optional section of histogram chunks (older readers never needed it), and in blocks
holding start timestamps of float samples, an optional section of their change events
(blocks/start_store.py). Each section is a few numpy columns compressed with zstandard;
bytes in, bytes out.
"""

from __future__ import annotations

import bisect
import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import zstandard

from blocks.columns import run_positions
from blocks.compression import decompress
from blocks.errors import CorruptBlock
from blocks.start_store import StartEvents

INDEX_MAGIC = b"STRATAIX"
INDEX_VERSION = 1
# magic, version, section count
INDEX_HEADER = struct.Struct("<8sII")
# section id, offset, length
SECTION_ENTRY = struct.Struct("<IQQ")
SECTION_SYMBOLS, SECTION_SERIES, SECTION_CHUNKS, SECTION_PAGES, SECTION_POSTINGS = 1, 2, 3, 4, 5
# Optional: written only when the block holds histogram samples, so a block without any
# is byte for byte what it was before histograms existed.
SECTION_HISTOGRAMS = 6
# Optional too: written only when the block holds start-timestamp events of float samples
# (blocks/start_store.py); a block without any is byte for byte what it was before.
SECTION_STARTS = 7
# dtype code, element count
ARRAY_HEADER = struct.Struct("<BQ")
DTYPES: dict[int, np.dtype[np.generic]] = {
    1: np.dtype("<u1"),
    2: np.dtype("<u4"),
    3: np.dtype("<u8"),
    4: np.dtype("<i8"),
}
DTYPE_CODES = {dt: code for code, dt in DTYPES.items()}
ZSTD_LEVEL = 9
# An index section larger than this is taken for corruption (tens of millions of series).
MAX_SECTION_BYTES = 4 << 30


@dataclass(frozen=True, slots=True)
class ChunkRefs:
    """Columns with one row per chunk, in series order."""

    page: np.ndarray  # u32: page number
    slot: np.ndarray  # u32: position of the chunk inside its page
    mint: np.ndarray  # i64: first sample time
    maxt: np.ndarray  # i64: last sample time (inclusive)
    samples: np.ndarray  # u32


@dataclass(frozen=True, slots=True)
class PageRefs:
    """Columns with one row per page."""

    segment: np.ndarray  # u32: chunks/NNNNNN file number
    offset: np.ndarray  # u64: byte offset in that file
    length: np.ndarray  # u32: compressed length


@dataclass(frozen=True, slots=True)
class HistogramRefs:
    """Histogram chunks: offsets by series, then one row per chunk in series order.

    A histogram chunk is one zstd frame of blocks/histogram_codec.py's columns, stored
    in a chunk segment file beside the pages.
    """

    offsets: np.ndarray  # u64, series + 1: series i's chunks are [off[i], off[i+1])
    segment: np.ndarray  # u32
    offset: np.ndarray  # u64: byte offset in that segment
    length: np.ndarray  # u32: compressed length
    mint: np.ndarray  # i64
    maxt: np.ndarray  # i64 (inclusive)
    samples: np.ndarray  # u32

    @classmethod
    def empty(cls, series: int) -> HistogramRefs:
        """No histogram in a block of `series` series."""
        return _empty_histogram_refs(series)

    @property
    def total(self) -> int:
        """Histogram samples in the block."""
        return int(self.samples.sum())

    def rows(
        self, ids: Sequence[int] | np.ndarray, mint: int, maxt: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The chunk rows of the series `ids` overlapping [mint, maxt], in series then time
        order, and for each the position in `ids` of its series."""
        return overlapping_rows(self.offsets, self.mint, self.maxt, ids, mint, maxt)

    def samples_in_range(self, ids: np.ndarray, mint: int, maxt: int) -> np.ndarray:
        """Per series in `ids`, the histograms of its chunks overlapping [mint, maxt]."""
        if not len(self.samples):
            return np.zeros(len(ids), dtype=np.int64)
        rows, owners = self.rows(ids, mint, maxt)
        return per_owner_sum(self.samples[rows], owners, len(ids))


@functools.lru_cache(maxsize=64)
def _empty_histogram_refs(series: int) -> HistogramRefs:
    # Asked for by every query of a block without histograms, so made once per size:
    # every offset 0 as a read-only view of one zero, no memory or time per series.
    # Every column is read-only or empty, so one object can serve every caller.
    return HistogramRefs(
        np.broadcast_to(np.zeros(1, dtype=np.uint64), (series + 1,)),
        np.zeros(0, dtype=np.uint32),
        np.zeros(0, dtype=np.uint64),
        np.zeros(0, dtype=np.uint32),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.int64),
        np.zeros(0, dtype=np.uint32),
    )


def overlapping_rows(
    offsets: np.ndarray,
    row_mint: np.ndarray,
    row_maxt: np.ndarray,
    ids: Sequence[int] | np.ndarray,
    mint: int,
    maxt: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Of rows grouped by series (series i's are [offsets[i], offsets[i+1])), those of the
    series `ids` whose [row_mint, row_maxt] overlaps [mint, maxt], in series then row
    order, and for each the position in `ids` of its series."""
    wanted = np.asarray(ids, dtype=np.int64)
    if len(wanted) == 1:  # one series' rows are one slice: a few array calls, not a dozen
        lo, hi = int(offsets[wanted[0]]), int(offsets[wanted[0] + 1])
        inside = np.flatnonzero((row_maxt[lo:hi] >= mint) & (row_mint[lo:hi] <= maxt))
        return inside + lo, np.zeros(len(inside), dtype=np.int64)
    first = offsets[wanted].astype(np.int64)
    counts = offsets[wanted + 1].astype(np.int64) - first
    owners = np.repeat(np.arange(len(wanted)), counts)
    # Each series' rows first..first+count, as one arange shifted per series.
    shift = np.repeat(first - (np.cumsum(counts) - counts), counts)
    rows = shift + np.arange(int(counts.sum()))
    overlap = (row_maxt[rows] >= mint) & (row_mint[rows] <= maxt)
    return rows[overlap], owners[overlap]


def per_owner_sum(values: np.ndarray, owners: np.ndarray, count: int) -> np.ndarray:
    """int64 sums of `values` grouped by `owners` (positions 0..count-1)."""
    if not len(values):
        return np.zeros(count, dtype=np.int64)
    # bincount sums in float64: exact here, chunk sample counts are far below 2**53.
    sums: np.ndarray = np.bincount(owners, weights=values, minlength=count).astype(np.int64)
    return sums


@dataclass(frozen=True, slots=True)
class LabelValues:
    """A label's values, sorted, and a way to the series of the ones chosen: postings are
    taken only for the values a matcher accepts, not for each of a label's thousands."""

    values: list[str]
    # Sorted ids of the series with each of the values at these positions of `values`.
    series_of: Callable[[Sequence[int]], list[np.ndarray]]


@dataclass(frozen=True, slots=True)
class BlockIndex:
    """A decoded index. Series ids are positions in label order."""

    symbols: list[str]
    label_offsets: np.ndarray  # u64, series + 1: series i's pairs are [off[i], off[i+1])
    label_pairs: np.ndarray  # u32, 2 per pair: name symbol, value symbol
    chunk_offsets: np.ndarray  # u64, series + 1: series i's chunks are [off[i], off[i+1])
    chunks: ChunkRefs
    pages: PageRefs
    posting_names: np.ndarray  # u32 symbol, sorted by (name, value)
    posting_values: np.ndarray  # u32 symbol
    posting_offsets: np.ndarray  # u64, pairs + 1
    posting_series: np.ndarray  # u32 series ids
    histograms: HistogramRefs | None = None  # None: the block holds no histogram
    starts: StartEvents | None = None  # None: the block holds no start-timestamp event

    @property
    def series_count(self) -> int:
        """Number of series."""
        return len(self.label_offsets) - 1

    def labels(self, series: int) -> list[tuple[str, str]]:
        """The label pairs of a series, sorted by name."""
        lo, hi = int(self.label_offsets[series]), int(self.label_offsets[series + 1])
        refs = self.label_pairs[2 * lo : 2 * hi].tolist()
        symbols = self.symbols
        return [(symbols[refs[i]], symbols[refs[i + 1]]) for i in range(0, len(refs), 2)]

    def label_sets(self, series: np.ndarray) -> list[tuple[tuple[str, str], ...]]:
        """`labels` of each of these series, looked up together: one gather of their
        symbol numbers, where a lookup per series cost a few array calls each."""
        firsts = self.label_offsets[series].astype(np.int64)
        counts = self.label_offsets[series + 1].astype(np.int64) - firsts
        refs = self.label_pairs[run_positions(2 * firsts, 2 * counts)].tolist()
        symbols = self.symbols
        texts = [symbols[r] for r in refs]
        pairs = list(zip(texts[0::2], texts[1::2], strict=True))
        ends = np.cumsum(counts).tolist()
        return [tuple(pairs[end - n : end]) for end, n in zip(ends, counts.tolist(), strict=True)]

    def symbol(self, text: str) -> int:
        """The symbol number of a string, or -1 if the block has no such string."""
        at = bisect.bisect_left(self.symbols, text)
        return at if at < len(self.symbols) and self.symbols[at] == text else -1

    def label_values(self, name: str) -> LabelValues:
        """Every value of a label name, sorted (symbols are numbered in string order)."""
        lo, hi = self._posting_range(name)
        symbols = self.symbols
        offsets = self.posting_offsets

        def series_of(positions: Sequence[int]) -> list[np.ndarray]:
            bounds = [(int(offsets[lo + i]), int(offsets[lo + i + 1])) for i in positions]
            return [self.posting_series[start:end] for start, end in bounds]

        return LabelValues([symbols[v] for v in self.posting_values[lo:hi].tolist()], series_of)

    def _posting_range(self, name: str) -> tuple[int, int]:
        """The rows of the postings table that belong to label `name`."""
        sym = self.symbol(name)
        if sym < 0:
            return 0, 0
        lo = int(np.searchsorted(self.posting_names, sym, "left"))
        hi = int(np.searchsorted(self.posting_names, sym, "right"))
        return lo, hi

    def postings(self, name: str, value: str) -> np.ndarray:
        """Sorted ids of the series with label name=value: two binary searches."""
        name_sym, value_sym = self.symbol(name), self.symbol(value)
        if name_sym < 0 or value_sym < 0:
            return np.zeros(0, dtype=np.uint32)
        # Symbols are numbered in string order, so (name, value) pairs sort by number too.
        lo = int(np.searchsorted(self.posting_names, name_sym, "left"))
        hi = int(np.searchsorted(self.posting_names, name_sym, "right"))
        i = lo + int(np.searchsorted(self.posting_values[lo:hi], value_sym, "left"))
        if i == hi or int(self.posting_values[i]) != value_sym:
            return np.zeros(0, dtype=np.uint32)
        return self.posting_series[self.posting_offsets[i] : self.posting_offsets[i + 1]]

    def chunk_rows(
        self, ids: Sequence[int] | np.ndarray, mint: int, maxt: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rows in `chunks` of the series `ids` that overlap [mint, maxt], in series
        then time order, and for each the position in `ids` of its series."""
        chunks = self.chunks
        return overlapping_rows(self.chunk_offsets, chunks.mint, chunks.maxt, ids, mint, maxt)

    def histogram_refs(self) -> HistogramRefs:
        """The block's histogram chunks (none in a block without the section)."""
        return self.histograms or HistogramRefs.empty(self.series_count)

    def chunk_range(self, series: int) -> tuple[int, int]:
        """The rows of a series' chunks in `chunks`."""
        return int(self.chunk_offsets[series]), int(self.chunk_offsets[series + 1])


def _pack(arrays: Sequence[np.ndarray]) -> bytes:
    parts = [struct.pack("<I", len(arrays))]
    for array in arrays:
        dtype = array.dtype.newbyteorder("<")
        parts.append(ARRAY_HEADER.pack(DTYPE_CODES[dtype], len(array)))
        parts.append(np.ascontiguousarray(array, dtype=dtype).tobytes())
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(b"".join(parts))


def _unpack(data: bytes, expected: int) -> list[np.ndarray]:
    try:
        body = decompress(data, limit=MAX_SECTION_BYTES, what="index section")
        (count,) = struct.unpack_from("<I", body)
        pos = 4
        arrays = []
        for _ in range(count):
            code, length = ARRAY_HEADER.unpack_from(body, pos)
            pos += ARRAY_HEADER.size
            dtype = DTYPES[code]
            arrays.append(np.frombuffer(body, dtype, length, pos))
            pos += length * dtype.itemsize
    except (zstandard.ZstdError, struct.error, KeyError, ValueError) as exc:
        raise CorruptBlock(f"index section unreadable: {exc!r}", obj="index") from None
    if count != expected or pos != len(body):
        raise CorruptBlock("index section has the wrong shape", obj="index")
    return arrays


def encode_index(index: BlockIndex) -> bytes:
    """The index object's bytes."""
    blob = "".join(index.symbols).encode()
    lengths = np.array([len(s.encode()) for s in index.symbols], dtype=np.uint32)
    sections = {
        SECTION_SYMBOLS: _pack([lengths, np.frombuffer(blob, np.uint8)]),
        SECTION_SERIES: _pack([index.label_offsets, index.label_pairs, index.chunk_offsets]),
        SECTION_CHUNKS: _pack(
            [
                index.chunks.page,
                index.chunks.slot,
                index.chunks.mint,
                index.chunks.maxt,
                index.chunks.samples,
            ]
        ),
        SECTION_PAGES: _pack([index.pages.segment, index.pages.offset, index.pages.length]),
        SECTION_POSTINGS: _pack(
            [
                index.posting_names,
                index.posting_values,
                index.posting_offsets,
                index.posting_series,
            ]
        ),
    }
    histograms = index.histograms
    if histograms is not None and len(histograms.segment):
        sections[SECTION_HISTOGRAMS] = _pack(
            [
                histograms.offsets,
                histograms.segment,
                histograms.offset,
                histograms.length,
                histograms.mint,
                histograms.maxt,
                histograms.samples,
            ]
        )
    starts = index.starts
    if starts is not None and starts.total:
        sections[SECTION_STARTS] = _pack([starts.offsets, starts.ts, starts.start])
    out = [INDEX_HEADER.pack(INDEX_MAGIC, INDEX_VERSION, len(sections))]
    offset = INDEX_HEADER.size + SECTION_ENTRY.size * len(sections)
    table = []
    for section_id, data in sections.items():
        table.append(SECTION_ENTRY.pack(section_id, offset, len(data)))
        offset += len(data)
    return b"".join(out + table + list(sections.values()))


def decode_index(data: bytes) -> BlockIndex:
    """Parse an index object; CorruptBlock on anything unexpected."""
    try:
        magic, version, count = INDEX_HEADER.unpack_from(data)
    except struct.error:
        raise CorruptBlock("index shorter than its header", obj="index") from None
    if magic != INDEX_MAGIC:
        raise CorruptBlock(f"index magic {magic!r}", obj="index")
    if version != INDEX_VERSION:
        raise CorruptBlock(f"index version {version} is not supported", obj="index")
    sections: dict[int, bytes] = {}
    for i in range(count):
        try:
            section_id, offset, length = SECTION_ENTRY.unpack_from(
                data, INDEX_HEADER.size + i * SECTION_ENTRY.size
            )
        except struct.error:
            raise CorruptBlock("index section table cut short", obj="index") from None
        if offset + length > len(data):
            raise CorruptBlock("index section past the end", obj="index")
        sections[section_id] = data[offset : offset + length]
    missing = {SECTION_SYMBOLS, SECTION_SERIES, SECTION_CHUNKS, SECTION_PAGES, SECTION_POSTINGS}
    missing -= sections.keys()
    if missing:
        raise CorruptBlock(f"index lacks sections {sorted(missing)}", obj="index")
    lengths, blob = _unpack(sections[SECTION_SYMBOLS], 2)
    ends = np.cumsum(lengths, dtype=np.int64)
    raw = blob.tobytes()
    try:
        symbols = [
            raw[e - n : e].decode() for e, n in zip(ends.tolist(), lengths.tolist(), strict=True)
        ]
    except UnicodeDecodeError:
        raise CorruptBlock("index symbol is not UTF-8", obj="index") from None
    label_offsets, label_pairs, chunk_offsets = _unpack(sections[SECTION_SERIES], 3)
    page, slot, mint, maxt, samples = _unpack(sections[SECTION_CHUNKS], 5)
    segment, offset_col, length_col = _unpack(sections[SECTION_PAGES], 3)
    names, values, offsets, series = _unpack(sections[SECTION_POSTINGS], 4)
    histograms = None
    if SECTION_HISTOGRAMS in sections:
        histograms = HistogramRefs(*_unpack(sections[SECTION_HISTOGRAMS], 7))
    starts = None
    if SECTION_STARTS in sections:
        starts = StartEvents(*_unpack(sections[SECTION_STARTS], 3))
    index = BlockIndex(
        symbols=symbols,
        label_offsets=label_offsets,
        label_pairs=label_pairs,
        chunk_offsets=chunk_offsets,
        chunks=ChunkRefs(page, slot, mint, maxt, samples),
        pages=PageRefs(segment, offset_col, length_col),
        posting_names=names,
        posting_values=values,
        posting_offsets=offsets,
        posting_series=series,
        histograms=histograms,
        starts=starts,
    )
    check_index(index)
    return index


def check_index(index: BlockIndex) -> None:
    """Cross-check the columns so later lookups cannot index out of bounds."""
    n_symbols = len(index.symbols)
    n_series = index.series_count
    n_chunks = len(index.chunks.page)
    problems = []
    if len(index.label_pairs) and int(index.label_pairs.max()) >= n_symbols:
        problems.append("label symbol out of range")
    if len(index.label_offsets) < 1 or int(index.label_offsets[-1]) * 2 != len(index.label_pairs):
        problems.append("label offsets do not match pairs")
    if len(index.chunk_offsets) != n_series + 1 or int(index.chunk_offsets[-1]) != n_chunks:
        problems.append("chunk offsets do not match chunks")
    if n_chunks and int(index.chunks.page.max()) >= len(index.pages.offset):
        problems.append("chunk page out of range")
    if len(index.posting_offsets) != len(index.posting_names) + 1:
        problems.append("posting offsets do not match pairs")
    elif int(index.posting_offsets[-1]) != len(index.posting_series):
        problems.append("posting offsets do not match series")
    if len(index.posting_series) and int(index.posting_series.max()) >= n_series:
        problems.append("posting series out of range")
    histograms = index.histograms
    if histograms is not None:
        rows = len(histograms.segment)
        if len(histograms.offsets) != n_series + 1 or int(histograms.offsets[-1]) != rows:
            problems.append("histogram chunk offsets do not match histogram chunks")
        elif np.any(np.diff(histograms.offsets.astype(np.int64)) < 0):
            problems.append("histogram chunk offsets go backwards")
        columns = (histograms.offset, histograms.length, histograms.mint, histograms.maxt)
        if any(len(c) != rows for c in (*columns, histograms.samples)):
            problems.append("histogram chunk columns differ in length")
    if index.starts is not None:
        problems += index.starts.problems(n_series)
    if problems:
        raise CorruptBlock("; ".join(problems), obj="index")
