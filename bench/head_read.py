"""How fast the head answers a read: the fleet in one tenant's head, the peers' queries.

    python -m bench.head_read --series 100000 --scrapes 120

Fills one `TenantHead` with bench.fleet's series as bench.head_bytes does (merged runs,
as the head holds them), captures a view of it as a read does (timed too: in a server it
runs on the event loop), and times `select_head` with the queries bench.peers sends (one
host's 100 series, ten hosts' histogram buckets, one series) over everything the head
holds: the median of `--reps` selections and of reading every selected series' samples,
in milliseconds, and the compressed batches each query decoded.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np

import blocks.sample_codec
import querier.head_source
from bench.head_bytes import START_MS, fill
from bench.peers import fleet_queries
from querier.head_source import HeadPostings, capture, select_head
from querier.matchers import Matcher, MatchType

OPERATORS = {t.operator: t for t in MatchType}
END_MS = 1 << 62  # everything the head holds


class CountingDecode:
    """decode_samples, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self.calls += 1
        return blocks.sample_codec.decode_samples(data)


def main() -> int:
    """Fill a head, time each query, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=120)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    head, _ = fill(args.series, args.scrapes)
    captures = []
    for _ in range(args.reps):
        started = time.perf_counter()
        view = capture(head, None)
        captures.append(time.perf_counter() - started)
    postings = HeadPostings()
    postings.update(view.labels, view.series)
    print(
        f"{args.series:,} series x {args.scrapes} scrapes, {len(view.frozen)} batches, "
        f"{len(head.recent):,} samples uncompressed; capturing the view (on the event loop "
        f"in a server) {statistics.median(captures) * 1e3:.3f} ms\n"
    )
    counting = CountingDecode()
    print("| query | series | samples | batches decoded | ms |")
    print("|---|---|---|---|---|")
    for query in fleet_queries(args.scrapes):
        matchers = [Matcher(OPERATORS[op], name, value) for name, op, value in query.matchers]
        counting.calls = 0
        timings = []
        for _ in range(args.reps):
            started = time.perf_counter()
            with mock.patch.object(querier.head_source, "decode_samples", counting):
                selection = select_head(
                    view, postings, matchers, START_MS, END_MS, checkpoint=lambda: None
                )
                parts = selection.read(range(len(selection.labels)))
            timings.append(time.perf_counter() - started)
        samples = sum(len(ts) for ts, _ in parts)
        decoded = counting.calls // args.reps
        print(
            f"| {query.title} | {len(selection.labels)} | {samples:,} | {decoded} "
            f"| {statistics.median(timings) * 1e3:.1f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
