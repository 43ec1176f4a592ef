"""The object-store interface every backend implements; contract in docs/object-stores.md.

Keys are '/'-separated relative names, checked here once for every backend so that a key
valid on one backend is valid on all of them.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from blocks.errors import InvalidRequest

# S3 refuses longer keys; refusing them everywhere keeps a local bucket copyable to S3.
MAX_KEY_BYTES = 1024
# The longest file name Linux file systems accept (NAME_MAX).
MAX_SEGMENT_BYTES = 255
# Names a store keeps for its own bookkeeping (temporary files, lock files, probes), so
# that no key can ever collide with them and listings can skip them.
RESERVED_SEGMENT_PREFIX = ".strata-"


class InvalidKey(InvalidRequest):
    """A key or prefix that no store accepts (400): the caller has a bug or a bad tenant."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        super().__init__(f"invalid object key {key!r}: {detail}")


class InvalidRange(InvalidRequest):
    """A byte range with a negative start or an end before its start (400)."""

    def __init__(self, key: str, start: int, end: int) -> None:
        super().__init__(f"invalid byte range [{start}, {end}) for {key!r}")


def check_key(key: str) -> str:
    """Return `key` if it is a valid object name, else raise InvalidKey."""
    if not key:
        raise InvalidKey(key, "empty")
    if key.startswith("/"):
        raise InvalidKey(key, "must be relative (no leading '/')")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidKey(key, f"longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        _check_segment(key, segment)
    return key


def check_prefix(prefix: str) -> str:
    """Return `prefix` if it is the start of some valid key ('' lists all), else InvalidKey."""
    if prefix.startswith("/"):
        raise InvalidKey(prefix, "must be relative (no leading '/')")
    if "\0" in prefix:
        raise InvalidKey(prefix, "contains NUL")
    # The last segment may be partial ('a/b' matches 'a/bc'); the ones before it are whole.
    for segment in prefix.split("/")[:-1]:
        _check_segment(prefix, segment)
    return prefix


def _check_segment(key: str, segment: str) -> None:
    if not segment:
        raise InvalidKey(key, "empty segment ('//' or a trailing '/')")
    if segment in (".", ".."):
        raise InvalidKey(key, "'.' and '..' segments are not allowed")
    if "\0" in segment:
        raise InvalidKey(key, "contains NUL")
    if len(segment.encode()) > MAX_SEGMENT_BYTES:
        raise InvalidKey(key, f"a segment is longer than {MAX_SEGMENT_BYTES} bytes")
    if segment.startswith(RESERVED_SEGMENT_PREFIX):
        raise InvalidKey(key, f"segments starting with {RESERVED_SEGMENT_PREFIX!r} are reserved")


def check_range(key: str, start: int, end: int) -> None:
    """Raise InvalidRange unless 0 <= start <= end."""
    if start < 0 or end < start:
        raise InvalidRange(key, start, end)


@dataclass(frozen=True, slots=True)
class ObjectStat:
    """What a store knows about an object besides its bytes."""

    size: int
    # When the object was last written, in milliseconds since the epoch (the store's clock).
    modified_ms: int


class ObjectStore(abc.ABC):
    """A flat namespace of immutable-by-convention byte objects (a bucket or a directory).

    Errors: NotFound for a missing object, InvalidKey for a bad name, StorageError
    (503, retry later) for everything the storage itself gets wrong.
    """

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`; atomic: readers see the old object or all of the new one."""

    @abc.abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Store the file's bytes under `key`, streamed: memory stays flat for large files."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The whole object; NotFound if absent."""

    @abc.abstractmethod
    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end), end exclusive; NotFound if absent; past the end: what exists."""

    @abc.abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`, recursive and sorted, however many there are."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; idempotent: deleting an absent key is not an error."""

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """The object's length in bytes; NotFound if absent."""

    @abc.abstractmethod
    def stat(self, key: str) -> ObjectStat:
        """Size and last write time; NotFound if absent."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    @property
    @abc.abstractmethod
    def supports_conditional_put(self) -> bool:
        """Whether put_if_absent/put_if_match are atomic; if False they are best effort."""

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes) -> bool:
        """Store `data` only if `key` is absent; False (nothing written) if it exists."""

    @abc.abstractmethod
    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        """The object and an opaque version tag for put_if_match; NotFound if absent."""

    @abc.abstractmethod
    def put_if_match(self, key: str, data: bytes, etag: str) -> bool:
        """Replace the object only if its tag is still `etag`; False if changed or absent."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections and file handles; the store is unusable afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
