"""Shared fixtures: a fake upstream on 127.0.0.1, a mirror directory, a running server, venvs.

Everything here is hermetic: the only hosts ever contacted are servers these fixtures start on
the loopback interface, and pip/uv run with the machine's own configuration switched off.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gitmirror.storage.store import BlobStore  # noqa: E402

from fakeupstream import FakeUpstream, make_sample_index  # noqa: E402
from nofsync import ENVIRONMENT as NO_FSYNC  # noqa: E402

GITMIRROR = [sys.executable, "-m", "gitmirror"]


#: two download processes per sync (one per core; ``concurrency`` defaults to 8): each one the machine
#: forks and tears down costs every sync of the suite CPU; a test's own ``concurrency:`` comes later, and wins
TEST_SETTINGS = "concurrency: 2\n"

_CACHE_HOME = tempfile.mkdtemp(prefix="gitmirror-test-cache-")
atexit.register(shutil.rmtree, _CACHE_HOME, ignore_errors=True)  # one per test run, gone with it


#: Ports for test servers: below Linux's default ephemeral range (32768-60999), above common services.
_PORTS_LOW, _PORTS_HIGH = 20000, 32000


def isolated_env(**extra: str) -> dict[str, str]:
    """The environment for pip, uv and git without this machine's own configuration."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PIP_", "UV_", "GIT_", "PYTHON"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(
        PIP_CONFIG_FILE="/dev/null",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_CACHE_DIR=env.get("UV_CACHE_DIR_FOR_TESTS", "/tmp/gitmirror-test-uv-cache"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Test Mirror",
        GIT_AUTHOR_EMAIL="mirror@example.invalid",
        GIT_COMMITTER_NAME="Test Mirror",
        GIT_COMMITTER_EMAIL="mirror@example.invalid",
        XDG_CACHE_HOME=_CACHE_HOME,  # the warm-sync pointers (gitmirror/sync/unchanged.py), never the user's
        NETRC=os.devnull,  # no credentials of this machine's user (gitmirror/upstream/credentials.py)
    )
    env.update(NO_FSYNC)  # no disk flushes in the processes tests start (tests/nofsync.py)
    env.update(extra)
    return env


def free_port() -> int:
    """A loopback port nothing listens on, for a server the test starts next.

    Chosen below the kernel's ephemeral range and from this xdist worker's own slice of it, so
    neither a parallel worker nor an outgoing connection takes it before the server binds it.
    """
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    slice_size = (_PORTS_HIGH - _PORTS_LOW) // max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    low = _PORTS_LOW + worker * slice_size
    for _ in range(100):
        port = random.randrange(low, low + slice_size)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded machine: any port the kernel offers
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def sample(upstream: FakeUpstream) -> dict:
    return make_sample_index(upstream)


