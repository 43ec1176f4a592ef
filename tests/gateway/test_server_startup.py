"""What `strata serve` does before it starts answering."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.server import GatewayServer, serve


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Leave the collector as the test found it: nothing frozen."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


def test_startup_objects_are_frozen_before_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unfrozen: None
) -> None:
    """The imports' and the app's objects are out of full collections once the server
    runs: the collector would otherwise walk them at every one."""
    frozen_when_run: list[int] = []
    monkeypatch.setattr(
        GatewayServer, "run", lambda self: frozen_when_run.append(gc.get_freeze_count())
    )
    assert serve(GatewayConfig(data_dir=tmp_path / "data", listen="127.0.0.1:9")) == 0
    # Every module loaded so far holds at least a few objects; well over this many.
    (frozen,) = frozen_when_run
    assert frozen > 10_000
