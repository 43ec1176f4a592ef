"""deploy/compose and deploy/prometheus: the compose file parses and its services point at
each other consistently (names, ports, URLs, mounted files), every `strata` command and
flag exists, Prometheus and promtool accept the configurations, and the Grafana dashboard
reaches back past Prometheus's own retention."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from botocore.credentials import EnvProvider

from gateway.app import WRITE_PATHS
from querier.read_api import READ_PATH
from tests.deploy.cli import check_command_line
from tests.deploy.kube import DEPLOY, REPO, find, render
from tests.deploy.promql import defined_metric_names, metric_names
from tests.deploy.test_alerts import promtool
from tests.deploy.weed import assert_weed_accepts

COMPOSE_DIR = DEPLOY / "compose"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# Ports the other images listen on by default (their commands here do not change them).
DEFAULT_PORTS = {"prometheus": 9090, "node-exporter": 9100, "grafana": 3000}
TIMEOUT_S = 120


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """compose.yaml, anchors and merge keys resolved as Compose resolves them."""
    document: dict[str, Any] = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
    return document


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services by name."""
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def strata_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The services running Strata's image."""
    return {
        name: s
        for name, s in services(compose).items()
        if s["image"].startswith("localhost/strata:")
    }


def listen_port(command: list[str]) -> int:
    """The port of `--listen HOST:PORT`."""
    return int(command[command.index("--listen") + 1].rpartition(":")[2])


def service_ports(compose: dict[str, Any]) -> dict[str, int]:
    """The port each service listens on inside the compose network."""
    ports = dict(DEFAULT_PORTS)
    for name, service in strata_services(compose).items():
        if "--listen" in service.get("command", []):
            ports[name] = listen_port(service["command"])
    weed = services(compose)["seaweedfs"]["command"]
    ports["seaweedfs"] = int(next(a for a in weed if a.startswith("-s3.port=")).split("=")[1])
    return ports


def mounted_file(service: dict[str, Any], target: str) -> Path:
    """The host file (resolved against the compose directory) mounted at `target`."""
    for volume in service.get("volumes", []):
        source, _, rest = str(volume).partition(":")
        if rest.split(":")[0] == target:
            return (COMPOSE_DIR / source).resolve()
    pytest.fail(f"nothing is mounted at {target}")


def test_services_use_pinned_images(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        image = service["image"]
        assert ":" in image, name
        assert not image.endswith(":latest"), name


def test_strata_services_build_this_repository_at_this_version(compose: dict[str, Any]) -> None:
    found = strata_services(compose)
    assert set(found) >= {"strata", "compactor", "create-bucket"}
    for service in found.values():
        assert service["image"] == f"localhost/strata:{VERSION}"
        assert (COMPOSE_DIR / service["build"]["context"]).resolve() == REPO
        assert (REPO / service["build"]["dockerfile"]).is_file()


def test_strata_commands_flags_and_settings_exist(compose: dict[str, Any]) -> None:
    for name, service in strata_services(compose).items():
        env: dict[str, str] = service["environment"]
        others = {k for k in env if not k.startswith("STRATA_")}
        assert others <= {EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY}, name
        if "entrypoint" in service:
            script = service["entrypoint"][-1]
            assert mounted_file(service, script).is_file(), name
        else:
            assert check_command_line(service["command"], env) == [], name


def test_the_bucket_url_names_the_s3_service_and_port(compose: dict[str, Any]) -> None:
    ports = service_ports(compose)
    seaweedfs = services(compose)["seaweedfs"]
    for name, service in strata_services(compose).items():
        url = urlsplit(service["environment"]["STRATA_BUCKET_URL"])
        endpoint = urlsplit(dict(parse_qsl(url.query))["endpoint"])
        assert endpoint.hostname == "seaweedfs", name
        assert endpoint.port == ports["seaweedfs"], name
        for key in (EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY):
            assert service["environment"][key] == seaweedfs["environment"][key], name


def test_seaweedfs_runs_as_in_the_kubernetes_overlay(compose: dict[str, Any]) -> None:
    seaweedfs = services(compose)["seaweedfs"]
    deployment = find(render(DEPLOY / "overlays" / "seaweedfs"), "Deployment", "seaweedfs")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert seaweedfs["image"] == container["image"]
    assert seaweedfs["entrypoint"] == container["command"]
    assert seaweedfs["command"] == container["args"]
    assert_weed_accepts(seaweedfs["command"])


def test_the_bucket_script_is_the_overlay_one(compose: dict[str, Any]) -> None:
    service = services(compose)["create-bucket"]
    script = mounted_file(service, service["entrypoint"][-1])
    assert script == DEPLOY / "overlays" / "seaweedfs" / "create_bucket.py"


def test_dependencies_and_ports(compose: dict[str, Any]) -> None:
    names = set(services(compose))
    ports = service_ports(compose)
    for name, service in services(compose).items():
        depends = service.get("depends_on", [])
        assert set(depends) <= names, name
        for published in service.get("ports", []):
            host, _, container_port = published.split(":")
            assert host == "127.0.0.1", f"{name} publishes {published} beyond loopback"
            assert int(container_port) == ports[name], name
    # Strata starts once its bucket exists.
    strata = services(compose)["strata"]
    assert strata["depends_on"]["create-bucket"]["condition"] == "service_completed_successfully"


def test_the_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, service in services(compose).items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, name


@pytest.fixture(scope="module")
def prometheus_config(compose: dict[str, Any]) -> dict[str, Any]:
    """The compose Prometheus's configuration file, parsed."""
    service = services(compose)["prometheus"]
    flag = next(a for a in service["command"] if a.startswith("--config.file="))
    path = mounted_file(service, flag.split("=", 1)[1])
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    return config


def test_prometheus_scrapes_and_sends_to_compose_services(
    compose: dict[str, Any], prometheus_config: dict[str, Any]
) -> None:
    ports = service_ports(compose)
    for job in prometheus_config["scrape_configs"]:
        for target in (t for group in job["static_configs"] for t in group["targets"]):
            host, _, port = target.rpartition(":")
            name = "prometheus" if host == "localhost" else host
            assert ports[name] == int(port), f"{job['job_name']}: {target}"
    strata = f"http://strata:{ports['strata']}"
    assert [w["url"] for w in prometheus_config["remote_write"]] == [strata + WRITE_PATHS[0]]
    (read,) = prometheus_config["remote_read"]
    assert read["url"] == strata + READ_PATH
    assert read["read_recent"] is True
    jobs = {job["job_name"]: job for job in prometheus_config["scrape_configs"]}
    # The alerting rules name the gateway's job "strata".
    assert jobs["strata"]["static_configs"][0]["targets"] == [f"strata:{ports['strata']}"]


def test_prometheus_flags_exist_and_keep_15_days(compose: dict[str, Any]) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: tests/run.sh installs it")
    shown = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=TIMEOUT_S)
    known = set(re.findall(r"--[a-z0-9][a-z0-9.-]*", shown.stdout + shown.stderr))
    command = services(compose)["prometheus"]["command"]
    for arg in command:
        assert arg.split("=")[0] in known, arg
    assert "--storage.tsdb.retention.time=15d" in command


