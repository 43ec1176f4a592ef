"""What one remote-read request may cost, and the clock it runs against.

Each limit is checked before the work it bounds where possible (series and samples are
counted from block indexes before any chunk is fetched), so a query over every series
for a year is refused in milliseconds instead of filling memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from blocks.errors import InvalidRequest, QueryLimitExceeded, Unavailable


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """Per-request limits; 0 means unlimited where noted."""

    max_series: int = 100_000
    max_samples: int = 20_000_000
    # The encoded SAMPLES answer is held whole before compression; streamed answers are
    # not (their memory is one batch of series).
    max_response_bytes: int = 256 << 20
    # Longest time range a query may span; 0: unlimited.
    max_range_ms: int = 0
    timeout_s: float = 120.0
    concurrency: int = 4
    # Prometheus's own server sends frames of at most 1 MiB by default.
    max_frame_bytes: int = 1 << 20
    # Queries one request may carry. Prometheus sends one per request; every query is
    # planned before the answer starts, so without a bound a small body could make the
    # process plan millions of them.
    max_queries: int = 1000


class QueryTimeout(Unavailable):
    """A query ran past its time budget (503: the client may retry later)."""


class Deadline:
    """A point in time that long-running query loops check between steps."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.at = time.monotonic() + timeout_s

    def check(self) -> None:
        """QueryTimeout once the deadline has passed."""
        if time.monotonic() > self.at:
            raise QueryTimeout(f"query timed out after {self.timeout_s:g} s (query_timeout_s)")


def check_range(limits: QueryLimits, query_index: int, start_ms: int, end_ms: int) -> None:
    """Refuse an inverted or over-long time range."""
    if end_ms < start_ms:
        raise InvalidRequest(f"query {query_index}: end {end_ms} is before start {start_ms}")
    if limits.max_range_ms and end_ms - start_ms > limits.max_range_ms:
        raise QueryLimitExceeded(
            f"query {query_index} spans {end_ms - start_ms} ms, over the limit of "
            f"{limits.max_range_ms} ms",
            limit="query_max_range_ms",
        )


def check_query_count(limits: QueryLimits, queries: int) -> None:
    """Refuse a request with more queries than one request may carry."""
    if queries > limits.max_queries:
        raise QueryLimitExceeded(
            f"the request has {queries} queries, over the limit of {limits.max_queries}",
            limit="query_max_queries",
        )


def check_request_counts(limits: QueryLimits, series: int, samples: int) -> None:
    """Refuse a request whose queries together select too many series or samples: the
    series and sample limits bound a request, however many queries it splits into."""
    if series > limits.max_series:
        raise QueryLimitExceeded(
            f"the request's queries select {series} series together, over the limit of "
            f"{limits.max_series}",
            limit="query_max_series",
        )
    if samples > limits.max_samples:
        raise QueryLimitExceeded(
            f"the request's queries would read about {samples} samples together, over the "
            f"limit of {limits.max_samples}",
            limit="query_max_samples",
        )


def check_counts(limits: QueryLimits, query_index: int, series: int, samples: int) -> None:
    """Refuse a query that selects too many series or (by chunk counts) samples."""
    if series > limits.max_series:
        raise QueryLimitExceeded(
            f"query {query_index} selects {series} series, over the limit of {limits.max_series}",
            limit="query_max_series",
        )
    if samples > limits.max_samples:
        raise QueryLimitExceeded(
            f"query {query_index} would read about {samples} samples, over the limit of "
            f"{limits.max_samples}",
            limit="query_max_samples",
        )
