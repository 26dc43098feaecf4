"""Bounded work: a hostile upstream or hydrate source cannot make a run read for ever or without limit.

Against the loopback fake upstream and the real CLI: a body whose size nobody announced is cut at
its cap, one longer than announced is refused, a trickle fails at the deadline, a ``.metadata``
file that never ends is cut; a directory source's symlinks, FIFOs and devices are not read. Each
time: exit 1, one line naming the file, nothing stored under the blob's name, the rest mirrored,
and ``gitmirror verify`` content with what was committed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitmirror.model.hosts import HostPolicy
from gitmirror.model.limits import MAX_METADATA_BYTES, MAX_UNANNOUNCED_BYTES, Limits
from gitmirror.storage.store import BlobStore
from gitmirror.sync.config import ConfigError, from_mapping
from gitmirror.upstream.transport import Transient, Transport

from conftest import Mirror, isolated_env
from fakeupstream import FakeUpstream, build_wheel

WHEEL = "demo_pkg-1.0-py3-none-any.whl"
SDIST = "demo_pkg-1.0.tar.gz"
DEMO_PAGE = "/simple/demo-pkg/"
CAP = 256 * 1024


def manifest_files(mirror: Mirror, project: str) -> set[str]:
    path = {
        "demo-pkg": "projects/de/mo/demo-pkg.jsonl",
        "other-lib": "projects/ot/he/other-lib.jsonl",
        "odd-meta": "projects/od/d-/odd-meta.jsonl",
    }[project]
    if path not in mirror.git("ls-tree", "-r", "--name-only", "main").split():
        return set()
    return {json.loads(line)["filename"] for line in mirror.git("show", f"main:{path}").splitlines()[1:]}


def stored(store: Path) -> set[str]:
    return {path.name for path in (store / "blobs").glob("*/*/*")} if (store / "blobs").is_dir() else set()


def one_line(text: str, name: str) -> str:
    """The one line of ``text`` naming ``name``."""
    lines = [line for line in text.splitlines() if name in line]
    assert len(lines) == 1, text
    return lines[0]


def assert_consistent(mirror: Mirror) -> None:
    """No temporary file left, and what is committed is what the store holds."""
    assert not list((mirror.store / "tmp").iterdir()), "a temporary file survived the run"
    verify = mirror.run("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def assert_rest_mirrored(mirror: Mirror, failed: str) -> None:
    demo = {
        "demo_pkg-1.0-py3-none-any.whl",
        "demo_pkg-1.0.tar.gz",
        "demo_pkg-1.1-py3-none-any.whl",
        "demo_pkg-1.1.tar.gz",
        "demo_pkg-2.0-py3-none-any.whl",
        "demo_pkg-2.0.tar.gz",
    }
    assert manifest_files(mirror, "demo-pkg") == demo - {failed}
    assert len(manifest_files(mirror, "other-lib")) == 2


# -- sync: bytes -------------------------------------------------------------------------------


@pytest.mark.parametrize(("filename", "chunked"), [(SDIST, False), (WHEEL, True)], ids=["sdist-close", "wheel-chunked"])
def test_endless_body_without_announced_size_is_cut_at_the_cap(
    mirror: Mirror, sample, upstream: FakeUpstream, filename: str, chunked: bool
) -> None:
    upstream.announce_sizes = False
    mirror.configure(f"projects: [demo-pkg, other_lib]\nmax_unannounced_size: {CAP}\n")
    upstream.fault(filename, "endless", times=-1, chunked=chunked)
    started = time.monotonic()
    result = mirror.run("sync", timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    line = one_line(result.stderr, f"{filename}: ")  # (a wheel's .metadata URL matches the fault too)
    assert f"no size announced and the body is longer than {CAP} bytes (max_unannounced_size)" in line
    assert "Traceback" not in result.stderr
    assert upstream.artifact("demo-pkg", filename).sha256 not in stored(mirror.store)
    assert_rest_mirrored(mirror, filename)
    assert_consistent(mirror)


@pytest.mark.parametrize("kind", ["endless", "longer"])
def test_body_longer_than_announced_is_refused(mirror: Mirror, sample, upstream: FakeUpstream, kind: str) -> None:
    size = upstream.artifact("demo-pkg", WHEEL).size
    upstream.fault(WHEEL, kind, times=-1, extra=b"x" * 100_000)
    result = mirror.run("sync", timeout=60)
    assert result.returncode == 1, result.stderr
    line = one_line(result.stderr, f"{WHEEL}: ")
    assert f"{WHEEL}: rejected, body longer than the announced {size} bytes" in line
    if kind == "longer":  # refused by its Content-Length, before a byte of the body is read
        assert f"(Content-Length: {size + 100_000})" in line
    assert upstream.artifact("demo-pkg", WHEEL).sha256 not in stored(mirror.store)
    assert_rest_mirrored(mirror, WHEEL)
    assert_consistent(mirror)


def test_endless_metadata_file_is_cut_at_its_cap(mirror: Mirror, upstream: FakeUpstream) -> None:
    """A PEP 658 file other than the wheel's METADATA is a download of its own, with no size announced."""
    wheel = build_wheel("odd-meta", "1.0")
    other = b"Metadata-Version: 2.1\nName: odd-meta\nVersion: 1.0\n"
    upstream.add("odd-meta", dataclasses.replace(wheel, metadata=other))
    upstream.fault(".whl.metadata", "endless", times=-1)
    mirror.configure(f"projects: [odd-meta]\nmax_unannounced_size: {CAP}\n")
    planned = mirror.run("plan", timeout=60)  # reads it in this process's threads, into memory
    assert planned.returncode == 1, planned.stdout + planned.stderr
    line = one_line(planned.stdout, f"{wheel.filename}.metadata: ")
    assert f"cannot read its dependencies: {wheel.filename}.metadata: no size announced" in line
    synced = mirror.run("sync", timeout=60)  # in its download processes (for the store) and for the closure
    assert synced.returncode == 1, synced.stderr
    lines = [line for line in synced.stderr.splitlines() if f"{wheel.filename}.metadata: " in line]
    assert any(line.startswith(f"error: {wheel.filename}.metadata: no size announced") for line in lines), lines
    assert all(f"no size announced and the body is longer than {CAP} bytes" in line for line in lines)
    assert manifest_files(mirror, "odd-meta") == {wheel.filename}  # recorded without its PEP 658 file
    assert stored(mirror.store) == {wheel.sha256}  # the wheel, not the endless file
    assert_consistent(mirror)


