"""A streamed answer's chunks as wire bytes, and the cache that keeps them per stored chunk.

Prometheus serves a streamed read by copying the XOR chunks it stores; Strata stores its
own encoding and must encode XOR on the way out, at about 0.15 µs a sample. A dashboard
asks the same ranges again and again, so each stored chunk that lies wholly inside a
query's range is encoded once, whole, into 120-sample XOR chunks kept as the bytes of
their `ChunkedSeries.chunks` fields; a later read copies those bytes into its frames.
A long stored chunk that a range cuts through is kept the same way, and only the XOR
chunks the range cuts are encoded per read (`clipped_pieces`).

A series with native histograms gets HISTOGRAM / FLOAT_HISTOGRAM chunks
(querier/histogram_chunk.py) beside its XOR chunks, all in time order without overlap, as
Prometheus's head cuts a new chunk where a series changes kind (`series_fields`).

Frames are put together from bytes too: a `ChunkedSeries` is its labels' fields followed
by its chunk fields, and a `ChunkedReadResponse` one such series and the query index,
exactly as protobuf would serialize them (tests/querier/test_stream_chunks.py).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence

import numpy as np

from blocks.chunk_cache import ENTRY_OVERHEAD_BYTES, ChunkKey, LruCache
from proto import types_pb2
from querier.histogram_chunk import encode_histogram_chunks
from querier.samples_response import label_fields
from querier.selection import EncodedChunks, HistogramPart, LabelSet, Part, Piece
from querier.stream_frames import frame_header
from querier.varint import uvarint
from querier.xor_chunk import SAMPLES_PER_CHUNK, encode_xor_series

_MASK64 = (1 << 64) - 1
# Field tags: (number << 3) | wire type; 0 varint, 2 length-delimited.
_CHUNK_MIN_TIME, _CHUNK_MAX_TIME, _CHUNK_TYPE, _CHUNK_DATA = b"\x08", b"\x10", b"\x18", b"\x22"
_SERIES_CHUNKS = b"\x12"  # ChunkedSeries.chunks
_RESPONSE_SERIES, _RESPONSE_QUERY_INDEX = b"\x0a", b"\x10"  # ChunkedReadResponse
_XOR_TYPE = _CHUNK_TYPE + uvarint(types_pb2.Chunk.XOR)


def chunk_field(mint: int, maxt: int, data: bytes, encoding: int | None = None) -> bytes:
    """One chunk (XOR unless `encoding` says otherwise) as a serialized
    `ChunkedSeries.chunks` entry (tag, length, Chunk)."""
    chunk_type = _XOR_TYPE if encoding is None else _CHUNK_TYPE + uvarint(encoding)
    body = b"".join(
        (
            _CHUNK_MIN_TIME,
            uvarint(mint & _MASK64),  # int64 as protobuf writes it: two's complement
            _CHUNK_MAX_TIME,
            uvarint(maxt & _MASK64),
            chunk_type,
            _CHUNK_DATA,
            uvarint(len(data)),
            data,
        )
    )
    return b"".join((_SERIES_CHUNKS, uvarint(len(body)), body))


class EncodedChunkCache(LruCache[ChunkKey, EncodedChunks]):
    """Encoded XOR chunk fields by (block id, page, slot) of the stored chunk, LRU."""

    def put(self, key: ChunkKey, chunks: EncodedChunks) -> None:
        """Keep one stored chunk's encoding."""
        size = sum(len(f) for f in chunks.fields) + ENTRY_OVERHEAD_BYTES
        self._put(key, chunks, size)


def encode_pieces(series_pieces: Sequence[Sequence[Piece]]) -> list[list[bytes]]:
    """Every series' chunk fields in time order: encoded pieces as they are, the sample
    pieces of all the series encoded in one call (its fixed cost is per call)."""
    to_encode = [p for pieces in series_pieces for p in pieces if isinstance(p, tuple)]
    # Pieces of one XOR chunk or less are what a range cuts off stored chunks, encoded
    # anew on every read: without reusing windows (encode_xor_series). Longer ones are
    # merged series, encoded as Prometheus would.
    short = [len(p[0]) <= SAMPLES_PER_CHUNK for p in to_encode]
    cut_off = [p for p in to_encode if len(p[0]) <= SAMPLES_PER_CHUNK]
    merged = [p for p in to_encode if len(p[0]) > SAMPLES_PER_CHUNK]
    cut_chunks = iter(encode_xor_series(cut_off, reuse_windows=False))
    merged_chunks = iter(encode_xor_series(merged))
    encoded = (next(cut_chunks) if s else next(merged_chunks) for s in short)
    out = []
    for pieces in series_pieces:
        fields: list[bytes] = []
        for piece in pieces:
            if isinstance(piece, EncodedChunks):
                fields.extend(piece.fields)
            else:
                fields.extend(chunk_field(*chunk) for chunk in next(encoded))
        out.append(fields)
    return out


