"""The Dockerfile's instructions and the .dockerignore rules, read the way Docker reads
them, so the build context can be checked without a Docker engine."""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Instruction:
    """One Dockerfile instruction: its keyword (upper case) and its text."""

    keyword: str
    text: str

    @property
    def words(self) -> list[str]:
        """The arguments: JSON form (`["a", "b"]`) or shell words."""
        stripped = self.text.strip()
        if stripped.startswith("["):
            words: list[str] = json.loads(stripped)
            return words
        return shlex.split(stripped)


def read_instructions(text: str) -> list[Instruction]:
    """Instructions in order; comments dropped, continuation lines joined."""
    out: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, rest = full.strip().partition(" ")
        out.append(Instruction(keyword.upper(), rest.strip()))
    return out


def copy_sources(instructions: list[Instruction]) -> list[str]:
    """What COPY and ADD take from the build context (not from another stage)."""
    sources: list[str] = []
    for instruction in instructions:
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        words = instruction.words
        flags = [w for w in words if w.startswith("--")]
        if any(f.startswith("--from=") for f in flags):
            continue
        paths = [w for w in words if not w.startswith("--")]
        sources += paths[:-1]
    return sources


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex over '/'-separated relative paths."""
    pattern = os.path.normpath(pattern.lstrip("/"))
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def _literal_prefix(pattern: str) -> str:
    """The part of a pattern before its first wildcard."""
    found = re.search(r"[*?\[]", pattern)
    return pattern if found is None else pattern[: found.start()]


class DockerIgnore:
    """The rules of a .dockerignore: the last pattern matching a path, or one of its
    parent directories, decides; `!` patterns bring paths back."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, str, re.Pattern[str]]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = line[1:].strip() if negated else line
            self.rules.append((negated, pattern.lstrip("/"), _pattern_regex(pattern)))

    def excluded(self, path: str) -> bool:
        """Whether a relative path stays out of the build context."""
        parts = path.split("/")
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for negated, _, regex in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                verdict = not negated
        return verdict

    def may_include_below(self, directory: str) -> bool:
        """Whether some `!` rule could bring back a path inside an excluded directory."""
        for negated, pattern, _ in self.rules:
            prefix = _literal_prefix(pattern)
            inside = directory + "/"
            if negated and (prefix.startswith(inside) or inside.startswith(prefix)):
                return True
        return False


def context_files(root: Path, ignore: DockerIgnore) -> list[str]:
    """The relative paths of the files Docker would send as the build context."""
    files: list[str] = []
    for current, dirs, names in os.walk(root):
        base = Path(current).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = sorted(
            d
            for d in dirs
            if not ignore.excluded(prefix + d) or ignore.may_include_below(prefix + d)
        )
        files += [prefix + n for n in sorted(names) if not ignore.excluded(prefix + n)]
    return files
