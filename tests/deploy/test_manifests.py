"""deploy/: every kustomization renders with kubectl and validates offline against the
Kubernetes API schemas, and the objects agree with each other, with the `strata` command
line and with the image."""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
from botocore.credentials import EnvProvider

from gateway.http import HEALTHY_PATH, READY_PATH
from tests.deploy.cli import check_command_line
from tests.deploy.dockerfile import read_instructions
from tests.deploy.kube import (
    DEPLOY,
    REPO,
    Manifest,
    containers,
    environment,
    find,
    kustomize_major,
    load_yaml_documents,
    named,
    pod_labels,
    pod_spec,
    render,
    render_with_querier,
)
from tests.deploy.weed import assert_weed_accepts

# The oldest Kubernetes the manifests are checked against; k3s releases of the last year
# are newer, and every field used here exists since then.
K8S_VERSION = "1.30"
NAMESPACE = "strata"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
STRATA_IMAGE = f"localhost/strata:{VERSION}"
# The variants a user applies: as shipped, and with the querier component switched on.
VARIANTS = ("seaweedfs", "s3", "seaweedfs+querier", "s3+querier")
# The one object the s3 overlay leaves to the user (created with kubectl, never applied
# over): its template is deploy/overlays/s3/s3-credentials.example.yaml.
USER_CREATED = {("Secret", "strata-s3-credentials")}
MIB = 1 << 20
# RSS of an idle `strata serve` (Python, numpy, FastAPI): about 60 MB in docs/benchmarks.md.
IDLE_RSS_BYTES = 64 * MIB
# A SAMPLES answer costs about 8 times its size while it is built (447 MiB for a
# 57.9 MB answer, docs/benchmarks.md).
SAMPLES_ANSWER_RSS_FACTOR = 8


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    """Each variant, rendered once."""
    out = {"base": render(DEPLOY / "base")}
    for variant in VARIANTS:
        overlay, _, extra = variant.partition("+")
        if extra:
            out[variant] = render_with_querier(tmp_path_factory.mktemp(overlay), overlay)
        else:
            out[variant] = render(DEPLOY / "overlays" / overlay)
    return out


def strata_containers(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest, Manifest]]:
    """(workload, pod spec, container) of the containers running Strata's image."""
    for obj, spec, container in containers(objects):
        if container["image"].startswith("localhost/strata:"):
            yield obj, spec, container


def resource_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in bytes (binary suffixes only, as the manifests use)."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity.removesuffix(suffix)) * factor
    return int(quantity)


def listen_port(args: list[str]) -> int:
    """The port of a `--listen HOST:PORT` argument."""
    return int(args[args.index("--listen") + 1].rpartition(":")[2])


def test_kubectl_brings_kustomize_4_or_newer() -> None:
    assert kustomize_major() >= 4


