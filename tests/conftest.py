"""Fixtures shared by every test package: the real remote-write corpus and its reader."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.seaweedfs import SeaweedFS, running_seaweedfs

REPO = Path(__file__).resolve().parents[1]
CORPUS_FILENAME = "node-1s.rwlog"
# A record is a 4-byte big-endian length, then that many bytes of snappy-compressed
# WriteRequest (../shared/corpus/README.md).
_RECORD_HEADER = struct.Struct(">I")


class CorruptCorpus(Exception):
    """A corpus file that ends inside a record."""


def read_corpus(path: Path) -> Iterator[bytes]:
    """Each record's body, in file order: the snappy bytes exactly as Prometheus sent them."""
    with path.open("rb") as f:
        while header := f.read(_RECORD_HEADER.size):
            if len(header) < _RECORD_HEADER.size:
                raise CorruptCorpus(f"{path}: {len(header)} stray bytes at the end")
            (length,) = _RECORD_HEADER.unpack(header)
            body = f.read(length)
            if len(body) < length:
                raise CorruptCorpus(f"{path}: last record has {len(body)} of {length} bytes")
            yield body


@pytest.fixture(scope="session")
def corpus_path() -> Path:
    """`../shared/corpus/node-1s.rwlog` next to the repository; its absence fails the test."""
    path = REPO.parent / "shared" / "corpus" / CORPUS_FILENAME
    if not path.is_file():
        pytest.fail(f"the remote-write corpus is missing: expected it at {path}")
    return path


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real S3 server (SeaweedFS) for the session; tests that stop it start it again."""
    yield from running_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
