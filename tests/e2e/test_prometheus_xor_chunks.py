"""A real Prometheus's STREAMED_XOR_CHUNKS answer against Strata's frame reader and XOR codec.

Known samples go into Prometheus 2.42 through its remote-write receiver; its own
`/api/v1/read` streams them back as XOR chunks in CRC'd frames. Strata's frame reader
must accept every frame, its decoder must return exactly the samples sent (bit for bit,
NaN payloads and the staleness marker included), and its encoder must produce
Prometheus's bytes for the samples of each chunk: the chunks the head cut and kept, and
the ones its querier re-encodes (the open head chunk, chunks trimmed to a query's range).
Prometheus cuts chunks by time, not every 120 samples, so chunks are compared at
Prometheus's boundaries.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import snappy

from proto import remote_pb2, types_pb2
from querier.stream_frames import CONTENT_TYPE, iter_responses
from querier.xor_chunk import (
    SAMPLES_PER_CHUNK,
    CorruptChunk,
    decode_xor_chunk,
    encode_xor_chunk,
    encode_xor_chunks,
)
from tests.e2e.conftest import attach_log
from tests.e2e.samples import STALE_NAN_BITS, LabelSet, float_bits
from tests.e2e.servers import (
    PROMETHEUS_READY_TIMEOUT_S,
    PrometheusServer,
    StrataServer,
    prometheus_binary,
    prometheus_config,
    wait_until_ready,
)

SEED = 4_2042
METRIC = "xor_e2e"
# Small frames, so that series span several frames (Prometheus's default is 1 MiB).
FRAME_BYTES = 600
MINUTE_MS = 60_000
# The samples straddle the epoch: negative first timestamps, varints of both signs. The
# head takes any time for its first sample, then nothing older than an hour before its
# newest, so every series stays within START_MS..END_MS.
START_MS = -25 * MINUTE_MS
END_MS = 25 * MINUTE_MS
# A trimmed query: Prometheus re-encodes the chunks that stick out of its range.
TRIM_START_MS = -7 * MINUTE_MS - 123
TRIM_END_MS = 9 * MINUTE_MS + 77
REQUEST_TIMEOUT_S = 30.0
RANGES = [(START_MS - 1, END_MS + 1), (TRIM_START_MS, TRIM_END_MS)]

AWKWARD_BITS = (
    0x7FF8000000000001,  # Go's math.NaN()
    STALE_NAN_BITS,
    0x7FF8000000000000,  # the usual quiet NaN
    0xFFF8000000000000,  # negative quiet NaN
    0x7FF0000000000001,  # signalling NaN, payload 1
    0x7FFFFFFFFFFFFFFF,
    0xFFFFFFFFFFFFFFFF,
    0x7FF0000000000000,  # +Inf
    0xFFF0000000000000,  # -Inf
    0x8000000000000000,  # -0.0
    0x0000000000000000,
    0x0000000000000001,  # smallest subnormal
    0x000FFFFFFFFFFFFF,  # largest subnormal
    0x7FEFFFFFFFFFFFFF,  # largest finite
    float_bits(0.1),
    float_bits(-273.15),
)

Samples = tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]
"""Timestamps and value bits of one series."""


class ReceivingPrometheus(PrometheusServer):
    """Prometheus with its remote-write receiver on and small remote-read frames."""

    def start(self, config: Mapping[str, Any]) -> None:
        """Write the config, start, and return once /-/ready answers 200."""
        self.write_config(config)
        self.process.spawn(
            [
                prometheus_binary(),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.base_dir / 'tsdb'}",
                f"--web.listen-address={self.address}",
                "--web.enable-remote-write-receiver",
                f"--storage.remote.read-max-bytes-in-frame={FRAME_BYTES}",
                "--log.level=info",
            ]
        )
        wait_until_ready(self.process, f"{self.url}/-/ready", PROMETHEUS_READY_TIMEOUT_S)


@pytest.fixture
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReceivingPrometheus]:
    """A started Prometheus that scrapes nothing and takes remote writes."""
    base_dir = tmp_path / "prometheus"
    base_dir.mkdir()
    server = ReceivingPrometheus(base_dir)
    attach_log(request.node, "prometheus", server.log_path)
    try:
        server.start(prometheus_config({}, None))
        yield server
    finally:
        server.close()


def irregular_times(rng: np.random.Generator, n: int) -> npt.NDArray[np.int64]:
    """n increasing timestamps from START_MS whose delta-of-deltas fall in every bucket,
    two 9-minute gaps among them for the 64-bit one."""
    deltas = rng.choice(np.array([1, 2, 1_000, 3_000, 3_001, 2_990]), size=n)
    deltas = np.where(rng.random(n) < 0.1, rng.integers(1, 15_000, n), deltas)
    deltas = np.where(rng.random(n) < 0.01, rng.integers(70_000, 200_000, n), deltas)
    deltas[0] = 0
    deltas[rng.choice(np.arange(2, n - 1), size=2, replace=False)] = 9 * MINUTE_MS
    return (START_MS + np.cumsum(deltas)).astype(np.int64)


def dod_buckets(ts: npt.NDArray[np.int64]) -> set[int]:
    """The payload widths of the delta-of-delta buckets a series uses (0 for no change)."""
    dods = np.diff(np.diff(ts))
    widths = [
        0 if d == 0 else next((w for w in (14, 17, 20) if -(2 ** (w - 1)) < d <= 2 ** (w - 1)), 64)
        for d in dods.tolist()
    ]
    return set(widths)


def byte_wide_xors(rng: np.random.Generator, n: int) -> npt.NDArray[np.uint64]:
    """Values whose XOR with the previous one is often a single byte (8 meaningful bits):
    chunks that end on a byte boundary, where Prometheus leaves a padding byte."""
    masks = (rng.integers(0, 256, n) | 0x81) << rng.choice([32, 40, 48, 56], n)
    masks = np.where(rng.random(n) < 0.2, 0, masks).astype(np.uint64)
    masks[0] = np.uint64(float_bits(1.5))
    return np.bitwise_xor.accumulate(masks)


def awkward_series() -> dict[str, Samples]:
    """The series to push, by their `case` label."""
    rng = np.random.default_rng(SEED)
    awkward = np.array(AWKWARD_BITS, dtype=np.uint64)
    series: dict[str, Samples] = {}

    ts = irregular_times(rng, 300)
    values = rng.choice(awkward, size=len(ts))
    random_bits = rng.integers(0, 2**64, len(ts), dtype=np.uint64)
    series["awkward"] = (ts, np.where(rng.random(len(ts)) < 0.3, random_bits, values))

    ts = START_MS + 1_000 * np.arange(1_500, dtype=np.int64) + rng.integers(0, 30, 1_500)
    counter = np.cumsum(rng.integers(0, 50, len(ts))).astype(np.float64)
    series["counter"] = (ts, counter.view(np.uint64))

    ts = START_MS + 15_000 * np.arange(150, dtype=np.int64)
    gauge = np.round(rng.normal(20.0, 3.0, len(ts)), 1).view(np.uint64)
    stale = (np.arange(len(ts)) // 10) % 3 == 1  # runs of markers, as after a lost target
    series["stale"] = (ts, np.where(stale, np.uint64(STALE_NAN_BITS), gauge))

    ts = START_MS + 10_000 * np.arange(200, dtype=np.int64)
    series["constant"] = (ts, np.full(len(ts), float_bits(-0.0), dtype=np.uint64))

    series["single"] = (np.array([7], dtype=np.int64), np.array([STALE_NAN_BITS], np.uint64))
    for i in range(40):
        n = int(rng.integers(2, 9))
        step = int(rng.choice([15_000, 1, 7]))
        ts = START_MS + 60_000 * i + step * np.arange(n, dtype=np.int64)
        ts[1:] += rng.integers(0, 2, n - 1) * rng.integers(1, 20_000)  # a dod or two
        series[f"short-{i:02d}"] = (np.unique(ts), byte_wide_xors(rng, len(np.unique(ts))))
    for case, (ts, _) in series.items():
        assert ts[0] >= START_MS, f"{case} starts before the window"
        assert ts[-1] <= END_MS, f"{case} ends after the window"
    return series


def labels_of(case: str) -> LabelSet:
    """The label set of a pushed series."""
    return (("__name__", METRIC), ("case", case))


def push(client: httpx.Client, series: dict[str, Samples]) -> None:
    """All the series in one remote-write 1.0 request; the server must answer 204."""
    write = remote_pb2.WriteRequest()
    for case, (ts, bits) in series.items():
        timeseries = write.timeseries.add()
        for name, value in labels_of(case):
            timeseries.labels.add(name=name, value=value)
        for t, v in zip(ts.tolist(), bits.view(np.float64).tolist(), strict=True):
            timeseries.samples.add(timestamp=t, value=v)
    answer = client.post(
        "/api/v1/write",
        content=snappy.compress(write.SerializeToString()),
        headers={
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        },
    )
    assert answer.status_code == 204, answer.text


def read_streamed(
    client: httpx.Client, ranges: list[tuple[int, int]]
) -> list[remote_pb2.ChunkedReadResponse]:
    """Every frame of a STREAMED_XOR_CHUNKS answer to one query per range."""
    request = remote_pb2.ReadRequest(
        queries=[
            remote_pb2.Query(
                start_timestamp_ms=start,
                end_timestamp_ms=end,
                matchers=[
                    types_pb2.LabelMatcher(
                        type=types_pb2.LabelMatcher.EQ, name="__name__", value=METRIC
                    )
                ],
            )
            for start, end in ranges
        ],
        accepted_response_types=[remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS],
    )
    with client.stream(
        "POST",
        "/api/v1/read",
        content=snappy.compress(request.SerializeToString()),
        headers={
            "Content-Type": "application/x-protobuf",
            "Content-Encoding": "snappy",
            "X-Prometheus-Remote-Read-Version": "0.1.0",
        },
        timeout=REQUEST_TIMEOUT_S,
    ) as answer:
        if answer.status_code != 200:
            pytest.fail(f"remote read: {answer.status_code} {answer.read()!r}")
        assert answer.headers["Content-Type"] == CONTENT_TYPE
        return list(iter_responses(answer.iter_bytes()))


def chunks_by_series(
    frames: list[remote_pb2.ChunkedReadResponse], query_index: int
) -> dict[str, list[types_pb2.Chunk]]:
    """The chunks of one query's series, by `case` label, in the order they came."""
    out: dict[str, list[types_pb2.Chunk]] = {}
    for frame in frames:
        if frame.query_index != query_index:
            continue
        for chunked in frame.chunked_series:
            labels = tuple((label.name, label.value) for label in chunked.labels)
            assert labels[0] == ("__name__", METRIC)
            out.setdefault(dict(labels)["case"], []).extend(chunked.chunks)
    return out


