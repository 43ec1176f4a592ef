"""Streamed answers put together from bytes, and the cache of encoded stored chunks.

The frames Strata builds by hand must be the bytes protobuf would serialize; a streamed
answer must hold exactly the samples of the SAMPLES answer whether its chunks were
encoded for this read, copied from the cache, or cut at the query's range, and whether a
series is read from blocks one after another or merged from overlapping ones.
"""

from __future__ import annotations

import random
from pathlib import Path

import httpx
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.config import GatewayConfig
from proto import remote_pb2, types_pb2
from querier.app import create_query_app
from querier.selection import EncodedChunks
from querier.stream_chunks import (
    chunk_field,
    clipped_pieces,
    encode_pieces,
    encode_stored_chunks,
    piece_samples,
    series_frames,
)
from querier.stream_frames import encode_frame
from querier.xor_chunk import decode_xor_chunk, encode_xor_chunks
from tests.querier.streamed import decode_streamed
from tests.querier.test_read_api import (
    HOUR_MS,
    READ_HEADERS,
    START_MS,
    LabelSet,
    gateway_app,
    matcher,
    read_request,
    read_samples,
    run,
    workload,
    write,
)


def protobuf_frames(
    query_index: int, labels: LabelSet, chunks: list[tuple[int, int, bytes]], per_frame: int
) -> list[bytes]:
    """What the generated classes make of the same chunks, `per_frame` chunks a frame."""
    label_msgs = [types_pb2.Label(name=n, value=v) for n, v in labels]
    frames = []
    for at in range(0, len(chunks), per_frame):
        series = types_pb2.ChunkedSeries(
            labels=label_msgs,
            chunks=[
                types_pb2.Chunk(min_time_ms=lo, max_time_ms=hi, type=types_pb2.Chunk.XOR, data=d)
                for lo, hi, d in chunks[at : at + per_frame]
            ],
        )
        response = remote_pb2.ChunkedReadResponse(chunked_series=[series], query_index=query_index)
        frames.append(encode_frame(response.SerializeToString()))
    return frames


def test_frames_built_from_bytes_are_what_protobuf_serializes() -> None:
    rng = random.Random(7)
    for case in range(40):
        start = rng.choice([-(1 << 62), -5_000, 0, 1_700_000_000_000])
        ts = start + np.cumsum(np.array([rng.randint(1, 90_000) for _ in range(500)]))
        values = np.array([rng.random() * 1e6 for _ in range(500)])
        chunks = encode_xor_chunks(ts, values)
        labels = (("__name__", "m"), ("case", str(case)), ("utf8", "é✓"))
        fields = [chunk_field(*chunk) for chunk in chunks]
        query_index = rng.choice([0, 1, 999])
        whole = frames_of(series_frames(query_index, labels, fields, 1 << 30))
        assert whole == protobuf_frames(query_index, labels, chunks, len(chunks))
        one_each = frames_of(series_frames(query_index, labels, fields, 1))
        assert one_each == protobuf_frames(query_index, labels, chunks, 1)


def frames_of(pieces: list[bytes]) -> list[bytes]:
    """series_frames' pieces, two a frame, as whole frames."""
    assert len(pieces) % 2 == 0
    return [header + message for header, message in zip(pieces[::2], pieces[1::2], strict=True)]


