"""Reading a block from an object store: meta, index, and just the pages a query needs.

Pages are fetched with range reads; neighbouring pages of one segment are fetched in one
read when the gap between them is small, since a request costs more than a few bytes.
Histogram chunks are fetched the same way (`read_histograms`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np

from blocks.chunk_cache import ChunkCache
from blocks.chunk_page import decode_page_chunks
from blocks.errors import CorruptBlock
from blocks.histogram_store import decode_histogram_chunk
from blocks.index import BlockIndex, decode_index
from blocks.meta import INDEX_FILENAME, META_FILENAME, BlockMeta
from blocks.writer import segment_name

# Pages closer than this are fetched in one range read.
COALESCE_GAP_BYTES = 64 << 10


class RangeSource(Protocol):
    """What a reader needs from a store."""

    def get(self, key: str) -> bytes:
        """The whole object."""
        ...

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object."""
        ...


class BlockReader:
    """One block: its meta, its index, and sample reads by series and time range."""

    def __init__(
        self,
        source: RangeSource,
        prefix: str,
        *,
        meta: BlockMeta | None = None,
        index: BlockIndex | None = None,
        cache: ChunkCache | None = None,
    ) -> None:
        self.source = source
        self.cache = cache
        self.prefix = prefix.rstrip("/")
        self.meta = meta or BlockMeta.from_json(source.get(f"{self.prefix}/{META_FILENAME}"))
        self.index = index or decode_index(source.get(f"{self.prefix}/{INDEX_FILENAME}"))

    def read_series(
        self, series_ids: Iterable[int], mint: int, maxt: int
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Samples with mint <= t <= maxt of each series (inclusive bounds, time-sorted)."""
        ids = list(series_ids)
        rows, owners = self.index.chunk_rows(ids, mint, maxt)
        chunks = self.chunks_at(rows)
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        # Rows come in series order: each series' chunks are one run of them.
        bounds = np.searchsorted(owners, np.arange(len(ids) + 1)).tolist()
        row_list = rows.tolist()
        # Per series: whether all its chunks lie inside the range (then nothing is cut).
        table = self.index.chunks
        cut = (table.mint[rows] < mint) | (table.maxt[rows] > maxt)
        cut_series = np.zeros(len(ids), dtype=bool)
        cut_series[owners[cut]] = True
        for at, (series, whole) in enumerate(zip(ids, (~cut_series).tolist(), strict=True)):
            run = row_list[bounds[at] : bounds[at + 1]]
            if not run:
                out[series] = (np.zeros(0, dtype=np.int64), np.zeros(0))
                continue
            if len(run) == 1:
                ts, values = chunks[run[0]]
            else:
                ts = np.concatenate([chunks[row][0] for row in run])
                values = np.concatenate([chunks[row][1] for row in run])
            if whole:
                out[series] = (ts, values)
                continue
            # Time-sorted: the range is one slice (a view, where a mask would copy).
            lo, hi = ts.searchsorted(mint, "left"), ts.searchsorted(maxt, "right")
            out[series] = (ts[lo:hi], values[lo:hi])
        return out

    def read_histograms(
        self, series_ids: Iterable[int], mint: int, maxt: int
    ) -> dict[int, tuple[np.ndarray, list[bytes]]]:
        """Histograms with mint <= t <= maxt of each series (time-sorted, messages in their
        canonical bytes); every series asked for is in the answer, maybe empty."""
        ids = list(series_ids)
        out: dict[int, tuple[np.ndarray, list[bytes]]] = {
            i: (np.zeros(0, dtype=np.int64), []) for i in ids
        }
        refs = self.index.histograms
        if refs is None or not ids:
            return out
        rows, owners = refs.rows(ids, mint, maxt)
        decoded = self._histogram_chunks(rows)
        for row, owner in zip(rows.tolist(), owners.tolist(), strict=True):
            ts, payloads = decoded[row]
            keep = (ts >= mint) & (ts <= maxt)
            series = ids[owner]
            have_ts, have = out[series]
            picked = [payloads[i] for i in np.flatnonzero(keep).tolist()]
            out[series] = (np.concatenate((have_ts, ts[keep])), have + picked)
        return out

    def _histogram_chunks(self, rows: np.ndarray) -> dict[int, tuple[np.ndarray, list[bytes]]]:
        """The decoded histogram chunks at these rows, fetched in coalesced range reads."""
        refs = self.index.histograms
        assert refs is not None
        decoded = {}
        order = sorted(rows.tolist(), key=lambda r: (int(refs.segment[r]), int(refs.offset[r])))
        for group in coalesce(order, refs.segment, refs.offset, refs.length):
            segment = int(refs.segment[group[0]])
            start = int(refs.offset[group[0]])
            end = int(refs.offset[group[-1]]) + int(refs.length[group[-1]])
            name = segment_name(segment)
            data = self.source.get_range(f"{self.prefix}/{name}", start, end)
            if len(data) != end - start:
                raise CorruptBlock(
                    "chunk segment shorter than the index says",
                    block_id=self.meta.block_id,
                    obj=name,
                )
            for row in group:
                at = int(refs.offset[row]) - start
                chunk = data[at : at + int(refs.length[row])]
                decoded[row] = decode_histogram_chunk(chunk, int(refs.samples[row]))
        return decoded

    def chunks_at(self, rows: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The decoded chunks at these rows of the index's chunk table, by row."""
        chunks = self.index.chunks
        pages = chunks.page[rows].astype(np.int64).tolist()
        slots = chunks.slot[rows].astype(np.int64).tolist()
        counts = chunks.samples[rows].tolist()
        decoded = self._chunks(pages, slots)
        out = {}
        for row, page, slot, count in zip(rows.tolist(), pages, slots, counts, strict=True):
            chunk = decoded[(page, slot)]
            if len(chunk[0]) != count:
                raise CorruptBlock("chunk size differs from the index", block_id=self.meta.block_id)
            out[row] = chunk
        return out

    def _chunks(
        self, pages: list[int], slots: list[int]
    ) -> dict[tuple[int, int], tuple[np.ndarray, np.ndarray]]:
        """The decoded chunks at (page, slot), from the cache or fetched and decoded."""
        found: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        missing: dict[int, set[int]] = {}
        block_id = self.meta.block_id
        for page, slot in zip(pages, slots, strict=True):
            if (page, slot) in found:
                continue
            cached = self.cache.get((block_id, page, slot)) if self.cache is not None else None
            if cached is None:
                missing.setdefault(page, set()).add(slot)
            else:
                found[(page, slot)] = cached
        page_slots = {page: np.array(sorted(s), dtype=np.int64) for page, s in missing.items()}
        for page, (ts, values, starts, wanted) in self._fetch_pages(page_slots).items():
            # Decoded chunks are shared, through the cache and the views read_series
            # answers with: read-only, so that no reader can change another's samples.
            ts.setflags(write=False)
            values.setflags(write=False)
            for at, slot in enumerate(wanted.tolist()):
                begin, end = int(starts[at]), int(starts[at + 1])
                chunk = (ts[begin:end], values[begin:end])
                found[(page, slot)] = chunk
                if self.cache is not None:
                    self.cache.put((block_id, page, slot), chunk)
        return found

    def _fetch_pages(
        self, page_slots: dict[int, np.ndarray]
    ) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Decoded chunks per page: page -> (timestamps, values, chunk start offsets, slots),
        holding only the chunks at the page's wanted slots, in slot order."""
        refs = self.index.pages
        decoded: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        pages = sorted(page_slots)
        for group in coalesce(pages, refs.segment, refs.offset, refs.length):
            segment = int(refs.segment[group[0]])
            start = int(refs.offset[group[0]])
            end = int(refs.offset[group[-1]]) + int(refs.length[group[-1]])
            data = self.source.get_range(f"{self.prefix}/{segment_name(segment)}", start, end)
            if len(data) != end - start:
                raise CorruptBlock(
                    "chunk segment shorter than the index says",
                    block_id=self.meta.block_id,
                    obj=segment_name(segment),
                )
            for page in group:
                offset = int(refs.offset[page]) - start
                slots = page_slots[page]
                counts, ts, values = decode_page_chunks(
                    data[offset : offset + int(refs.length[page])], slots
                )
                starts = np.zeros(len(counts) + 1, dtype=np.int64)
                starts[1:] = np.cumsum(counts, dtype=np.int64)
                decoded[page] = (ts, values, starts, slots)
        return decoded


def coalesce(
    pages: list[int], segment: np.ndarray, offset: np.ndarray, length: np.ndarray
) -> list[list[int]]:
    """Group sorted page numbers into runs that one range read can fetch."""
    groups: list[list[int]] = []
    for page in pages:
        if groups:
            last = groups[-1][-1]
            gap = int(offset[page]) - (int(offset[last]) + int(length[last]))
            if int(segment[page]) == int(segment[last]) and 0 <= gap <= COALESCE_GAP_BYTES:
                groups[-1].append(page)
                continue
        groups.append([page])
    return groups
