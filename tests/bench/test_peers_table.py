"""The table of bench.peers: medians, Strata/peer ratios, same-run ratios, workload sizes."""

from __future__ import annotations

import pytest

from bench.fleet import INTERVAL_MS
from bench.peers import FLOOR_TITLE, HOUR_MS, ingest_figures, read_table, workloads
from bench.peers_systems import Ingest
from bench.peers_table import COLUMNS, medians, ratio, run_ratios, table
from bench.read_latency import KINDS

RUNS = {
    "w": {
        "strata": [
            {"samples_per_s": 100.0, "bytes_per_sample": 0.2, "read_samples_ms": 10.0},
            {"samples_per_s": 300.0, "bytes_per_sample": 0.2, "read_samples_ms": 30.0},
            {"samples_per_s": 200.0, "bytes_per_sample": 0.4, "read_samples_ms": 20.0},
        ],
        "prometheus": [
            {"samples_per_s": 400.0, "bytes_per_sample": 1.0, "read_samples_ms": 40.0},
            {"samples_per_s": 600.0, "bytes_per_sample": 1.0, "read_samples_ms": 10.0},
            {"samples_per_s": 500.0, "bytes_per_sample": 1.0, "read_samples_ms": 20.0},
        ],
        "victoriametrics": [
            {"samples_per_s": 1000.0, "bytes_per_sample": 0.25},
            {"samples_per_s": 1000.0, "bytes_per_sample": 0.25},
            {"samples_per_s": 1000.0, "bytes_per_sample": 0.25},
        ],
    }
}


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


def test_medians_take_the_middle_run_of_each_figure() -> None:
    assert medians(RUNS["w"]["strata"]) == {
        "samples_per_s": 200.0,
        "bytes_per_sample": 0.2,
        "read_samples_ms": 20.0,
    }


def test_ratio_is_missing_where_a_figure_is() -> None:
    assert ratio({"a": 1.0}, {"a": 4.0}, "a") == 0.25
    assert ratio({"a": 1.0}, {}, "a") is None
    assert ratio({"a": 1.0}, {"a": 0.0}, "a") is None


def test_table_has_a_row_per_system_and_ratios_of_medians() -> None:
    lines = table(RUNS, {"w": "workload w"})
    assert len(lines) == 2 + 3 + 2
    header = cells(lines[0])
    assert header[:3] == ["workload", "system", "runs"]
    assert header[3:] == [c.title for c in COLUMNS]
    rows = {cells(line)[1]: cells(line) for line in lines[2:]}
    col = {c.key: 3 + i for i, c in enumerate(COLUMNS)}
    assert rows["Strata"][col["samples_per_s"]] == "200"
    assert rows["Strata"][2] == "3"
    against_prometheus = rows["**Strata / Prometheus 2.42**"]
    assert against_prometheus[col["samples_per_s"]] == "**0.40**"
    assert against_prometheus[col["bytes_per_sample"]] == "**0.20**"
    assert against_prometheus[col["read_samples_ms"]] == "**1.00**"
    against_vm = rows["**Strata / VictoriaMetrics 1.79**"]
    assert against_vm[col["bytes_per_sample"]] == "**0.80**"
    assert against_vm[col["read_samples_ms"]] == "-"
    assert all(row[0] == "workload w" for row in rows.values())


def test_same_run_ratios_pair_each_run_with_its_own() -> None:
    got = run_ratios(RUNS, "samples_per_s")
    assert got["w"]["prometheus"] == pytest.approx([0.25, 0.5, 0.4])
    assert got["w"]["victoriametrics"] == pytest.approx([0.1, 0.3, 0.2])


def test_ingest_figures_per_million_samples_and_per_series() -> None:
    ingest = Ingest(
        samples_sent=2_000_000,
        samples_accepted=2_000_000,
        samples_per_s=100_000.0,
        wall_s=20.0,
        cpu_s=6.0,
        idle_rss_kib=50 * 1024,
        peak_rss_kib=150 * 1024,
        steady_rss_kib=120 * 1024,
        failed_requests=0,
    )
    figures = ingest_figures(ingest, series=100_000)
    assert figures["cpu_s_per_million"] == 3.0
    assert figures["peak_rss_mib"] == 150
    assert figures["steady_rss_mib"] == 120
    assert figures["rss_bytes_per_series"] == pytest.approx(100 * 1024 * 1024 / 100_000)


def test_the_full_run_covers_what_the_docs_say() -> None:
    full = workloads(quick=False)
    assert list(full) == ["corpus", "fleet-10k", "fleet-100k", "fleet-1m"]
    sizes = {k: (w.series, w.samples // w.series * INTERVAL_MS) for k, w in full.items()}
    assert sizes["fleet-10k"] == (10_000, 12 * HOUR_MS)
    assert sizes["fleet-100k"] == (100_000, HOUR_MS // 2)
    assert sizes["fleet-1m"] == (1_000_000, 4 * INTERVAL_MS)
    assert full["corpus"].samples == 2_785_500
    quick = workloads(quick=True)
    assert sum(w.samples for w in quick.values()) < sum(w.samples for w in full.values()) / 5


def test_read_table_ends_each_workload_with_the_floor_of_both_systems() -> None:
    spec = workloads(quick=True)["corpus"]
    names = [f"read_{q.key}_{kind}_ms" for q in spec.queries for kind in KINDS]
    runs = {
        system: [{**dict.fromkeys(names, 2.0), "floor_ms": ms} for ms in floors]
        for system, floors in (("strata", [0.9, 0.3, 0.6]), ("prometheus", [0.1, 0.2, 0.3]))
    }
    lines = read_table({"corpus": spec}, {"corpus": runs})
    assert len(lines) == 2 + len(names) + 1
    last = cells(lines[-1])
    assert last[1] == FLOOR_TITLE
    assert last[3:] == ["0.60", "0.20", "**3.00**"]