# -- sync: time --------------------------------------------------------------------------------


#: short, so that the two attempts of a trickle test take little of the suite's time
TRICKLE_DEADLINE = 0.6


@pytest.mark.parametrize(("match", "name"), [(WHEEL, WHEEL), (DEMO_PAGE, "demo-pkg")], ids=["file", "page"])
def test_trickle_fails_within_the_deadline(
    mirror: Mirror, sample, upstream: FakeUpstream, match: str, name: str
) -> None:
    # a byte every 0.2 s: the wheel (and the page) would take minutes
    upstream.fault(match, "trickle", times=-1, interval=0.2)
    mirror.configure(f"projects: [demo-pkg, other_lib]\ndownload_deadline: {TRICKLE_DEADLINE}\n")  # and retries: 1
    started = time.monotonic()
    result = mirror.run("sync", timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 20, f"a trickle held the run {elapsed:.0f} s"
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"error: {name}: ")]
    assert errors, result.stderr  # (a page: once per chain of requirements that led to it)
    for line in errors:
        assert "too slow: download_deadline exceeded after " in line and "(after 2 attempts)" in line
        waited = float(line.split("exceeded after ")[1].split(" s")[0])
        assert TRICKLE_DEADLINE <= waited < TRICKLE_DEADLINE + 0.5, line  # the deadline, not the rate or a timeout
    assert len(manifest_files(mirror, "other-lib")) == 2
    if name == WHEEL:
        assert upstream.artifact("demo-pkg", WHEEL).sha256 not in stored(mirror.store)
        assert_rest_mirrored(mirror, WHEEL)
    else:
        assert manifest_files(mirror, "demo-pkg") == set()
        assert not any(artifact.sha256 in stored(mirror.store) for artifact in sample["demo-pkg"])
    assert_consistent(mirror)


# -- the rule, in process ----------------------------------------------------------------------


@pytest.fixture
def raw_server() -> Iterator[tuple[str, list]]:
    """A loopback server answering each connection with ``script[0](connection)``; yields (URL, script)."""
    listener = socket.create_server(("127.0.0.1", 0))
    script: list = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _address = listener.accept()
            except OSError:
                return
            with connection:
                connection.recv(65536)
                with contextlib.suppress(OSError):  # the client gone
                    script[0](connection, stop)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/f.tar.gz", script
    stop.set()
    listener.close()
    thread.join(timeout=5)


def trickled_head(connection: socket.socket, stop: threading.Event) -> None:
    connection.sendall(b"HTTP/1.1 200 OK\r\n")
    while not stop.wait(0.1):
        connection.sendall(b"X")  # one header line that never ends


