"""Validation of what a sender may write: label sets on first sight, sample timestamps.

A label set is checked once, when its raw bytes are first seen; later requests find the
series by those bytes. Each rejection carries a short `code` (the metrics' `reason`
label) and a one-line message for the 400 answer.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from blocks.aggregates import AGGREGATE_LABEL
from gateway.config import GatewayConfig
from proto.write_raw_pb2 import LabelPair

METRIC_NAME = "__name__"
# Prometheus 2's character sets, used when label_name_rule is "legacy".
LEGACY_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
LEGACY_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


class RejectedSeries(Exception):
    """A label set that can never be stored."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class LabelRules:
    """The label limits of one tenant."""

    max_labels: int
    max_name_bytes: int
    max_value_bytes: int
    legacy_names: bool

    @classmethod
    def from_config(cls, config: GatewayConfig) -> LabelRules:
        """The rules a gateway configuration sets."""
        return cls(
            max_labels=config.max_labels_per_series,
            max_name_bytes=config.max_label_name_bytes,
            max_value_bytes=config.max_label_value_bytes,
            legacy_names=config.label_name_rule == "legacy",
        )


def encode_labels(pairs: list[tuple[str, str]]) -> bytes:
    """The canonical bytes of a label set: protobuf Label messages, concatenated.

    With names non-empty and each message in canonical encoding, the concatenation
    parses back one way only, so it identifies the label set.
    """
    return b"".join(LabelPair(name=n, value=v).SerializeToString() for n, v in pairs)


def decode_labels(data: bytes) -> list[tuple[str, str]]:
    """Inverse of encode_labels."""
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(data):
        fields: dict[int, str] = {}
        while pos < len(data):
            tag = data[pos]
            number = tag >> 3
            if number == 1 and 1 in fields:
                break  # the next label starts
            length, pos = _uvarint(data, pos + 1)
            fields[number] = data[pos : pos + length].decode()
            pos += length
        pairs.append((fields.get(1, ""), fields.get(2, "")))
    return pairs


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7


def format_labels(pairs: list[tuple[str, str]]) -> str:
    """Labels as Prometheus prints them, for error messages (long values cut short)."""
    shown = ", ".join(f"{n}={v[:64]!r}" for n, v in pairs[:12])
    return "{" + shown + (", ..." if len(pairs) > 12 else "") + "}"


def canonical_labels(raw_pairs: list[bytes], rules: LabelRules) -> bytes:
    """Check a series' raw label messages; return its canonical label bytes.

    Empty values are dropped (Prometheus treats them as absent), names sorted.
    """
    pairs: list[tuple[str, str]] = []
    for raw in raw_pairs:
        try:
            label = LabelPair.FromString(raw)
        except DecodeError:
            raise RejectedSeries("invalid_utf8", "label is not valid UTF-8 protobuf") from None
        # Unknown fields count as not canonical: a name or value sent with the wrong wire
        # type is one, and would otherwise leave the label empty, so dropped.
        label.DiscardUnknownFields()
        if label.SerializeToString() != raw:
            raise RejectedSeries("invalid_labels", "label is not in canonical protobuf encoding")
        pairs.append((label.name, label.value))
    for name, value in pairs:
        if not name:
            raise RejectedSeries(
                "invalid_label_name", f"empty label name in {format_labels(pairs)}"
            )
        if len(name.encode()) > rules.max_name_bytes:
            raise RejectedSeries(
                "label_name_too_long",
                f"label name of {len(name.encode())} bytes > limit {rules.max_name_bytes} "
                f"in {format_labels(pairs)}",
            )
        if len(value.encode()) > rules.max_value_bytes:
            raise RejectedSeries(
                "label_value_too_long",
                f"value of label {name!r} has {len(value.encode())} bytes > limit "
                f"{rules.max_value_bytes} in {format_labels(pairs)}",
            )
        if rules.legacy_names and not LEGACY_LABEL_NAME.fullmatch(name):
            raise RejectedSeries(
                "invalid_label_name", f"invalid label name {name!r} in {format_labels(pairs)}"
            )
    present = sorted(((n, v) for n, v in pairs if v), key=lambda p: p[0].encode())
    for first, second in itertools.pairwise(present):
        if first[0] == second[0]:
            raise RejectedSeries(
                "duplicate_label_name",
                f"duplicate label name {first[0]!r} in {format_labels(pairs)}",
            )
    if any(name == AGGREGATE_LABEL for name, _ in present):
        # Downsampled blocks name their aggregates with it: a sent one would pass for one.
        raise RejectedSeries(
            "reserved_label",
            f"label name {AGGREGATE_LABEL!r} is reserved for downsampled series "
            f"in {format_labels(pairs)}",
        )
    metric = dict(present).get(METRIC_NAME, "")
    if not metric:
        raise RejectedSeries("missing_metric_name", f"no metric name in {format_labels(pairs)}")
    if rules.legacy_names and not LEGACY_METRIC_NAME.fullmatch(metric):
        raise RejectedSeries("invalid_metric_name", f"invalid metric name {metric!r}")
    if len(present) > rules.max_labels:
        raise RejectedSeries(
            "too_many_labels",
            f"{len(present)} labels > limit {rules.max_labels} in {format_labels(present)}",
        )
    return encode_labels(present)
