"""deploy/alerts/strata-rules.yaml: Prometheus loads it, each alert fires on the trouble it
names and stays quiet on a healthy Strata (promtool), every metric it reads is one
Strata's code defines, and the kube-prometheus PrometheusRule holds the same groups."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.kube import DEPLOY, load_yaml_documents
from tests.deploy.promql import defined_metric_names, metric_names

RULES = DEPLOY / "alerts" / "strata-rules.yaml"
RULE_TESTS = Path(__file__).with_name("strata-rules.test.yaml")
PROMTOOL_TIMEOUT_S = 120
# Series the rules read that Strata does not define, and who does.
EXTERNAL_METRICS = {
    "up": "Prometheus, for every scrape target",
    "kube_cronjob_status_last_successful_time": "kube-state-metrics (part of kube-prometheus)",
}


def promtool() -> str:
    """The promtool executable; missing fails the test (it comes with apt's prometheus)."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: tests/run.sh installs the prometheus package")
    return path


def rules() -> list[dict[str, Any]]:
    """Every rule of the file, across its groups."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_metric_names_are_found_in_expressions() -> None:
    expr = (
        'sum by (instance) (rate(strata_write_requests_total{code=~"5.."}[5m])) '
        "/ on (instance) max(strata_head_max_bytes offset 5m) > 0.05 and up"
    )
    assert metric_names(expr) == {"strata_write_requests_total", "strata_head_max_bytes", "up"}


def test_promtool_loads_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_on_its_trouble_and_not_on_a_healthy_strata() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name],
        capture_output=True,
        text=True,
        timeout=PROMTOOL_TIMEOUT_S,
        cwd=RULE_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert {rule["alert"] for rule in rules()} == tested


def test_every_metric_the_rules_read_is_defined() -> None:
    defined = defined_metric_names()
    assert "strata_ready" in defined  # the scan finds the gateway's own metrics
    for rule in rules():
        for name in metric_names(rule["expr"]):
            assert name in defined or name in EXTERNAL_METRICS, f"{rule['alert']}: {name}"


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_prometheusrule_holds_the_same_groups() -> None:
    (resource,) = load_yaml_documents(DEPLOY / "kube-prometheus" / "prometheusrule.yaml")
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
