"""Label matchers with Prometheus 2.42 semantics; rules in docs/remote-read.md#matchers.

A matcher tests one label's value; a label a series lacks has the value "". Regexes are
RE2, matched against the whole value, with `.` not matching a newline (as in 2.42;
Prometheus 3 added the `s` flag). Compiling one is bounded in memory so no pattern can
take the process down or run for long.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

import re2

from blocks.errors import InvalidRequest, QueryLimitExceeded
from proto import types_pb2

# The longest regex a query may carry, in UTF-8 bytes. Grafana sends a multi-value
# variable set to "All" as one alternation of every value, which reaches a few KiB
# with hundreds of hosts; nothing legitimate comes near this.
MAX_REGEX_BYTES = 16 << 10
# RE2's memory budget for one compiled regex: about two thirds for the program, the
# rest for the lazily built DFA. Patterns whose program does not fit (`\pL{60}`, huge
# nested counts) fail to compile at once instead of using memory; a 64 KiB alternation
# of literals fits. The re2 module keeps its last 128 compiled patterns, so this also
# bounds what it retains.
REGEX_MAX_MEM = 1 << 20
# Characters that make a pattern more than a literal (Go's regexp metacharacters).
REGEX_META = frozenset("\\.+*?()|[]{}^$")
# Longest slice of a pattern shown in an error message.
SHOWN_VALUE_CHARS = 120


class MatchType(IntEnum):
    """How a matcher compares; the numbers are those of the protobuf enum."""

    EQ = 0
    NEQ = 1
    RE = 2
    NRE = 3

    @property
    def operator(self) -> str:
        """The PromQL spelling: =, !=, =~, !~."""
        return ("=", "!=", "=~", "!~")[self]


@dataclass(frozen=True, slots=True)
class Matcher:
    """One label matcher; InvalidRequest at construction if its regex does not compile."""

    type: MatchType
    name: str
    value: str
    _accepts: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    # What the value (the regex itself for =~ and !~, before any negation) matches: the
    # exact values when that is a finite set of literals, else None; and a prefix every
    # value it matches starts with ("" when there is none). Selection uses them to look
    # values up instead of testing each (querier/postings.py).
    pattern_values: frozenset[str] | None = field(init=False, repr=False, compare=False)
    pattern_prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", MatchType(self.type))
        object.__setattr__(self, "_accepts", self._value_test())
        regex = self.type in (MatchType.RE, MatchType.NRE)
        literals = literal_alternatives(self.value) if regex else frozenset([self.value])
        object.__setattr__(self, "pattern_values", literals)
        object.__setattr__(self, "pattern_prefix", literal_prefix(self.value) if regex else "")

    def _value_test(self) -> Callable[[str], bool]:
        if self.type in (MatchType.EQ, MatchType.NEQ):
            wanted = self.value
            return lambda value: value == wanted
        try:
            return regex_test(self.value)
        except re2.error as exc:
            raise InvalidRequest(f"invalid regex in matcher {self}: {_re2_reason(exc)}") from None

    @property
    def negative(self) -> bool:
        """True for != and !~."""
        return self.type in (MatchType.NEQ, MatchType.NRE)

    def matches_value(self, value: str) -> bool:
        """Whether a label value ("" for an absent label) satisfies the matcher."""
        return self._accepts(value) != self.negative

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a series' label set satisfies the matcher."""
        return self.matches_value(labels.get(self.name, ""))

    @property
    def matches_empty(self) -> bool:
        """True if the matcher selects series that lack the label."""
        return self.matches_value("")

    def __str__(self) -> str:
        shown = self.value
        if len(shown) > SHOWN_VALUE_CHARS:
            shown = shown[:SHOWN_VALUE_CHARS] + "…"
        return f"{self.name}{self.type.operator}{json.dumps(shown, ensure_ascii=False)}"


