"""A test client's view of a streamed remote-read answer: frames checked, chunks decoded."""

from __future__ import annotations

import numpy as np

from proto import types_pb2
from querier.stream_frames import iter_responses
from querier.xor_chunk import decode_xor_chunk

LabelSet = tuple[tuple[str, str], ...]


def decode_streamed(body: bytes, queries: int) -> list[dict[LabelSet, list[tuple[int, int]]]]:
    """Per query, labels -> [(timestamp, value bits)], from a whole streamed body.

    Checks what Prometheus's client relies on: CRCs (in iter_responses), XOR chunks only,
    chunks of a series time-sorted and not overlapping, across the frames it spans, and
    query indexes that never go back.
    """
    out: list[dict[LabelSet, list[tuple[int, int]]]] = [{} for _ in range(queries)]
    last_query = 0
    for response in iter_responses(body):
        assert response.query_index >= last_query, "query results interleaved"
        last_query = response.query_index
        for series in response.chunked_series:
            labels = tuple((label.name, label.value) for label in series.labels)
            samples = out[response.query_index].setdefault(labels, [])
            for chunk in series.chunks:
                assert chunk.type == types_pb2.Chunk.XOR
                ts, values = decode_xor_chunk(chunk.data)
                assert ts[0] == chunk.min_time_ms
                assert ts[-1] == chunk.max_time_ms
                assert not samples or samples[-1][0] < chunk.min_time_ms, "chunks overlap"
                samples.extend(zip(ts.tolist(), values.view(np.uint64).tolist(), strict=True))
    return out