def in_range(samples: Samples, start: int, end: int) -> Samples:
    """The samples with start <= t <= end."""
    ts, bits = samples
    keep = (ts >= start) & (ts <= end)
    return ts[keep], bits[keep]


def ends_with_padding(data: bytes) -> bool:
    """Whether the chunk's last byte carries no bits: it decodes the same without it."""
    if data[-1] != 0:
        return False
    try:
        shorter = decode_xor_chunk(data[:-1])
    except CorruptChunk:
        return False
    whole = decode_xor_chunk(data)
    return np.array_equal(shorter[0], whole[0]) and np.array_equal(
        shorter[1].view(np.uint64), whole[1].view(np.uint64)
    )


def check_series(case: str, chunks: list[types_pb2.Chunk], expected: Samples) -> list[int]:
    """Prometheus's chunks of one series hold exactly `expected`, and Strata's encoder
    writes each of them byte for byte from its samples. Returns the chunks' lengths."""
    ts, bits = expected
    lengths = []
    at = 0
    for i, chunk in enumerate(chunks):
        assert chunk.type == types_pb2.Chunk.XOR, (case, i)
        got_ts, got_values = decode_xor_chunk(chunk.data)
        n = len(got_ts)
        assert n > 0, (case, i)
        assert (chunk.min_time_ms, chunk.max_time_ms) == (got_ts[0], got_ts[-1]), (case, i)
        np.testing.assert_array_equal(got_ts, ts[at : at + n], err_msg=f"{case} chunk {i}")
        np.testing.assert_array_equal(
            got_values.view(np.uint64), bits[at : at + n], err_msg=f"{case} chunk {i}"
        )
        ours = encode_xor_chunk(ts[at : at + n], bits[at : at + n].view(np.float64))
        assert ours == chunk.data, (
            f"{case} chunk {i} ({n} samples): ours {ours.hex()} != prometheus {chunk.data.hex()}"
        )
        lengths.append(n)
        at += n
    assert at == len(ts), f"{case}: {at} of {len(ts)} samples came back"
    return lengths