def regex_test(pattern: str) -> Callable[[str], bool]:
    """A test for whole values matching `pattern` (RE2); re2.error if it does not compile."""
    options = re2.Options()
    options.max_mem = REGEX_MAX_MEM
    # Only yes/no is wanted: without capture groups RE2 answers from its DFA alone.
    options.never_capture = True
    options.log_errors = False
    # Compiled alone, not wrapped in ^(?:…)$, so that `a)|(b` is refused as Prometheus
    # refuses it; fullmatch anchors both ends exactly as that wrapper does.
    regex = re2.compile(pattern, options)
    literals = literal_alternatives(pattern)
    if literals is not None:
        return literals.__contains__
    if pattern == ".*":
        return lambda value: "\n" not in value
    if pattern == ".+":
        return lambda value: value != "" and "\n" not in value
    return lambda value: regex.fullmatch(value) is not None


def literal_alternatives(pattern: str) -> frozenset[str] | None:
    """The exact values `a|b\\.c|` matches, or None if the pattern is more than literals.

    A backslash before a metacharacter makes it literal; any other escape, and any
    unescaped metacharacter but `|`, makes the pattern a real regex.
    """
    alternatives: list[str] = []
    current: list[str] = []
    escaped = False
    for char in pattern:
        if escaped:
            if char not in REGEX_META:
                return None
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "|":
            alternatives.append("".join(current))
            current = []
        elif char in REGEX_META:
            return None
        else:
            current.append(char)
    if escaped:
        return None
    alternatives.append("".join(current))
    return frozenset(alternatives)


def literal_prefix(pattern: str) -> str:
    """A literal every whole-value match of `pattern` starts with ("" if none is sure).

    The characters before the first metacharacter (an escaped metacharacter counts as
    its character), less the last one when a quantifier follows it; none at all when an
    alternation outside any group or class could start elsewhere (`ab|cd`).
    """
    prefix: list[str] = []
    at = 0
    while at < len(pattern):
        char = pattern[at]
        if char == "\\" and at + 1 < len(pattern) and pattern[at + 1] in REGEX_META:
            prefix.append(pattern[at + 1])
            at += 2
            continue
        if char in REGEX_META:
            if char in "*+?{" and prefix:
                prefix.pop()
            break
        prefix.append(char)
        at += 1
    if not prefix or _has_top_level_alternation(pattern):
        return ""
    return "".join(prefix)


def _has_top_level_alternation(pattern: str) -> bool:
    depth = 0
    in_class = escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth <= 0:
            return True
    return False


def _re2_reason(exc: re2.error) -> str:
    detail = exc.args[0] if exc.args else ""
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return str(detail)


def matchers_from_proto(
    query_index: int,
    protos: Iterable[types_pb2.LabelMatcher],
    *,
    max_regex_bytes: int = MAX_REGEX_BYTES,
) -> list[Matcher]:
    """The matchers of one remote-read query, refusing what Strata will not run.

    InvalidRequest (400) for an unknown type, a regex that does not compile, or a
    selector whose matchers all match the empty string (it would select every series);
    QueryLimitExceeded for a regex over `max_regex_bytes`.
    """
    matchers = [_from_proto(query_index, p, max_regex_bytes) for p in protos]
    if all(m.matches_empty for m in matchers):
        shown = "{" + ", ".join(str(m) for m in matchers) + "}"
        raise InvalidRequest(
            f"query {query_index}: selector {shown} needs at least one matcher that does "
            "not match the empty string; as sent it would select every series"
        )
    return matchers


def _from_proto(query_index: int, proto: types_pb2.LabelMatcher, max_regex_bytes: int) -> Matcher:
    try:
        kind = MatchType(proto.type)
    except ValueError:
        raise InvalidRequest(
            f"query {query_index}: matcher on label {proto.name!r} has unknown type {proto.type}"
        ) from None
    if kind in (MatchType.RE, MatchType.NRE):
        size = len(proto.value.encode())
        if size > max_regex_bytes:
            raise QueryLimitExceeded(
                f"query {query_index}: regex of matcher on label {proto.name!r} has {size} "
                f"bytes, over the limit of {max_regex_bytes}",
                limit="query_max_regex_bytes",
            )
    try:
        return Matcher(kind, proto.name, proto.value)
    except InvalidRequest as exc:
        raise InvalidRequest(f"query {query_index}: {exc}") from None
