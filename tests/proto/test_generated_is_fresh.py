"""The committed proto/*_pb2.py(i) modules are exactly what proto/regenerate.sh writes now."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi")


def generated_names(folder: Path) -> set[str]:
    """Names of the protoc-written modules in `folder`."""
    return {p.name for p in folder.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """proto/ as regenerate.sh writes it today, in a scratch directory."""
    out = tmp_path_factory.mktemp("regenerated")
    subprocess.run(
        ["bash", str(PROTO / "regenerate.sh"), str(out)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    return out / "proto"


def test_every_proto_file_has_its_generated_modules() -> None:
    expected = {p.stem + suffix for p in PROTO.glob("*.proto") for suffix in GENERATED_SUFFIXES}
    assert generated_names(PROTO) == expected, "run: bash proto/regenerate.sh"


def test_no_generated_module_is_missing_or_extra(regenerated: Path) -> None:
    committed, fresh = generated_names(PROTO), generated_names(regenerated)
    assert not fresh - committed, f"missing from proto/: {sorted(fresh - committed)}"
    assert not committed - fresh, f"stale in proto/: {sorted(committed - fresh)}"


@pytest.mark.parametrize("name", sorted(generated_names(PROTO)))
def test_generated_module_is_fresh(regenerated: Path, name: str) -> None:
    fresh = regenerated / name
    assert fresh.exists(), f"proto/{name} has no .proto any more"
    assert (PROTO / name).read_bytes() == fresh.read_bytes(), (
        f"proto/{name} is stale: run bash proto/regenerate.sh"
    )
