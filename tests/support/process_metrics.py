"""Checks of the process metrics every Strata process exports beside its own."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from bench.common import proc_status_kib


def samples_by_name(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a /metrics text: its labels and value, by sample name."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def check_process_metrics(text: str, pid: int) -> None:
    """The scrape reports the process's resident memory as /proc shows it (within a
    quarter: the two are read moments apart), its CPU time, and the collector's
    work in each of the three generations."""
    samples = samples_by_name(text)
    ((_, reported),) = samples["process_resident_memory_bytes"]
    actual = proc_status_kib(pid, "VmRSS") * 1024
    assert 0.75 * actual <= reported <= 1.25 * actual, (reported, actual)
    ((_, cpu_s),) = samples["process_cpu_seconds_total"]
    assert cpu_s > 0
    generations = {labels["generation"] for labels, _ in samples["python_gc_collections_total"]}
    assert generations == {"0", "1", "2"}
    assert any(labels.get("implementation") for labels, _ in samples["python_info"])