@pytest.mark.parametrize("variant", ["base", *VARIANTS])
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    objects = rendered[variant]
    assert objects
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{variant}: {name} is invalid at {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            pytest.fail(f"{variant}: {name} has no schema ({obj['apiVersion']})")


@pytest.mark.parametrize("variant", VARIANTS)
def test_objects_live_in_the_strata_namespace_and_carry_its_label(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    for obj in rendered[variant]:
        meta = obj["metadata"]
        if obj["kind"] == "Namespace":
            assert meta["name"] == NAMESPACE
        else:
            assert meta.get("namespace") == NAMESPACE, f"{obj['kind']}/{meta['name']}"
        assert meta["labels"]["app.kubernetes.io/part-of"] == "strata", meta["name"]


def references(obj: Manifest) -> Iterator[tuple[str, str]]:
    """(kind, name) of every ConfigMap, Secret and claim a workload's pods use."""
    spec = pod_spec(obj)
    if spec is None:
        return
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"]
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"]
    for volume in spec.get("volumes", []):
        if "configMap" in volume:
            yield "ConfigMap", volume["configMap"]["name"]
        if "secret" in volume:
            yield "Secret", volume["secret"]["secretName"]
        if "persistentVolumeClaim" in volume:
            yield "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_configmap_secret_and_claim_used_is_there(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    objects = rendered[variant]
    present = {(o["kind"], o["metadata"]["name"]) for o in objects}
    missing = {ref for obj in objects for ref in references(obj)} - present
    expected = USER_CREATED if variant.startswith("s3") else set()
    assert missing == expected


def test_the_s3_secret_template_names_what_boto3_reads() -> None:
    (secret,) = load_yaml_documents(DEPLOY / "overlays" / "s3" / "s3-credentials.example.yaml")
    assert (secret["kind"], secret["metadata"]["name"]) in USER_CREATED
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert set(secret["stringData"]) == {EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY}
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)
    # The kustomization's instructions create the same Secret with the same keys.
    instructions = (DEPLOY / "overlays" / "s3" / "kustomization.yaml").read_text()
    assert "create secret generic strata-s3-credentials" in instructions
    for key in secret["stringData"]:
        assert f"--from-literal={key}=" in instructions


@pytest.mark.parametrize("variant", VARIANTS)
def test_strata_containers_use_only_commands_flags_and_settings_that_exist(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    objects = rendered[variant]
    checked = 0
    for obj, spec, container in strata_containers(objects):
        env = environment(objects, container)
        # Only Strata's settings and the credentials boto3 reads; a typo is never silent.
        others = {k for k in env if not k.startswith("STRATA_")}
        assert others <= {EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY}, obj["metadata"]["name"]
        if "command" in container:
            # A script from a mounted ConfigMap, run by the image's Python.
            script = Path(container["command"][-1])
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volume = next(v for v in spec["volumes"] if v["name"] == mounts[str(script.parent)])
            config_map = find(objects, "ConfigMap", volume["configMap"]["name"])
            assert script.name in config_map["data"]
        else:
            assert check_command_line(container["args"], env) == []
        checked += 1
    # Gateway and compactor; the bucket Job with SeaweedFS; the querier when switched on.
    assert checked == 2 + variant.startswith("seaweedfs") + ("querier" in variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_images_are_pinned_and_strata_is_this_version(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    for _, _, container in containers(rendered[variant]):
        image = container["image"]
        name, _, tag = image.rpartition(":")
        assert name, image
        assert tag not in ("", "latest"), image
        if "strata" in name:
            assert image == STRATA_IMAGE


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes_ask_the_health_paths_on_the_listen_port(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    servers = 0
    for obj, _, container in strata_containers(rendered[variant]):
        args = container.get("args", [])
        if not args or args[0] not in ("serve", "query"):
            assert "livenessProbe" not in container
            continue
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("livenessProbe", HEALTHY_PATH), ("readinessProbe", READY_PATH)):
            get = container[probe]["httpGet"]
            assert get["path"] == path, f"{obj['metadata']['name']} {probe}"
            port = ports.get(get["port"], get["port"])
            assert port == listen_port(args), f"{obj['metadata']['name']} {probe}"
        servers += 1
    assert servers == (2 if "querier" in variant else 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_services_select_pods_and_name_their_ports(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    objects = rendered[variant]
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        pods = [
            (obj, spec)
            for obj in objects
            if (spec := pod_spec(obj)) is not None
            and selector.items() <= pod_labels(obj).items()
            and obj["kind"] != "Job"
            and obj["kind"] != "CronJob"
        ]
        assert len(pods) == 1, f"Service {service['metadata']['name']} selects {len(pods)}"
        _, spec = pods[0]
        names = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, service["metadata"]["name"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_pods_run_unprivileged_with_a_read_only_root(
    rendered: dict[str, list[Manifest]], variant: str
) -> None:
    dockerfile = read_instructions((REPO / "Dockerfile").read_text())
    (user,) = [i.text for i in dockerfile if i.keyword == "USER"]
    image_uid = int(user.split(":")[0])
    for obj, spec, container in containers(rendered[variant]):
        where = f"{obj['metadata']['name']}/{container['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, where
        assert context["allowPrivilegeEscalation"] is False, where
        assert context["capabilities"]["drop"] == ["ALL"], where
        if container["image"] == STRATA_IMAGE:
            # The image's own user, so that files on the volumes belong to one uid.
            assert spec["securityContext"]["runAsUser"] == image_uid, where
            # Service links would put STRATA_PORT, STRATA_SERVICE_HOST … into the
            # environment, where every STRATA_* variable is read as a setting.
            assert spec["enableServiceLinks"] is False, where


def test_the_gateway_keeps_its_wal_on_a_persistent_volume(
    rendered: dict[str, list[Manifest]],
) -> None:
    gateway = find(rendered["seaweedfs"], "StatefulSet", "strata")
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    data_dir = container["args"][container["args"].index("--data-dir") + 1]
    (claim,) = gateway["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == data_dir
    assert claim["spec"]["resources"]["requests"]["storage"]


def test_the_compactor_is_a_cronjob_that_never_runs_twice_at_once(
    rendered: dict[str, list[Manifest]],
) -> None:
    cronjob = find(rendered["seaweedfs"], "CronJob", "strata-compactor")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cronjob["spec"]["schedule"].split()) == 5
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["args"][0] == "compact"
    assert "--loop" not in container["args"]  # one pass, then the Job ends


def memory_budget(env: dict[str, str], *, with_head: bool) -> int:
    """What the settings let a Strata process hold at most, roughly: idle, head, index
    cache, and the SAMPLES answers allowed to be built at once."""
    answers = int(env["STRATA_QUERY_CONCURRENCY"]) * int(env["STRATA_QUERY_MAX_RESPONSE_BYTES"])
    head = int(env["STRATA_HEAD_MAX_BYTES"]) if with_head else 0
    return (
        IDLE_RSS_BYTES
        + head
        + int(env["STRATA_INDEX_CACHE_BYTES"])
        + SAMPLES_ANSWER_RSS_FACTOR * answers
    )


def test_memory_settings_fit_the_memory_limits(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["seaweedfs+querier"]
    for obj, _, container in strata_containers(objects):
        command = container.get("args", [""])[0]
        if command not in ("serve", "query"):
            continue
        env = environment(objects, container)
        limit = resource_bytes(container["resources"]["limits"]["memory"])
        request = resource_bytes(container["resources"]["requests"]["memory"])
        budget = memory_budget(env, with_head=command == "serve")
        assert budget <= limit, f"{obj['metadata']['name']}: {budget / MIB:.0f} MiB"
        assert request <= limit


def test_seaweedfs_and_strata_agree_on_the_bucket(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["seaweedfs"]
    gateway = find(objects, "StatefulSet", "strata")
    env = environment(objects, gateway["spec"]["template"]["spec"]["containers"][0])
    url = urlsplit(env["STRATA_BUCKET_URL"])
    endpoint = urlsplit(dict(parse_qsl(url.query))["endpoint"])
    service = find(objects, "Service", "seaweedfs")
    assert endpoint.hostname == service["metadata"]["name"]
    assert endpoint.port in [p["port"] for p in service["spec"]["ports"]]
    seaweedfs = find(objects, "Deployment", "seaweedfs")
    (weed,) = seaweedfs["spec"]["template"]["spec"]["containers"]
    assert f"-s3.port={endpoint.port}" in weed["args"]
    # Both sides take the key pair from the same Secret.
    assert environment(objects, weed) == {
        k: v for k, v in env.items() if k in (EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY)
    }
    # The Job runs the script of this repository, byte for byte.
    script = named(objects, "ConfigMap", "strata-create-bucket")["data"]["create_bucket.py"]
    assert script == (DEPLOY / "overlays" / "seaweedfs" / "create_bucket.py").read_text()


def test_seaweedfs_is_given_only_flags_weed_has(rendered: dict[str, list[Manifest]]) -> None:
    seaweedfs = find(rendered["seaweedfs"], "Deployment", "seaweedfs")
    (container,) = seaweedfs["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/usr/bin/weed"]
    assert_weed_accepts(container["args"])


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch, as `kubectl patch --type merge` applies it."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# What kube-prometheus defines (its Prometheus resource, in short): the patch must keep
# all of it and add remote write and read.
KUBE_PROMETHEUS_PROMETHEUS: Manifest = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "Prometheus",
    "metadata": {"name": "k8s", "namespace": "monitoring"},
    "spec": {
        "replicas": 1,
        "retention": "15d",
        "serviceAccountName": "prometheus-k8s",
        "serviceMonitorSelector": {},
        "ruleSelector": {},
    },
}


@pytest.fixture(scope="module")
def kube_prometheus(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    """deploy/kube-prometheus as a user adds it: a component of kube-prometheus's
    kustomization, here one holding just its Prometheus resource."""
    import yaml

    root = tmp_path_factory.mktemp("kube-prometheus")
    (root / "prometheus.yaml").write_text(yaml.safe_dump(KUBE_PROMETHEUS_PROMETHEUS))
    component = Path(
        *[".."] * len(root.relative_to(root.anchor).parts), DEPLOY.relative_to(DEPLOY.anchor)
    )
    (root / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["prometheus.yaml"],
                "components": [str(component / "kube-prometheus")],
            }
        )
    )
    return render(root)


def strata_url(objects: list[Manifest], path: str) -> str:
    """The gateway Service's in-cluster URL of an endpoint."""
    service = find(objects, "Service", "strata")
    (port,) = service["spec"]["ports"]
    meta = service["metadata"]
    return f"http://{meta['name']}.{meta['namespace']}.svc:{port['port']}{path}"


def test_kube_prometheus_writes_to_and_reads_from_the_strata_service(
    kube_prometheus: list[Manifest], rendered: dict[str, list[Manifest]]
) -> None:
    from gateway.app import WRITE_PATHS
    from querier.read_api import READ_PATH

    prometheus = find(kube_prometheus, "Prometheus", "k8s")
    assert prometheus["apiVersion"] == "monitoring.coreos.com/v1"
    assert prometheus["metadata"]["namespace"] == "monitoring"
    spec = prometheus["spec"]
    (write,) = spec["remoteWrite"]
    (read,) = spec["remoteRead"]
    assert write["url"] == strata_url(rendered["seaweedfs"], WRITE_PATHS[0])
    assert read["url"] == strata_url(rendered["seaweedfs"], READ_PATH)
    assert read["readRecent"] is True
    # Everything kube-prometheus had is still there.
    assert KUBE_PROMETHEUS_PROMETHEUS["spec"].items() <= spec.items()


def test_the_patch_file_gives_the_same_result_through_kubectl_patch(
    kube_prometheus: list[Manifest],
) -> None:
    (patch,) = load_yaml_documents(DEPLOY / "kube-prometheus" / "prometheus-strata.yaml")
    patched = merge_patch(KUBE_PROMETHEUS_PROMETHEUS, patch)
    assert patched == find(kube_prometheus, "Prometheus", "k8s")


def test_the_servicemonitor_scrapes_the_gateway_and_querier_services(
    kube_prometheus: list[Manifest], rendered: dict[str, list[Manifest]]
) -> None:
    monitor = find(kube_prometheus, "ServiceMonitor", "strata")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    selector = monitor["spec"]["selector"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"

    def selected(service: Manifest) -> bool:
        labels = service["metadata"]["labels"]
        if not selector["matchLabels"].items() <= labels.items():
            return False
        return all(
            labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", [])
        )

    services = [o for o in rendered["seaweedfs+querier"] if o["kind"] == "Service"]
    chosen = sorted(s["metadata"]["name"] for s in services if selected(s))
    assert chosen == ["strata", "strata-query"]
    for service in services:
        if selected(service):
            assert endpoint["port"] in [p["name"] for p in service["spec"]["ports"]]


def test_kube_prometheus_may_discover_targets_in_the_strata_namespace(
    kube_prometheus: list[Manifest],
) -> None:
    role = find(kube_prometheus, "Role", "prometheus-k8s")
    binding = find(kube_prometheus, "RoleBinding", "prometheus-k8s")
    for obj in (role, binding):
        assert obj["metadata"]["namespace"] == NAMESPACE
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    (subject,) = binding["subjects"]
    assert (subject["name"], subject["namespace"]) == ("prometheus-k8s", "monitoring")
    granted = {r for rule in role["rules"] for r in rule["resources"]}
    assert {"services", "endpoints", "pods"} <= granted
