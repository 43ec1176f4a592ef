"""`strata query` refuses a local bucket that does not exist instead of serving nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main


def test_a_missing_local_bucket_is_an_error_not_an_empty_bucket(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "typo"
    code = main(["query", "--data-dir", str(missing), "--listen", "127.0.0.1:1"])
    assert code == 1
    assert "no bucket directory" in capsys.readouterr().err
    assert not missing.exists(), "nothing created"
