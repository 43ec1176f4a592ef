"""Native histograms in blocks: written beside float chunks, read back bit for bit by
series and range, an optional index section that blocks without histograms lack
(so older blocks read as ever), and `strata verify` / `strata inspect` aware of them."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from blocks.catalog import dump_series
from blocks.errors import CorruptBlock
from blocks.histogram_codec import canonical_histogram
from blocks.histogram_store import HISTOGRAM_CHUNK_MAX_SAMPLES
from blocks.index import INDEX_HEADER, SECTION_ENTRY, SECTION_HISTOGRAMS, check_index, decode_index
from blocks.meta import INDEX_FILENAME, BlockMeta
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from blocks.upload import upload_block
from blocks.verify import ERROR, verify_bucket
from blocks.writer import BlockWriter
from proto.write_v2_pb2 import Histogram
from tests.querier.histogram_reads import STALE_NAN_BITS, canonical, custom_buckets, int_counter

T0 = 1_795_564_800_000
STALE_BYTES = struct.pack("<Q", STALE_NAN_BITS)
STEP_MS = 10_000
TENANT = "t"


def histograms(n: int, t0: int = T0) -> tuple[np.ndarray, list[bytes]]:
    ts = t0 + STEP_MS * np.arange(n, dtype=np.int64)
    return ts, [canonical(int_counter(i % 21, int(t))) for i, t in enumerate(ts.tolist())]


def section_ids(index: bytes) -> set[int]:
    _, _, count = INDEX_HEADER.unpack_from(index)
    return {
        SECTION_ENTRY.unpack_from(index, INDEX_HEADER.size + i * SECTION_ENTRY.size)[0]
        for i in range(count)
    }


def write_block(tmp_path: Path, with_histograms: bool) -> tuple[LocalStore, BlockMeta]:
    writer = BlockWriter(tmp_path / "work", "01KBRM0000000000000000000" + str(int(with_histograms)))
    floats = (T0 + STEP_MS * np.arange(500), np.arange(500.0))
    long = histograms(2 * HISTOGRAM_CHUNK_MAX_SAMPLES + 5)
    custom_ts = T0 + STEP_MS * np.arange(3)
    custom = [canonical(custom_buckets(i, int(t))) for i, t in enumerate(custom_ts.tolist())]
    writer.add_series([("__name__", "a")], *floats, long if with_histograms else None)
    if with_histograms:
        writer.add_series(
            [("__name__", "b")], np.zeros(0, np.int64), np.zeros(0), (custom_ts, custom)
        )
    writer.add_series([("__name__", "c")], *floats)
    meta = writer.finish(tenant=TENANT)
    store = LocalStore(tmp_path / "bucket")
    upload_block(store, writer.final_dir, TENANT)
    return store, meta


def test_histograms_come_back_bit_for_bit_by_series_and_range(tmp_path: Path) -> None:
    store, meta = write_block(tmp_path, with_histograms=True)
    reader = BlockReader(store, f"{TENANT}/{meta.block_id}")
    refs = reader.index.histogram_refs()
    assert refs.samples.tolist() == [HISTOGRAM_CHUNK_MAX_SAMPLES, HISTOGRAM_CHUNK_MAX_SAMPLES, 5, 3]
    assert refs.total == 2 * HISTOGRAM_CHUNK_MAX_SAMPLES + 8
    everything = reader.read_histograms(range(3), -(2**63), 2**63 - 1)
    ts, messages = histograms(2 * HISTOGRAM_CHUNK_MAX_SAMPLES + 5)
    assert everything[0][0].tolist() == ts.tolist()
    assert everything[0][1] == messages
    assert [canonical_histogram(m) for m in everything[1][1]] == everything[1][1]
    assert len(everything[1][0]) == 3
    assert len(everything[2][0]) == 0
    # The stale marker (every 21st) keeps its bits.
    sums = [Histogram.FromString(m).sum for m in everything[0][1]]
    stale = [i for i, x in enumerate(sums) if struct.pack("<d", x) == STALE_BYTES]
    assert stale == list(range(20, len(sums), 21))
    lo, hi = int(ts[1000]), int(ts[1100])
    part_ts, part = reader.read_histograms([0], lo, hi)[0]
    assert part_ts.tolist() == ts[1000:1101].tolist()
    assert part == messages[1000:1101]
    # Floats of the same series are unaffected.
    floats = reader.read_series([0, 1, 2], -(2**63), 2**63 - 1)
    assert floats[0][1].tolist() == list(np.arange(500.0))
    assert len(floats[1][0]) == 0
    assert meta.stats.series == 3
    assert meta.stats.samples == 1000


def test_a_block_without_histograms_has_no_histogram_section(tmp_path: Path) -> None:
    store, meta = write_block(tmp_path, with_histograms=False)
    index_bytes = store.get(f"{TENANT}/{meta.block_id}/{INDEX_FILENAME}")
    assert SECTION_HISTOGRAMS not in section_ids(index_bytes)
    index = decode_index(index_bytes)
    assert index.histograms is None
    assert index.histogram_refs().total == 0
    reader = BlockReader(store, f"{TENANT}/{meta.block_id}")
    assert [len(t) for t, _ in reader.read_histograms([0, 1], 0, 2**62).values()] == [0, 0]
    with_them = write_block(tmp_path / "b", with_histograms=True)
    index_bytes = with_them[0].get(f"{TENANT}/{with_them[1].block_id}/{INDEX_FILENAME}")
    assert SECTION_HISTOGRAMS in section_ids(index_bytes)


def test_verify_reads_every_histogram_and_finds_a_damaged_one(tmp_path: Path) -> None:
    store, meta = write_block(tmp_path, with_histograms=True)
    report = verify_bucket(store, TENANT)
    assert report.errors == 0, [f.line() for f in report.findings]
    assert report.histograms_read == 2 * HISTOGRAM_CHUNK_MAX_SAMPLES + 8
    assert report.samples_read == 1000
    refs = BlockReader(store, f"{TENANT}/{meta.block_id}").index.histogram_refs()
    key = f"{TENANT}/{meta.block_id}/chunks/{int(refs.segment[1]):06d}"
    data = bytearray(store.get(key))
    data[int(refs.offset[1]) + int(refs.length[1]) // 2] ^= 0x10
    store.put(key, bytes(data))
    report = verify_bucket(store, TENANT)
    assert any(
        f.severity == ERROR and "histogram data unreadable" in f.what for f in report.findings
    ), [f.line() for f in report.findings]


def test_inspect_lists_histograms_with_their_counts(tmp_path: Path) -> None:
    store, meta = write_block(tmp_path, with_histograms=True)
    reader = BlockReader(store, f"{TENANT}/{meta.block_id}")
    lines = list(dump_series(reader, [1]))
    assert lines[0] == '# series 1 {__name__="b"} samples=0 histograms=3'
    assert lines[1].endswith("histogram count=4 sum=0.0 schema=-53 buckets=4")
    stale = list(dump_series(reader, [0], T0 + 20 * STEP_MS, T0 + 20 * STEP_MS))
    assert stale[-1].endswith("stale")


@pytest.mark.parametrize("damage", ["offsets", "columns"])
def test_an_index_with_inconsistent_histogram_refs_is_corrupt(tmp_path: Path, damage: str) -> None:
    store, meta = write_block(tmp_path, with_histograms=True)
    index = BlockReader(store, f"{TENANT}/{meta.block_id}").index
    refs = index.histogram_refs()
    if damage == "offsets":
        bad = replace(refs, offsets=refs.offsets[:-1])
    else:
        bad = replace(refs, samples=refs.samples[:-1])
    with pytest.raises(CorruptBlock):
        check_index(replace(index, histograms=bad))
