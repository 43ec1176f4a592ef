"""`strata verify` finds each kind of damage planted in a bucket, and nothing in a sound one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from blocks.meta import META_FILENAME, BlockMeta
from blocks.objstore.base import ObjectStore
from blocks.objstore.local import LocalStore
from blocks.verify import ERROR, WARNING, verify_bucket
from blocks.writer import segment_name
from gateway.cli import main
from tests.compactor.bucket_data import T0, WINDOW_MS, labels, put_block, put_windows, synthetic

TENANT = "t"
NAMES = [labels("up", job="a"), labels("load", job="b")]


def sound_bucket(store: ObjectStore, work: Path) -> list[BlockMeta]:
    data = synthetic(T0, T0 + 3 * WINDOW_MS, 15_000, NAMES)
    return put_windows(store, work, TENANT, data)


def drop_meta(store: ObjectStore, meta: BlockMeta) -> None:
    store.delete(f"{TENANT}/{meta.block_id}/{META_FILENAME}")


def truncate_chunks(store: ObjectStore, meta: BlockMeta) -> None:
    key = f"{TENANT}/{meta.block_id}/{segment_name(1)}"
    store.put(key, store.get(key)[:-100])


def flip_a_page_byte(store: ObjectStore, meta: BlockMeta) -> None:
    key = f"{TENANT}/{meta.block_id}/{segment_name(1)}"
    data = bytearray(store.get(key))
    data[len(data) // 2] ^= 0x40
    store.put(key, bytes(data))


def add_overlap(store: ObjectStore, meta: BlockMeta, work: Path) -> None:
    data = synthetic(meta.mint, meta.maxt, 60_000, NAMES[:1], specials=False)
    put_block(store, work, TENANT, data, meta.mint, meta.maxt)


@pytest.mark.parametrize(
    ("plant", "severity", "what"),
    [
        (drop_meta, ERROR, "in the bucket index but not in the bucket"),
        (drop_meta, WARNING, "partial upload"),
        (truncate_chunks, ERROR, "truncated"),
        (flip_a_page_byte, ERROR, "chunk data unreadable"),
        (add_overlap, WARNING, "overlaps"),
    ],
)
def test_each_planted_damage_is_found(
    bucket: ObjectStore,
    tmp_path: Path,
    plant: Callable[..., None],
    severity: str,
    what: str,
) -> None:
    metas = sound_bucket(bucket, tmp_path)
    assert verify_bucket(bucket).findings == []
    victim = metas[1]
    if plant is add_overlap:
        plant(bucket, victim, tmp_path)
    else:
        plant(bucket, victim)

    findings = verify_bucket(bucket).findings

    assert any(
        f.severity == severity and what in f.what and f.block == victim.block_id for f in findings
    ), [f.line() for f in findings]


def test_quick_mode_skips_page_reads_and_so_misses_a_flipped_byte(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "bucket") as store:
        metas = sound_bucket(store, tmp_path / "work")
        flip_a_page_byte(store, metas[0])
        assert verify_bucket(store, full=False).findings == []
        assert verify_bucket(store, full=True).errors == 1


def test_the_command_prints_findings_and_exits_by_severity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    with LocalStore(data_dir / "bucket") as store:
        metas = sound_bucket(store, tmp_path / "work")
    assert main(["verify", "--data-dir", str(data_dir)]) == 0
    assert "3 blocks of 1 tenants" in capsys.readouterr().out

    with LocalStore(data_dir / "bucket") as store:
        add_overlap(store, metas[0], tmp_path / "work")
    assert main(["verify", "--data-dir", str(data_dir)]) == 0  # warnings only
    assert main(["verify", "--data-dir", str(data_dir), "--strict"]) == 1
    with LocalStore(data_dir / "bucket") as store:
        truncate_chunks(store, metas[2])
    assert main(["verify", "--data-dir", str(data_dir)]) == 1
    out = capsys.readouterr().out
    assert f"error   {TENANT}/{metas[2].block_id}: chunks/000001 truncated" in out
