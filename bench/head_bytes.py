"""What the head holds per sample: the fleet fed to one tenant's head, its batches' bytes.

    python -m bench.head_bytes --series 100000 --scrapes 120

Fills one `TenantHead` with bench.fleet's series (one scrape every 15 s, committed
SAMPLES_PER_REQUEST samples at a time, as the write path commits a request's samples;
the write path itself is not what is measured) three ways: freezes alone (no merges),
merged runs in the fast layout, and merged runs in the compact layout (what the head
does). Prints, for each, the compressed bytes per sample and per series, the batches,
their levels, and the process CPU seconds of the commits, freezes and merges.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import numpy as np

import gateway.head_batch
from bench.fleet import SAMPLES_PER_REQUEST, Fleet, iter_scrapes
from gateway.config import GatewayConfig
from gateway.head import TenantHead
from gateway.validate import encode_labels

START_MS = 1_795_564_800_000  # aligned to 2 h: the whole fill lies in few windows
VARIANTS = ("freezes alone", "merged, fast layout", "merged, compact layout")


@contextmanager
def variant(name: str) -> Iterator[None]:
    """The head as it is, or with its merges or the compact layout turned off."""
    merges = TenantHead.merge_runs if name != VARIANTS[0] else lambda self: None
    compact_from = gateway.head_batch.COMPACT_FROM_LEVEL if name == VARIANTS[2] else 1 << 30
    with (
        mock.patch.object(TenantHead, "merge_runs", merges),
        mock.patch.object(gateway.head_batch, "COMPACT_FROM_LEVEL", compact_from),
    ):
        yield


def fill(series: int, scrapes: int) -> tuple[TenantHead, float]:
    """A head holding the fleet's scrapes; the CPU seconds the commits took."""
    fleet = Fleet(series)
    head = TenantHead("bench", GatewayConfig().head_freeze_samples)
    refs = np.array([head.series_ref(encode_labels(list(ls))) for ls in fleet.labels], np.uint32)
    cpu = 0.0
    for ts, values in iter_scrapes(fleet, START_MS, scrapes):
        started = time.process_time()
        for at in range(0, series, SAMPLES_PER_REQUEST):
            part = slice(at, at + SAMPLES_PER_REQUEST)
            head.commit(head.plan(refs[part], ts[part].astype(np.int64), values[part]))
        cpu += time.process_time() - started
    return head, cpu


def main() -> int:
    """Fill a head each way, print one table row per way."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=120)
    args = parser.parse_args()
    print(f"{args.series:,} series x {args.scrapes} scrapes\n")
    print("| head | bytes a sample | bytes a series | batches | levels | CPU s |")
    print("|---|---|---|---|---|---|")
    for name in VARIANTS:
        with variant(name):
            head, cpu = fill(args.series, args.scrapes)
        held = head.frozen_bytes
        samples = head.frozen_samples + len(head.recent)
        levels = ", ".join(str(level) for level in sorted({b.level for b in head.frozen}))
        print(
            f"| {name} | {held / samples:.2f} | {held / args.series:,.0f} | "
            f"{len(head.frozen)} | {levels} | {cpu:.2f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
