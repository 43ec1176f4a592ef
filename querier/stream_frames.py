"""Frames of remote read's streamed answer: uvarint length, big-endian CRC32C, message.

The body of `application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse`
(Prometheus 2.42); layout in docs/remote-read.md#xor-chunks-and-stream-frames. Bytes in,
bytes out: the writer frames one serialized message, the reader checks every frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import google_crc32c

from blocks.errors import StrataError
from proto import remote_pb2
from querier.varint import uvarint

CONTENT_TYPE = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
"""What a STREAMED_XOR_CHUNKS answer is sent as."""
DEFAULT_MAX_FRAME_BYTES = 50_000_000
"""The largest message a reader takes by default: Prometheus's own reader allows 50 MB."""

_CRC_BYTES = 4
_MAX_VARINT_BYTES = 10


class CorruptFrame(StrataError):
    """A stream that is not a sequence of whole frames with matching checksums."""


class FrameTooLarge(CorruptFrame):
    """A frame that declares a message longer than the reader's limit."""


def encode_frame(message: bytes) -> bytes:
    """One frame: the message's length as a uvarint, its CRC32C big-endian, the message."""
    return frame_header(message) + message


def frame_header(message: bytes) -> bytes:
    """What goes before `message` in its frame: its length as a uvarint, its CRC32C."""
    crc: int = google_crc32c.value(message)
    return uvarint(len(message)) + crc.to_bytes(_CRC_BYTES, "big")


def encode_response(response: remote_pb2.ChunkedReadResponse) -> bytes:
    """One ChunkedReadResponse, serialized and framed."""
    return encode_frame(response.SerializeToString())


class FrameReader:
    """Messages out of a stream of frames that arrives in pieces of any size.

    A frame's length is checked against the limit as soon as its header is in, before
    its message is buffered, so a bad length cannot make the reader hold gigabytes.
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._start = 0  # buffer index of the next frame
        self._offset = 0  # stream offset of the buffer's first byte
        self._frames = 0  # whole frames read so far

    def feed(self, data: bytes | bytearray) -> None:
        """Take the next bytes of the stream."""
        del self._buffer[: self._start]
        self._offset += self._start
        self._start = 0
        self._buffer += data

    def next_message(self) -> bytes | None:
        """The message of the next whole frame, or None until more bytes are fed."""
        start = self._start
        header = self._header(start)
        if header is None:
            return None
        length, header_bytes = header
        body = start + header_bytes
        end = body + length
        if end > len(self._buffer):
            return None
        message = bytes(self._buffer[body:end])
        expected = int.from_bytes(self._buffer[body - _CRC_BYTES : body], "big")
        actual: int = google_crc32c.value(message)
        if actual != expected:
            raise CorruptFrame(
                f"frame {self._frames} at byte {self._offset + start}: checksum mismatch "
                f"(frame says {expected:#010x}, message has {actual:#010x})"
            )
        self._frames += 1
        self._start = end
        return message

    def close(self) -> None:
        """The stream has ended: CorruptFrame if it stopped inside a frame."""
        left = len(self._buffer) - self._start
        if left:
            header = self._header(self._start)
            wanted = "its header" if header is None else f"{sum(header)} bytes"
            raise CorruptFrame(
                f"stream ends inside frame {self._frames} at byte {self._offset + self._start}: "
                f"{left} bytes of {wanted}"
            )

    def _header(self, start: int) -> tuple[int, int] | None:
        """(message length, header bytes incl. the CRC) of the frame at `start`, or None
        while the buffer does not hold all of its header."""
        length = 0
        for i in range(_MAX_VARINT_BYTES):
            if start + i >= len(self._buffer):
                return None
            byte = self._buffer[start + i]
            length |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                break
        else:
            raise CorruptFrame(
                f"frame {self._frames} at byte {self._offset + start}: "
                "length varint longer than 10 bytes"
            )
        if length > self.max_frame_bytes:
            raise FrameTooLarge(
                f"frame {self._frames} at byte {self._offset + start}: message of {length} "
                f"bytes is over the limit of {self.max_frame_bytes}"
            )
        header_bytes = i + 1 + _CRC_BYTES
        if start + header_bytes > len(self._buffer):
            return None
        return length, header_bytes


def iter_frames(
    stream: bytes | bytearray | Iterable[bytes], max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> Iterator[bytes]:
    """The message of every frame of a whole body or of its pieces (e.g. httpx iter_bytes),
    each as soon as it is whole; a bad frame raises once the frames before it are out."""
    pieces: Iterable[bytes | bytearray]
    pieces = (stream,) if isinstance(stream, bytes | bytearray) else stream
    reader = FrameReader(max_frame_bytes)
    for piece in pieces:
        reader.feed(piece)
        while (message := reader.next_message()) is not None:
            yield message
    reader.close()


def iter_responses(
    stream: bytes | bytearray | Iterable[bytes], max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
) -> Iterator[remote_pb2.ChunkedReadResponse]:
    """Every frame of the stream parsed as a ChunkedReadResponse."""
    for message in iter_frames(stream, max_frame_bytes):
        yield remote_pb2.ChunkedReadResponse.FromString(message)
