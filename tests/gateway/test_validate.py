"""Label-set validation and the canonical label bytes that identify a series."""

from __future__ import annotations

from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import GatewayConfig
from gateway.validate import (
    LabelRules,
    RejectedSeries,
    canonical_labels,
    decode_labels,
    encode_labels,
)
from tests.gateway.writes import canonical, label_bytes

UTF8 = LabelRules(max_labels=5, max_name_bytes=8, max_value_bytes=10, legacy_names=False)
LEGACY = LabelRules(max_labels=5, max_name_bytes=32, max_value_bytes=32, legacy_names=True)


def raw(*pairs: tuple[str, str]) -> list[bytes]:
    return [label_bytes(n, v) for n, v in pairs]


def rejection(pairs: list[bytes], rules: LabelRules = UTF8) -> RejectedSeries:
    with pytest.raises(RejectedSeries) as caught:
        canonical_labels(pairs, rules)
    return caught.value


def test_rules_come_from_the_config() -> None:
    config = GatewayConfig(
        max_labels_per_series=3,
        max_label_name_bytes=4,
        max_label_value_bytes=5,
        label_name_rule="legacy",
    )
    assert LabelRules.from_config(config) == LabelRules(3, 4, 5, True)
    assert not LabelRules.from_config(GatewayConfig()).legacy_names


def test_sorted_label_set_is_its_own_canonical_form() -> None:
    pairs = [("__name__", "up"), ("instance", "a:9100"), ("job", "node")]
    assert canonical_labels(raw(*pairs), UTF8) == encode_labels(pairs)


def test_unsorted_labels_are_normalised_to_sorted_canonical_bytes() -> None:
    shuffled = raw(("job", "node"), ("__name__", "up"), ("a", "1"))
    assert canonical_labels(shuffled, UTF8) == canonical(
        [("__name__", "up"), ("a", "1"), ("job", "node")]
    )


def test_names_sort_by_bytes_not_by_case_folding() -> None:
    got = canonical_labels(raw(("b", "1"), ("B", "2"), ("__name__", "m"), ("_", "3")), UTF8)
    assert decode_labels(got) == [("B", "2"), ("_", "3"), ("__name__", "m"), ("b", "1")]


def test_empty_values_are_dropped() -> None:
    got = canonical_labels(raw(("__name__", "up"), ("empty", ""), ("job", "x")), UTF8)
    assert got == encode_labels([("__name__", "up"), ("job", "x")])


def test_missing_metric_name_is_rejected() -> None:
    assert rejection(raw(("job", "x"))).code == "missing_metric_name"


def test_empty_metric_name_is_rejected() -> None:
    assert rejection(raw(("__name__", ""), ("job", "x"))).code == "missing_metric_name"


def test_empty_label_name_is_rejected() -> None:
    error = rejection(raw(("__name__", "up"), ("", "x")))
    assert error.code == "invalid_label_name"
    assert "empty label name" in str(error)


def test_duplicate_label_names_are_rejected() -> None:
    error = rejection(raw(("__name__", "up"), ("job", "a"), ("job", "b")))
    assert error.code == "duplicate_label_name"
    assert "'job'" in str(error)


def test_duplicate_name_with_an_empty_value_is_not_a_duplicate() -> None:
    got = canonical_labels(raw(("__name__", "up"), ("job", "a"), ("job", "")), UTF8)
    assert got == encode_labels([("__name__", "up"), ("job", "a")])


