"""The rendered seaweedfs overlay (querier switched on), run on loopback as the cluster
would run it: SeaweedFS with the Deployment's arguments and the Secret's key pair, the
bucket Job's script, then `strata serve`, `strata query` and `strata compact` with their
containers' arguments and environment. Only addresses and paths change (loopback ports,
temp directories for /data). A sample written to the gateway and flushed comes back
through the querier, so bucket URL, credentials and bucket all hold together."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import snappy

from gateway.app import FLUSH_PATH, WRITE_PATHS
from proto import remote_pb2, types_pb2
from querier.read_api import READ_PATH
from tests.deploy.kube import (
    Manifest,
    environment,
    find,
    named,
    render_with_querier,
)
from tests.e2e.servers import HOST, Process, free_port, log_tail, strata_command, wait_until_ready
from tests.support.seaweedfs import Ports, weed_binary

pytestmark = pytest.mark.e2e

START_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 120
STOP_GRACE_S = 30.0
SERVICE_ENDPOINT = "http://seaweedfs:8333"


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Manifest]:
    """deploy/overlays/seaweedfs with deploy/components/querier, rendered."""
    return render_with_querier(tmp_path_factory.mktemp("render"), "seaweedfs")


def container_of(objects: list[Manifest], kind: str, name: str) -> Manifest:
    """The one container of a workload."""
    obj = find(objects, kind, name)
    spec = obj["spec"]["jobTemplate"]["spec"] if kind == "CronJob" else obj["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    result: Manifest = container
    return result


def replace_arg(args: list[str], old: str, new: str) -> list[str]:
    """The arguments with one value replaced; fails if it is not there."""
    assert old in args, f"{old} not in {args}"
    return [new if arg == old else arg for arg in args]


def replace_flag_value(args: list[str], flag: str, value: str) -> list[str]:
    """`--flag VALUE` given another value."""
    out = list(args)
    out[out.index(flag) + 1] = value
    return out


@pytest.fixture(scope="module")
def seaweedfs(objects: list[Manifest], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SeaweedFS started with the overlay's arguments and key pair; its S3 endpoint."""
    base = tmp_path_factory.mktemp("seaweedfs")
    container = container_of(objects, "Deployment", "seaweedfs")
    ports = Ports.allocate()
    args = replace_arg(container["args"], "-dir=/data", f"-dir={base / 'data'}")
    args = replace_arg(args, "-ip.bind=0.0.0.0", f"-ip.bind={HOST}")
    args = replace_arg(args, "-s3.port=8333", f"-s3.port={ports.s3}")
    # The other listeners keep their defaults in the pod; here they need free ports.
    args += [
        f"-master.port={ports.master}",
        f"-master.port.grpc={ports.master_grpc}",
        f"-volume.port={ports.volume}",
        f"-volume.port.grpc={ports.volume_grpc}",
        f"-filer.port={ports.filer}",
        f"-filer.port.grpc={ports.filer_grpc}",
        f"-s3.port.grpc={ports.s3_grpc}",
    ]
    (base / "data").mkdir()
    env = {**os.environ, **environment(objects, container), "TMPDIR": str(base)}
    process = Process("seaweedfs", base / "weed.log")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.chdir(base)
        process.spawn([weed_binary(), *args])
    try:
        wait_for_port(process, ports.s3)
        yield f"http://{HOST}:{ports.s3}"
    finally:
        if process.running:
            process.signal_and_wait(signal.SIGTERM, 2.0)


def wait_for_port(process: Process, port: int) -> None:
    """Until the port takes connections, as the readiness probe (tcpSocket) waits."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.exited_early() is not None:
            pytest.fail(f"weed exited; log:\n{log_tail(process.log_path)}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"weed's S3 port did not open; log:\n{log_tail(process.log_path)}")


def local_environment(
    objects: list[Manifest], container: Manifest, endpoint: str
) -> dict[str, str]:
    """A container's environment with the in-cluster S3 endpoint swapped for the local one."""
    env = environment(objects, container)
    assert SERVICE_ENDPOINT in env["STRATA_BUCKET_URL"]
    env["STRATA_BUCKET_URL"] = env["STRATA_BUCKET_URL"].replace(SERVICE_ENDPOINT, endpoint)
    return env