def series_fields(floats: Part, histograms: HistogramPart) -> list[bytes]:
    """A series' chunk fields when it has histograms: its samples cut into runs of one
    kind in time order, floats as XOR chunks and histograms as histogram chunks, so no
    two chunks overlap. At a timestamp holding both, the histogram is sent (a chunk
    cannot hold both, and Prometheus keeps one sample per timestamp)."""
    h_ts, messages = histograms
    f_ts, values = floats
    keep = ~np.isin(f_ts, h_ts)
    f_ts, values = f_ts[keep], values[keep]
    ts = np.concatenate((f_ts, h_ts))
    is_histogram = np.concatenate((np.zeros(len(f_ts), bool), np.ones(len(h_ts), bool)))
    order = np.argsort(ts, kind="stable")
    kinds = is_histogram[order]
    cuts = [0, *(np.flatnonzero(kinds[1:] != kinds[:-1]) + 1).tolist(), len(order)]
    fields: list[bytes] = []
    f_at = h_at = 0
    for lo, hi in itertools.pairwise(cuts):
        n = hi - lo
        if not n:
            continue
        if kinds[lo]:
            run = list(zip(h_ts[h_at : h_at + n].tolist(), messages[h_at : h_at + n], strict=True))
            fields += [
                chunk_field(c.mint, c.maxt, c.data, c.encoding)
                for c in encode_histogram_chunks(run)
            ]
            h_at += n
        else:
            part = (f_ts[f_at : f_at + n], values[f_at : f_at + n])
            fields += [chunk_field(*chunk) for chunk in encode_xor_series([part])[0]]
            f_at += n
    return fields


def piece_samples(piece: Piece) -> int:
    """Samples a piece holds."""
    return piece.samples if isinstance(piece, EncodedChunks) else len(piece[0])


def encode_stored_chunks(parts: Sequence[Part]) -> list[EncodedChunks]:
    """Whole stored chunks, each as its own run of XOR chunks (for the cache)."""
    return [
        EncodedChunks(
            [chunk_field(*chunk) for chunk in chunks],
            len(part[0]),
            tuple(c[0] for c in chunks),
            tuple(c[1] for c in chunks),
        )
        for part, chunks in zip(parts, encode_xor_series(parts), strict=True)
    ]


def clipped_pieces(whole: EncodedChunks, part: Part, mint: int, maxt: int) -> list[Piece]:
    """A stored chunk that [mint, maxt] cuts through, as pieces in time order: the encoded
    XOR chunks wholly inside the range copied, the samples in range of the (at most two)
    XOR chunks it cuts left to encode. A long stored chunk (a compacted block holds
    thousands of samples of a series in one) so costs a read at most two XOR chunks' work.
    `part`: the stored chunk's samples (time-sorted), `whole`: its encoding."""
    ts, values = part
    lo, hi = whole.mint, whole.maxt
    # XOR chunks [first, last) overlap the range; [inner, outer) lie inside it. They are
    # in time order, so both are runs, and only the two ends can be cut. (bisect on the
    # tuples: a stored chunk holds at most 18 XOR chunks, too few for numpy's call cost.)
    first = bisect.bisect_left(hi, mint)
    last = bisect.bisect_right(lo, maxt)
    if first >= last:
        return []
    inner = first if lo[first] >= mint else first + 1
    outer = last if hi[last - 1] <= maxt else last - 1
    pieces: list[Piece] = []

    def cut(k: int) -> None:
        begin = int(ts.searchsorted(max(lo[k], mint), "left"))
        end = int(ts.searchsorted(min(hi[k], maxt), "right"))
        if end > begin:
            pieces.append((ts[begin:end], values[begin:end]))

    if inner > outer:  # one XOR chunk, cut on both sides
        cut(first)
        return pieces
    if inner > first:
        cut(first)
    if outer > inner:
        begin = int(ts.searchsorted(lo[inner], "left"))
        end = int(ts.searchsorted(hi[outer - 1], "right"))
        pieces.append(EncodedChunks(whole.fields[inner:outer], end - begin))
    if outer < last:
        cut(last - 1)
    return pieces


def series_frames(
    query_index: int, labels: LabelSet, fields: Sequence[bytes], max_frame_bytes: int
) -> list[bytes]:
    """One series as frames holding at most about max_frame_bytes of chunks each; a long
    series spans several frames, each with its labels, as Prometheus's own server does.

    Returned in pieces, two a frame (its header, then its message), to be written one
    after another: joining them here would copy every answer's bytes once more, and a
    copy of a megabyte is a fresh allocation the kernel zero-fills page by page."""
    own_labels = label_fields(labels)
    tail = _RESPONSE_QUERY_INDEX + uvarint(query_index & _MASK64) if query_index else b""
    if sum(map(len, fields)) <= max_frame_bytes:  # the usual case: one frame, no walk
        return _frame(own_labels, fields, tail) if fields else []
    pieces = []
    start = size = 0
    for at, field in enumerate(fields):
        if at > start and size + len(field) > max_frame_bytes:
            pieces += _frame(own_labels, fields[start:at], tail)
            start, size = at, 0
        size += len(field)
    if len(fields) > start:
        pieces += _frame(own_labels, fields[start:], tail)
    return pieces


def _frame(labels: bytes, chunk_fields: Sequence[bytes], tail: bytes) -> list[bytes]:
    """A frame's header and message, the message laid out in one join."""
    size = len(labels) + sum(map(len, chunk_fields))
    message = b"".join((_RESPONSE_SERIES, uvarint(size), labels, *chunk_fields, tail))
    return [frame_header(message), message]