def test_too_many_labels_are_rejected() -> None:
    five = [("__name__", "up"), ("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]
    canonical_labels(raw(*five), UTF8)
    assert rejection(raw(*five, ("e", "5"))).code == "too_many_labels"


def test_labels_with_empty_values_do_not_count_against_the_limit() -> None:
    five = [("__name__", "up"), ("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]
    assert canonical_labels(raw(*five, ("e", "")), UTF8) == encode_labels(five)


def test_label_name_too_long_is_rejected_counting_utf8_bytes() -> None:
    canonical_labels(raw(("__name__", "up"), ("a" * 8, "x")), UTF8)
    assert rejection(raw(("__name__", "up"), ("a" * 9, "x"))).code == "label_name_too_long"
    # five characters, ten bytes
    assert rejection(raw(("__name__", "up"), ("é" * 5, "x"))).code == "label_name_too_long"


def test_label_value_too_long_is_rejected_counting_utf8_bytes() -> None:
    canonical_labels(raw(("__name__", "up"), ("a", "x" * 10)), UTF8)
    assert rejection(raw(("__name__", "up"), ("a", "x" * 11))).code == "label_value_too_long"
    assert rejection(raw(("__name__", "up"), ("a", "€" * 4))).code == "label_value_too_long"


@pytest.mark.parametrize(
    "label",
    [
        pytest.param(b"\x0a\x02\xff\xfe\x12\x01x", id="name"),
        pytest.param(b"\x0a\x01a\x12\x02\xc3\x28", id="value"),
        pytest.param(b"\x0a\x01a\x12\x03\xed\xa0\x80", id="surrogate"),
    ],
)
def test_invalid_utf8_is_rejected(label: bytes) -> None:
    assert rejection([label_bytes("__name__", "up"), label]).code == "invalid_utf8"


@pytest.mark.parametrize(
    "label",
    [
        pytest.param(b"\x12\x01x\x0a\x01a", id="value-before-name"),
        pytest.param(b"\x0a\x01a\x12\x00", id="explicit-empty-value"),
        pytest.param(b"\x0a\x81\x00a", id="overlong-length"),
    ],
)
def test_non_canonical_label_encoding_is_rejected(label: bytes) -> None:
    assert rejection([label_bytes("__name__", "up"), label]).code == "invalid_labels"


def test_utf8_rule_accepts_any_utf8_names() -> None:
    pairs = [("__name__", "http.requests-total"), ("ünï", "x"), ("a.b/c", "y")]
    rules = LabelRules(max_labels=5, max_name_bytes=32, max_value_bytes=32, legacy_names=False)
    assert decode_labels(canonical_labels(raw(*pairs), rules)) == sorted(
        pairs, key=lambda p: p[0].encode()
    )


@pytest.mark.parametrize("name", ["ünï", "a.b", "1abc", "a-b", "a:b"])
def test_legacy_rule_rejects_names_outside_the_prometheus_2_set(name: str) -> None:
    assert rejection(raw(("__name__", "up"), (name, "x")), LEGACY).code == "invalid_label_name"


@pytest.mark.parametrize("metric", ["http.requests", "1up", "a-b"])
def test_legacy_rule_rejects_metric_names_outside_the_prometheus_2_set(metric: str) -> None:
    assert rejection(raw(("__name__", metric)), LEGACY).code == "invalid_metric_name"


def test_legacy_rule_accepts_colons_in_metric_names_only() -> None:
    pairs = [("__name__", "job:up:sum"), ("_private", "1"), ("Abc_9", "2")]
    assert canonical_labels(raw(*pairs), LEGACY) == canonical(pairs)


label_names = st.text(min_size=1, max_size=12)
label_values = st.text(max_size=12)


@given(st.lists(st.tuples(label_names, label_values), max_size=12))
@settings(max_examples=500, deadline=None)
def test_label_bytes_roundtrip(pairs: list[tuple[str, str]]) -> None:
    assert decode_labels(encode_labels(pairs)) == pairs


@given(st.dictionaries(label_names, label_values, max_size=10), st.randoms())
@settings(max_examples=300, deadline=None)
def test_any_order_of_a_label_set_has_one_canonical_form(
    labels: dict[str, str], rng: Random
) -> None:
    rules = LabelRules(max_labels=64, max_name_bytes=64, max_value_bytes=64, legacy_names=False)
    pairs = [("__name__", "m"), *((n, v) for n, v in labels.items() if n != "__name__")]
    expected = sorted(((n, v) for n, v in pairs if v), key=lambda p: p[0].encode())
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    got = canonical_labels(raw(*shuffled), rules)
    assert got == canonical_labels(raw(*pairs), rules)
    assert decode_labels(got) == expected
