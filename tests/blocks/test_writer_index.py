"""The index a BlockWriter writes, against one built from its definition: symbols the
sorted set of every name and value, each series' pairs as symbol numbers, postings per
(name, value) in symbol order with the series holding it, ascending (docs/block-format.md).
The writer keeps labels as symbol ids as they come (issue 10); the index must not tell."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from blocks.index import decode_index
from blocks.meta import INDEX_FILENAME
from blocks.writer import BlockWriter

T0 = 1_795_564_800_000
TEXTS = ["", "a", "a\x00", "b", "é", "job", "node", "le", "0.5", "+Inf", "__name__", "up"]


def random_series(rng: random.Random, count: int) -> list[list[tuple[str, str]]]:
    found: set[tuple[tuple[str, str], ...]] = set()
    while len(found) < count:
        names = rng.sample([t for t in TEXTS if t], rng.randint(1, 4))
        found.add(tuple(sorted((n, rng.choice(TEXTS)) for n in names)))
    return [list(s) for s in sorted(found)]


def test_index_holds_symbols_pairs_and_postings_as_defined(tmp_path: Path) -> None:
    series = random_series(random.Random(1), 200)
    writer = BlockWriter(tmp_path, "01KBRM00000000000000000000")
    for i, labels in enumerate(series):
        ts = T0 + np.arange(i % 5 + 1, dtype=np.int64)
        writer.add_series(labels, ts, np.ones(len(ts)))
    meta = writer.finish(tenant="t")
    index = decode_index((tmp_path / meta.block_id / INDEX_FILENAME).read_bytes())

    symbols = sorted({text for labels in series for pair in labels for text in pair})
    number = {text: i for i, text in enumerate(symbols)}
    assert index.symbols == symbols
    assert [index.labels(i) for i in range(index.series_count)] == series
    # Looked up together, in any order and with repeats, as a query's selection does.
    some = np.array(random.Random(2).choices(range(index.series_count), k=300), dtype=np.int64)
    assert index.label_sets(some) == [tuple(series[i]) for i in some.tolist()]
    assert index.label_sets(np.zeros(0, dtype=np.int64)) == []
    pairs = [number[text] for labels in series for pair in labels for text in pair]
    assert index.label_pairs.tolist() == pairs
    postings: dict[tuple[int, int], list[int]] = {}
    for i, labels in enumerate(series):
        for name, value in labels:
            postings.setdefault((number[name], number[value]), []).append(i)
    keys = sorted(postings)
    assert index.posting_names.tolist() == [k[0] for k in keys]
    assert index.posting_values.tolist() == [k[1] for k in keys]
    assert index.posting_series.tolist() == [s for k in keys for s in postings[k]]
    assert np.diff(index.posting_offsets).tolist() == [len(postings[k]) for k in keys]
    assert meta.stats.series == len(series)


def test_an_empty_block_has_an_empty_index(tmp_path: Path) -> None:
    writer = BlockWriter(tmp_path, "01KBRM00000000000000000001")
    writer.add_series([("__name__", "up")], np.zeros(0, np.int64), np.zeros(0))  # no samples
    meta = writer.finish(tenant="t", mint=T0, maxt=T0 + 1)
    index = decode_index((tmp_path / meta.block_id / INDEX_FILENAME).read_bytes())
    assert index.symbols == []
    assert index.series_count == 0
    assert index.posting_offsets.tolist() == [0]