def cache_lookups(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value(
        "strata_read_cache_lookups_total", {"cache": "stream", "result": result}
    )
    assert value is not None
    return value


def test_streamed_answers_equal_samples_cold_warm_cut_and_merged(tmp_path: Path) -> None:
    expected = workload()
    h0 = next(labels for labels in expected if ("host", "h0") in labels)
    app = gateway_app(tmp_path)

    async def fill(client: httpx.AsyncClient) -> None:
        await write(client, expected)
        assert (await client.post("/api/v1/admin/flush")).status_code == 200
        # Sent again once the first copy is in the bucket: a second block for h0's first
        # window, overlapping the first, so h0 is merged and not joined.
        await write(client, {h0: expected[h0][:30]})
        assert (await client.post("/api/v1/admin/flush")).status_code == 200

    run(app, fill)
    registry = CollectorRegistry()
    querier = create_query_app(GatewayConfig(data_dir=tmp_path), registry)
    minute = 60_000
    node, h1 = [matcher("job", "node")], [matcher("host", "h1")]
    queries = [
        (START_MS, START_MS + 10 * HOUR_MS, node),  # every stored chunk whole
        # Cut through stored chunks at both ends, and one range inside a single chunk.
        (START_MS + 90 * minute + 1, START_MS + 4 * HOUR_MS + 17 * minute, node),
        (START_MS + 2 * HOUR_MS + 5 * minute, START_MS + 2 * HOUR_MS + 9 * minute, h1),
    ]

    async def read(client: httpx.AsyncClient) -> list[list[dict[LabelSet, list[tuple[int, int]]]]]:
        samples = await read_samples(client, queries)
        answers = []
        for _ in range(2):  # cold, then from the cache
            answer = await client.post(
                "/api/v1/read", content=read_request(queries, streamed=True), headers=READ_HEADERS
            )
            assert answer.status_code == 200, answer.text
            answers.append(decode_streamed(answer.content, len(queries)))
        return [samples, *answers]

    samples, cold, warm = run(querier, read)
    assert samples[0] == expected
    assert cold == samples
    assert warm == samples
    assert cache_lookups(registry, "miss") > 0
    assert cache_lookups(registry, "hit") >= cache_lookups(registry, "miss")


@settings(max_examples=150, deadline=None)
@given(
    times=st.lists(st.integers(0, 100_000), min_size=1, max_size=700, unique=True).map(sorted),
    seed=st.integers(0, 2**32 - 1),
    cut=st.tuples(st.integers(-10, 100_010), st.integers(-10, 100_010)).map(sorted),
)
def test_a_range_through_a_long_stored_chunk_copies_the_xor_chunks_inside_it(
    times: list[int], seed: int, cut: list[int]
) -> None:
    mint, maxt = cut
    ts = np.array(times, dtype=np.int64)
    bits = np.random.default_rng(seed).integers(0, 2**64, len(ts), dtype=np.uint64)
    values = bits.view(np.float64)
    [whole] = encode_stored_chunks([(ts, values)])
    pieces = clipped_pieces(whole, (ts, values), mint, maxt)
    [fields] = encode_pieces([pieces])
    series = types_pb2.ChunkedSeries.FromString(b"".join(fields))
    got_ts, got_bits = [], []
    for chunk in series.chunks:
        chunk_ts, chunk_values = decode_xor_chunk(chunk.data)
        assert (chunk.min_time_ms, chunk.max_time_ms) == (chunk_ts[0], chunk_ts[-1])
        got_ts += chunk_ts.tolist()
        got_bits += chunk_values.view(np.uint64).tolist()
    keep = (ts >= mint) & (ts <= maxt)
    assert got_ts == ts[keep].tolist()
    assert got_bits == bits[keep].tolist()
    copied = [f for p in pieces if isinstance(p, EncodedChunks) for f in p.fields]
    assert all(f in whole.fields for f in copied), "inside chunks are the cached bytes"
    # Only the XOR chunks the range cuts through are encoded again: at most two.
    assert sum(1 for p in pieces if not isinstance(p, EncodedChunks)) <= 2
    assert sum(piece_samples(p) for p in pieces) == int(keep.sum())


def test_a_range_cutting_long_stored_chunks_is_answered_from_the_cache_when_warm(
    tmp_path: Path,
) -> None:
    # Every 15 s for five hours: 480 samples of a series in each 2 h block, one stored
    # chunk, longer than CUT_WHOLE_SAMPLES, so a range through it copies what it can.
    steps = 5 * 240
    expected: dict[LabelSet, list[tuple[int, int]]] = {
        (("__name__", "load"), ("host", f"h{i}"), ("job", "node")): [
            (START_MS + k * 15_000, int(b))
            for k, b in enumerate(np.arange(steps, dtype=np.float64).view(np.uint64) + i)
        ]
        for i in range(3)
    }
    app = gateway_app(tmp_path)

    async def fill(client: httpx.AsyncClient) -> None:
        await write(client, expected)
        assert (await client.post("/api/v1/admin/flush")).status_code == 200

    run(app, fill)
    registry = CollectorRegistry()
    querier = create_query_app(GatewayConfig(data_dir=tmp_path), registry)
    minute = 60_000
    # Inside the second 2 h block, cutting through its stored chunks at both ends.
    query = [
        (
            START_MS + 2 * HOUR_MS + 7 * minute + 1,
            START_MS + 3 * HOUR_MS + 55 * minute,
            [matcher("job", "node")],
        )
    ]

    Answer = list[dict[LabelSet, list[tuple[int, int]]]]

    async def read(client: httpx.AsyncClient) -> tuple[Answer, list[tuple[Answer, float]]]:
        samples = await read_samples(client, query)
        streamed = []
        for _ in range(2):  # cold, then warm
            answer = await client.post(
                "/api/v1/read", content=read_request(query, streamed=True), headers=READ_HEADERS
            )
            assert answer.status_code == 200, answer.text
            streamed.append((decode_streamed(answer.content, 1), cache_lookups(registry, "miss")))
        return samples, streamed

    samples, [(cold, misses_cold), (warm, misses_warm)] = run(querier, read)
    assert len(samples[0]) == 3
    assert cold == samples
    assert warm == samples
    assert misses_cold >= 3, "the cut stored chunks were encoded whole and kept"
    assert misses_warm == misses_cold, "and the warm read found them"


def test_a_chunk_overlapping_the_range_with_no_sample_in_it_answers_nothing(
    tmp_path: Path,
) -> None:
    # One stored chunk from START to START + 10 min holding just its two ends: it overlaps
    # a range between them, which holds none of its samples.
    labels = (("__name__", "load"), ("host", "h0"), ("job", "node"))
    app = gateway_app(tmp_path)

    async def fill(client: httpx.AsyncClient) -> None:
        await write(client, {labels: [(START_MS, 1), (START_MS + 600_000, 2)]})
        assert (await client.post("/api/v1/admin/flush")).status_code == 200

    run(app, fill)
    querier = create_query_app(GatewayConfig(data_dir=tmp_path), CollectorRegistry())
    query = [(START_MS + 120_000, START_MS + 180_000, [matcher("job", "node")])]

    async def read(client: httpx.AsyncClient) -> tuple[int, bytes]:
        answer = await client.post(
            "/api/v1/read", content=read_request(query, streamed=True), headers=READ_HEADERS
        )
        return answer.status_code, answer.content

    status, content = run(querier, read)
    assert status == 200, content
    assert decode_streamed(content, 1) == [{}]
