"""PromQL series selectors, `metric{name="value", ...}`, parsed into querier matchers.

Only a lone selector is understood (what /api/v1/query_exemplars is asked for in
practice): an optional metric name, then optional braces holding matchers with `=`,
`!=`, `=~`, `!~` and values in double, single or back quotes (Go escapes in the first
two). Label names may be quoted, and a quoted string alone in the braces is the metric
name, as Prometheus 3 writes UTF-8 names.
"""

from __future__ import annotations

import re

from blocks.errors import InvalidRequest
from querier.matchers import MAX_REGEX_BYTES, Matcher, MatchType

METRIC_NAME_LABEL = "__name__"
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
OPERATORS = {"=~": MatchType.RE, "!~": MatchType.NRE, "!=": MatchType.NEQ, "=": MatchType.EQ}
SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
}
# Hex digits after \x, \u and \U.
HEX_ESCAPES = {"x": 2, "u": 4, "U": 8}
MAX_SELECTOR_CHARS = 64 << 10


class _Reader:
    """A cursor over the selector text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos : self.pos + 1]

    def take(self, token: str) -> bool:
        self.skip_space()
        if self.text.startswith(token, self.pos):
            self.pos += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.take(token):
            self.fail(f"expected {token!r}")

    def name(self, pattern: re.Pattern[str]) -> str | None:
        self.skip_space()
        found = pattern.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group()

    def fail(self, why: str) -> None:
        shown = self.text[self.pos : self.pos + 20]
        raise InvalidRequest(f"invalid series selector: {why} at {self.pos} ({shown!r})")

    def string(self) -> str:
        """A quoted string at the cursor, unescaped."""
        quote = self.peek()
        if quote not in ('"', "'", "`"):
            self.fail("expected a quoted string")
        start = self.pos + 1
        if quote == "`":
            end = self.text.find("`", start)
            if end < 0:
                self.fail("unterminated string")
            self.pos = end + 1
            return self.text[start:end]
        out: list[str] = []
        i = start
        while i < len(self.text):
            char = self.text[i]
            if char == quote:
                self.pos = i + 1
                return "".join(out)
            if char == "\n":
                break
            if char != "\\":
                out.append(char)
                i += 1
                continue
            i = self._escape(i + 1, out)
        self.pos = i
        self.fail("unterminated string")
        raise AssertionError("unreachable")

    def _escape(self, i: int, out: list[str]) -> int:
        code = self.text[i : i + 1]
        if code in SIMPLE_ESCAPES:
            out.append(SIMPLE_ESCAPES[code])
            return i + 1
        digits = HEX_ESCAPES.get(code)
        if digits is not None:
            text = self.text[i + 1 : i + 1 + digits]
            if len(text) != digits or not all(c in "0123456789abcdefABCDEF" for c in text):
                self.pos = i
                self.fail(f"bad \\{code} escape")
            value = int(text, 16)
            if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
                self.pos = i
                self.fail(f"\\{code} escape is not a character")
            out.append(chr(value))
            return i + 1 + digits
        octal = self.text[i : i + 3]
        if len(octal) == 3 and all(c in "01234567" for c in octal) and int(octal, 8) < 256:
            out.append(chr(int(octal, 8)))
            return i + 3
        self.pos = i
        self.fail("unknown escape")
        raise AssertionError("unreachable")


def parse_selector(text: str) -> list[Matcher]:
    """The matchers of a selector; InvalidRequest (400) naming what is wrong, also for a
    selector whose matchers all match the empty string (it would select every series)."""
    if len(text) > MAX_SELECTOR_CHARS:
        raise InvalidRequest(f"series selector longer than {MAX_SELECTOR_CHARS} characters")
    reader = _Reader(text)
    matchers: list[Matcher] = []
    metric = reader.name(METRIC_NAME)
    if metric is not None:
        matchers.append(Matcher(MatchType.EQ, METRIC_NAME_LABEL, metric))
    if reader.take("{"):
        while not reader.take("}"):
            matchers.append(_matcher(reader, has_metric=metric is not None))
            if not reader.take(","):
                reader.expect("}")
                break
    elif metric is None:
        reader.fail("expected a metric name or '{'")
    reader.skip_space()
    if reader.pos != len(text):
        reader.fail("unexpected text after the selector")
    if all(m.matches_empty for m in matchers):
        raise InvalidRequest(
            f"series selector {text[:200]!r} needs at least one matcher that does not match "
            "the empty string"
        )
    return matchers


def _matcher(reader: _Reader, *, has_metric: bool) -> Matcher:
    if reader.peek() in ('"', "'", "`"):
        name = reader.string()
        if reader.peek() in (",", "}"):
            if has_metric:
                reader.fail("a metric name is given twice")
            return Matcher(MatchType.EQ, METRIC_NAME_LABEL, name)
    else:
        found = reader.name(LABEL_NAME)
        if found is None:
            reader.fail("expected a label name")
            raise AssertionError("unreachable")
        name = found
    for operator, kind in OPERATORS.items():
        if reader.take(operator):
            value = reader.string()
            if kind in (MatchType.RE, MatchType.NRE) and len(value.encode()) > MAX_REGEX_BYTES:
                raise InvalidRequest(f"regex of matcher on label {name!r} is too long")
            return Matcher(kind, name, value)
    reader.fail("expected one of = != =~ !~")
    raise AssertionError("unreachable")
