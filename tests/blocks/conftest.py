"""Fixtures of the block tests: an empty bucket on each backend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from blocks.objstore.base import ObjectStore
from blocks.objstore.factory import open_store
from blocks.objstore.local import LocalStore
from tests.support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS


@pytest.fixture(params=["local", "s3"])
def bucket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    """An empty bucket: a local directory, then a fresh prefix of the session's SeaweedFS."""
    if request.param == "local":
        with LocalStore(tmp_path / "bucket") as store:
            yield store
        return
    seaweedfs: SeaweedFS = request.getfixturevalue("seaweedfs")
    url = seaweedfs.store_url(f"test-{uuid.uuid4().hex[:12]}")
    with open_store(url, access_key=ACCESS_KEY, secret_key=SECRET_KEY) as store:
        yield store
