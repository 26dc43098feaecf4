"""Offline mirrors: git clone the metadata, hydrate the blobs from a server or a directory, verified."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from gitmirror.serve.hydrate import hydrate
from gitmirror.serve.hydrate_sources import ServerSource
from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.store import BlobStore, BlobWriter

from conftest import Mirror, isolated_env, start_server, stop_server
from fakeupstream import FakeUpstream, build_wheel

OLD_WHEEL = "demo_pkg-1.0-py3-none-any.whl"
NEW_WHEEL = "demo_pkg-1.5-py3-none-any.whl"


def blob_path(store: Path, digest: str) -> Path:
    return store / "blobs" / digest[:2] / digest[2:4] / digest


def store_blobs(store: Path) -> set[str]:
    return {path.name for path in (store / "blobs").glob("*/*/*")} if (store / "blobs").is_dir() else set()


def clone_mirror(source: Mirror, root: Path) -> Mirror:
    """A new machine: `git clone` of the metadata repository (real git), an empty store."""
    root.mkdir()
    subprocess.run(
        ["git", "clone", "--quiet", "--mirror", f"file://{source.repo}", str(root / "mirror" / "repo")],
        env=isolated_env(),
        check=True,
        capture_output=True,
    )
    clone = Mirror(root=root, upstream=source.upstream)
    clone.configure()
    return clone


def tamper(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


def needed(mirror: Mirror, rev: str = "main") -> int:
    """Blobs the served files of ``rev`` need: release files and PEP 658 files."""
    return json.loads(mirror.run("status", "--json", "--rev", rev, check=True).stdout)["blobs_needed"]


def test_clone_and_hydrate_from_a_running_server(mirror: Mirror, sample, make_venv, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    total = needed(mirror)  # the release files and the wheels' PEP 658 files, each a blob
    wheels = {artifact.metadata_sha256 for artifact in sample["demo-pkg"] + sample["other-lib"]} - {None}
    assert total == len(store_blobs(mirror.store)) and wheels <= store_blobs(mirror.store)
    files = total - len(wheels)
    source = start_server(mirror.root)
    try:
        clone = clone_mirror(mirror, tmp_path / "airgap")
        assert clone.git("rev-parse", "main") == mirror.git("rev-parse", "main")
        before = clone.run("status", check=True).stdout
        assert f"0 of {total} blobs present, {total} missing" in before

        result = clone.run("hydrate", "--from", source.index_url)  # the pasted /simple/ is ignored
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{total} blobs needed: 0 already present, {files} fetched")
        assert f", {len(wheels)} written out of their wheels" in result.stdout  # not fetched again
    finally:
        stop_server(source)
    assert store_blobs(clone.store) == store_blobs(mirror.store)
    for path in (clone.store / "blobs").glob("*/*/*"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name
    again = clone.run("hydrate", "--from", "http://127.0.0.1:9/", check=True)  # nothing left to fetch
    assert again.stdout.startswith(f"{total} blobs needed: {total} already present, 0 fetched")
    assert f"{total} of {total} blobs present, 0 missing" in clone.run("status", check=True).stdout

    served = start_server(clone.root)
    try:
        venv = make_venv("clone")
        installed = venv.pip_install(served.index_url, "other-lib")
        assert installed.returncode == 0, installed.stderr
        assert venv.run("import other_lib, demo_pkg; print(other_lib.__version__, demo_pkg.__version__)") == "0.2 1.0"
    finally:
        stop_server(served)


def test_export_store_and_hydrate_from_a_directory(
    mirror: Mirror, sample, upstream: FakeUpstream, serve, make_venv, tmp_path: Path
) -> None:
    mirror.run("sync", check=True)
    first = mirror.git("rev-parse", "main").strip()
    old_files = len(store_blobs(mirror.store))
    new_wheel = build_wheel("demo-pkg", "1.5", requires_python=">=3.8")
    upstream.add("demo-pkg", new_wheel)
    mirror.run("sync", check=True)
    mirror.run("tag", "v1", "--rev", first, check=True)
    assert len(store_blobs(mirror.store)) == old_files + 2  # the 1.5 wheel and its PEP 658 file
    old, total = needed(mirror, "v1"), needed(mirror)
    assert total == old + 2

    usb = tmp_path / "usb"  # an export is a plain store: PEP 658 files are written out of their wheels
    exported = mirror.run("export-store", "--rev", "v1", "--out", str(usb), check=True)
    assert f"{old} blobs needed: {old} written" in exported.stdout
    assert len(store_blobs(usb)) == old and not (usb / "tmp").exists()
    delta = tmp_path / "usb-delta"
    exported = mirror.run("export-store", "--since", "v1", "--out", str(delta), check=True)
    assert f"{total} blobs needed: 2 written" in exported.stdout and f"{old} left out" in exported.stdout
    assert store_blobs(delta) == {new_wheel.sha256, new_wheel.metadata_sha256}
    assert blob_path(delta, new_wheel.metadata_sha256).read_bytes() == new_wheel.metadata

    clone = clone_mirror(mirror, tmp_path / "airgap")
    assert clone.git("rev-parse", "v1^{commit}").strip() == first  # tags travel with the clone
    partial = clone.run("hydrate", "--from", str(usb), "--rev", "v1", check=True)
    pep658 = len({artifact.metadata_sha256 for artifact in sample["demo-pkg"] + sample["other-lib"]} - {None})
    assert f"{old - pep658} fetched" in partial.stdout and f"{pep658} written out of their wheels" in partial.stdout
    status = clone.run("status", check=True).stdout
    assert f"{old} of {total} blobs present, 2 missing" in status and f"missing  demo-pkg/{NEW_WHEEL}" in status

    incomplete = clone.run("hydrate", "--from", str(usb))  # the tip needs the 1.5 blobs, not on this disk
    assert incomplete.returncode == 1
    assert f"missing demo-pkg/{NEW_WHEEL}" in incomplete.stderr and "2 missing at the source" in incomplete.stdout
    complete = clone.run("hydrate", "--from", f"file://{delta}", check=True)
    assert complete.stdout.startswith(f"{total} blobs needed: {old} already present, 1 fetched")
    assert "1 written out of their wheels" in complete.stdout
    assert store_blobs(clone.store) == store_blobs(mirror.store)

    server = start_server(clone.root)
    try:
        assert httpx.get(f"{server.url}/files/demo-pkg/{NEW_WHEEL}").status_code == 200
        venv = make_venv("from-disk")
        installed = venv.pip_install(f"{server.url}/snapshot/v1/simple/", "demo-pkg>=1.0,!=2.0")
        assert installed.returncode == 0, installed.stderr
        assert venv.run("import demo_pkg; print(demo_pkg.__version__)") == "1.0"
    finally:
        stop_server(server)


def test_tampered_or_missing_blobs_in_the_source_are_refused(mirror: Mirror, sample, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    wheel = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == OLD_WHEEL)
    sdist = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == "demo_pkg-1.1.tar.gz")
    other = sample["other-lib"][0]

    # A source disk: one blob has other bytes (same length), one is truncated, one is missing.
    disk = tmp_path / "disk"
    shutil.copytree(mirror.store, disk / "store")
    tamper(blob_path(disk / "store", wheel.sha256), bytes(reversed(wheel.data)))
    tamper(blob_path(disk / "store", sdist.sha256), sdist.data[:100])
    blob_path(disk / "store", other.sha256).unlink()

    clone = clone_mirror(mirror, tmp_path / "airgap")
    result = clone.run("hydrate", "--from", str(disk))
    assert result.returncode == 1
    assert f"REFUSED demo-pkg/{OLD_WHEEL}: sha256 mismatch" in result.stderr
    assert "REFUSED demo-pkg/demo_pkg-1.1.tar.gz: got 100 bytes, announced" in result.stderr
    assert f"missing other-lib/{other.filename}" in result.stderr
    # the PEP 658 files of the two wheels that did not come are fetched, the others written out of theirs
    pep658 = len({artifact.metadata_sha256 for artifact in sample["demo-pkg"] + sample["other-lib"]} - {None})
    assert f"{len(store_blobs(mirror.store)) - pep658 - 3 + 2} fetched" in result.stdout
    assert f"{pep658 - 2} written out of their wheels" in result.stdout
    assert ".metadata" not in result.stderr
    assert "1 missing at the source" in result.stdout
    assert "2 REFUSED (failed verification)" in result.stdout
    local = store_blobs(clone.store)
    assert wheel.sha256 not in local and sdist.sha256 not in local and other.sha256 not in local
    assert not list((clone.store / "tmp").iterdir())  # nothing half-written left behind

    # The same lie told by a server: a gitmirror serving a store whose blob was altered.
    liar = tmp_path / "liar"
    liar.mkdir()
    shutil.copytree(mirror.store, liar / "store")
    tamper(blob_path(liar / "store", wheel.sha256), bytes(reversed(wheel.data)))
    (liar / "mirror.yaml").write_text(f"repo: {mirror.repo}\nstore: store\n")
    server = start_server(liar)
    try:
        served = clone.run("hydrate", "--from", server.url)
    finally:
        stop_server(server)
    assert served.returncode == 1
    assert f"REFUSED demo-pkg/{OLD_WHEEL}: sha256 mismatch" in served.stderr
    assert "2 fetched" in served.stdout and "1 REFUSED" in served.stdout  # the sdist and other-lib came
    assert wheel.sha256 not in store_blobs(clone.store)

    honest = clone.run("hydrate", "--from", str(mirror.root), check=True)  # finds mirror/store
    assert "1 fetched" in honest.stdout
    assert blob_path(clone.store, wheel.sha256).read_bytes() == wheel.data


def test_hydrate_and_export_bad_input_is_one_line(mirror: Mirror, sample, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    (tmp_path / "file").write_text("")
    cases = {
        ("hydrate", "--from", str(tmp_path / "nowhere")): "holds no blob store",
        ("hydrate", "--from", "ftp://example.invalid/x"): "unsupported source",
        ("hydrate", "--from", str(mirror.store), "--rev", "nope"): "unknown revision 'nope'",
        ("export-store", "--out", str(tmp_path / "file")): "exists and is not a directory",
        ("export-store", "--out", str(tmp_path / "x"), "--since", "2001-01-01"): "no commit on main at or before",
    }
    for args, message in cases.items():
        result = mirror.run(*args)
        assert result.returncode == 2, args
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, (args, result.stderr)
    assert not (tmp_path / "x").exists()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``server.answer(path)``: (status, headers); records the paths asked."""

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        status, headers = self.server.answer(self.path)  # type: ignore[attr-defined]
        self.send_response(status)
        for key, value in {**headers, "Content-Length": "0"}.items():
            self.send_header(key, value)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _recording_server(answer) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.paths, server.answer = [], answer  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def test_hydrate_follows_the_host_policy_of_a_sync(mirror: Mirror, sample, tmp_path: Path) -> None:
    """A source that redirects every blob to another port on loopback (a classic SSRF target) is
    not followed there: each blob is one line naming the refused URL, and nothing is stored."""
    mirror.run("sync", check=True)
    elsewhere, elsewhere_thread = _recording_server(lambda path: (200, {}))
    target = f"http://127.0.0.1:{elsewhere.server_port}"
    source, source_thread = _recording_server(lambda path: (302, {"Location": target + path}))
    try:
        clone = clone_mirror(mirror, tmp_path / "clone")
        result = clone.run("hydrate", "--from", f"http://127.0.0.1:{source.server_port}/")
    finally:
        for server, thread in ((source, source_thread), (elsewhere, elsewhere_thread)):
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
    assert result.returncode == 1, result.stdout + result.stderr
    missing = [line for line in result.stderr.splitlines() if line.startswith("missing ")]
    assert missing and all(f"refusing '{target}/files/" in line for line in missing)
    assert source.paths and elsewhere.paths == []  # type: ignore[attr-defined]
    assert store_blobs(clone.store) == set()


def test_hydrate_from_a_server_opens_no_more_temporary_files_than_downloads_run(
    mirror: Mirror, sample, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store of a million blobs must not open a million temporary files at once (EMFILE): one per slot."""
    mirror.run("sync", check=True)
    clone = clone_mirror(mirror, tmp_path / "airgap")
    repo = MetadataRepo(clone.repo)
    open_now, most = [0], [0]
    opened, closed = BlobWriter.__init__, BlobWriter._close

    def counting_init(self: BlobWriter, *args: object) -> None:
        opened(self, *args)  # type: ignore[arg-type]
        open_now[0] += 1
        most[0] = max(most[0], open_now[0])

    def counting_close(self: BlobWriter) -> None:
        open_now[0] -= self._fd >= 0
        closed(self)

    monkeypatch.setattr(BlobWriter, "__init__", counting_init)
    monkeypatch.setattr(BlobWriter, "_close", counting_close)
    source = start_server(mirror.root)
    try:
        result = hydrate(repo, BlobStore(clone.store), repo.tip("main"), ServerSource(source.url + "/", concurrency=1))
    finally:
        stop_server(source)
        repo.close()
    assert result.fetched > 2 and not result.missing
    assert most[0] == 1
