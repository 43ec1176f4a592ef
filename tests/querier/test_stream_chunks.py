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
from prometheus_client import CollectorRegistry

from gateway.config import GatewayConfig
from proto import remote_pb2, types_pb2
from querier.app import create_query_app
from querier.stream_chunks import chunk_field, series_frames
from querier.stream_frames import encode_frame
from querier.xor_chunk import encode_xor_chunks
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
        whole = series_frames(query_index, labels, fields, 1 << 30)
        assert whole == protobuf_frames(query_index, labels, chunks, len(chunks))
        one_each = series_frames(query_index, labels, fields, 1)
        assert one_each == protobuf_frames(query_index, labels, chunks, 1)


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
