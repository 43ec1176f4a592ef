"""What the `strata` command accepts, read from its own --help: the check that manifests,
the compose file and the image only use flags and settings that exist."""

from __future__ import annotations

import functools
import re
import subprocess
import sys

from tests.deploy.kube import REPO

HELP_TIMEOUT_S = 60
# The subcommands the deployment runs; each has its own flags and settings.
COMMANDS = ("serve", "query", "compact")


@functools.cache
def flags(command: str) -> frozenset[str]:
    """Every --flag that `strata COMMAND --help` lists."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", command, "--help"],
        capture_output=True,
        text=True,
        timeout=HELP_TIMEOUT_S,
        cwd=REPO,
        check=True,
    )
    return frozenset(re.findall(r"--[a-z0-9][a-z0-9-]*", result.stdout))


def flags_in(args: list[str]) -> list[str]:
    """The --flags among command-line arguments (`--x=1` counts as `--x`)."""
    return [arg.split("=", 1)[0] for arg in args if arg.startswith("--")]


def setting_flag(variable: str) -> str:
    """The flag a STRATA_* variable stands for: STRATA_HEAD_MAX_BYTES → --head-max-bytes."""
    return "--" + variable.removeprefix("STRATA_").lower().replace("_", "-")


def check_command_line(args: list[str], environment: dict[str, str]) -> list[str]:
    """Problems with one `strata` invocation: an unknown subcommand, a flag or a STRATA_*
    variable that the subcommand does not have. Empty when all is well."""
    if not args or args[0] not in COMMANDS:
        return [f"not a strata command the deployment runs: {args}"]
    command, known = args[0], flags(args[0])
    problems = [
        f"strata {command} has no {flag}" for flag in flags_in(args[1:]) if flag not in known
    ]
    problems += [
        f"strata {command} reads no {name} (no {setting_flag(name)})"
        for name in environment
        if name.startswith("STRATA_") and setting_flag(name) not in known
    ]
    return problems
