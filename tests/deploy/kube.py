"""Kustomizations rendered as `kubectl apply -k` renders them, and the objects inside.

`kubectl kustomize` is the real renderer (tests/run.sh installs kubectl); a missing
kubectl fails the test. Objects are plain dicts, as kubectl would send them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBECTL_TIMEOUT_S = 60
# kustomize 4 brought the `labels` field and components as the manifests use them.
MIN_KUSTOMIZE_MAJOR = 4

Manifest = dict[str, Any]


def kubectl() -> str:
    """The kubectl executable; its absence fails the test (the suite renders for real)."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail("kubectl is not installed: tests/run.sh installs it (apt package kubectl)")
    return path


def kustomize_major() -> int:
    """The major version of the kustomize built into kubectl."""
    result = subprocess.run(
        [kubectl(), "version", "--client", "-o", "yaml"],
        capture_output=True,
        text=True,
        timeout=KUBECTL_TIMEOUT_S,
        check=True,
    )
    found = re.search(r"kustomizeVersion:\s*v(\d+)", result.stdout)
    if found is None:
        pytest.fail(f"kubectl reports no kustomize version:\n{result.stdout}")
    return int(found.group(1))


def render(directory: Path) -> list[Manifest]:
    """`kubectl kustomize DIRECTORY`, parsed; a failed render fails the test with its error."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=KUBECTL_TIMEOUT_S,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def load_yaml_documents(path: Path) -> list[Manifest]:
    """The non-empty YAML documents of one file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    """The one object of this kind and name; fails the test if it is not there."""
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if len(found) != 1:
        present = sorted(f"{o['kind']}/{o['metadata']['name']}" for o in objects)
        pytest.fail(f"expected one {kind}/{name}, found {len(found)} among {present}")
    return found[0]


def named(objects: list[Manifest], kind: str, prefix: str) -> Manifest:
    """The one object of this kind whose name is `prefix` or `prefix-<kustomize hash>`."""
    pattern = re.compile(rf"{re.escape(prefix)}(-[a-z0-9]{{10}})?")
    found = [o for o in objects if o["kind"] == kind and pattern.fullmatch(o["metadata"]["name"])]
    if len(found) != 1:
        pytest.fail(f"expected one {kind} named {prefix}[-hash], found {len(found)}")
    return found[0]


def pod_spec(obj: Manifest) -> Manifest | None:
    """The pod template's spec of a workload, None for other kinds."""
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        spec: Manifest = obj["spec"]["template"]["spec"]
        return spec
    if kind == "CronJob":
        spec = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    return None


def pod_labels(obj: Manifest) -> dict[str, str]:
    """The labels of a workload's pods."""
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    labels: dict[str, str] = spec["template"]["metadata"]["labels"]
    return labels


def containers(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest, Manifest]]:
    """(workload, pod spec, container) for every container and init container."""
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield obj, spec, container


def environment(objects: list[Manifest], container: Manifest) -> dict[str, str]:
    """A container's environment as Kubernetes builds it: envFrom ConfigMaps and Secrets
    that exist in `objects` (Secrets decoded), then `env` over them."""
    import base64

    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            for obj in objects:
                if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == name:
                    values.update(obj.get("data", {}))
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            for obj in objects:
                if obj["kind"] == "Secret" and obj["metadata"]["name"] == name:
                    values.update(
                        {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
                    )
                    values.update(obj.get("stringData", {}))
    for entry in container.get("env", []):
        values[entry["name"]] = entry["value"]
    return values


QUERIER_COMMENTED = "# components:\n#   - ../../components/querier\n"
QUERIER_ENABLED = "components:\n  - ../../components/querier\n"


def render_with_querier(workdir: Path, overlay: str) -> list[Manifest]:
    """An overlay with the querier component switched on the way its kustomization.yaml
    says (uncommenting two lines), rendered from a copy of deploy/."""
    copy = workdir / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / "overlays" / overlay / "kustomization.yaml"
    text = path.read_text()
    if QUERIER_COMMENTED not in text:
        pytest.fail(f"deploy/overlays/{overlay}/kustomization.yaml lost its querier lines")
    path.write_text(text.replace(QUERIER_COMMENTED, QUERIER_ENABLED))
    return render(path.parent)