@pytest.mark.e2e
def test_prometheus_xor_chunks_decode_and_reencode_byte_identical(
    receiver: ReceivingPrometheus,
) -> None:
    series = awkward_series()
    push(receiver.client, series)
    frames = read_streamed(receiver.client, RANGES)

    whole = chunks_by_series(frames, 0)
    assert sorted(whole) == sorted(series)
    lengths = {case: check_series(case, whole[case], series[case]) for case in series}

    trimmed = chunks_by_series(frames, 1)
    expected_trimmed = {case: in_range(s, TRIM_START_MS, TRIM_END_MS) for case, s in series.items()}
    assert sorted(trimmed) == sorted(c for c, (ts, _) in expected_trimmed.items() if len(ts))
    for case, chunks in trimmed.items():
        check_series(case, chunks, expected_trimmed[case])

    # The cases the comparison is meant to cover did occur.
    all_chunks = [chunk for chunks in [*whole.values(), *trimmed.values()] for chunk in chunks]
    assert dod_buckets(series["awkward"][0]) == {0, 14, 17, 20, 64}
    assert len(frames) > len(whole) + len(trimmed), "no series spanned several frames"
    assert max(lengths["counter"]) > SAMPLES_PER_CHUNK // 2
    assert len(lengths["counter"]) > 5
    assert sum(ends_with_padding(chunk.data) for chunk in all_chunks) >= 3
    # Where Prometheus happened to cut every SAMPLES_PER_CHUNK samples, the default cut
    # gives the very same chunks.
    same_cut = [
        case
        for case, ns in lengths.items()
        if all(n == SAMPLES_PER_CHUNK for n in ns[:-1]) and ns[-1] <= SAMPLES_PER_CHUNK
    ]
    assert len(same_cut) >= 40
    for case in same_cut:
        ts, bits = series[case]
        ours = [data for _, _, data in encode_xor_chunks(ts, bits.view(np.float64))]
        assert ours == [chunk.data for chunk in whole[case]], case


