"""The compactor's own metrics: what it merged, downsampled, marked and deleted, and
whether it is stuck."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class CompactorMetrics:
    """Counters and gauges of `strata compact`, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.passes = Counter(
            "strata_compactor_passes_total",
            "Compaction passes over the bucket, by result (ok or failed).",
            ["result"],
            registry=registry,
        )
        self.blocks_merged = Counter(
            "strata_compactor_blocks_merged_total",
            "Source blocks merged into larger ones.",
            registry=registry,
        )
        self.blocks_written = Counter(
            "strata_compactor_blocks_written_total",
            "Blocks written, by kind (merge or downsample).",
            ["kind"],
            registry=registry,
        )
        self.blocks_downsampled = Counter(
            "strata_compactor_blocks_downsampled_total",
            "Blocks given a downsampled copy, by target resolution.",
            ["resolution"],
            registry=registry,
        )
        self.blocks_marked = Counter(
            "strata_compactor_blocks_marked_total",
            "Blocks marked for deletion, by reason (replaced, retention).",
            ["reason"],
            registry=registry,
        )
        self.blocks_deleted = Counter(
            "strata_compactor_blocks_deleted_total",
            "Marked blocks deleted after the delete delay.",
            registry=registry,
        )
        self.samples_read = Counter(
            "strata_compactor_samples_read_total",
            "Samples read from source blocks.",
            registry=registry,
        )
        self.samples_written = Counter(
            "strata_compactor_samples_written_total",
            "Samples written into new blocks.",
            registry=registry,
        )
        self.partial_uploads_cleaned = Counter(
            "strata_compactor_partial_uploads_cleaned_total",
            "Abandoned partial uploads removed from the bucket.",
            registry=registry,
        )
        self.failures = Counter(
            "strata_compactor_failures_total",
            "Compaction steps that failed, by step.",
            ["step"],
            registry=registry,
        )
        self.tenants_busy = Counter(
            "strata_compactor_tenants_busy_total",
            "Tenants skipped because another compactor held their lease.",
            registry=registry,
        )
        self.halted = Gauge(
            "strata_compactor_halted",
            "1 while a tenant is left alone because a block of it cannot be read; "
            "an operator must look.",
            registry=registry,
        )
        self.last_pass_seconds = Gauge(
            "strata_compactor_last_pass_duration_seconds",
            "How long the last pass took.",
            registry=registry,
        )
        self.last_success = Gauge(
            "strata_compactor_last_success_timestamp_seconds",
            "When a pass last finished without failures (Unix time).",
            registry=registry,
        )
        self.running = Gauge(
            "strata_compactor_running",
            "1 while a pass is running.",
            registry=registry,
        )
