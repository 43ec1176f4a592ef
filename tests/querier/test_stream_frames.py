"""Stream frames of STREAMED_XOR_CHUNKS: round trips in pieces of any size, and bad frames.

Prometheus's own frames are read in tests/e2e/test_prometheus_xor_chunks.py.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proto import remote_pb2, types_pb2
from querier.stream_frames import (
    CorruptFrame,
    FrameReader,
    FrameTooLarge,
    encode_frame,
    encode_response,
    iter_frames,
    iter_responses,
)
from querier.xor_chunk import encode_xor_chunks


def response(query_index: int, job: str, n: int) -> remote_pb2.ChunkedReadResponse:
    """One series of n samples as chunks, the way the read endpoint frames them."""
    ts = np.arange(n, dtype=np.int64) * 15_000
    chunks = [
        types_pb2.Chunk(min_time_ms=mint, max_time_ms=maxt, type=types_pb2.Chunk.XOR, data=data)
        for mint, maxt, data in encode_xor_chunks(ts, np.sqrt(np.arange(n, dtype=np.float64)))
    ]
    labels = [types_pb2.Label(name="__name__", value="up"), types_pb2.Label(name="job", value=job)]
    return remote_pb2.ChunkedReadResponse(
        chunked_series=[types_pb2.ChunkedSeries(labels=labels, chunks=chunks)],
        query_index=query_index,
    )


RESPONSES = [response(0, "a", 1), response(0, "b", 500), response(1, "a", 3), response(2, "c", 40)]
STREAM = b"".join(encode_response(r) for r in RESPONSES)


def test_responses_round_trip() -> None:
    assert list(iter_responses(STREAM)) == RESPONSES
    assert list(iter_responses(bytearray(STREAM))) == RESPONSES


@settings(deadline=None, max_examples=100)
@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=40))
def test_frames_read_the_same_in_pieces_of_any_size(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    pieces = [STREAM[a:b] for a, b in itertools.pairwise(bounds)]
    assert list(iter_responses(pieces)) == RESPONSES


def test_frame_is_uvarint_length_big_endian_crc32c_message() -> None:
    # 0xE3069283 is CRC-32C's published check value for "123456789".
    assert encode_frame(b"123456789") == b"\x09\xe3\x06\x92\x83123456789"
    long = encode_frame(bytes(300))
    assert long[:2] == b"\xac\x02"  # 300 as a varint
    assert list(iter_frames(long + encode_frame(b"123456789"))) == [bytes(300), b"123456789"]


def test_empty_message_is_a_frame_of_its_own() -> None:
    assert encode_frame(b"") == bytes(5)
    assert list(iter_frames(bytes(5) * 3)) == [b""] * 3
    assert list(iter_frames(b"")) == []


def test_checksum_mismatch_is_refused() -> None:
    first = encode_response(RESPONSES[0])
    for flip in (len(first) + 3, len(first) + 10, len(STREAM) - 1):  # CRC, message, last
        bad = bytearray(STREAM)
        bad[flip] ^= 0x01
        with pytest.raises(CorruptFrame, match="checksum mismatch"):
            list(iter_frames(bytes(bad)))
    bad = bytearray(STREAM)
    bad[len(first) + 3] ^= 0x01
    frames = iter_frames(bytes(bad))
    assert next(frames) == first[5:]  # frames before the bad one are read
    with pytest.raises(CorruptFrame, match=f"frame 1 at byte {len(first)}: checksum"):
        next(frames)


def test_truncated_stream_is_refused() -> None:
    last = len(STREAM) - len(encode_response(RESPONSES[-1]))
    for end in range(last + 1, len(STREAM)):
        read: list[bytes] = []
        with pytest.raises(CorruptFrame, match=f"stream ends inside frame 3 at byte {last}"):
            read.extend(iter_frames(STREAM[:end]))
        assert len(read) == 3


def test_oversized_frame_is_refused_before_its_message_arrives() -> None:
    frame = encode_frame(bytes(1_000))
    assert list(iter_frames(frame, max_frame_bytes=1_000)) == [bytes(1_000)]
    reader = FrameReader(max_frame_bytes=999)
    reader.feed(frame[:2])  # just the length
    with pytest.raises(FrameTooLarge, match="message of 1000 bytes is over the limit of 999"):
        reader.next_message()


def test_overlong_length_varint_is_refused() -> None:
    with pytest.raises(CorruptFrame, match="longer than 10 bytes"):
        list(iter_frames(b"\xff" * 11))


def test_reader_keeps_partial_frames_between_feeds() -> None:
    reader = FrameReader()
    frame = encode_frame(b"hello")
    reader.feed(frame[:3])
    assert reader.next_message() is None
    reader.feed(frame[3:] + frame[:1])
    assert reader.next_message() == b"hello"
    assert reader.next_message() is None
    with pytest.raises(CorruptFrame, match="at byte 10: 1 bytes of its header"):
        reader.close()
    reader.feed(frame[1:])
    assert reader.next_message() == b"hello"
    reader.close()
