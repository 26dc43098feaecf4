"""Incremental sync: an unchanged project costs one conditional request; the cache never outranks git."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import replace

import httpx
import pytest

from gitmirror.model.manifest import manifest_path

from conftest import Mirror
from fakeupstream import FakeUpstream, build_wheel


def header(record, name: str) -> str | None:
    return next((value for key, value in record.headers.items() if key.lower() == name.lower()), None)


def since(upstream: FakeUpstream, mark: int) -> list:
    """Requests after ``mark``, less the index root's ``HEAD`` (the serial check, tests/test_unchanged.py)."""
    return [record for record in upstream.requests[mark:] if record.path != "/simple/"]


def test_second_sync_sends_only_conditional_requests(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    mirror.run("sync", check=True)
    first = mirror.git("rev-parse", "main").strip()
    mark = len(upstream.requests)
    result = mirror.run("sync", "--json", check=True)
    requests = since(upstream, mark)
    assert sorted(record.path for record in requests) == ["/simple/demo-pkg/", "/simple/other-lib/"]
    assert all(header(record, "If-None-Match") and record.status == 304 for record in requests)
    summary = json.loads(result.stdout)
    assert summary["pages_not_modified"] == 2 and summary["pages_fetched"] == 0
    assert summary["files_added"] == 0 and summary["bytes_downloaded"] == 0 and summary["commit"] is None
    assert mirror.git("rev-parse", "main").strip() == first
    assert (mirror.store / "state" / "local.sqlite3").is_file()  # the local state lives beside the store
    assert "state" not in mirror.git("ls-tree", "-r", "--name-only", "main")


def test_changed_project_is_fetched_and_only_its_new_file_downloaded(
    mirror: Mirror, sample, upstream: FakeUpstream
) -> None:
    mirror.run("sync", check=True)
    wheel = build_wheel("other_lib", "0.3", requires_dist=["demo-pkg>=1.0"])
    upstream.add("other_lib", wheel)
    mark = len(upstream.requests)
    mirror.run("sync", check=True)
    requests = since(upstream, mark)
    pages = {record.path: record.status for record in requests if record.path.startswith("/simple/")}
    assert pages == {"/simple/demo-pkg/": 304, "/simple/other-lib/": 200}
    files = sorted(record.path for record in requests if record.path.startswith("/files/"))
    # one request for the release: its PEP 658 file is written out of the wheel, checked against the hash
    assert files == ["/files/other-lib/other_lib-0.3-py3-none-any.whl"]
    manifest = mirror.git("show", "main:" + manifest_path("other-lib"))
    entry = next(json.loads(line) for line in manifest.splitlines() if wheel.filename in line)
    metadata_sha = hashlib.sha256(wheel.metadata).hexdigest()
    assert entry["core-metadata"] == metadata_sha
    # a blob of its own, named by its sha256
    assert (mirror.store / "blobs" / metadata_sha[:2] / metadata_sha[2:4] / metadata_sha).read_bytes() == wheel.metadata
    verified = mirror.run("verify")
    assert verified.returncode == 0 and verified.stdout.rstrip().endswith(": OK"), verified.stdout


def test_missing_blob_is_healed_despite_a_matching_etag(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    mirror.run("sync", check=True)
    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.0-py3-none-any.whl")
    blob = mirror.store / "blobs" / wheel.sha256[:2] / wheel.sha256[2:4] / wheel.sha256
    os.chmod(blob, 0o644)
    blob.unlink()
    mark = len(upstream.requests)
    mirror.run("sync", check=True)
    requests = since(upstream, mark)
    page = next(record for record in requests if record.path == "/simple/demo-pkg/")
    assert header(page, "If-None-Match") is None and page.status == 200
    assert any(record.path.endswith(wheel.filename) for record in requests)
    assert blob.is_file()


def test_cache_is_ignored_when_the_branch_moved(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    mirror.run("sync", check=True)
    tree = mirror.git("rev-parse", "main^{tree}").strip()
    other = mirror.git("commit-tree", tree, "-p", "main", "-m", "someone else committed").strip()
    mirror.git("update-ref", "refs/heads/main", other)
    mark = len(upstream.requests)
    mirror.run("sync", check=True)
    pages = [record for record in since(upstream, mark) if record.path.startswith("/simple/")]
    assert len(pages) == 2 and all(header(record, "If-None-Match") is None for record in pages)
    mark = len(upstream.requests)
    mirror.run("sync", "--full", check=True)  # rebuilt: conditional again
    pages = [record for record in since(upstream, mark) if record.path.startswith("/simple/")]
    assert len(pages) == 2 and all(record.status == 304 for record in pages)


def test_config_change_takes_effect_on_unchanged_pages(mirror: Mirror, upstream: FakeUpstream) -> None:
    """A 304 reuses the cached page, so widening the selection still adds files without refetching."""
    upstream.add("native", build_wheel("native", "1.0", tag="cp312-cp312-manylinux_2_17_x86_64"))
    upstream.add("native", build_wheel("native", "1.0", tag="cp312-cp312-win_amd64"))
    base = "projects: [native]\nenvironments:\n  python: ['3.12']\n  platforms: [{}]\n"
    mirror.configure(base.format("manylinux_2_28_x86_64"))
    mirror.run("sync", check=True)
    mirror.configure(base.format("manylinux_2_28_x86_64, win_amd64"))
    mark = len(upstream.requests)
    mirror.run("sync", check=True)
    requests = since(upstream, mark)
    assert [record.status for record in requests if record.path.startswith("/simple/")] == [304]
    files = {record.path for record in requests if record.path.startswith("/files/")}
    assert "/files/native/native-1.0-cp312-cp312-win_amd64.whl" in files
    assert not any("manylinux" in path for path in files)


def test_quiet_prints_nothing_on_success(mirror: Mirror, sample) -> None:
    result = mirror.run("sync", "--quiet", check=True)
    assert result.stdout == "" and result.stderr == ""
    assert mirror.git("rev-list", "--count", "main").strip() == "1"


def test_plain_progress_when_not_a_terminal(mirror: Mirror, sample) -> None:
    result = mirror.run("sync", check=True)
    assert "demo-pkg: 6 new files" in result.stderr  # a log line, no terminal escape codes
    assert "\x1b[" not in result.stderr


def test_a_pep658_file_other_than_its_wheels_metadata_is_stored_and_served(
    mirror: Mirror, upstream: FakeUpstream, serve
) -> None:
    """Upstream's PEP 658 file is what the mirror serves: written out of the wheel only when it is
    the wheel's METADATA byte for byte, else downloaded; a blob of its own either way."""
    own, other = build_wheel("top", "1.0"), build_wheel("top", "1.1")
    assert own.metadata and other.metadata and b"Version: 1.1\n" in other.metadata
    theirs = other.metadata.replace(b"Version: 1.1\n", b"Version: 1.1\nSummary: as upstream extracted it\n")
    upstream.add("top", own)
    upstream.add("top", replace(other, metadata=theirs))
    mirror.configure("projects: [top]\n")
    mark = len(upstream.requests)
    mirror.run("sync", check=True)
    fetched = sorted(record.path for record in since(upstream, mark) if record.path.startswith("/files/"))
    assert fetched == [
        f"/files/top/{own.filename}",
        f"/files/top/{other.filename}",
        f"/files/top/{other.filename}.metadata",
    ]
    blobs = {path.name for path in (mirror.store / "blobs").glob("*/*/*")}
    assert blobs == {own.sha256, other.sha256, own.metadata_sha256, hashlib.sha256(theirs).hexdigest()}

    server = serve()
    for wheel, expected in ((own, own.metadata), (other, theirs)):
        answer = httpx.get(f"{server.url}/files/top/{wheel.filename}.metadata")
        assert answer.status_code == 200 and answer.content == expected
        assert answer.headers["etag"] == f'"{hashlib.sha256(expected).hexdigest()}"'
    verified = mirror.run("verify")  # two wheels, two PEP 658 files
    assert verified.returncode == 0 and "4 blobs re-hashed" in verified.stdout, verified.stdout
    assert verified.stdout.rstrip().endswith(": OK")


def test_a_repository_that_kept_pep658_files_in_their_wheels_is_still_served_and_hydrated(
    mirror: Mirror, sample, serve
) -> None:
    """Syncs before PEP 658 files became blobs of their own left the ones equal to their wheel's
    METADATA only inside the wheel (docs/pep658.md): such a store still serves them, verifies and
    counts them present, and ``hydrate`` writes their blobs out of the wheels, fetching nothing."""
    mirror.run("sync", check=True)
    wheels = [(name, artifact) for name in ("demo-pkg", "other-lib") for artifact in sample[name] if artifact.metadata]
    for _name, wheel in wheels:  # the store as an older version left it
        digest = wheel.metadata_sha256
        assert digest
        (mirror.store / "blobs" / digest[:2] / digest[2:4] / digest).unlink()

    server = serve()
    for name, wheel in wheels:
        answer = httpx.get(f"{server.url}/files/{name}/{wheel.filename}.metadata")
        assert answer.status_code == 200 and answer.content == wheel.metadata
    assert mirror.run("verify").returncode == 0
    status = json.loads(mirror.run("status", "--json", check=True).stdout)
    assert status["blobs_missing"] == []

    empty = mirror.root / "empty-source"
    (empty / "blobs").mkdir(parents=True)
    hydrated = mirror.run("hydrate", "--from", str(empty), check=True)
    assert f", 0 fetched (0 bytes), {len(wheels)} written out of their wheels" in hydrated.stdout
    for _name, wheel in wheels:
        digest = wheel.metadata_sha256
        assert digest
        assert (mirror.store / "blobs" / digest[:2] / digest[2:4] / digest).read_bytes() == wheel.metadata


@pytest.mark.parametrize("damage", ["garbage", "truncated", "directory"])
def test_a_damaged_local_state_is_one_warning_line_and_rebuilt(
    mirror: Mirror, sample, upstream: FakeUpstream, damage: str
) -> None:
    """The local state is a private speed-up: a damaged file (a failing disk, a stray write, a
    directory in its place) is never read; ``plan`` says so and leaves it, the next sync says so in
    one line, moves it aside and asks for every page unconditionally, and the run after that is
    incremental again. Never a traceback, never a failed run."""
    mirror.run("sync", check=True)
    state = mirror.store / "state" / "local.sqlite3"
    if damage == "garbage":
        state.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    else:
        state.unlink()
        state.mkdir()
    line = re.compile(r"warning: the local state \S*state/local\.sqlite3 is damaged \((.+)\): not read")

    planned = mirror.run("plan")
    assert planned.returncode == 0 and line.search(planned.stdout), planned.stdout
    assert os.path.lexists(state) and not state.with_name("local.sqlite3.damaged").exists()  # a plan writes nothing

    mark = len(upstream.requests)
    damaged = mirror.run("sync", "--full")  # past the warm path, which would not read the state
    assert damaged.returncode == 0, damaged.stderr
    [said] = [text for text in damaged.stderr.splitlines() if "local state" in text]
    assert line.match(said) and said.endswith(", moved aside to local.sqlite3.damaged; a new one is started")
    assert line.match(said).group(1) == {"directory": "not a file", "garbage": "file is not a database"}.get(
        damage, "database disk image is malformed"
    )
    assert "Traceback" not in damaged.stderr
    pages = [record for record in since(upstream, mark) if record.path.startswith("/simple/")]
    assert len(pages) == 2 and all(header(record, "If-None-Match") is None for record in pages)
    assert state.is_file() and state.with_name("local.sqlite3.damaged").exists()

    mark = len(upstream.requests)
    again = mirror.run("sync", "--full", check=True)
    assert "local state" not in again.stderr
    pages = [record for record in since(upstream, mark) if record.path.startswith("/simple/")]
    assert len(pages) == 2 and all(record.status == 304 for record in pages)
