"""`strata inspect`: the block table, its JSON lines and the series dump, from real blocks."""

from __future__ import annotations

import builtins
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from blocks.catalog import (
    BlockRow,
    collect_rows,
    dump_series,
    format_duration,
    format_json_lines,
    format_summary,
    format_table,
    format_time,
    open_block,
    parse_time,
    select_series,
)
from blocks.errors import NotFound
from blocks.meta import CHUNKS_DIRNAME, INDEX_FILENAME, META_FILENAME, Resolution
from blocks.objstore.local import LocalStore
from blocks.ulid import new_ulid
from blocks.upload import upload_block
from blocks.writer import CHUNK_MAX_SAMPLES, BlockWriter
from gateway.cli import main
from tests.support.values import STALE_NAN

Labels = list[tuple[str, str]]
HOUR_MS = 3_600_000
# 2024-05-01T00:00:00Z, a block boundary.
T0 = 1_714_521_600_000
# A NaN that is not the staleness marker: its payload must show as written.
OTHER_NAN = 0x7FF8000000000BAD


@dataclass(frozen=True)
class Written:
    """What a test wrote into a block, to check the catalog against."""

    tenant: str
    block_id: str
    mint: int
    maxt: int
    resolution: Resolution
    level: int
    series: dict[tuple[tuple[str, str], ...], tuple[np.ndarray, np.ndarray]]
    local_dir: Path

    @property
    def samples(self) -> int:
        return sum(len(ts) for ts, _ in self.series.values())

    @property
    def stored_bytes(self) -> int:
        """Bytes of the chunk segments and the index, as they lie on disk."""
        chunks = sum(p.stat().st_size for p in (self.local_dir / CHUNKS_DIRNAME).iterdir())
        return chunks + (self.local_dir / INDEX_FILENAME).stat().st_size

    @property
    def chunks(self) -> int:
        return sum(math.ceil(len(ts) / CHUNK_MAX_SAMPLES) for ts, _ in self.series.values())


def write_block(
    tmp_path: Path,
    store: LocalStore,
    tenant: str,
    mint: int,
    series: dict[tuple[tuple[str, str], ...], tuple[np.ndarray, np.ndarray]],
    *,
    resolution: Resolution = Resolution.RAW,
    level: int = 1,
) -> Written:
    block_id = new_ulid()
    writer = BlockWriter(tmp_path / "local", block_id)
    for labels in sorted(series):
        ts, values = series[labels]
        writer.add_series(list(labels), ts, values)
    maxt = mint + 2 * HOUR_MS
    writer.finish(tenant=tenant, resolution=resolution, level=level, mint=mint, maxt=maxt)
    upload_block(store, tmp_path / "local" / block_id, tenant)
    return Written(
        tenant, block_id, mint, maxt, resolution, level, series, tmp_path / "local" / block_id
    )


def counter(
    name: str, job: str, mint: int, count: int, step_ms: int = 15_000
) -> tuple[tuple[tuple[str, str], ...], tuple[np.ndarray, np.ndarray]]:
    ts = mint + np.arange(count, dtype=np.int64) * step_ms
    return (("__name__", name), ("job", job)), (ts, np.cumsum(np.ones(count)))