@dataclass
class Mirror:
    """A mirror directory with its ``mirror.yaml``; ``run`` invokes the real CLI in a subprocess."""

    root: Path
    upstream: FakeUpstream

    @property
    def repo(self) -> Path:
        return self.root / "mirror" / "repo"

    @property
    def store(self) -> Path:
        return self.root / "mirror" / "store"

    def configure(self, text: str = "") -> None:
        (self.root / "mirror.yaml").write_text(
            f"upstream: {self.upstream.url}\nretries: 1\ntimeout: 5\n{TEST_SETTINGS}{text}"
        )

    def run(
        self, *args: str, check: bool = False, timeout: float = 120, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*GITMIRROR, *args],
            cwd=self.root,
            env=isolated_env(**(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"gitmirror {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
        return result

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(self.repo), *args],
            env=isolated_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout


@pytest.fixture
def localhost_certificate(tmp_path: Path) -> tuple[Path, Path]:
    """(certificate, key) made for 127.0.0.1 by the openssl command; the test is skipped without it."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def store(tmp_path: Path) -> BlobStore:
    """An empty blob store of its own, for tests of the store alone."""
    blob_store = BlobStore(tmp_path / "store")
    blob_store.init()
    return blob_store


@pytest.fixture(scope="session")
def synced_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repository synced once from the sample index (one commit on main); tests work on copies."""
    root = tmp_path_factory.mktemp("synced")
    with FakeUpstream() as upstream:
        make_sample_index(upstream)
        mirror = Mirror(root=root, upstream=upstream)
        mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n")
        mirror.run("sync", check=True)
    return mirror.repo


@pytest.fixture
def mirror(tmp_path: Path, upstream: FakeUpstream) -> Mirror:
    root = tmp_path / "site"
    root.mkdir()
    result = Mirror(root=root, upstream=upstream)
    result.configure("projects:\n  - demo-pkg\n  - other_lib\n")
    return result


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    #: the server's stderr, a file: a pipe nobody reads would stop a server that logs more than it holds
    log: IO[bytes] | None = None

    @property
    def index_url(self) -> str:
        return self.url + "/simple/"

    def stderr(self) -> str:
        """What the server wrote to stderr so far."""
        return _written(self.log)


def _written(log: IO[bytes] | None) -> str:
    if log is None:
        return ""
    log.seek(0)
    return log.read().decode(errors="replace")


def start_server(root: Path, *args: str) -> RunningServer:
    """Start ``gitmirror serve`` and wait until it answers; the caller stops it.

    A port ``free_port`` chose can be taken by a parallel test before the server binds it:
    then the server is started again on another port.
    """
    for attempt in range(3):
        port = free_port()
        log = tempfile.TemporaryFile()  # noqa: SIM115 - the server's, read by RunningServer.stderr
        process = subprocess.Popen(
            [*GITMIRROR, "serve", "--port", str(port), *args],
            cwd=root,
            env=isolated_env(),
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_answering(url + "/simple/", process, "gitmirror serve", log=log)
        except AssertionError as error:
            if attempt < 2 and "address already in use" in str(error).lower():
                continue
            raise
        return RunningServer(url=url, process=process, log=log)
    raise AssertionError("unreachable")


def wait_until_answering(
    url: str, process: subprocess.Popen[bytes], what: str, seconds: float = 30, log: IO[bytes] | None = None
) -> None:
    """Poll ``url`` until the server started as ``process`` answers; kill it and fail if it never does
    (saying what it wrote to its stderr pipe, or to ``log``)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=10)
                output = process.stderr.read().decode() if process.stderr else _written(log)
                raise AssertionError(f"{what} did not start: {output}") from None
            time.sleep(0.1)


def stop_server(server: RunningServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture
def serve(mirror: Mirror) -> Iterator[RunningServer]:
    """``gitmirror serve`` over the ``mirror`` fixture (sync before using it)."""
    servers: list[RunningServer] = []

    def start(*args: str) -> RunningServer:
        server = start_server(mirror.root, *args)
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        stop_server(server)


@dataclass
class Venv:
    path: Path

    @property
    def python(self) -> str:
        return str(self.path / "bin" / "python")

    def pip_install(self, index_url: str, *requirements: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, "-m", "pip", "install", "--no-cache-dir", "--index-url", index_url, *requirements],
            env=isolated_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )

    def uv_install(self, index_url: str, *requirements: str) -> subprocess.CompletedProcess[str]:
        uv = Path(sys.executable).parent / "uv"
        return subprocess.run(
            [
                str(uv) if uv.exists() else "uv",
                "pip",
                "install",
                "--python",
                self.python,
                "--no-cache",
                "--index-url",
                index_url,
                *requirements,
            ],
            env=isolated_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )

    def run(self, code: str) -> str:
        return subprocess.run(
            [self.python, "-c", code], env=isolated_env(), capture_output=True, text=True, check=True
        ).stdout.strip()


@pytest.fixture(scope="session")
def venv_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One virtualenv with pip, made once per session (per xdist worker) and copied for each test.

    ``python -m venv`` seeds pip from the interpreter's bundled wheel, so no host is contacted
    (``uv venv --seed`` would fetch pip from an index); a copy costs a fraction of a new venv.
    Parallel workers share one template through their common parent directory, under a lock.
    """
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the run's directory, common to every worker
    path = shared / "venv-template"
    with open(shared / "venv-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "venv-template.done").exists():
            shutil.rmtree(path, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(path)], env=isolated_env(), check=True)
            (shared / "venv-template.done").touch()
    return path


def _link_or_copy(source: str, target: str) -> None:
    """Hard-link a template file (pip replaces files, never writes into them), copying across devices."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def copy_venv(template: Path, path: Path) -> Venv:
    """A fresh virtualenv at ``path`` from ``template``: the same interpreter, pip and nothing else."""
    shutil.copytree(template, path, symlinks=True, copy_function=_link_or_copy)
    return Venv(path)


@pytest.fixture
def make_venv(tmp_path: Path, venv_template: Path):
    """Fresh virtualenvs (with pip) on demand: ``make_venv("name")``."""
    counter = iter(range(1000))

    def create(name: str = "") -> Venv:
        return copy_venv(venv_template, tmp_path / f"venv-{name or next(counter)}")

    return create


from s3fixture import s3_mirror, s3_server  # noqa: E402,F401 - the S3 server fixtures (tests/s3fixture.py)
