"""Metric names: those a PromQL expression selects, and those Strata's code defines, so
that alerting rules and dashboards can be checked against the code."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.deploy.kube import REPO

PACKAGES = ("gateway", "querier", "compactor", "blocks")
# Constructor names of prometheus_client metrics and metric families.
_COUNTERS = frozenset({"Counter", "CounterMetricFamily"})
_GAUGES = frozenset({"Gauge", "GaugeMetricFamily", "Info", "Enum"})
_HISTOGRAMS = frozenset({"Histogram", "HistogramMetricFamily"})
_SUMMARIES = frozenset({"Summary", "SummaryMetricFamily"})
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "Inf", "NaN"})
# Parts of an expression that hold no metric name: strings, label matchers, ranges and
# subqueries, and the label lists of by/without/on/ignoring/group_left/group_right.
_NOT_NAMES = re.compile(
    r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`|\{[^}]*\}|\[[^\]]*\]'
    r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)
_IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions and keywords left out)."""
    stripped = _NOT_NAMES.sub(" ", expr)
    return {
        match.group(1)
        for match in _IDENTIFIER.finditer(stripped)
        if match.group(2) is None and match.group(1) not in _KEYWORDS
    }


def exposed_names(constructor: str, name: str) -> set[str]:
    """The series names prometheus_client exposes for a metric made with `constructor`."""
    if constructor in _COUNTERS:
        base = name.removesuffix("_total")
        return {base + "_total", base + "_created"}
    if constructor in _HISTOGRAMS:
        return {name + suffix for suffix in ("_bucket", "_sum", "_count", "_created")}
    if constructor in _SUMMARIES:
        return {name, name + "_sum", name + "_count", name + "_created"}
    return {name}


def defined_metric_names(root: Path = REPO) -> set[str]:
    """Every series name Strata's metrics definitions expose, found in the code itself."""
    names: set[str] = set()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                func = node.func
                constructor = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                first = node.args[0]
                if (
                    constructor in _COUNTERS | _GAUGES | _HISTOGRAMS | _SUMMARIES
                    and isinstance(first, ast.Constant)
                    and isinstance(first.value, str)
                ):
                    names |= exposed_names(constructor, first.value)
    return names
