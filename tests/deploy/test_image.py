"""The container image, checked without a Docker engine (CI has none): the build context
that .dockerignore leaves holds what the Dockerfile copies and nothing else, and a wheel
built from exactly that context installs into a fresh virtual environment whose `strata`
runs the image's command.

The fresh environment costs about 25 s (pip installs the dependencies, from its cache
when it can) and is made once per module: reusing the project's .venv would not show that
the wheel carries every module and that its declared dependencies are enough.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deploy.dockerfile import (
    DockerIgnore,
    Instruction,
    context_files,
    copy_sources,
    read_instructions,
)
from tests.deploy.kube import REPO
from tests.e2e.servers import HOST, Process, free_port, wait_until_ready

DOCKERFILE = REPO / "Dockerfile"
PIP_TIMEOUT_S = 600
START_TIMEOUT_S = 30.0
STOP_GRACE_S = 30.0


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    """The Dockerfile, parsed."""
    return read_instructions(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the build context Docker would receive from the repository root."""
    ignore = DockerIgnore((REPO / ".dockerignore").read_text())
    root = tmp_path_factory.mktemp("context")
    for relative in context_files(REPO, ignore):
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    return root


def one(instructions: list[Instruction], keyword: str) -> Instruction:
    """The last instruction with this keyword (the one in force for the final stage)."""
    found = [i for i in instructions if i.keyword == keyword]
    assert found, f"the Dockerfile has no {keyword}"
    return found[-1]


def clean_environment(cwd: Path) -> dict[str, str]:
    """The environment for the installed command: no STRATA_* settings, nothing that would
    import the repository's code instead of the installed one."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("STRATA_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env["HOME"] = str(cwd)
    return env


def test_dockerignore_rules_work_as_docker_reads_them() -> None:
    ignore = DockerIgnore("*\n!gateway/\n**/__pycache__\n")
    assert ignore.excluded(".venv/bin/python")
    assert ignore.excluded("README.md")
    assert not ignore.excluded("gateway/cli.py")
    assert ignore.excluded("gateway/__pycache__/cli.cpython-311.pyc")


def test_what_the_dockerfile_copies_is_in_the_build_context(
    instructions: list[Instruction], context: Path
) -> None:
    sources = copy_sources(instructions)
    assert sources
    for source in sources:
        assert (context / source).exists(), f"COPY {source}: not in the build context"


def test_the_build_context_holds_only_what_is_copied(
    instructions: list[Instruction], context: Path
) -> None:
    copied = [s.rstrip("/") for s in copy_sources(instructions)]
    for path in context.rglob("*"):
        if path.is_file():
            relative = path.relative_to(context).as_posix()
            assert any(relative == s or relative.startswith(s + "/") for s in copied), (
                f"{relative} is sent to the builder but never copied"
            )
    assert not list(context.rglob("__pycache__"))


def test_the_base_image_is_the_python_the_project_requires(
    instructions: list[Instruction],
) -> None:
    (argument,) = [i.text for i in instructions if i.text.startswith("PYTHON_IMAGE=")]
    image = argument.split("=", 1)[1]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    assert image.startswith("python:3.11-slim-")
    assert all(i.text.startswith("${PYTHON_IMAGE}") for i in instructions if i.keyword == "FROM")


def test_the_image_runs_as_an_unprivileged_user(instructions: list[Instruction]) -> None:
    uid, _, gid = one(instructions, "USER").text.partition(":")
    assert uid.isdigit()
    assert gid.isdigit()
    assert int(uid) != 0
    assert int(gid) != 0
    created = " ".join(i.text for i in instructions if i.keyword == "RUN")
    assert f"--uid {uid}" in created
    assert f"chown {uid}:{gid} /data" in created


def test_the_entrypoint_is_strata_serving_on_the_exposed_port(
    instructions: list[Instruction],
) -> None:
    assert one(instructions, "ENTRYPOINT").words == ["strata"]
    cmd = one(instructions, "CMD").words
    assert cmd[0] == "serve"
    host, _, port = cmd[cmd.index("--listen") + 1].rpartition(":")
    assert host == "0.0.0.0"  # reachable from outside the container
    assert port in one(instructions, "EXPOSE").words
    assert cmd[cmd.index("--data-dir") + 1] in one(instructions, "VOLUME").words


@pytest.fixture(scope="module")
def installed(context: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel built from the build context installed,
    as the image's `pip wheel .` and `pip install` do; its bin directory."""
    work = tmp_path_factory.mktemp("image")
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(context)],
        check=True,
        timeout=PIP_TIMEOUT_S,
        cwd=work,
    )
    (wheel,) = wheels.glob("strata-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=PIP_TIMEOUT_S)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        timeout=PIP_TIMEOUT_S,
        cwd=work,
    )
    return venv / "bin"


def run_installed(installed: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command of the fresh environment from outside the repository."""
    return subprocess.run(
        [str(installed / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=installed.parent,
        env=clean_environment(installed.parent),
    )


def test_the_installed_command_is_the_installed_code(installed: Path) -> None:
    result = run_installed(installed, "python", "-c", "import gateway; print(gateway.__file__)")
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).is_relative_to(installed.parent)


@pytest.mark.parametrize("command", [[], ["serve"], ["query"], ["compact"]])
def test_the_installed_strata_answers_help(installed: Path, command: list[str]) -> None:
    result = run_installed(installed, "strata", *command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(" ".join(["usage: strata", *command]))


@pytest.fixture
def image_command(instructions: list[Instruction], tmp_path: Path) -> list[str]:
    """The image's CMD with its listen address on loopback and /data in a temp dir."""
    cmd = one(instructions, "CMD").words
    cmd[cmd.index("--listen") + 1] = f"{HOST}:{free_port()}"
    cmd[cmd.index("--data-dir") + 1] = str(tmp_path / "data")
    return cmd


@pytest.fixture
def image_server(
    installed: Path, image_command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Process, str]]:
    """`strata` of the fresh environment running the image's command; its base URL."""
    for name in list(os.environ):
        if name.startswith("STRATA_") or name in ("PYTHONPATH", "VIRTUAL_ENV"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    process = Process("strata (installed)", tmp_path / "strata.log")
    process.spawn([str(installed / "strata"), *image_command])
    listen = image_command[image_command.index("--listen") + 1]
    try:
        yield process, f"http://{listen}"
    finally:
        if process.running:
            process.signal_and_wait(signal.SIGTERM, STOP_GRACE_S)


def test_the_installed_strata_runs_the_image_command(image_server: tuple[Process, str]) -> None:
    process, url = image_server
    wait_until_ready(process, f"{url}/-/ready", START_TIMEOUT_S)
    wait_until_ready(process, f"{url}/-/healthy", START_TIMEOUT_S)
    wait_until_ready(process, f"{url}/metrics", START_TIMEOUT_S)
    # Stops cleanly on SIGTERM, as `docker stop` sends it (uvicorn re-raises the signal).
    assert process.signal_and_wait(signal.SIGTERM, STOP_GRACE_S) in (0, -signal.SIGTERM)
