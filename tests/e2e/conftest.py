"""Fixtures for end-to-end tests: real `strata serve` and Prometheus processes on loopback.

Every server's log goes to a file under the test's tmp_path; when a test fails, the tail
of each log is attached to its report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.e2e.servers import PrometheusServer, StrataServer, log_tail

_LOGS = pytest.StashKey[list[tuple[str, Path]]]()


def attach_log(node: pytest.Item, name: str, path: Path) -> None:
    """Show the tail of `path` in the report if the test fails."""
    node.stash.setdefault(_LOGS, []).append((name, path))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach server logs to the report of a failed setup, call or teardown."""
    report = yield
    if report.failed:
        for name, path in item.stash.get(_LOGS, []):
            report.sections.append((f"{name} log ({path})", log_tail(path, lines=200)))
    return report


@pytest.fixture
def strata_args() -> tuple[str, ...]:
    """Extra `strata serve` flags of the `strata` fixture; a test module may override it."""
    return ()


@pytest.fixture
def strata(
    request: pytest.FixtureRequest, tmp_path: Path, strata_args: tuple[str, ...]
) -> Iterator[StrataServer]:
    """A started `strata serve` on an empty data directory; stopped after the test."""
    server = StrataServer(tmp_path / "strata-data", tmp_path / "strata.log", strata_args)
    attach_log(request.node, "strata", server.log_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrometheusServer]:
    """A Prometheus, not yet started (the test writes its config); stopped after the test."""
    base_dir = tmp_path / "prometheus"
    base_dir.mkdir()
    server = PrometheusServer(base_dir)
    attach_log(request.node, "prometheus", server.log_path)
    try:
        yield server
    finally:
        server.close()