def child_environment(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any STRATA_* setting, plus `extra`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    return {**base, **extra}


@pytest.fixture(scope="module")
def bucket(
    objects: list[Manifest], seaweedfs: str, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """The bucket Job run to completion, twice (the second run finds the bucket)."""
    job = container_of(objects, "Job", "strata-create-bucket")
    script_path = Path(job["command"][-1])
    script = named(objects, "ConfigMap", "strata-create-bucket")["data"][script_path.name]
    workdir = tmp_path_factory.mktemp("job")
    (workdir / script_path.name).write_text(script)
    env = child_environment(
        {**local_environment(objects, job, seaweedfs), "CREATE_BUCKET_TIMEOUT_S": "60"}
    )
    outputs = []
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, script_path.name],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            cwd=workdir,
            env=env,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        outputs.append(result.stdout)
    assert "created bucket" in outputs[0]
    assert "exists" in outputs[1]
    return env["STRATA_BUCKET_URL"]


def test_the_bucket_script_gives_up_with_status_1_on_bad_credentials(
    objects: list[Manifest], seaweedfs: str, tmp_path: Path
) -> None:
    job = container_of(objects, "Job", "strata-create-bucket")
    env = local_environment(objects, job, seaweedfs)
    env.update({"AWS_SECRET_ACCESS_KEY": "wrong", "CREATE_BUCKET_TIMEOUT_S": "3"})
    script = named(objects, "ConfigMap", "strata-create-bucket")["data"]["create_bucket.py"]
    (tmp_path / "create_bucket.py").write_text(script)
    result = subprocess.run(
        [sys.executable, "create_bucket.py"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=tmp_path,
        env=child_environment(env),
    )
    assert result.returncode == 1
    assert "SignatureDoesNotMatch" in result.stderr


class Server:
    """A `strata` server started from a container of the rendered overlay."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.args = replace_flag_value(args, "--listen", f"{HOST}:{self.port}")
        if "--data-dir" in self.args:
            self.args = replace_flag_value(self.args, "--data-dir", str(workdir / "data"))
        self.env = env
        self.workdir = workdir
        self.process = Process(name, workdir / f"{name}.log")

    @property
    def url(self) -> str:
        """Base URL, no trailing slash."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        """Spawn with exactly the container's environment (STRATA_* of the test removed)."""
        with pytest.MonkeyPatch.context() as patch:
            for key in [k for k in os.environ if k.startswith("STRATA_")]:
                patch.delenv(key)
            for key, value in self.env.items():
                patch.setenv(key, value)
            patch.chdir(self.workdir)
            self.process.spawn([*strata_command(), *self.args])

    def wait_for_probes(self, container: Manifest) -> None:
        """Until the container's readiness and liveness probes would pass."""
        for probe in ("readinessProbe", "livenessProbe"):
            path = container[probe]["httpGet"]["path"]
            wait_until_ready(self.process, self.url + path, START_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM, as Kubernetes stops a pod; fails unless it exits cleanly."""
        code = self.process.signal_and_wait(signal.SIGTERM, STOP_GRACE_S)
        assert code in (0, -signal.SIGTERM), log_tail(self.process.log_path)


def write_request(name: str, value: float, timestamp_ms: int) -> bytes:
    """One sample as a snappy remote-write 1.0 body."""
    series = types_pb2.TimeSeries(
        labels=[types_pb2.Label(name="__name__", value=name)],
        samples=[types_pb2.Sample(value=value, timestamp=timestamp_ms)],
    )
    return bytes(snappy.compress(remote_pb2.WriteRequest(timeseries=[series]).SerializeToString()))


def read_samples(url: str, name: str, start_ms: int, end_ms: int) -> list[tuple[int, float]]:
    """(timestamp, value) of the series `name` over remote read (SAMPLES)."""
    matcher = types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name="__name__", value=name)
    query = remote_pb2.Query(
        start_timestamp_ms=start_ms, end_timestamp_ms=end_ms, matchers=[matcher]
    )
    body = snappy.compress(remote_pb2.ReadRequest(queries=[query]).SerializeToString())
    answer = httpx.post(
        url + READ_PATH,
        content=bytes(body),
        headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"},
        timeout=30.0,
    )
    assert answer.status_code == 200, answer.text
    response = remote_pb2.ReadResponse.FromString(snappy.decompress(answer.content))
    return [
        (sample.timestamp, sample.value)
        for result in response.results
        for series in result.timeseries
        for sample in series.samples
    ]


def test_gateway_querier_and_compactor_run_as_the_overlay_configures_them(
    objects: list[Manifest], bucket: str, seaweedfs: str, tmp_path: Path
) -> None:
    gateway_container = container_of(objects, "StatefulSet", "strata")
    gateway = Server(
        "gateway",
        gateway_container["args"],
        local_environment(objects, gateway_container, seaweedfs),
        tmp_path,
    )
    gateway.start()
    gateway.wait_for_probes(gateway_container)
    now_ms = int(time.time() * 1000)
    written = httpx.post(
        gateway.url + WRITE_PATHS[0],
        content=write_request("deploy_check", 42.5, now_ms),
        headers={"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"},
        timeout=30.0,
    )
    assert written.status_code == 204, written.text
    flushed = httpx.post(gateway.url + FLUSH_PATH, timeout=60.0)
    assert flushed.status_code == 200, flushed.text
    assert flushed.json()["uploadedBlocks"] >= 1
    gateway.stop()

    querier_container = container_of(objects, "Deployment", "strata-query")
    querier = Server(
        "querier",
        querier_container["args"],
        local_environment(objects, querier_container, seaweedfs),
        tmp_path,
    )
    querier.start()
    querier.wait_for_probes(querier_container)
    assert read_samples(querier.url, "deploy_check", now_ms - 60_000, now_ms + 60_000) == [
        (now_ms, 42.5)
    ]
    querier.stop()

    compactor_container = container_of(objects, "CronJob", "strata-compactor")
    args = replace_flag_value(compactor_container["args"], "--data-dir", str(tmp_path / "work"))
    result = subprocess.run(
        [*strata_command(), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=tmp_path,
        env=child_environment(local_environment(objects, compactor_container, seaweedfs)),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "compaction pass: tenants=1" in result.stdout + result.stderr
