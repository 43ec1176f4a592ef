"""Fixtures for the blocks tests: a real S3 server (SeaweedFS) for the object-store contract."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.seaweedfs import SeaweedFS, running_seaweedfs


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS for the session; tests that stop it must start it again."""
    yield from running_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
