"""Every command is documented: --help text, a README mention, every setting in --help."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.config import settings

REPO = Path(__file__).resolve().parents[1]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """The `strata` subcommands by name."""
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("strata has no subcommands")


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_command_has_help_and_a_readme_mention(name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", name, "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert result.stdout.startswith("usage: strata " + name)
    assert len(subcommands()[name].description or "") > 20
    assert f"`strata {name}`" in (REPO / "README.md").read_text()


def test_every_setting_is_a_serve_flag_with_help() -> None:
    text = subcommands()["serve"].format_help()
    for field in settings():
        flag = "--" + field.name.replace("_", "-")
        assert flag in text, f"setting {field.name} has no flag"
        assert "STRATA_" + field.name.upper() in text
        assert field.metadata.get("help"), f"setting {field.name} has no help"


def test_readme_starts_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    blocks = text.split("```sh\n")[1:3]
    assert blocks[0].split("```")[0].strip().endswith("strata serve")
    assert blocks[1].split("```")[0].strip() == "bash tests/run.sh"
    assert "bash tests/run.sh" in (REPO / ".ci" / "run").read_text()
