"""`strata verify` reads native histogram chunks as it reads float pages, says how many
histograms it read, and fails on a histogram chunk that lost a byte or its tail (issue 8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blocks.histogram_store import HISTOGRAM_CHUNK_MAX_SAMPLES
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from blocks.writer import segment_name
from gateway.cli import main
from tests.blocks.test_block_histograms import TENANT, write_block

# write_block's series: "a" has 500 floats and 2,053 histograms, "b" 3 histograms, "c" 500 floats.
HISTOGRAMS = 2 * HISTOGRAM_CHUNK_MAX_SAMPLES + 8
SAMPLES = 1000


def damage_histogram_chunk(store: LocalStore, block_id: str, how: str) -> None:
    """Flip a byte inside the second histogram chunk, or cut its segment before its end."""
    refs = BlockReader(store, f"{TENANT}/{block_id}").index.histogram_refs()
    key = f"{TENANT}/{block_id}/{segment_name(int(refs.segment[1]))}"
    data = bytearray(store.get(key))
    start, length = int(refs.offset[1]), int(refs.length[1])
    if how == "flip":
        data[start + length // 2] ^= 0x10
    else:
        del data[start + length // 2 :]
    store.put(key, bytes(data))


def test_the_summary_counts_histograms_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = write_block(tmp_path, with_histograms=True)
    store.close()

    assert main(["verify", "--data-dir", str(tmp_path)]) == 0
    full = capsys.readouterr().out
    assert f"{SAMPLES} samples and {HISTOGRAMS} histograms read" in full

    assert main(["verify", "--data-dir", str(tmp_path), "--quick"]) == 0
    assert "histograms read" not in capsys.readouterr().out


def test_a_block_without_histograms_reads_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, _ = write_block(tmp_path, with_histograms=False)
    store.close()
    assert main(["verify", "--data-dir", str(tmp_path)]) == 0
    assert f"{SAMPLES} samples and 0 histograms read" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("how", "what", "quick_finds_it"),
    [
        ("flip", "histogram data unreadable", False),
        ("truncate", "truncated", True),
    ],
)
def test_a_damaged_histogram_chunk_fails_the_command(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    how: str,
    what: str,
    quick_finds_it: bool,
) -> None:
    store, meta = write_block(tmp_path, with_histograms=True)
    damage_histogram_chunk(store, meta.block_id, how)
    store.close()

    assert main(["verify", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"error   {TENANT}/{meta.block_id}: " in out
    assert what in out
    assert "1 errors" in out

    quick = main(["verify", "--data-dir", str(tmp_path), "--quick"])
    assert quick == (1 if quick_finds_it else 0), capsys.readouterr().out
