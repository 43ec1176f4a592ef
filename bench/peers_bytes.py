"""Where Strata's bytes per sample go on the synthetic fleet, and what other value codes save.

    python -m bench.peers_bytes --hosts 10 --scrapes 2880       # 1,000 series x 12 h

Generates bench.fleet's series in memory, cuts them into chunks and pages as
blocks.writer does (chunks of at most CHUNK_MAX_SAMPLES, pages of consecutive chunks in
label order up to PAGE_TARGET_SAMPLES) and compresses each page with
blocks.chunk_page.encode_page: the chunk bytes of a block (the index is not counted).
Prints those bytes per sample for the whole fleet and for each kind of series encoded
on its own, and the same pages with two other value codes for decimal chunks: plain
deltas of the mantissas, and per chunk the smaller of deltas and delta-of-deltas.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import zstandard

from bench.fleet import SERIES_PER_HOST, Fleet, Kind, iter_scrapes
from blocks.chunk_page import (
    PAGE_HEADER,
    PAGE_MAGIC,
    PAGE_VERSION,
    ZSTD_LEVEL,
    encode_page,
)
from blocks.columns import delta, delta_of_delta, start_mask, to_planes, xor_delta, zigzag
from blocks.value_words import VALUE_XOR, decimal_scales
from blocks.writer import CHUNK_MAX_SAMPLES, PAGE_TARGET_SAMPLES

END_MS = 1_795_564_800_000
Encoder = Callable[[np.ndarray, np.ndarray, np.ndarray], bytes]


def mantissa_words(values: np.ndarray, runs: np.ndarray, code: str) -> tuple[np.ndarray, bytes]:
    """Value words of a page under `code` ("dod", "delta" or "best" per chunk); the scales."""
    scales = decimal_scales(values, runs)
    per_sample = np.repeat(scales, runs)
    decimal = per_sample != VALUE_XOR
    mantissas = np.zeros(len(values), dtype=np.int64)
    with np.errstate(all="ignore"):
        factors = 10.0 ** per_sample[decimal].astype(np.float64)
        mantissas[decimal] = np.round(values[decimal] * factors).astype(np.int64)
    dod = zigzag(delta_of_delta(mantissas, runs))
    plain = zigzag(delta(mantissas, start_mask(runs, len(values))))
    if code == "dod":
        chosen = dod
    elif code == "delta":
        chosen = plain
    else:
        # Per chunk, the code whose words need fewer significant bits in total.
        nonempty = runs > 0
        starts = np.concatenate(([0], np.cumsum(runs)[:-1]))[nonempty]

        def bits(words: np.ndarray) -> np.ndarray:
            summed: np.ndarray = np.add.reduceat(np.log2(words.astype(np.float64) + 1), starts)
            return summed

        use_delta = np.zeros(len(runs), dtype=bool)
        use_delta[nonempty] = bits(plain) < bits(dod)
        chosen = np.where(np.repeat(use_delta, runs), plain, dod)
    words = np.where(decimal, chosen, xor_delta(values.view(np.uint64), runs))
    return words, scales.tobytes()


def page_with(code: str) -> Encoder:
    """encode_page with another value code for decimal chunks (same layout otherwise)."""

    def encode(counts: np.ndarray, ts: np.ndarray, values: np.ndarray) -> bytes:
        runs = counts.astype(np.int64)
        words, scales = mantissa_words(values, runs, code)
        body = b"".join(
            (
                PAGE_HEADER.pack(PAGE_MAGIC, PAGE_VERSION, len(counts), len(ts)),
                counts.astype(np.uint32).tobytes(),
                scales,
                to_planes(zigzag(delta_of_delta(ts, runs))),
                to_planes(words),
            )
        )
        return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(body)

    return encode


def chunk_bytes(ts: np.ndarray, values: np.ndarray, order: np.ndarray, encode: Encoder) -> int:
    """Bytes of the pages holding series `order` (columns of ts/values), as the writer cuts."""
    total = 0
    counts: list[int] = []
    page_ts: list[np.ndarray] = []
    page_values: list[np.ndarray] = []

    def flush() -> int:
        if not counts:
            return 0
        size = len(encode(np.array(counts), np.concatenate(page_ts), np.concatenate(page_values)))
        counts.clear()
        page_ts.clear()
        page_values.clear()
        return size

    for column in order:
        for lo in range(0, ts.shape[0], CHUNK_MAX_SAMPLES):
            counts.append(min(CHUNK_MAX_SAMPLES, ts.shape[0] - lo))
            page_ts.append(ts[lo : lo + CHUNK_MAX_SAMPLES, column])
            page_values.append(values[lo : lo + CHUNK_MAX_SAMPLES, column])
            if sum(counts) >= PAGE_TARGET_SAMPLES:
                total += flush()
    return total + flush()


KIND_NAMES = {
    "counters": (Kind.COUNTER,),
    "gauges": (Kind.GAUGE,),
    "constants": (Kind.CONSTANT, Kind.BOOT_TIME),
    "node_time_seconds": (Kind.CLOCK,),
    "histogram buckets and counts": (Kind.BUCKET, Kind.HIST_COUNT),
    "histogram sums": (Kind.HIST_SUM,),
}


def main() -> int:
    """Generate, encode three ways, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=2880)
    args = parser.parse_args()
    fleet = Fleet(args.hosts * SERIES_PER_HOST)
    start = END_MS - args.scrapes * fleet.interval_ms
    pairs = [(t, v.copy()) for t, v in iter_scrapes(fleet, start, args.scrapes)]
    ts = np.array([t for t, _ in pairs])
    values = np.array([v for _, v in pairs])
    order = np.array(sorted(range(fleet.series), key=lambda i: fleet.labels[i]))
    encoders = {"as written (dod)": encode_page, "delta": page_with("delta")}
    encoders["best of both per chunk"] = page_with("best")
    print(f"{fleet.series:,} series x {args.scrapes} scrapes, chunk bytes per sample\n")
    print("| series | share of samples | " + " | ".join(encoders) + " |")
    print("|---|---|" + "---|" * len(encoders))
    samples = ts.size
    whole = {name: chunk_bytes(ts, values, order, enc) for name, enc in encoders.items()}
    row = " | ".join(f"{b / samples:.3f}" for b in whole.values())
    print(f"| all, pages as the writer cuts them | 100 % | {row} |")
    for title, kinds in KIND_NAMES.items():
        picked = order[np.isin(fleet.kind[order], kinds)]
        n = ts.shape[0] * len(picked)
        sizes = [chunk_bytes(ts, values, picked, enc) for enc in encoders.values()]
        row = " | ".join(f"{b / n:.3f}" for b in sizes)
        print(f"| {title}, alone | {100 * n / samples:.0f} % | {row} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
