"""`strata config check FILE` and `strata config defaults`: a config file checked the way
every command would read it, every problem named by file, line, key and reason."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from compactor.config import CompactorConfig, build_compactor_config, compactor_settings
from gateway.config import ConfigError, FileValue, GatewayConfig, build_config, settings
from gateway.config_file import (
    COMPACT_SECTION,
    INHERITED_BY_COMPACT,
    ConfigFile,
    line_of,
    parse_config_file,
)

T = TypeVar("T")


@dataclass(slots=True)
class CheckResult:
    """What `strata config check` found: problems, or the settings that are not defaults."""

    problems: list[str] = field(default_factory=list)
    """One `FILE:LINE: key: reason` line each, in line order."""
    changed: list[str] = field(default_factory=list)


def add_config_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`strata config check FILE` and `strata config defaults`."""
    config = commands.add_parser(
        "config",
        help="check a YAML config file, or print one with every setting at its default",
        description="Check a YAML config file (--config FILE or STRATA_CONFIG of the other "
        "commands) the way strata serve and strata compact would read it, or print a "
        "complete config file of every setting with its default and meaning.",
    )
    what = config.add_subparsers(dest="config_command", required=True, metavar="WHAT")
    check = what.add_parser(
        "check",
        help="check a config file: 'ok' and what it changes, or each problem",
        description="Read FILE as strata serve (top level) and strata compact (the compact: "
        "section) would, load the files it names (auth file, TLS certificate and key, "
        "retention overrides), and print 'FILE: ok' with the settings that differ from "
        "the defaults, or one 'FILE:LINE: key: reason' line per problem and exit 1. "
        "STRATA_* variables are not read: only the file is checked.",
    )
    check.add_argument("file", metavar="FILE", type=Path, help="the YAML config file")
    what.add_parser(
        "defaults",
        help="print a config file with every setting at its default",
        description="Print a complete YAML config file: every setting at its default, "
        "with its meaning, flag and environment variable as comments; a starting point "
        "to edit.",
    )


def run_config(args: argparse.Namespace) -> int:
    """Run `strata config …`; the exit status (0 ok, 1 problems found)."""
    if args.config_command == "defaults":
        from gateway.config_reference import render_defaults

        sys.stdout.write(render_defaults())
        return 0
    result = check_config_file(args.file)
    if result.problems:
        print("\n".join(result.problems))
        return 1
    changed = len(result.changed)
    summary = f"{changed} setting{'s' if changed != 1 else ''} differ from the defaults"
    print(f"{args.file}: ok ({summary if changed else 'every setting at its default'})")
    for line in result.changed:
        print(f"  {line}")
    return 0


def check_config_file(path: Path) -> CheckResult:
    """Every problem of the file, or, when there is none, what it sets to a non-default."""
    loaded, found = parse_config_file(path)
    gateway = _check_section(
        lambda values: build_config({}, {}, values), settings(), loaded.serve, found
    )
    if gateway is not None:
        _check_gateway_files(gateway, loaded, found)
    compactor = _check_section(
        lambda values: build_compactor_config({}, {}, values),
        compactor_settings(),
        loaded.compact_values(),
        found,
    )
    # A rule tying two settings may name one the file does not set: it has no line, and
    # comes after those that do.
    found = sorted((p.at(str(path)) for p in found), key=lambda p: line_of(p) or sys.maxsize)
    # A top-level value the compact: section inherits is reported once, not twice.
    result = CheckResult(list(dict.fromkeys(p.describe() for p in found)))
    if not result.problems and gateway is not None and compactor is not None:
        result.changed = [
            *_changed(gateway, settings(), ""),
            *_changed(compactor, compactor_settings(), COMPACT_SECTION + ".", loaded),
        ]
    return result


def _check_section(
    build: Callable[[Mapping[str, FileValue]], T],
    fields: Sequence[dataclasses.Field[Any]],
    values: Mapping[str, FileValue],
    found: list[ConfigError],
) -> T | None:
    """Each value alone first, so that every bad one is named, then the good ones together
    for the rules that tie two settings (a certificate needs its key); the settings object
    when every value is good."""
    good = dict(values)
    for f in fields:
        if f.name not in values:
            continue
        try:
            build({f.name: values[f.name]})
        except ConfigError as exc:
            if exc.key.partition("[")[0] == f.name:
                found.append(exc)
                del good[f.name]
    try:
        built = build(good)
    except ConfigError as exc:
        found.append(exc)
        return None
    return built if good == values else None


def _check_gateway_files(
    config: GatewayConfig, loaded: ConfigFile, found: list[ConfigError]
) -> None:
    """Load the auth file, the TLS pair and the limits file as `strata serve` does when
    it starts."""
    from gateway.auth import load_credentials
    from gateway.server import check_tls_files
    from gateway.tenant_limits import Limits

    checks: list[tuple[str, Callable[[], object]]] = [
        ("auth_file", lambda: config.auth_file and load_credentials(Path(config.auth_file))),
        ("tls_cert_file", lambda: check_tls_files(config)),
        ("limits_file", lambda: Limits(config)),
    ]
    for key, check in checks:
        try:
            check()
        except ConfigError as exc:
            written = loaded.serve.get(exc.key) or loaded.serve.get(key)
            found.append(written.locate(exc) if written else exc)


def _changed(
    built: GatewayConfig | CompactorConfig,
    fields: Sequence[dataclasses.Field[Any]],
    prefix: str,
    loaded: ConfigFile | None = None,
) -> list[str]:
    """`key: value` of each setting the file moves away from its default."""
    from gateway.config_reference import yaml_literal

    lines = []
    for f in fields:
        value = getattr(built, f.name)
        if value == f.default:
            continue
        line = f"{prefix}{f.name}: {yaml_literal(value)}"
        if loaded is not None and f.name in INHERITED_BY_COMPACT and f.name not in loaded.compact:
            line += " (the top level's)"
        lines.append(line)
    return lines
