"""Building a block in a local directory: chunk pages, then index, then meta.json.

Series are added in label order; their samples are cut into chunks, chunks packed into
pages, pages appended to chunk segment files as they fill, so memory holds one page,
not the block. A series' native histograms go into histogram chunks
(blocks/histogram_store.py), written to the same segment files as they come; its
start-timestamp events (blocks/start_store.py) go into the index. The directory is built
as `<id>.tmp` and renamed when complete.
"""

from __future__ import annotations

import os
import shutil
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from blocks.chunk_page import encode_page
from blocks.errors import StrataError
from blocks.fsync import fsync_path
from blocks.histogram_store import HISTOGRAM_CHUNK_MAX_SAMPLES, encode_histogram_chunk
from blocks.index import BlockIndex, ChunkRefs, HistogramRefs, PageRefs, encode_index
from blocks.meta import (
    CHUNKS_DIRNAME,
    INDEX_FILENAME,
    META_FILENAME,
    BlockMeta,
    BlockStats,
    Resolution,
)
from blocks.start_store import StartEvents, StartPart

# A chunk holds at most this many samples: the unit a query trims to its time range.
CHUNK_MAX_SAMPLES = 2048
# A page is closed once it holds this many samples: about 256 KiB before compression,
# 10-60 KiB after, which is what one range read fetches for one series.
PAGE_TARGET_SAMPLES = 16384
# Chunk segment files are started anew past this size, so no object gets huge.
SEGMENT_MAX_BYTES = 512 << 20

Labels = list[tuple[str, str]]
# One series' histograms: time-sorted timestamps and serialized Histogram messages.
Histograms = tuple[np.ndarray, Sequence[bytes]]


class OutOfOrder(StrataError):
    """Series were not added in label order."""


def segment_name(number: int) -> str:
    """Chunk segment object names: chunks/000001 …"""
    return f"{CHUNKS_DIRNAME}/{number:06d}"


