"""Label matchers: Prometheus 2.42 semantics, refusals, and selection through block postings."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import re2
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from blocks.errors import InvalidRequest, QueryLimitExceeded
from blocks.index import BlockIndex, decode_index
from blocks.meta import INDEX_FILENAME
from blocks.ulid import new_ulid
from blocks.writer import BlockWriter
from proto import types_pb2
from querier.matchers import (
    MAX_REGEX_BYTES,
    Matcher,
    MatchType,
    literal_alternatives,
    literal_prefix,
    matchers_from_proto,
)
from querier.postings import select_series

EQ, NEQ, RE, NRE = MatchType.EQ, MatchType.NEQ, MatchType.RE, MatchType.NRE
LabelSet = tuple[tuple[str, str], ...]


def write_index(root: Path, series: Sequence[LabelSet]) -> BlockIndex:
    """A real block holding `series` (one sample each), its index read back from disk."""
    block_id = new_ulid()
    writer = BlockWriter(root, block_id)
    for labels in sorted(set(series)):
        writer.add_series(list(labels), np.array([1000]), np.array([1.0]))
    writer.finish(tenant="t")
    return decode_index((root / block_id / INDEX_FILENAME).read_bytes())


def proto(kind: int, name: str, value: str) -> types_pb2.LabelMatcher:
    return types_pb2.LabelMatcher(type=kind, name=name, value=value)  # type: ignore[arg-type]


SEMANTICS: list[tuple[MatchType, str, str, dict[str, str], bool]] = [
    # Equality, and the empty value standing for an absent label.
    (EQ, "foo", "bar", {"foo": "bar"}, True),
    (EQ, "foo", "bar", {"foo": "barx"}, False),
    (EQ, "foo", "bar", {"other": "bar"}, False),
    (EQ, "foo", "", {}, True),
    (EQ, "foo", "", {"foo": "bar"}, False),
    (NEQ, "foo", "", {}, False),
    (NEQ, "foo", "", {"foo": "bar"}, True),
    (NEQ, "foo", "bar", {}, True),
    (NEQ, "foo", "bar", {"foo": "bar"}, False),
    (NEQ, "foo", "bar", {"foo": "baz"}, True),
    # Regexes that match "" select series without the label.
    (RE, "foo", ".*", {}, True),
    (RE, "foo", ".*", {"foo": "anything"}, True),
    (RE, "foo", "|x", {}, True),
    (RE, "foo", "|x", {"foo": "x"}, True),
    (RE, "foo", "|x", {"foo": "y"}, False),
    (RE, "foo", ".+", {}, False),
    (RE, "foo", ".+", {"foo": "x"}, True),
    (NRE, "foo", "", {}, False),
    (NRE, "foo", "", {"foo": "x"}, True),
    (NRE, "foo", ".*", {}, False),
    (NRE, "foo", "a|b", {}, True),
    (NRE, "foo", "a|b", {"foo": "a"}, False),
    (NRE, "foo", "a|b", {"foo": "c"}, True),
    # Fully anchored: the whole value must match.
    (RE, "foo", "ba", {"foo": "bar"}, False),
    (RE, "foo", "ar", {"foo": "bar"}, False),
    (RE, "foo", "ba.*", {"foo": "bar"}, True),
    (RE, "foo", "a|b", {"foo": "ab"}, False),
    (RE, "foo", "^bar$", {"foo": "bar"}, True),
    (RE, "foo", "bar", {"foo": "bar\n"}, False),
    # Literal alternations, escapes included.
    (RE, "foo", "a|b\\.c", {"foo": "b.c"}, True),
    (RE, "foo", "a|b\\.c", {"foo": "bxc"}, False),
    (RE, "foo", "a|b.c", {"foo": "bxc"}, True),
    # `.` does not match a newline in 2.42 (Prometheus 3 changed that); (?s) still works.
    (RE, "foo", ".*", {"foo": "a\nb"}, False),
    (RE, "foo", ".+", {"foo": "\n"}, False),
    (RE, "foo", "a.b", {"foo": "a\nb"}, False),
    (RE, "foo", "(?s)a.b", {"foo": "a\nb"}, True),
    (NRE, "foo", ".*", {"foo": "a\nb"}, True),
    # UTF-8: `.` is one code point, classes know Unicode.
    (RE, "foo", "ü.|日本", {"foo": "üx"}, True),
    (RE, "foo", "ü.|日本", {"foo": "日本"}, True),
    (RE, "foo", ".", {"foo": "é"}, True),
    (RE, "foo", "..", {"foo": "é"}, False),
    (RE, "foo", "\\p{Han}+", {"foo": "日本"}, True),
    (RE, "foo", "(?i)STRASSE|ÜBER", {"foo": "über"}, True),
    (EQ, "ключ", "значение", {"ключ": "значение"}, True),
]


@pytest.mark.parametrize(
    ("kind", "name", "value", "labels", "expected"),
    SEMANTICS,
)
def test_matcher_semantics(
    kind: MatchType, name: str, value: str, labels: dict[str, str], expected: bool
) -> None:
    matcher = Matcher(kind, name, value)
    assert matcher.matches(labels) is expected
    assert matcher.matches_empty is matcher.matches({})


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        ("(unclosed", "missing )"),
        ("bar|(baz", "missing )"),
        # Wrapped in ^(?:…)$ this would compile; Prometheus refuses it, and so do we.
        ("a)|(b", "unexpected )"),
        ("[z-a]", "invalid character class range"),
        ("a**", "bad repetition operator"),
        ("x{1001}", "invalid repetition size"),
    ],
)
def test_invalid_regex_is_a_clear_error_naming_the_matcher(pattern: str, detail: str) -> None:
    for kind in (RE, NRE):
        with pytest.raises(InvalidRequest) as raised:
            Matcher(kind, "job", pattern)
        assert raised.value.http_status == 400
        assert f'job{kind.operator}"{pattern}"' in raised.value.reason
        assert f": {detail}" in raised.value.reason


def test_invalid_regex_from_a_query_names_the_query() -> None:
    with pytest.raises(InvalidRequest, match=r'^query 2: invalid regex in matcher job=~"\(x"'):
        matchers_from_proto(2, [proto(EQ, "__name__", "up"), proto(RE, "job", "(x")])


@pytest.mark.parametrize(
    ("pattern", "value"),
    [
        ("(a*)*b", "a" * 2048),
        ("(a|aa)*c", "a" * 2048),
        ("(x+x+)+y", "x" * 2048),
        ("(.*a){20}", "a" * 2047 + "b"),
        ("(?:.*a.{100}){10}", "ab" * 1024),
        ("(\\w+\\s?)*$", "word " * 400 + "!"),
    ],
)
def test_backtracking_bombs_run_in_linear_time(pattern: str, value: str) -> None:
    # Each would take longer than the universe's age under a backtracking engine; RE2
    # answers in milliseconds. The suite's faulthandler timeout bounds a hang.
    assert Matcher(RE, "foo", pattern).matches({"foo": value}) is False
    assert Matcher(NRE, "foo", pattern).matches({"foo": value}) is True


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        ("((a{100}){100}){100}", "invalid repetition size"),
        ("(a{1000}){1000}", "invalid repetition size"),
        ("\\pL{1000}", "pattern too large"),
        ("(?i)\\pL{100}", "pattern too large"),
        (".{1000}" * 2000, "pattern too large"),
    ],
)
def test_memory_bombs_are_refused_at_compile(pattern: str, detail: str) -> None:
    with pytest.raises(InvalidRequest, match=detail):
        Matcher(RE, "foo", pattern)


def test_regex_over_the_size_limit_is_refused() -> None:
    at_limit = "|".join(f"host-{i:07d}" for i in range(MAX_REGEX_BYTES // 13))
    at_limit += "x" * (MAX_REGEX_BYTES - len(at_limit))
    [matcher] = matchers_from_proto(0, [proto(RE, "host", at_limit)])
    assert matcher.matches({"host": "host-0000042"})
    # The limit counts UTF-8 bytes, not characters.
    over = at_limit[:-1] + "é"
    for kind in (RE, NRE):
        with pytest.raises(QueryLimitExceeded, match="limit of 16384") as raised:
            matchers_from_proto(0, [proto(EQ, "__name__", "up"), proto(kind, "host", over)])
        assert raised.value.limit == "query_max_regex_bytes"
    # Equality values are not regexes and are not bound by it.
    assert matchers_from_proto(0, [proto(EQ, "host", over)])[0].matches({"host": over})


@pytest.mark.parametrize(
    "matchers",
    [
        [],
        [(RE, "foo", ".*")],
        [(RE, "foo", "|x")],
        [(EQ, "foo", "")],
        [(NEQ, "foo", "bar"), (NRE, "job", "a|b"), (RE, "x", ".*")],
    ],
)
def test_selector_that_matches_every_series_is_refused(
    matchers: list[tuple[MatchType, str, str]],
) -> None:
    with pytest.raises(InvalidRequest, match=r"^query 1: .*would select every series") as raised:
        matchers_from_proto(1, [proto(*m) for m in matchers])
    assert raised.value.http_status == 400


@pytest.mark.parametrize(
    "matchers",
    [
        [(RE, "__name__", ".+")],
        [(NEQ, "foo", "")],
        [(NRE, "foo", "")],
        [(RE, "foo", ".*"), (EQ, "job", "node")],
    ],
)
def test_selector_with_one_value_matcher_is_accepted(
    matchers: list[tuple[MatchType, str, str]],
) -> None:
    got = matchers_from_proto(0, [proto(*m) for m in matchers])
    assert [(m.type, m.name, m.value) for m in got] == matchers


def test_unknown_matcher_type_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="unknown type 7"):
        matchers_from_proto(0, [proto(EQ, "job", "x"), proto(7, "job", "x")])


def test_proto_types_map_to_their_operators() -> None:
    got = matchers_from_proto(
        0, [proto(EQ, "a", "1"), proto(NEQ, "b", "2"), proto(RE, "c", "3"), proto(NRE, "d", "4")]
    )
    assert [str(m) for m in got] == ['a="1"', 'b!="2"', 'c=~"3"', 'd!~"4"']
    wire = types_pb2.LabelMatcher
    assert [int(t) for t in (wire.EQ, wire.NEQ, wire.RE, wire.NRE)] == [int(k) for k in MatchType]


def test_literal_alternatives_are_recognised_only_when_exact() -> None:
    assert literal_alternatives("a|b\\.c|") == frozenset({"a", "b.c", ""})
    assert literal_alternatives("日本|x") == frozenset({"日本", "x"})
    assert literal_alternatives("a\\|b") == frozenset({"a|b"})
    assert literal_alternatives("a.b") is None
    assert literal_alternatives("a\\d") is None
    assert literal_alternatives("a\\") is None
    assert literal_alternatives("(?i)a") is None


# A small alphabet so random patterns and values collide often; "\n" for `.`.
PATTERN_CHARS = "ab.|*+?()\\\n"
VALUE_CHARS = "ab.|*\n"


@settings(max_examples=600, deadline=None)
@given(
    pattern=st.text(alphabet=PATTERN_CHARS + "[]{1}", max_size=7),
    values=st.lists(st.text(alphabet=VALUE_CHARS + "[]{}1", max_size=5), max_size=8),
)
def test_regex_matcher_equals_re2_with_prometheus_anchoring(
    pattern: str, values: list[str]
) -> None:
    """The shortcuts (literal sets, `.*`, `.+`) agree with RE2 on `^(?:pattern)$`, and
    every value the regex matches starts with its literal prefix."""
    try:
        matcher = Matcher(RE, "l", pattern)
    except InvalidRequest:
        reject()
    options = re2.Options()
    options.log_errors = False
    anchored = re2.compile("^(?:" + pattern + ")$", options)
    prefix = literal_prefix(pattern)
    # The prefix's own beginnings too: what a prefix one character too long would miss.
    for value in ["", *values, *(prefix[:k] for k in range(len(prefix) + 1)), pattern]:
        matched = matcher.matches_value(value)
        assert matched is (anchored.search(value) is not None)
        if matched:
            assert value.startswith(prefix), (pattern, value, prefix)


@st.composite
def label_sets(draw: st.DrawFn) -> list[LabelSet]:
    names = ["a", "b", "c"]
    values = st.sampled_from(["", "x", "y", "xy", "x\ny", "é"])
    sets = draw(
        st.lists(
            st.dictionaries(st.sampled_from(names), values, min_size=0, max_size=3),
            min_size=1,
            max_size=12,
        )
    )
    return sorted({tuple(sorted(s.items())) for s in sets})


matcher_specs = st.tuples(
    st.sampled_from(list(MatchType)),
    st.sampled_from(["a", "b", "c", "d"]),
    st.sampled_from(
        [
            *["", "x", "y", "xy", "é", "x|y", "|x", ".*", ".+", "x.*", "x.y", "(?s)x.y"],
            *["xy?", "x+", "xy.*|y", "(x|y).*", "é.*", "x\\..*", "x[y|]", "x(y|)"],
        ]
    ),
)


@settings(max_examples=120, deadline=None)
@given(series=label_sets(), specs=st.lists(matcher_specs, max_size=4))
def test_select_series_equals_matching_every_series(
    series: list[LabelSet], specs: list[tuple[MatchType, str, str]]
) -> None:
    matchers = [Matcher(*spec) for spec in specs]
    with tempfile.TemporaryDirectory() as tmp:
        index = write_index(Path(tmp), series)
    expected = [
        i
        for i in range(index.series_count)
        if all(m.matches(dict(index.labels(i))) for m in matchers)
    ]
    got = select_series(index, matchers)
    assert got.dtype == np.uint32
    assert got.tolist() == expected


def labels_of(index: BlockIndex, ids: np.ndarray) -> list[dict[str, str]]:
    return [dict(index.labels(int(i))) for i in ids]


UP_A = {"__name__": "up", "job": "a"}
UP_B = {"__name__": "up", "job": "b", "env": "prod"}
DOWN = {"__name__": "down"}


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        # Series ids follow label order: env sorts before job.
        ([(EQ, "__name__", "up")], [UP_B, UP_A]),
        ([(EQ, "env", "")], [DOWN, UP_A]),
        ([(NEQ, "env", "")], [UP_B]),
        ([(NEQ, "job", "a")], [DOWN, UP_B]),
        ([(RE, "job", "a|b"), (NRE, "env", "prod")], [UP_A]),
        ([(RE, "job", ".*"), (EQ, "__name__", "down")], [DOWN]),
        ([(RE, "job", ".+")], [UP_B, UP_A]),
        ([(EQ, "__name__", "nope"), (RE, "job", ".+")], []),
        ([(NRE, "__name__", ".*")], []),
        ([], [DOWN, UP_B, UP_A]),
    ],
)
def test_select_series_in_a_block(
    tmp_path: Path, matchers: list[tuple[MatchType, str, str]], expected: list[dict[str, str]]
) -> None:
    index = write_index(tmp_path, [tuple(sorted(s.items())) for s in (UP_A, UP_B, DOWN)])
    got = select_series(index, [Matcher(*m) for m in matchers])
    assert labels_of(index, got) == expected


def test_literal_prefix_is_what_every_match_starts_with() -> None:
    assert literal_prefix("host-0000[0-9]:9100") == "host-0000"
    assert literal_prefix("ab?c") == "a"
    assert literal_prefix("a+") == ""
    assert literal_prefix("a\\.b.*") == "a.b"
    assert literal_prefix("ab(c|d)") == "ab"
    assert literal_prefix("ab[|]") == "ab"
    assert literal_prefix("ab|cd") == ""
    assert literal_prefix("a(b)|c") == ""
    assert literal_prefix("(?i)ab") == ""
    assert literal_prefix("a\\db") == "a"


def test_regex_is_tested_once_per_distinct_value_it_could_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regex without a literal prefix tests every value once; one with a prefix only
    the values that have it; a set of literals none (they are looked up)."""
    series = [(("host", f"h{i:03d}"), ("job", "abc"[i % 3])) for i in range(300)]
    index = write_index(tmp_path, series)
    tested: list[str] = []
    original: Callable[[Matcher, str], bool] = Matcher.matches_value

    def counting(self: Matcher, value: str) -> bool:
        if self.name == "job" and value:
            tested.append(value)
        return original(self, value)

    monkeypatch.setattr(Matcher, "matches_value", counting)
    got = select_series(index, [Matcher(RE, "job", "a|b.*"), Matcher(NRE, "job", "c.*")])
    assert sorted(tested) == ["a", "b", "c", "c"]
    assert [dict(index.labels(int(i)))["host"] for i in got] == [
        f"h{i:03d}" for i in range(300) if i % 3 < 2
    ]
    tested.clear()
    got = select_series(index, [Matcher(RE, "job", "a|c"), Matcher(RE, "host", "h00.")])
    assert tested == []
    assert [dict(index.labels(int(i)))["host"] for i in got] == [
        f"h{i:03d}" for i in range(10) if i % 3 != 1
    ]
    assert Matcher(RE, "job", "a|c").pattern_values == frozenset({"a", "c"})


class Stop(Exception):
    """Raised by a checkpoint to end a selection."""


def test_checkpoint_can_stop_a_long_selection(tmp_path: Path) -> None:
    index = write_index(tmp_path, [(("host", f"h{i:03d}"),) for i in range(300)])
    slow = [Matcher(RE, "host", "(.*a.{10}){3}|h.*")]
    calls: list[int] = []
    got = select_series(index, slow, checkpoint=lambda: calls.append(1))
    assert len(got) == 300
    assert len(calls) == 5  # every 64 of the 300 values

    calls.clear()

    def stop_at_second_call() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    with pytest.raises(Stop):
        select_series(index, slow, checkpoint=stop_at_second_call)
    assert len(calls) == 2


def test_matches_works_on_any_mapping() -> None:
    labels: Mapping[str, str] = {"job": "node"}
    assert Matcher(EQ, "job", "node").matches(labels)
    assert Matcher(RE, "job", "no.e").matches(labels)
