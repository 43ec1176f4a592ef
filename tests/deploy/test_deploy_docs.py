"""The deployment docs name real things: every deploy/ path they mention exists, and every
Kubernetes object their commands address (`statefulset/strata`, `svc/seaweedfs`, …) is
one the manifests create, so a rename cannot leave a newcomer with a dead command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.kube import REPO, Manifest, render_with_querier

DOCS = [
    REPO / "docs" / name for name in ("quickstart-k3s.md", "operations.md", "troubleshooting.md")
]
KINDS = {
    "statefulset": "StatefulSet",
    "deployment": "Deployment",
    "svc": "Service",
    "job": "Job",
    "cronjob": "CronJob",
}
# kubectl's TYPE/NAME, as the docs write it in commands.
_ADDRESSED = re.compile(r"\b(statefulset|deployment|svc|job|cronjob)/([a-z0-9][a-z0-9-]*)\b")
_DEPLOY_PATH = re.compile(r"(?<![\w/.-])deploy/[\w./-]*[\w/]")


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    """Everything the seaweedfs overlay creates, querier included."""
    return render_with_querier(tmp_path_factory.mktemp("docs"), "seaweedfs")


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_deploy_paths_in_the_docs_exist(page: Path) -> None:
    paths = set(_DEPLOY_PATH.findall(page.read_text()))
    if page.name == "quickstart-k3s.md":
        assert paths
    for path in paths:
        assert (REPO / path).exists(), f"{page.name} names {path}"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_objects_the_docs_address_exist(page: Path, objects: list[Manifest]) -> None:
    present = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for kind, name in _ADDRESSED.findall(page.read_text()):
        assert (KINDS[kind], name) in present, f"{page.name}: {kind}/{name}"