def odd_values_series(mint: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples whose bits matter: the staleness marker, another NaN, infinities, -0."""
    bits = np.array(
        [
            np.float64(1.5).view(np.uint64),
            STALE_NAN,
            OTHER_NAN,
            np.float64(np.inf).view(np.uint64),
            np.float64(-np.inf).view(np.uint64),
            np.float64(-0.0).view(np.uint64),
            np.float64(0.1).view(np.uint64),
        ],
        dtype=np.uint64,
    )
    ts = mint + 1 + np.arange(len(bits), dtype=np.int64) * 1000
    return ts, bits.view(np.float64)


@pytest.fixture
def bucket(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "bucket")


@pytest.fixture
def written(tmp_path: Path, bucket: LocalStore) -> list[Written]:
    """Three blocks: two raw ones of tenant `alpha` two hours apart, a 5m one of `beta`."""
    a1 = write_block(
        tmp_path,
        bucket,
        "alpha",
        T0,
        dict([counter("up", "node", T0, 300), counter("http_requests_total", "api", T0, 3000)]),
    )
    a2 = write_block(
        tmp_path,
        bucket,
        "alpha",
        T0 + 2 * HOUR_MS,
        dict(
            [
                counter("up", "node", T0 + 2 * HOUR_MS, 480),
                ((("__name__", "odd"), ("job", "bits")), odd_values_series(T0 + 2 * HOUR_MS)),
                (
                    (("__name__", "odd"), ("job", "bits"), ("zone", "b")),
                    odd_values_series(T0 + 3 * HOUR_MS),
                ),
            ]
        ),
    )
    b1 = write_block(
        tmp_path,
        bucket,
        "beta",
        T0 - 24 * HOUR_MS,
        dict([counter("up", "edge", T0 - 24 * HOUR_MS, 24, step_ms=300_000)]),
        resolution=Resolution.FIVE_MINUTES,
        level=2,
    )
    return [a1, a2, b1]


def expected_cells(w: Written) -> list[str]:
    size = w.stored_bytes
    return [
        w.tenant,
        w.block_id,
        datetime.fromtimestamp(w.mint / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        datetime.fromtimestamp(w.maxt / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "2h",
        {Resolution.RAW: "raw", Resolution.FIVE_MINUTES: "5m"}[w.resolution],
        str(w.level),
        str(len(w.series)),
        str(w.samples),
        str(w.chunks),
        str(size),
        f"{size / w.samples:.2f}",
    ]


def test_table_has_a_row_per_block_with_what_was_written(
    bucket: LocalStore, written: list[Written]
) -> None:
    listing = collect_rows(bucket)
    assert listing.skipped == []
    lines = format_table(listing.rows)
    assert lines[0].split() == [
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
    ]
    # By tenant, then by time.
    a1, a2, b1 = written
    assert [line.split() for line in lines[1:-1]] == [expected_cells(w) for w in (a1, a2, b1)]


def test_table_totals_line_sums_the_blocks(bucket: LocalStore, written: list[Written]) -> None:
    total = format_table(collect_rows(bucket).rows)[-1].split()
    size = sum(w.stored_bytes for w in written)
    samples = sum(w.samples for w in written)
    first = min(w.mint for w in written)
    last = max(w.maxt for w in written)
    assert total == [
        "total",
        "3",
        "blocks,",
        "2",
        "tenants",
        format_time(first),
        format_time(last),
        format_duration(last - first),
        str(sum(len(w.series) for w in written)),
        str(samples),
        str(sum(w.chunks for w in written)),
        str(size),
        f"{size / samples:.2f}",
    ]
    assert format_duration(last - first) == "1d4h"


def test_table_columns_line_up(bucket: LocalStore, written: list[Written]) -> None:
    lines = format_table(collect_rows(bucket).rows)
    # Numbers are right-aligned to the header's right edge, text starts under the header.
    assert len({len(line) for line in lines}) == 1
    for header in ("BLOCK", "MINT", "RES"):
        start = lines[0].index(header)
        assert all(line[start - 2 : start] == "  " for line in lines)
        assert all(line[start] != " " for line in lines[1:-1])


def test_table_of_an_empty_bucket_is_a_header_and_zero_totals(bucket: LocalStore) -> None:
    lines = format_table(collect_rows(bucket).rows)
    assert len(lines) == 2
    assert lines[1].split()[:5] == ["total", "0", "blocks,", "0", "tenants"]


def test_rows_by_tenant_and_time_range(bucket: LocalStore, written: list[Written]) -> None:
    a1, a2, b1 = written
    assert [r.block_id for r in collect_rows(bucket, tenant="alpha").rows] == [
        a1.block_id,
        a2.block_id,
    ]
    assert collect_rows(bucket, tenant="nobody").rows == []
    # Inclusive range; a block's maxt is exclusive, so a range starting there misses it.
    at_a2 = collect_rows(bucket, mint=a2.mint, maxt=a2.mint).rows
    assert [r.block_id for r in at_a2] == [a2.block_id]
    before_a2 = collect_rows(bucket, mint=b1.maxt, maxt=a2.mint - 1).rows
    assert [r.block_id for r in before_a2] == [a1.block_id]


def test_json_lines_carry_every_number(bucket: LocalStore, written: list[Written]) -> None:
    docs = [json.loads(line) for line in format_json_lines(collect_rows(bucket).rows)]
    assert docs == [
        {
            "tenant": w.tenant,
            "block_id": w.block_id,
            "mint": w.mint,
            "maxt": w.maxt,
            "resolution": int(w.resolution),
            "level": w.level,
            "series": len(w.series),
            "samples": w.samples,
            "chunks": w.chunks,
            "bytes": w.stored_bytes,
            "bytes_per_sample": w.stored_bytes / w.samples,
        }
        for w in written
    ]


def test_keys_that_are_not_complete_blocks_are_not_listed(
    bucket: LocalStore, written: list[Written]
) -> None:
    bucket.put("alpha/bucket-index.json.zst", b"x")
    bucket.put("README", b"x")
    bucket.put("gamma/not-a-ulid/meta.json", b"{}")
    # An upload cut short: chunks and index, no meta.json.
    bucket.put(f"gamma/{new_ulid()}/{INDEX_FILENAME}", b"x")
    rows = collect_rows(bucket).rows
    assert {r.block_id for r in rows} == {w.block_id for w in written}


def test_unreadable_meta_is_reported_and_the_rest_listed(
    bucket: LocalStore, written: list[Written]
) -> None:
    broken = new_ulid()
    bucket.put(f"alpha/{broken}/{META_FILENAME}", b"{not json")
    listing = collect_rows(bucket)
    assert len(listing.rows) == len(written)
    assert len(listing.skipped) == 1
    assert listing.skipped[0].startswith(f"alpha/{broken}: ")


class ListsADeletedBlock(LocalStore):
    """A bucket whose listing still names a block that a compactor has since deleted."""

    deleted = new_ulid()

    def list(self, prefix: str) -> builtins.list[str]:
        return sorted([*super().list(prefix), f"alpha/{self.deleted}/{META_FILENAME}"])


def test_block_deleted_while_listing_is_left_out_quietly(
    tmp_path: Path, written: list[Written]
) -> None:
    listing = collect_rows(ListsADeletedBlock(tmp_path / "bucket"))
    assert [r.block_id for r in listing.rows] == [w.block_id for w in written]
    assert listing.skipped == []


def test_series_dump_shows_every_sample_with_its_bits(
    bucket: LocalStore, written: list[Written]
) -> None:
    a2 = written[1]
    reader = open_block(bucket, "alpha", a2.block_id)
    ids = select_series(reader.index, [("__name__", "odd"), ("zone", "")])
    lines = list(dump_series(reader, ids))
    ts, values = a2.series[(("__name__", "odd"), ("job", "bits"))]
    assert lines[0] == f'# series {ids[0]} {{__name__="odd", job="bits"}} samples={len(ts)}'
    assert len(lines) == 1 + len(ts)
    for line, t, bits in zip(lines[1:], ts.tolist(), values.view(np.uint64).tolist(), strict=True):
        fields = line.split()
        assert int(fields[0]) == t
        assert parse_time(fields[1]) == t
        assert int(fields[3], 16) == bits
        value = float(fields[2])
        assert math.isnan(value) or int(np.float64(value).view(np.uint64)) == bits
        assert (fields[4:] == ["stale"]) == (bits == STALE_NAN)
    assert f"0x{STALE_NAN:016x}  stale" in lines[2]
    assert lines[3].split()[2:] == ["NaN", f"0x{OTHER_NAN:016x}"]
    assert lines[6].split()[2] == "-0.0"


def test_series_dump_of_several_series_and_a_time_range(
    bucket: LocalStore, written: list[Written]
) -> None:
    a2 = written[1]
    reader = open_block(bucket, "alpha", a2.block_id)
    ids = select_series(reader.index, [("job", "bits")])
    assert len(ids) == 2
    ts_b, _ = a2.series[(("__name__", "odd"), ("job", "bits"), ("zone", "b"))]
    lines = list(dump_series(reader, ids, int(ts_b[2]), int(ts_b[3])))
    headers = [line for line in lines if line.startswith("# series")]
    assert [h.split()[-1] for h in headers] == ["samples=0", "samples=2"]
    assert "" in lines  # a blank line between series
    assert [int(line.split()[0]) for line in lines[-2:]] == ts_b[2:4].tolist()


def test_matchers_intersect_and_empty_value_means_absent(
    bucket: LocalStore, written: list[Written]
) -> None:
    reader = open_block(bucket, "alpha", written[1].block_id)
    index = reader.index
    labels = [dict(index.labels(i)) for i in range(index.series_count)]
    for matchers in (
        [("__name__", "odd")],
        [("__name__", "odd"), ("zone", "b")],
        [("job", "node"), ("zone", "")],
        [("__name__", "up"), ("job", "bits")],
        [("nolabel", "")],
    ):
        want = [i for i, ls in enumerate(labels) if all(ls.get(n, "") == v for n, v in matchers)]
        assert select_series(index, matchers) == want


def test_unknown_block_is_not_found(bucket: LocalStore, written: list[Written]) -> None:
    with pytest.raises(NotFound, match="no block alpha/"):
        open_block(bucket, "alpha", written[2].block_id)


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (T0, "2024-05-01T00:00:00Z"),
        (T0 + 1, "2024-05-01T00:00:00.001Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
    ],
)
def test_times_are_utc_iso_8601_and_read_back(ms: int, text: str) -> None:
    assert format_time(ms) == text
    assert parse_time(text) == ms
    assert parse_time(str(ms)) == ms
    assert parse_time(text.replace("Z", "+02:00")) == ms - 2 * HOUR_MS


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0s"), (2 * HOUR_MS, "2h"), (90_061_001, "1d1h1m1.001s"), (59_999, "59.999s")],
)
def test_durations_leave_out_zero_units(ms: int, text: str) -> None:
    assert format_duration(ms) == text


def bucket_flag(bucket: LocalStore) -> str:
    return f"--bucket-url=file://{bucket.root}"


def test_cli_prints_the_table(
    bucket: LocalStore, written: list[Written], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", "blocks", bucket_flag(bucket)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == ""
    assert lines[0].startswith("TENANT")
    assert [line.split()[1] for line in lines[1:-1]] == [w.block_id for w in written]
    assert lines[-1].startswith("total")


def test_cli_json_for_one_tenant_and_range(
    bucket: LocalStore, written: list[Written], capsys: pytest.CaptureFixture[str]
) -> None:
    a2 = written[1]
    args = ["--tenant=alpha", "--from=2024-05-01T02:00:00Z", f"--to={a2.maxt}", "--json"]
    assert main(["inspect", "blocks", bucket_flag(bucket), *args]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["tenant"], d["block_id"], d["samples"]) for d in docs] == [
        ("alpha", a2.block_id, a2.samples)
    ]


def test_cli_finds_the_bucket_under_data_dir(
    tmp_path: Path,
    written: list[Written],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bad serving setting in the environment does not concern inspect.
    monkeypatch.setenv("STRATA_LISTEN", "not-a-port")
    monkeypatch.setenv("STRATA_DATA_DIR", str(tmp_path))
    assert main(["inspect", "blocks", "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(written)
    assert main(["inspect", "blocks", "--json", f"--data-dir={tmp_path / 'elsewhere'}"]) == 1
    assert "no bucket directory" in capsys.readouterr().err


def test_cli_dumps_a_series(
    bucket: LocalStore, written: list[Written], capsys: pytest.CaptureFixture[str]
) -> None:
    a2 = written[1]
    ref = f"alpha/{a2.block_id}"
    argv = ["inspect", "series", ref, bucket_flag(bucket), "--match=__name__=odd", "--match=zone="]
    assert main(argv) == 0
    out = capsys.readouterr().out
    key = (("__name__", "odd"), ("job", "bits"))
    series_id = sorted(a2.series).index(key)
    assert out.startswith(f'# series {series_id} {{__name__="odd", job="bits"}} samples=7\n')
    assert f"0x{STALE_NAN:016x}  stale\n" in out
    assert main(["inspect", "series", ref, bucket_flag(bucket), "--id=2", "--id=1"]) == 0
    headers = [line for line in capsys.readouterr().out.splitlines() if line.startswith("#")]
    assert [h.split()[2] for h in headers] == ["2", "1"]


def test_cli_skipped_block_fails_after_the_table(
    bucket: LocalStore, written: list[Written], capsys: pytest.CaptureFixture[str]
) -> None:
    broken = new_ulid()
    bucket.put(f"beta/{broken}/{META_FILENAME}", b"{}")
    assert main(["inspect", "blocks", bucket_flag(bucket)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == len(written) + 2
    assert err.startswith(f"strata: skipped block beta/{broken}: ")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["blocks", "--bucket-url=ftp://host/x"], "invalid bucket URL"),
        (
            [
                "blocks",
                "--bucket-url=s3://b?endpoint=http://127.0.0.1:9&access_key=a&secret_key=SECRET",
            ],
            "cannot read bucket s3://b: ",
        ),
        (["series", "alpha/01HXYZ0000000000000000000A", "--id=0"], "no block alpha/01HXYZ"),
        (["series", "{a2}", "--id=3"], "no series id 3: the block has 3 (ids 0 to 2)"),
        (["series", "{a2}", "--match=job=nope"], "no series of alpha/"),
    ],
)
def test_cli_errors_are_one_line_and_exit_1(
    bucket: LocalStore,
    written: list[Written],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    argv = [a.replace("{a2}", f"alpha/{written[1].block_id}") for a in argv]
    if not any(a.startswith("--bucket-url") for a in argv):
        argv.append(bucket_flag(bucket))
    assert main(["inspect", *argv]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("strata: ")
    assert message in err
    assert len(err.splitlines()) == 1
    assert "SECRET" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["series", "alpha", "--id=0"],
        ["series", "alpha/01HXYZ0000000000000000000A"],
        ["series", "alpha/01HXYZ0000000000000000000A", "--match=noequals"],
        ["blocks", "--from=yesterday"],
        ["blocks", "--tenant=../x"],
        ["series", "a:b/01HXYZ0000000000000000000A", "--id=0"],
    ],
)
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", *argv])
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_row_bytes_per_sample_of_an_empty_block_is_none() -> None:
    row = BlockRow(
        tenant="t",
        block_id=new_ulid(),
        mint=0,
        maxt=1,
        resolution=Resolution.RAW,
        level=1,
        series=0,
        samples=0,
        chunks=0,
        bytes=40,
    )
    assert row.bytes_per_sample is None
    assert format_table([row])[1].split()[-1] == "-"


def test_summary_has_a_line_per_tenant_and_resolution(
    bucket: LocalStore, written: list[Written]
) -> None:
    lines = format_summary(collect_rows(bucket).rows)
    assert lines[0].split()[:2] == ["TENANT", "BLOCK"]
    assert lines[-1].split() == format_table(collect_rows(bucket).rows)[-1].split()
    body = [line.split() for line in lines[1:-1]]
    assert [(cells[0], cells[1], cells[6]) for cells in body] == [
        ("alpha", "2", "raw"),
        ("beta", "1", "5m"),
    ]
    alpha = [w for w in written if w.tenant == "alpha"]
    assert body[0][-4] == str(sum(w.samples for w in alpha))
    assert body[0][-2] == str(sum(w.stored_bytes for w in alpha))