def test_promtool_accepts_the_compose_prometheus_config_with_its_mounts(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    # Lay out /etc/prometheus as the container sees it, then let promtool read it there
    # (it follows rule_files from the config file's directory).
    service = services(compose)["prometheus"]
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith(".") and target.startswith("/etc/prometheus/"):
            destination = tmp_path / target.lstrip("/")
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(COMPOSE_DIR / source, destination)
    config = tmp_path / "etc" / "prometheus" / "prometheus.yml"
    result = subprocess.run(
        [promtool(), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The mounted rule file was found and read whole.
    rules = yaml.safe_load((DEPLOY / "alerts" / "strata-rules.yaml").read_text())["groups"]
    count = sum(len(group["rules"]) for group in rules)
    assert f"SUCCESS: {count} rules found" in result.stdout


def test_promtool_accepts_the_plain_prometheus_example() -> None:
    path = DEPLOY / "prometheus" / "prometheus.yml"
    result = subprocess.run(
        [promtool(), "check", "config", str(path)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(path.read_text())
    (write,) = config["remote_write"]
    (read,) = config["remote_read"]
    assert urlsplit(write["url"]).path == WRITE_PATHS[0]
    assert urlsplit(read["url"]).path == READ_PATH
    assert read["read_recent"] is True
    assert "strata" in {job["job_name"] for job in config["scrape_configs"]}


def grafana_provisioning(compose: dict[str, Any]) -> Path:
    """The host directory mounted as Grafana's provisioning directory."""
    return mounted_file(services(compose)["grafana"], "/etc/grafana/provisioning")


def test_grafana_asks_the_compose_prometheus(compose: dict[str, Any]) -> None:
    ports = service_ports(compose)
    path = grafana_provisioning(compose) / "datasources" / "prometheus.yaml"
    (source,) = yaml.safe_load(path.read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == f"http://prometheus:{ports['prometheus']}"


@pytest.fixture(scope="module")
def dashboards(compose: dict[str, Any]) -> list[dict[str, Any]]:
    """The dashboards Grafana's file provider loads."""
    provider_file = grafana_provisioning(compose) / "dashboards" / "strata.yaml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    directory = mounted_file(services(compose)["grafana"], provider["options"]["path"])
    found = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    assert found
    return found


def test_the_dashboard_reaches_back_past_local_retention(
    compose: dict[str, Any], dashboards: list[dict[str, Any]]
) -> None:
    command = services(compose)["prometheus"]["command"]
    retention = next(a for a in command if a.startswith("--storage.tsdb.retention.time="))
    retention_days = int(retention.split("=")[1].removesuffix("d"))
    reaching = [
        d
        for d in dashboards
        if (found := re.fullmatch(r"now-(\d+)d", d["time"]["from"]))
        and int(found.group(1)) > retention_days
    ]
    assert reaching, f"no dashboard looks further back than {retention_days} days"


def test_dashboard_panels_use_the_datasource_and_real_metrics(
    compose: dict[str, Any], dashboards: list[dict[str, Any]]
) -> None:
    path = grafana_provisioning(compose) / "datasources" / "prometheus.yaml"
    (source,) = yaml.safe_load(path.read_text())["datasources"]
    defined = defined_metric_names()
    for dashboard in dashboards:
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == source["uid"], panel["title"]
                for name in metric_names(target["expr"]):
                    if name.startswith("strata_"):
                        assert name in defined, f"{panel['title']}: {name}"
                    else:
                        # node_exporter's, scraped as job "node".
                        assert name.startswith("node_"), f"{panel['title']}: {name}"
