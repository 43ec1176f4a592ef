"""The gateway's own metrics, registered on a registry passed in (never the global one).

Counters and histograms are updated where things happen; values that exist anyway
(head series and bytes, WAL size) are read at scrape time by a collector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from gateway.head import Head

FSYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class GatewayMetrics:
    """Everything the gateway counts."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "strata_write_requests_total",
            "Remote-write requests answered, by HTTP status code.",
            ["code"],
            registry=registry,
        )
        self.samples_received = Counter(
            "strata_samples_received_total",
            "Float samples accepted into the WAL and head (resends of stored samples included).",
            ["tenant"],
            registry=registry,
        )
        self.histograms_received = Counter(
            "strata_histograms_received_total",
            "Native histogram samples accepted into the WAL and head (the Histograms-Written "
            "count: resends of stored ones included).",
            ["tenant"],
            registry=registry,
        )
        self.samples_rejected = Counter(
            "strata_samples_rejected_total",
            "Samples and native histogram samples refused, by reason.",
            ["tenant", "reason"],
            registry=registry,
        )
        self.series_created = Counter(
            "strata_series_created_total",
            "Series seen for the first time by the head.",
            ["tenant"],
            registry=registry,
        )
        self.series_rejected = Counter(
            "strata_series_rejected_total",
            "Series refused for their labels, by reason (each sample of them is also counted).",
            ["tenant", "reason"],
            registry=registry,
        )
        self.metadata_received = Counter(
            "strata_metadata_received_total",
            "Metric metadata entries received (1.0: one per family; 2.0: one per series).",
            ["tenant"],
            registry=registry,
        )
        self.metadata_stored = Counter(
            "strata_metadata_stored_total",
            "Metric metadata entries recorded in the tenant's metadata (repeats included).",
            ["tenant"],
            registry=registry,
        )
        self.metadata_refused = Counter(
            "strata_metadata_refused_total",
            "Metric metadata entries not recorded, by reason.",
            ["tenant", "reason"],
            registry=registry,
        )
        self.exemplars_received = Counter(
            "strata_exemplars_received_total",
            "Exemplars accepted (the Exemplars-Written count; resends of kept ones included).",
            ["tenant"],
            registry=registry,
        )
        self.exemplars_stored = Counter(
            "strata_exemplars_stored_total",
            "Exemplars newly kept in the exemplar store and its log.",
            ["tenant"],
            registry=registry,
        )
        self.exemplars_rejected = Counter(
            "strata_exemplars_rejected_total",
            "Exemplars refused, by reason.",
            ["tenant", "reason"],
            registry=registry,
        )
        self.start_timestamps_received = Counter(
            "strata_start_timestamps_received_total",
            "Samples and histograms that came with a start (created) timestamp.",
            ["tenant"],
            registry=registry,
        )
        self.write_protocol_requests = Counter(
            "strata_write_protocol_requests_total",
            "Remote-write requests whose content type was accepted, by protobuf message.",
            ["protocol"],
            registry=registry,
        )
        self.wal_bytes_written = Counter(
            "strata_wal_bytes_written_total", "Bytes appended to the WAL.", registry=registry
        )
        self.wal_fsync_seconds = Histogram(
            "strata_wal_fsync_duration_seconds",
            "Time one WAL fsync took; one fsync commits a whole group of requests.",
            buckets=FSYNC_BUCKETS,
            registry=registry,
        )
        self.wal_group_requests = Histogram(
            "strata_wal_group_commit_requests",
            "Requests made durable by one WAL write and fsync.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        self.wal_failures = Counter(
            "strata_wal_write_failures_total",
            "WAL writes or fsyncs that failed (the requests got 503).",
            registry=registry,
        )
        self.wal_segments_created = Counter(
            "strata_wal_segments_created_total", "WAL segment files started.", registry=registry
        )
        self.wal_replay_records = Counter(
            "strata_wal_replay_records_total", "WAL records replayed at start.", registry=registry
        )
        self.wal_corruptions = Counter(
            "strata_wal_corruptions_total",
            "Corrupt or torn WAL tails found and cut at start.",
            registry=registry,
        )
        self.wal_bytes_discarded = Counter(
            "strata_wal_discarded_bytes_total",
            "Bytes cut from corrupt or torn WAL tails at start.",
            registry=registry,
        )
        self.blocks_cut = Counter(
            "strata_blocks_cut_total", "Blocks built from the head.", ["tenant"], registry=registry
        )
        self.blocks_uploaded = Counter(
            "strata_blocks_uploaded_total",
            "Blocks uploaded to the bucket (meta.json written, bucket index updated).",
            ["tenant"],
            registry=registry,
        )
        self.partial_uploads_cleaned = Counter(
            "strata_partial_uploads_cleaned_total",
            "Abandoned block uploads (objects without meta.json) removed from the bucket.",
            ["tenant"],
            registry=registry,
        )
        self.upload_failures = Counter(
            "strata_block_upload_failures_total",
            "Block uploads that failed and will be retried.",
            registry=registry,
        )
        self.cut_failures = Counter(
            "strata_head_cut_failures_total",
            "Head cuts that failed (the samples stay in the head and the WAL).",
            registry=registry,
        )
        self.wal_segments_removed = Counter(
            "strata_wal_segments_removed_total",
            "WAL segments deleted because their samples are in uploaded blocks.",
            registry=registry,
        )
        self.ready = Gauge(
            "strata_ready", "1 when the gateway accepts writes (WAL replayed).", registry=registry
        )


class HeadCollector(Collector):
    """Head and WAL sizes, read when /metrics is scraped."""

    def __init__(
        self,
        head: Head,
        wal_size: Callable[[], tuple[int, int]],
        upload_queue: Callable[[], int],
    ) -> None:
        self.head = head
        self.wal_size = wal_size
        self.upload_queue = upload_queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauges for the current state."""
        series = GaugeMetricFamily("strata_head_series", "Series in the head.", labels=["tenant"])
        samples = GaugeMetricFamily(
            "strata_head_samples", "Samples in the head.", labels=["tenant"]
        )
        head_bytes = GaugeMetricFamily(
            "strata_head_bytes", "Estimated memory held by the head.", labels=["tenant"]
        )
        for tenant, tenant_head in list(self.head.tenants.items()):
            series.add_metric([tenant], tenant_head.series_count)
            samples.add_metric([tenant], tenant_head.sample_count)
            head_bytes.add_metric([tenant], tenant_head.nbytes)
        yield series
        yield samples
        yield head_bytes
        yield GaugeMetricFamily(
            "strata_head_max_bytes", "Memory budget of the head.", value=self.head.max_bytes
        )
        segments, size = self.wal_size()
        yield GaugeMetricFamily("strata_wal_segments", "WAL segment files.", value=segments)
        yield GaugeMetricFamily("strata_wal_bytes", "Bytes in WAL segment files.", value=size)
        yield GaugeMetricFamily(
            "strata_upload_queue_blocks",
            "Blocks cut from the head and waiting for upload.",
            value=self.upload_queue(),
        )
