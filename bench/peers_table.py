"""The table of bench.peers: medians over runs and Strata/peer ratios, as Markdown.

Pure functions over plain dicts of figures (one dict per workload, system and run), so
the table can be tested, and rebuilt from bench/results/peers.json, without servers.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Figures = Mapping[str, float]
Results = Mapping[str, Mapping[str, Sequence[Figures]]]
"""workload -> system -> one dict of figures per run."""

LABELS = {
    "strata": "Strata",
    "prometheus": "Prometheus 2.42",
    "victoriametrics": "VictoriaMetrics 1.79",
}
PEERS = ("prometheus", "victoriametrics")


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the table: the figure's key, its heading and its format."""

    key: str
    title: str
    fmt: str


COLUMNS = (
    Column("samples_per_s", "ingest samples/s", "{:,.0f}"),
    Column("peak_rss_mib", "peak RSS MiB", "{:,.0f}"),
    Column("steady_rss_mib", "steady RSS MiB", "{:,.0f}"),
    Column("rss_bytes_per_series", "RSS B / series", "{:,.0f}"),
    Column("cpu_s_per_million", "CPU s / M samples", "{:.2f}"),
    Column("bytes_per_sample", "B / sample at rest", "{:.3f}"),
    Column("read_samples_ms", "read ms SAMPLES", "{:.1f}"),
    Column("read_streamed_ms", "read ms STREAMED", "{:.1f}"),
)


def medians(runs: Sequence[Figures]) -> dict[str, float]:
    """Median of each figure over the runs that have it."""
    keys = dict.fromkeys(k for run in runs for k in run)
    return {k: statistics.median(run[k] for run in runs if k in run) for k in keys}


def ratio(ours: Figures, theirs: Figures, key: str) -> float | None:
    """ours[key] / theirs[key], or None where either lacks it or theirs is 0."""
    if key not in ours or key not in theirs or theirs[key] == 0:
        return None
    return ours[key] / theirs[key]


def cell(value: float | None, fmt: str) -> str:
    """A formatted figure, or a dash where there is none."""
    return "-" if value is None else fmt.format(value)


def table(results: Results, titles: Mapping[str, str] | None = None) -> list[str]:
    """Markdown: per workload a row per system (medians) and a row per Strata/peer ratio."""
    head = "| workload | system | runs | " + " | ".join(c.title for c in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for workload, systems in results.items():
        title = (titles or {}).get(workload, workload)
        med = {s: medians(runs) for s, runs in systems.items() if runs}
        for system, figures in med.items():
            row = [title, LABELS.get(system, system), str(len(systems[system]))]
            row += [cell(figures.get(c.key), c.fmt) for c in COLUMNS]
            lines.append("| " + " | ".join(row) + " |")
        if "strata" not in med:
            continue
        for peer in PEERS:
            if peer not in med:
                continue
            row = [title, f"**Strata / {LABELS[peer]}**", ""]
            row += [cell(ratio(med["strata"], med[peer], c.key), "**{:.2f}**") for c in COLUMNS]
            lines.append("| " + " | ".join(row) + " |")
    return lines


def run_ratios(results: Results, key: str) -> dict[str, dict[str, list[float]]]:
    """Per workload and peer, Strata/peer of one figure within each run (same-run ratios)."""
    out: dict[str, dict[str, list[float]]] = {}
    for workload, systems in results.items():
        ours = systems.get("strata", [])
        for peer in PEERS:
            theirs = systems.get(peer, [])
            ratios = [
                r for a, b in zip(ours, theirs, strict=False) if (r := ratio(a, b, key)) is not None
            ]
            if ratios:
                out.setdefault(workload, {})[peer] = ratios
    return out
