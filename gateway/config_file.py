"""The YAML config file: one mapping of setting names to values, read with PyYAML's safe loader.

The top level holds the settings of `strata serve` (which `strata query`, `strata inspect`,
`strata verify` and `strata import` read a part of); the `compact:` section holds those of
`strata compact`, which takes `data_dir`, `bucket_url` and `log_level` from the top level
when it does not set them. Each value is kept as the text written in the file and read
like the setting's STRATA_* variable, so a file, a variable and a flag accept the same
values. Layout and precedence: docs/configuration.md.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from blocks.errors import StrataError
from compactor.config import compactor_settings
from gateway.config import ConfigError, FileValue, settings

# The variable naming the config file when no --config flag does.
CONFIG_ENV = "STRATA_CONFIG"
# The section of `strata compact`; its settings share names with the top level's.
COMPACT_SECTION = "compact"
# Where the compactor works on the same bucket as the gateway: written once at the top.
INHERITED_BY_COMPACT = ("data_dir", "bucket_url", "log_level")
_NULL_TAG = "tag:yaml.org,2002:null"


class ConfigFileError(ConfigError):
    """A config file that cannot be used, with every problem found in it, one per line."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        first = problems[0]
        self.problems = list(problems)
        self.key, self.value, self.why, self.where = first.key, first.value, first.why, first.where
        lines = [p.describe() for p in self.problems]
        if len(lines) > 1:
            lines = [f"{len(lines)} problems in the config file:", *(f"  {x}" for x in lines)]
        StrataError.__init__(self, "\n".join(lines))


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """The values a config file sets, by section, each with the line it is written on."""

    path: Path
    serve: dict[str, FileValue] = field(default_factory=dict)
    """The top level: settings of `strata serve`."""
    compact: dict[str, FileValue] = field(default_factory=dict)
    """The `compact:` section as written, without what it takes from the top level."""

    def compact_values(self) -> dict[str, FileValue]:
        """What `strata compact` reads: its section, then the shared top-level settings."""
        inherited = {k: v for k, v in self.serve.items() if k in INHERITED_BY_COMPACT}
        return inherited | self.compact


def config_path(flag: str | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The config file named by --config, else by STRATA_CONFIG; None when neither does."""
    path = flag or environ.get(CONFIG_ENV)
    return Path(path) if path else None


def load_config_file(
    flag: str | None, environ: Mapping[str, str] = os.environ
) -> ConfigFile | None:
    """The config file named by --config or STRATA_CONFIG, read; None when none is named."""
    path = config_path(flag, environ)
    return None if path is None else read_config_file(path)


def read_config_file(path: Path) -> ConfigFile:
    """Read and check the layout of a config file; ConfigFileError listing every unknown key,
    misplaced section or value that is not a single scalar, each with its line."""
    loaded, problems = parse_config_file(path)
    if problems:
        raise ConfigFileError(problems)
    return loaded


def parse_config_file(path: Path) -> tuple[ConfigFile, list[ConfigError]]:
    """The values of a config file that are laid out right, and the problems of the others
    in line order (`strata config check` goes on to check the values it has)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return ConfigFile(path), [ConfigError("", None, f"cannot read: {why}", where=str(path))]
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        return ConfigFile(path), [_yaml_problem(path, exc)]
    reader = _Reader(path)
    loaded = reader.document(root)
    return loaded, sorted(reader.problems, key=line_of)


def line_of(problem: ConfigError) -> int:
    """The line a problem is written on; 0 for one of the whole file."""
    line = problem.where.rpartition(":")[2]
    return int(line) if line.isdigit() else 0


def _yaml_problem(path: Path, exc: yaml.YAMLError) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc)
    return ConfigError("", None, f"not valid YAML: {problem}", where=where)


@dataclass(slots=True)
class _Reader:
    """Walks the composed YAML tree, collecting values and problems."""

    path: Path
    problems: list[ConfigError] = field(default_factory=list)

    def document(self, root: yaml.Node | None) -> ConfigFile:
        loaded = ConfigFile(self.path)
        if root is None or _is_null(root):
            return loaded  # an empty file: every setting at its default
        if not isinstance(root, yaml.MappingNode):
            self.problem(root, "", "must be a mapping of setting names to values")
            return loaded
        serve_names = _names(settings())
        for key_node, value_node in self.entries(root, ""):
            key = key_node.value
            if key == COMPACT_SECTION:
                self.compact_section(value_node, loaded.compact)
            elif key in serve_names:
                self.setting(key_node, value_node, "", loaded.serve)
            else:
                self.unknown(key_node, "", serve_names | {COMPACT_SECTION})
        return loaded

    def compact_section(self, node: yaml.Node, into: dict[str, FileValue]) -> None:
        if _is_null(node):
            return  # `compact:` with every line under it commented out
        if not isinstance(node, yaml.MappingNode):
            self.problem(node, COMPACT_SECTION, "must be a mapping of compactor settings")
            return
        names = _names(compactor_settings())
        for key_node, value_node in self.entries(node, COMPACT_SECTION + "."):
            if key_node.value in names:
                self.setting(key_node, value_node, COMPACT_SECTION + ".", into)
            else:
                self.unknown(key_node, COMPACT_SECTION + ".", names)

    def entries(
        self, node: yaml.MappingNode, prefix: str
    ) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
        """The pairs of a mapping whose keys are plain names written once."""
        seen: dict[str, int] = {}
        out: list[tuple[yaml.ScalarNode, yaml.Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, prefix.rstrip("."), "a key must be a setting name")
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in seen:
                why = f"set twice (first on line {seen[key_node.value]})"
                self.problem(key_node, prefix + key_node.value, why)
                continue
            seen[key_node.value] = line
            out.append((key_node, value_node))
        return out

    def setting(
        self, key_node: yaml.Node, node: yaml.Node, prefix: str, into: dict[str, FileValue]
    ) -> None:
        key = key_node.value
        if isinstance(node, yaml.ScalarNode) and node.tag != _NULL_TAG:
            into[key] = FileValue(node.value, self.where(key_node), prefix + key)
        elif _is_null(node):
            why = "has no value (write '' for an empty one, or leave the key out for the default)"
            self.problem(key_node, prefix + key, why)
        else:
            kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
            self.problem(key_node, prefix + key, f"must be a single value, not a {kind}")

    def unknown(self, key_node: yaml.Node, prefix: str, names: set[str]) -> None:
        key = str(key_node.value)
        why = "unknown setting"
        if not prefix and key in _names(compactor_settings()):
            why += f"; it is a setting of strata compact: put it under {COMPACT_SECTION}:"
        elif prefix and key in _names(settings()):
            why += "; it is a setting of strata serve: put it at the top level"
        elif close := difflib.get_close_matches(key, sorted(names), n=1):
            why += f"; did you mean {close[0]}?"
        self.problem(key_node, prefix + key, why)

    def problem(self, node: yaml.Node, key: str, why: str) -> None:
        self.problems.append(ConfigError(key, None, why, where=self.where(node)))

    def where(self, node: yaml.Node) -> str:
        return f"{self.path}:{node.start_mark.line + 1}"


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _names(fields: Sequence[dataclasses.Field[Any]]) -> set[str]:
    return {f.name for f in fields}
