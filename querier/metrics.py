"""The querier's own metrics: what remote read is doing, and what it refused."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from blocks.meta import Resolution

# How the resolution label spells each resolution.
RESOLUTION_NAMES = {Resolution.RAW: "raw", Resolution.FIVE_MINUTES: "5m", Resolution.ONE_HOUR: "1h"}


class QuerierMetrics:
    """Counters, gauges and histograms of remote read, registered in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "strata_read_requests_total",
            "Remote-read requests answered, by HTTP status.",
            ["status"],
            registry=registry,
        )
        self.duration = Histogram(
            "strata_read_duration_seconds",
            "Time to answer a remote-read request, by response type.",
            ["type"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.in_flight = Gauge(
            "strata_read_in_flight", "Remote-read requests running now.", registry=registry
        )
        self.refused = Counter(
            "strata_read_refused_total",
            "Remote-read requests refused by a limit, by limit.",
            ["limit"],
            registry=registry,
        )
        self.series = Counter(
            "strata_read_series_total", "Series selected by remote-read queries.", registry=registry
        )
        self.samples = Counter(
            "strata_read_samples_total", "Samples returned by remote read.", registry=registry
        )
        self.blocks = Counter(
            "strata_read_blocks_total",
            "Blocks remote-read queries read from, by resolution (raw, 5m, 1h).",
            ["resolution"],
            registry=registry,
        )
        for name in RESOLUTION_NAMES.values():
            self.blocks.labels(name)

    def count_blocks(self, blocks: Mapping[Resolution, int]) -> None:
        """Count the blocks one query read from, by resolution."""
        for resolution, count in blocks.items():
            if count:
                self.blocks.labels(RESOLUTION_NAMES[resolution]).inc(count)

    def observe(self, kind: str, seconds: float) -> None:
        """Record a completed request's duration."""
        self.duration.labels(kind).observe(seconds)


class CacheStats(Protocol):
    """What every read cache counts."""

    hits: int
    misses: int
    nbytes: int
    max_bytes: int


class CacheCollector(Collector):
    """The read caches' hits, misses and bytes, read from the caches at each scrape:
    `strata_read_cache_lookups_total{cache, result}`, `strata_read_cache_bytes{cache}`
    and `strata_read_cache_max_bytes{cache}`."""

    def __init__(self, caches: Mapping[str, CacheStats | None]) -> None:
        self.caches = {name: cache for name, cache in caches.items() if cache is not None}

    def collect(self) -> Iterator[Metric]:
        lookups = CounterMetricFamily(
            "strata_read_cache_lookups",
            "Read cache lookups, by cache (index, chunks, stream) and result (hit, miss).",
            labels=["cache", "result"],
        )
        held = GaugeMetricFamily(
            "strata_read_cache_bytes", "Bytes a read cache holds now.", labels=["cache"]
        )
        bound = GaugeMetricFamily(
            "strata_read_cache_max_bytes", "The bound of a read cache, in bytes.", labels=["cache"]
        )
        for name, cache in self.caches.items():
            lookups.add_metric([name, "hit"], cache.hits)
            lookups.add_metric([name, "miss"], cache.misses)
            held.add_metric([name], cache.nbytes)
            bound.add_metric([name], cache.max_bytes)
        yield from (lookups, held, bound)