@pytest.fixture
def strata_args() -> tuple[str, ...]:
    # Frames as small as the Prometheus's, so series span several.
    return ("--query-max-frame-bytes", str(FRAME_BYTES))


@pytest.mark.e2e
def test_strata_streams_what_prometheus_streams_for_the_same_data(
    receiver: ReceivingPrometheus, strata: StrataServer
) -> None:
    series = awkward_series()
    push(receiver.client, series)
    with httpx.Client(base_url=strata.url, timeout=REQUEST_TIMEOUT_S) as client:
        push(client, series)
        # Everything goes to blocks (two windows: [-2 h, 0) and [0, 2 h)): read from there.
        flushed = client.post("/api/v1/admin/flush")
        assert flushed.status_code == 200, flushed.text
        ours = read_streamed(client, RANGES)
    theirs = read_streamed(receiver.client, RANGES)
    identical = 0
    for query_index in range(len(RANGES)):
        our_chunks = chunks_by_series(ours, query_index)
        their_chunks = chunks_by_series(theirs, query_index)
        assert sorted(our_chunks) == sorted(their_chunks)
        for case, chunks in their_chunks.items():
            their_samples = [decode_xor_chunk(c.data) for c in chunks]
            our_samples = [decode_xor_chunk(c.data) for c in our_chunks[case]]
            for part in (0, 1):
                got = np.concatenate([s[part] for s in our_samples])
                want = np.concatenate([s[part] for s in their_samples])
                assert got.view(np.uint64).tolist() == want.view(np.uint64).tolist(), case
            # Where both cut the same samples into a chunk, the bytes are the same; but for
            # a series' first and last chunk when the range trims the data: what the range
            # cuts off Strata encodes without reusing XOR windows (docs/remote-read.md),
            # other bytes for the same samples (compared above).
            theirs_by_bounds = {(c.min_time_ms, c.max_time_ms): c.data for c in chunks}
            compared = our_chunks[case] if query_index == 0 else our_chunks[case][1:-1]
            for chunk in compared:
                same = theirs_by_bounds.get((chunk.min_time_ms, chunk.max_time_ms))
                assert same is None or same == chunk.data, case
                identical += same is not None
    assert identical >= 40, "the byte comparison happened"
    assert len(ours) > len(series), "series spanned several frames"