class BlockWriter:
    """Writes one block into `<parent>/<block_id>`."""

    def __init__(self, parent: Path, block_id: str) -> None:
        self.final_dir = parent / block_id
        self.dir = parent / f"{block_id}.tmp"
        self.block_id = block_id
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / CHUNKS_DIRNAME).mkdir(parents=True)
        # Per series and chunk, numbers in arrays, not lists of Python ints; labels as
        # symbol ids (in order of first use; numbered in sorted order by `finish`): with
        # many series a block's labels as Python str tuples came to ~800 bytes a series.
        self._symbol_ids: dict[str, int] = {}
        self._label_ids = array("I")  # name, value id per pair
        self._label_offsets = array("Q", [0])
        self._last_labels: Labels | None = None
        self._chunk_offsets = array("Q", [0])
        self._chunk_page = array("I")
        self._chunk_slot = array("I")
        self._chunk_mint = array("q")
        self._chunk_maxt = array("q")
        self._chunk_samples = array("I")
        self._page_segment: list[int] = []
        self._page_offset: list[int] = []
        self._page_length: list[int] = []
        self._pending_counts: list[int] = []
        self._pending_ts: list[np.ndarray] = []
        self._pending_values: list[np.ndarray] = []
        self._pending_samples = 0
        self._segment = 0
        self._segment_bytes = 0
        self._file: BinaryIO | None = None
        self._hist_offsets = array("Q", [0])
        self._hist_segment: list[int] = []
        self._hist_offset: list[int] = []
        self._hist_length: list[int] = []
        self._hist_mint: list[int] = []
        self._hist_maxt: list[int] = []
        self._hist_samples: list[int] = []
        self._start_offsets = array("Q", [0])
        self._start_ts: list[np.ndarray] = []
        self._start_values: list[np.ndarray] = []
        self.start_events = 0
        self.samples = 0
        self.histograms = 0
        self.bytes = 0
        self.mint: int | None = None
        self.maxt: int | None = None

    def add_series(
        self,
        labels: Labels,
        timestamps: np.ndarray,
        values: np.ndarray,
        histograms: Histograms | None = None,
        starts: StartPart | None = None,
    ) -> None:
        """Add a series with time-sorted, duplicate-free samples and histograms (each
        kind on its own: one timestamp may hold both) and start-timestamp events (sorted
        by sample timestamp, one per timestamp); series in label order."""
        if self._last_labels is not None and labels <= self._last_labels:
            raise OutOfOrder(f"series {labels} added after {self._last_labels}")
        has_histograms = histograms is not None and len(histograms[0]) > 0
        has_starts = starts is not None and len(starts[0]) > 0
        if not len(timestamps) and not has_histograms and not has_starts:
            return
        self._add_labels(labels)
        if starts is not None and has_starts:
            self._start_ts.append(starts[0])
            self._start_values.append(starts[1])
            self.start_events += len(starts[0])
        self._start_offsets.append(self.start_events)
        if histograms is not None and has_histograms:
            self._add_histograms(*histograms)
        self._hist_offsets.append(len(self._hist_segment))
        if not len(timestamps):
            self._chunk_offsets.append(len(self._chunk_page))
            return
        for start in range(0, len(timestamps), CHUNK_MAX_SAMPLES):
            ts = timestamps[start : start + CHUNK_MAX_SAMPLES]
            self._chunk_page.append(len(self._page_offset))
            self._chunk_slot.append(len(self._pending_counts))
            self._chunk_mint.append(int(ts[0]))
            self._chunk_maxt.append(int(ts[-1]))
            self._chunk_samples.append(len(ts))
            self._pending_counts.append(len(ts))
            self._pending_ts.append(ts)
            self._pending_values.append(values[start : start + CHUNK_MAX_SAMPLES])
            self._pending_samples += len(ts)
            if self._pending_samples >= PAGE_TARGET_SAMPLES:
                self._flush_page()
        self._chunk_offsets.append(len(self._chunk_page))
        self.samples += len(timestamps)
        first, last = int(timestamps[0]), int(timestamps[-1])
        self.mint = first if self.mint is None else min(self.mint, first)
        self.maxt = last if self.maxt is None else max(self.maxt, last)

    def _add_labels(self, labels: Labels) -> None:
        self._last_labels = labels
        ids = self._symbol_ids
        for name, value in labels:
            self._label_ids.append(ids.setdefault(name, len(ids)))
            self._label_ids.append(ids.setdefault(value, len(ids)))
        self._label_offsets.append(len(self._label_ids) // 2)

    def _add_histograms(self, timestamps: np.ndarray, payloads: Sequence[bytes]) -> None:
        for start in range(0, len(timestamps), HISTOGRAM_CHUNK_MAX_SAMPLES):
            ts = timestamps[start : start + HISTOGRAM_CHUNK_MAX_SAMPLES]
            data = encode_histogram_chunk(ts, payloads[start : start + HISTOGRAM_CHUNK_MAX_SAMPLES])
            self._hist_segment.append(self._write(data))
            self._hist_offset.append(self._segment_bytes - len(data))
            self._hist_length.append(len(data))
            self._hist_mint.append(int(ts[0]))
            self._hist_maxt.append(int(ts[-1]))
            self._hist_samples.append(len(ts))
        self.histograms += len(timestamps)
        first, last = int(timestamps[0]), int(timestamps[-1])
        self.mint = first if self.mint is None else min(self.mint, first)
        self.maxt = last if self.maxt is None else max(self.maxt, last)

    def _write(self, data: bytes) -> int:
        """Append bytes to the current chunk segment (a new one when full); its number."""
        if self._file is None or self._segment_bytes + len(data) > SEGMENT_MAX_BYTES:
            self._open_segment()
        assert self._file is not None
        self._file.write(data)
        self._segment_bytes += len(data)
        self.bytes += len(data)
        return self._segment

    def _flush_page(self) -> None:
        if not self._pending_counts:
            return
        page = encode_page(
            np.array(self._pending_counts, dtype=np.uint32),
            np.concatenate(self._pending_ts),
            np.concatenate(self._pending_values),
        )
        self._page_segment.append(self._write(page))
        self._page_offset.append(self._segment_bytes - len(page))
        self._page_length.append(len(page))
        self._pending_counts, self._pending_ts, self._pending_values = [], [], []
        self._pending_samples = 0

    def _open_segment(self) -> None:
        self._close_segment()
        self._segment += 1
        self._file = (self.dir / segment_name(self._segment)).open("wb")
        self._segment_bytes = 0

    def _close_segment(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def finish(
        self,
        *,
        tenant: str,
        resolution: Resolution = Resolution.RAW,
        level: int = 1,
        sources: tuple[str, ...] = (),
        external_labels: dict[str, str] | None = None,
        mint: int | None = None,
        maxt: int | None = None,
    ) -> BlockMeta:
        """Write index and meta.json, fsync, rename into place; the block's meta.

        `mint`/`maxt` default to the data's range (maxt exclusive); a cut passes its window.
        """
        self._flush_page()
        self._close_segment()
        index = self._build_index()
        index_bytes = encode_index(index)
        (self.dir / INDEX_FILENAME).write_bytes(index_bytes)
        meta = BlockMeta(
            block_id=self.block_id,
            tenant=tenant,
            mint=mint if mint is not None else (self.mint if self.mint is not None else 0),
            maxt=maxt if maxt is not None else (self.maxt + 1 if self.maxt is not None else 0),
            resolution=resolution,
            level=level,
            sources=sources or (self.block_id,),
            stats=BlockStats(
                series=len(self._label_offsets) - 1,
                samples=self.samples,
                chunks=len(self._chunk_page),
                pages=len(self._page_offset),
                bytes=self.bytes + len(index_bytes),
            ),
            external_labels=external_labels or {},
        )
        (self.dir / META_FILENAME).write_bytes(meta.to_json())
        for path in (
            self.dir / INDEX_FILENAME,
            self.dir / META_FILENAME,
            self.dir / CHUNKS_DIRNAME,
        ):
            fsync_path(path)
        fsync_path(self.dir)
        if self.final_dir.exists():
            shutil.rmtree(self.final_dir)
        self.dir.rename(self.final_dir)
        fsync_path(self.final_dir.parent)
        return meta

    def abort(self) -> None:
        """Throw the partial block away."""
        self._close_segment()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _build_index(self) -> BlockIndex:
        symbols = sorted(self._symbol_ids)
        number = np.zeros(len(symbols), dtype=np.uint32)
        first_use = np.array([self._symbol_ids[s] for s in symbols], dtype=np.int64)
        number[first_use] = np.arange(len(symbols), dtype=np.uint32)
        pairs = number[np.array(self._label_ids, dtype=np.int64)]
        label_offsets = np.array(self._label_offsets, dtype=np.uint64)
        postings = _postings(pairs[0::2], pairs[1::2], np.diff(label_offsets).astype(np.int64))
        return BlockIndex(
            symbols=symbols,
            label_offsets=label_offsets,
            label_pairs=pairs,
            chunk_offsets=np.array(self._chunk_offsets, dtype=np.uint64),
            chunks=ChunkRefs(
                page=np.array(self._chunk_page, dtype=np.uint32),
                slot=np.array(self._chunk_slot, dtype=np.uint32),
                mint=np.array(self._chunk_mint, dtype=np.int64),
                maxt=np.array(self._chunk_maxt, dtype=np.int64),
                samples=np.array(self._chunk_samples, dtype=np.uint32),
            ),
            pages=PageRefs(
                segment=np.array(self._page_segment, dtype=np.uint32),
                offset=np.array(self._page_offset, dtype=np.uint64),
                length=np.array(self._page_length, dtype=np.uint32),
            ),
            posting_names=postings.names,
            posting_values=postings.values,
            posting_offsets=postings.offsets,
            posting_series=postings.series,
            histograms=HistogramRefs(
                offsets=np.array(self._hist_offsets, dtype=np.uint64),
                segment=np.array(self._hist_segment, dtype=np.uint32),
                offset=np.array(self._hist_offset, dtype=np.uint64),
                length=np.array(self._hist_length, dtype=np.uint32),
                mint=np.array(self._hist_mint, dtype=np.int64),
                maxt=np.array(self._hist_maxt, dtype=np.int64),
                samples=np.array(self._hist_samples, dtype=np.uint32),
            )
            if self._hist_segment
            else None,
            starts=self._start_events() if self.start_events else None,
        )

    def _start_events(self) -> StartEvents:
        return StartEvents(
            offsets=np.array(self._start_offsets, dtype=np.uint64),
            ts=np.concatenate(self._start_ts).astype(np.int64, copy=False),
            start=np.concatenate(self._start_values).astype(np.int64, copy=False),
        )


@dataclass(frozen=True, slots=True)
class Postings:
    """Per (name, value) pair in symbol order, the series holding it, ascending."""

    names: np.ndarray  # u32
    values: np.ndarray  # u32
    offsets: np.ndarray  # u64, pairs + 1
    series: np.ndarray  # u32


def _postings(names: np.ndarray, values: np.ndarray, pairs_per_series: np.ndarray) -> Postings:
    """The postings of series whose label pairs are (names, values), series after series."""
    series = np.repeat(np.arange(len(pairs_per_series), dtype=np.uint32), pairs_per_series)
    order = np.lexsort((series, values, names))
    names, values, series = names[order], values[order], series[order]
    first = np.ones(len(names), dtype=bool)
    first[1:] = (names[1:] != names[:-1]) | (values[1:] != values[:-1])
    offsets = np.zeros(int(first.sum()) + 1, dtype=np.uint64)
    offsets[:-1] = np.flatnonzero(first)
    offsets[-1] = len(names)
    return Postings(names[first], values[first], offsets, series)
