"""docs/troubleshooting.md quotes what Strata says: every message it explains must still
be one the code prints or answers, and every rejection reason one the code counts, so
the page cannot drift from the code unnoticed."""

from __future__ import annotations

import ast
import re

import pytest

from tests.deploy.kube import REPO

PAGE = REPO / "docs" / "troubleshooting.md"
PACKAGES = ("gateway", "querier", "compactor", "blocks")
# Stands for a value formatted into a message, in the page (…) and in the code.
HOLE = "\x00"
MIN_FRAGMENT_CHARS = 6


def code_strings() -> list[str]:
    """Every string literal of the packages; the values formatted into f-strings and
    %-style log messages become HOLE. Adjacent literals are one string, as Python joins
    them."""
    strings: list[str] = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.JoinedStr):
                    strings.append(
                        "".join(
                            part.value
                            if isinstance(part, ast.Constant) and isinstance(part.value, str)
                            else HOLE
                            for part in node.values
                        )
                    )
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    strings.append(re.sub(r"%[-0-9.]*[sdrf]", HOLE, node.value))
    return strings


def table_rows(text: str, header: str) -> list[str]:
    """The first cells (their code span) of the tables whose first header cell is `header`."""
    cells: list[str] = []
    in_table = False
    for line in text.splitlines():
        if line.startswith(f"| {header} |"):
            in_table = True
            continue
        if not line.startswith("|"):
            in_table = False
            continue
        if in_table and not line.startswith("| ---"):
            first = line.split(" | ")[0].removeprefix("| ")
            cells.append(first)
    return cells


def message_pattern(message: str) -> re.Pattern[str]:
    """A quoted message as a pattern over code strings: its literal pieces, in order."""
    pieces = message.split("…")
    return re.compile(".*?".join(re.escape(p) for p in pieces), re.DOTALL)


@pytest.fixture(scope="module")
def strings() -> list[str]:
    """The code's string literals."""
    return code_strings()


def test_the_page_explains_strata_messages() -> None:
    rows = table_rows(PAGE.read_text(), "Strata says")
    assert len(rows) >= 40


def test_every_quoted_message_is_one_the_code_has(strings: list[str]) -> None:
    for cell in table_rows(PAGE.read_text(), "Strata says"):
        quoted = re.fullmatch(r"`([^`]+)`", cell)
        assert quoted, f"not one quoted message: {cell}"
        message = quoted.group(1)
        assert max(len(p) for p in message.split("…")) >= MIN_FRAGMENT_CHARS, message
        pattern = message_pattern(message)
        assert any(pattern.search(s) for s in strings), f"no code prints {message!r}"


def test_every_rejection_reason_is_one_the_code_counts(strings: list[str]) -> None:
    reasons = [
        code
        for cell in table_rows(PAGE.read_text(), "reason")
        for code in re.findall(r"`([a-z0-9_]+)`", cell)
    ]
    assert reasons
    for reason in reasons:
        assert reason in strings, f"no code counts samples refused as {reason!r}"