def steady_body(connection: socket.socket, stop: threading.Event) -> None:
    """256 KiB at about 512 KiB/s: longer than a 0.3 s deadline, far faster than 16 KiB/s."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 262144\r\n\r\n")
    for _piece in range(32):
        connection.sendall(b"y" * 8192)
        if stop.wait(0.015):
            return


def test_a_trickled_head_fails_at_the_deadline(raw_server, store: BlobStore) -> None:
    url, script = raw_server
    script.append(trickled_head)
    fetcher = Transport(HostPolicy(url, ("127.0.0.1:*",)), 5.0, Limits(deadline=0.5))
    writer = store.writer("0" * 64, None)
    started = time.monotonic()
    with pytest.raises(Transient, match="too slow: download_deadline exceeded after 0.[5-9]"):
        fetcher.fetch(url, writer)
    assert time.monotonic() - started < 2
    writer.abort()
    fetcher.close()


def test_bytes_received_extend_the_deadline_at_the_minimal_rate(raw_server, store: BlobStore) -> None:
    url, script = raw_server
    script.append(steady_body)
    policy = HostPolicy(url, ("127.0.0.1:*",))
    fair = Transport(policy, 5.0, Limits(deadline=0.3, min_rate=16 << 10))
    answer = fair.fetch(url, store.writer("0" * 64, None))  # 256 KiB earn 16 s more
    assert answer is not None and len(answer) == 262144
    fixed = Transport(policy, 5.0, Limits(deadline=0.3, min_rate=0))  # a fixed ceiling
    with pytest.raises(Transient, match="download_deadline exceeded"):
        fixed.fetch(url, store.writer("0" * 64, None))
    fair.close()
    fixed.close()


def test_caps_by_kind() -> None:
    limits = Limits(max_unannounced_size=10 << 20)
    assert limits.cap("http://h/files/p/p-1.0.tar.gz", 1234) == 1234
    assert limits.cap("http://h/files/p/p-1.0.tar.gz", None) == 10 << 20
    assert limits.cap("http://h/files/p/p-1.0-py3-none-any.whl.metadata", None) == 10 << 20  # the smaller
    assert Limits().cap("http://h/files/p/p-1.0-py3-none-any.whl.metadata", None) == MAX_METADATA_BYTES
    assert Limits().cap("http://h/files/p/p-1.0.zip", None) == MAX_UNANNOUNCED_BYTES


# -- configuration -----------------------------------------------------------------------------


def test_limits_configuration() -> None:
    defaults = from_mapping({"upstream": "http://127.0.0.1/simple/"}).limits
    assert defaults == Limits() and defaults.max_unannounced_size == 1 << 30
    config = from_mapping(
        {
            "upstream": "http://127.0.0.1/simple/",
            "max_unannounced_size": "100MiB",
            "download_deadline": 2.5,
            "download_min_rate": 0,
        }
    )
    assert config.limits == Limits(max_unannounced_size=100 << 20, deadline=2.5, min_rate=0)
    assert from_mapping({"upstream": "http://127.0.0.1/simple/", "download_min_rate": "1MB"}).limits.min_rate == 10**6


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"max_unannounced_size": 0}, "max_unannounced_size must be a positive size"),
        ({"max_unannounced_size": "lots"}, "max_unannounced_size must be a positive size"),
        ({"max_unannounced_size": [1]}, "max_unannounced_size must be a size like"),
        ({"download_deadline": 0}, "download_deadline must be a positive number of seconds"),
        ({"download_deadline": -3}, "download_deadline must be a positive number of seconds"),
        ({"download_deadline": float("inf")}, "download_deadline must be a positive number of seconds"),
        ({"download_deadline": "1h"}, "download_deadline must be a number of seconds, got str"),
        ({"download_deadline": True}, "download_deadline must be a number of seconds, got bool"),
        ({"download_min_rate": -1}, "download_min_rate must be bytes per second like 16384 or '16KiB', or 0"),
        ({"download_min_rate": "fast"}, "download_min_rate must be bytes per second"),
        ({"download_min_rate": 1.5}, "download_min_rate must be bytes per second"),
    ],
)
def test_limits_configuration_errors_are_one_line(settings: dict, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(")) as caught:
        from_mapping({"upstream": "http://127.0.0.1/simple/", **settings})
    assert "\n" not in str(caught.value)


# -- hydrate -----------------------------------------------------------------------------------


def clone_of(mirror: Mirror, root: Path, settings: str = "") -> Mirror:
    """A new machine: ``git clone`` of the metadata repository, an empty store."""
    root.mkdir()
    subprocess.run(
        ["git", "clone", "--quiet", "--mirror", f"file://{mirror.repo}", str(root / "mirror" / "repo")],
        env=isolated_env(),
        check=True,
        capture_output=True,
    )
    clone = Mirror(root=root, upstream=mirror.upstream)
    clone.configure(settings)
    return clone


def blob_file(store: Path, digest: str) -> Path:
    return store / "blobs" / digest[:2] / digest[2:4] / digest


def symlink_out(target: Path, outside: Path) -> None:
    """The blob replaced by a symlink to a copy of its own bytes outside the source: it would verify."""
    shutil.copyfile(target, outside / target.name)
    target.unlink()
    target.symlink_to(outside / target.name)


def directory_out(target: Path, outside: Path) -> None:
    """The blob's directory ``blobs/aa/bb`` replaced by a symlink to a copy outside the source."""
    shutil.copytree(target.parent, outside / "bb")
    shutil.rmtree(target.parent)
    target.parent.symlink_to(outside / "bb")


