"""A block written and read back gives every series' samples bit for bit."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blocks.errors import CorruptBlock
from blocks.index import decode_index
from blocks.meta import INDEX_FILENAME, META_FILENAME, BlockMeta, Resolution
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from blocks.ulid import new_ulid
from blocks.writer import CHUNK_MAX_SAMPLES, BlockWriter, OutOfOrder

Labels = list[tuple[str, str]]
Samples = tuple[np.ndarray, np.ndarray]
SeriesData = dict[tuple[tuple[str, str], ...], Samples]


label_text = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=8)


@st.composite
def series_sets(draw: st.DrawFn) -> SeriesData:
    count = draw(st.integers(min_value=1, max_value=6))
    out: SeriesData = {}
    for i in range(count):
        extra = draw(st.dictionaries(label_text, label_text, max_size=3))
        extra.pop("__name__", None)
        labels = tuple(sorted({"__name__": f"m{i}", **extra}.items()))
        times = draw(
            st.lists(
                st.integers(min_value=-(2**62), max_value=2**62),
                min_size=1,
                max_size=60,
                unique=True,
            )
        )
        words = draw(
            st.lists(
                st.integers(min_value=0, max_value=2**64 - 1),
                min_size=len(times),
                max_size=len(times),
            )
        )
        out[labels] = (
            np.array(sorted(times), dtype=np.int64),
            np.array(words, dtype=np.uint64).view(np.float64),
        )
    return out


def write_block(root: Path, data: Mapping[tuple[tuple[str, str], ...], Samples]) -> str:
    block_id = new_ulid()
    writer = BlockWriter(root / "t", block_id)
    for labels in sorted(data):
        ts, values = data[labels]
        writer.add_series(list(labels), ts, values)
    writer.finish(tenant="t", external_labels={"replica": "a"})
    return block_id


@given(series_sets())
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_block_roundtrips_bit_exact(tmp_path: Path, data: SeriesData) -> None:
    block_id = write_block(tmp_path, data)
    reader = BlockReader(LocalStore(tmp_path), f"t/{block_id}")
    got = reader.read_series(range(reader.index.series_count), -(2**63), 2**63 - 1)
    assert reader.index.series_count == len(data)
    for series, labels in enumerate(sorted(data)):
        assert tuple(reader.index.labels(series)) == labels
        ts, values = data[labels]
        assert np.array_equal(got[series][0], ts)
        assert np.array_equal(got[series][1].view(np.uint64), values.view(np.uint64))
    assert reader.meta.stats.samples == sum(len(t) for t, _ in data.values())


def test_time_range_reads_only_overlapping_samples(tmp_path: Path) -> None:
    ts = np.arange(3 * CHUNK_MAX_SAMPLES, dtype=np.int64) * 1000
    data: SeriesData = {(("__name__", "up"),): (ts, ts.astype(np.float64))}
    block_id = write_block(tmp_path, data)
    reader = BlockReader(LocalStore(tmp_path), f"t/{block_id}")
    got_ts, got_values = reader.read_series([0], 2_500_000, 2_600_000)[0]
    assert got_ts.tolist() == list(range(2_500_000, 2_600_001, 1000))
    assert got_values.tolist() == [float(t) for t in got_ts]


def test_postings_find_series_by_label_pair(tmp_path: Path) -> None:
    one = (np.array([1]), np.array([1.0]))
    data: SeriesData = {
        (("__name__", "up"), ("job", "a")): one,
        (("__name__", "up"), ("job", "b")): one,
        (("__name__", "down"), ("job", "a")): one,
    }
    reader = BlockReader(LocalStore(tmp_path), f"t/{write_block(tmp_path, data)}")
    by_job = [reader.index.labels(int(s)) for s in reader.index.postings("job", "a")]
    assert by_job == [[("__name__", "down"), ("job", "a")], [("__name__", "up"), ("job", "a")]]
    assert len(reader.index.postings("job", "zzz")) == 0
    names = reader.index.label_values("__name__")
    assert names.values == ["down", "up"]
    assert [ids.tolist() for ids in names.series_of([1, 0])] == [[1, 2], [0]]
    assert reader.index.label_values("nope").values == []


def test_meta_json_roundtrips_and_unknown_version_is_refused(tmp_path: Path) -> None:
    block_id = write_block(tmp_path, {(("__name__", "up"),): (np.array([5]), np.array([1.0]))})
    raw = (tmp_path / "t" / block_id / META_FILENAME).read_bytes()
    meta = BlockMeta.from_json(raw)
    assert (meta.block_id, meta.tenant, meta.mint, meta.maxt) == (block_id, "t", 5, 6)
    assert meta.resolution is Resolution.RAW
    assert meta.external_labels == {"replica": "a"}
    assert BlockMeta.from_json(meta.to_json()) == meta
    with pytest.raises(CorruptBlock, match="version 2 is not supported"):
        BlockMeta.from_json(raw.replace(b'"version": 1', b'"version": 2'))


def test_corrupt_index_is_refused(tmp_path: Path) -> None:
    block_id = write_block(tmp_path, {(("__name__", "up"),): (np.array([5]), np.array([1.0]))})
    data = (tmp_path / "t" / block_id / INDEX_FILENAME).read_bytes()
    with pytest.raises(CorruptBlock):
        decode_index(data[: len(data) - 3])
    with pytest.raises(CorruptBlock):
        decode_index(b"STRATAIX" + bytes(8))


def test_series_out_of_label_order_is_refused(tmp_path: Path) -> None:
    writer = BlockWriter(tmp_path, new_ulid())
    writer.add_series([("__name__", "b")], np.array([1]), np.array([1.0]))
    with pytest.raises(OutOfOrder):
        writer.add_series([("__name__", "a")], np.array([1]), np.array([1.0]))
    writer.abort()
    assert not any(tmp_path.iterdir())