def fifo(target: Path, _outside: Path) -> None:
    target.unlink()
    os.mkfifo(target)


def device(target: Path, _outside: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    target.unlink()
    os.mknod(target, stat.S_IFCHR | 0o444, os.makedev(1, 5))  # /dev/zero: never ends


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (symlink_out, "is a symlink, not a regular file"),
        (directory_out, "is a symlink, not a directory"),
        (fifo, "is a FIFO, not a regular file"),
        (device, "is a character device, not a regular file"),
    ],
    ids=["symlink", "symlinked-directory", "fifo", "device"],
)
def test_hydrate_from_a_directory_reads_only_regular_files_inside_it(
    mirror: Mirror, sample, tmp_path: Path, make, what: str
) -> None:
    mirror.run("sync", check=True)
    source, outside = tmp_path / "disk", tmp_path / "elsewhere"
    shutil.copytree(mirror.store, source)
    outside.mkdir()
    digest = sample["demo-pkg"][0].sha256  # the 1.0 wheel
    make(blob_file(source, digest), outside)
    clone = clone_of(mirror, tmp_path / "airgap")
    result = clone.run("hydrate", "--from", str(source), timeout=60)  # a FIFO must not block it
    assert result.returncode == 1, result.stdout + result.stderr
    line = one_line(result.stderr, f"{WHEEL}: ")
    assert line.startswith(f"REFUSED demo-pkg/{WHEEL}: blobs/{digest[:2]}/{digest[2:4]}") and what in line
    assert stored(clone.store) == stored(mirror.store) - {digest}  # every other blob came
    status = json.loads(clone.run("status", "--json").stdout)
    assert status["blobs_missing"] == [f"demo-pkg/{WHEEL}"]  # its .metadata is a blob of its own
    assert not list((clone.store / "tmp").iterdir())


def test_hydrate_from_http_is_capped_and_timed(mirror: Mirror, sample, upstream: FakeUpstream, tmp_path: Path) -> None:
    """The fake upstream serves ``files/<project>/<filename>`` like a mirror: it is the hostile source."""
    mirror.run("sync", check=True)
    settings = f"download_deadline: {TRICKLE_DEADLINE}\nmax_unannounced_size: {CAP}\n"
    clone = clone_of(mirror, tmp_path / "airgap", settings)
    upstream.fault(WHEEL, "endless", times=-1)
    upstream.fault(SDIST, "trickle", times=-1, interval=0.2)
    started = time.monotonic()
    result = clone.run("hydrate", "--from", upstream.base_url, timeout=60)
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stdout + result.stderr
    size = upstream.artifact("demo-pkg", WHEEL).size
    endless = one_line(result.stderr, f"{WHEEL}: ")
    assert endless.startswith(f"REFUSED demo-pkg/{WHEEL}: body longer than the announced {size} bytes")
    metadata = one_line(result.stderr, f"{WHEEL}.metadata: ")  # the fault's match takes it too; no size recorded
    assert metadata.startswith(f"REFUSED demo-pkg/{WHEEL}.metadata: no size announced and the body is longer than")
    trickle = one_line(result.stderr, SDIST)
    assert trickle.startswith(f"missing demo-pkg/{SDIST}") and "source too slow: download_deadline exceeded" in trickle
    lost = {upstream.artifact("demo-pkg", name).sha256 for name in (WHEEL, SDIST)}
    lost.add(upstream.artifact("demo-pkg", WHEEL).metadata_sha256)  # not in a stored wheel, refused
    assert stored(clone.store) == stored(mirror.store) - lost
    assert not list((clone.store / "tmp").iterdir())
