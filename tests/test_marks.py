"""Mirror decisions end to end: yank, deprecate and takedown through the CLI, seen by pip, uv and HTTP,
recorded in git history, and kept by the next sync."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from gitmirror.model.manifest import FileEntry, ProjectManifest, manifest_path
from gitmirror.review.marks import MarkError, takedown
from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.store import BlobStore

from conftest import Mirror

JSON = "application/vnd.pypi.simple.v1+json"
DEMO = "projects/de/mo/demo-pkg.jsonl"
WHEEL = "demo_pkg-1.0-py3-none-any.whl"
SDIST_2 = "demo_pkg-2.0.tar.gz"


@pytest.fixture
def server(mirror: Mirror, sample, serve):
    mirror.run("sync", check=True)
    return serve()


def manifest_lines(mirror: Mirror) -> dict[str, dict]:
    lines = [json.loads(line) for line in mirror.git("show", f"main:{DEMO}").splitlines()]
    return {line.get("filename", "header"): line for line in lines}


def page(server, project: str = "demo-pkg", accept: str = JSON) -> httpx.Response:
    return httpx.get(f"{server.url}/simple/{project}/", headers={"Accept": accept})


def test_yank_is_served_and_pip_and_uv_warn(mirror: Mirror, server, make_venv) -> None:
    result = mirror.run("yank", "demo-pkg", "1.0", "--reason", "corrupt wheel on arm64", check=True)
    assert "yanked 2 files" in result.stdout
    files = {item["filename"]: item for item in page(server).json()["files"]}
    assert files[WHEEL]["yanked"] == "corrupt wheel on arm64"
    assert files["demo_pkg-1.0.tar.gz"]["yanked"] == "corrupt wheel on arm64"
    assert files["demo_pkg-2.0-py3-none-any.whl"]["yanked"] is False
    assert 'data-yanked="corrupt wheel on arm64"' in page(server, accept="text/html").text

    venv = make_venv("yank")
    pinned = venv.pip_install(server.index_url, "demo-pkg==1.0")
    assert pinned.returncode == 0, pinned.stderr
    assert "The candidate selected for download or install is a yanked version" in pinned.stderr
    assert "corrupt wheel on arm64" in pinned.stderr
    uv = venv.uv_install(server.index_url, "--reinstall", "demo-pkg==1.0")
    assert uv.returncode == 0, uv.stderr
    assert "yanked" in uv.stderr and "corrupt wheel on arm64" in uv.stderr
    # Nothing but yanked or too-new releases is left, so an unpinned upgrade finds no candidate.
    assert venv.pip_install(server.index_url, "--upgrade", "demo-pkg>1.0").returncode != 0

    log = mirror.git("log", "-1", "--format=%an <%ae>%n%B", "main")
    assert log.startswith("Test Mirror <mirror@example.invalid>\nyank: demo-pkg 1.0")
    assert "reason: corrupt wheel on arm64" in log and f"file: {WHEEL}" in log
    record = json.loads(mirror.git("show", "main:marks/demo-pkg.jsonl").splitlines()[-1])
    assert record["action"] == "yank" and record["by"] == "Test Mirror <mirror@example.invalid>"


def test_local_decisions_survive_the_next_sync(mirror: Mirror, sample, upstream) -> None:
    mirror.run("sync", check=True)
    mirror.run("yank", "demo-pkg", "1.0", "--reason", "local policy", check=True)
    mirror.run("yank", "demo-pkg", "1.1", "--undo", "--reason", "the build is fine for us", check=True)
    mirror.run("deprecate", "demo-pkg", "--reason", "use other-lib", check=True)
    upstream.yank("demo-pkg", "demo_pkg-2.0.tar.gz", "upstream says so")  # upstream changes still flow
    mirror.run("sync", check=True)
    lines = manifest_lines(mirror)
    assert lines[WHEEL]["yanked"] == "local policy"
    assert lines["demo_pkg-1.1-py3-none-any.whl"]["yanked"] is False
    assert lines["demo_pkg-2.0.tar.gz"]["yanked"] == "upstream says so"
    assert lines["header"]["project-status"] == {"status": "deprecated", "reason": "use other-lib"}
    # Undoing a local yank hands the file back to upstream's state on the next sync.
    mirror.run("yank", "demo-pkg", "1.0", "--undo", "--reason", "fixed", check=True)
    assert manifest_lines(mirror)[WHEEL]["yanked"] is False
    assert "nothing to commit" in mirror.run("sync", check=True).stdout
    assert mirror.run("verify").returncode == 0


def test_deprecate_serves_pep_792_status(mirror: Mirror, server) -> None:
    mirror.run("deprecate", "demo-pkg", "--reason", "superseded by other-lib", check=True)
    data = page(server).json()
    assert data["project-status"] == {"status": "deprecated", "reason": "superseded by other-lib"}
    html = page(server, accept="text/html").text
    assert '<meta name="pypi:project-status" content="deprecated">' in html
    assert '<meta name="pypi:project-status-reason" content="superseded by other-lib">' in html
    mirror.run("deprecate", "other-lib", "--status", "archived", "--reason", "no longer maintained", check=True)
    assert page(server, "other-lib").json()["project-status"]["status"] == "archived"
    # Status informs, it does not remove: every file is still listed.
    assert len(data["files"]) == 6
    mirror.run("deprecate", "demo-pkg", "--status", "active", "--reason", "maintained again", check=True)
    assert "project-status" not in page(server).json()
    assert "reason: maintained again" in mirror.git("log", "-1", "--format=%B", "main")


def test_takedown_tombstones_and_answers_410(mirror: Mirror, server, sample) -> None:
    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-2.0-py3-none-any.whl")
    blob = mirror.store / "blobs" / wheel.sha256[:2] / wheel.sha256[2:4] / wheel.sha256
    metadata = mirror.store / "blobs" / wheel.metadata_sha256[:2] / wheel.metadata_sha256[2:4] / wheel.metadata_sha256
    assert blob.is_file() and metadata.is_file()  # its PEP 658 file is a blob of its own
    assert httpx.get(f"{server.url}/files/demo-pkg/{wheel.filename}.metadata").content == wheel.metadata
    result = mirror.run("takedown", wheel.filename, "--reason", "contains malware (CVE-0000-0000)", check=True)
    assert "taken down" in result.stdout
    assert not blob.exists() and not metadata.exists()

    stone = manifest_lines(mirror)[wheel.filename]
    assert stone["sha256"] == wheel.sha256 and stone["tombstone"]["reason"] == "contains malware (CVE-0000-0000)"
    assert stone["tombstone"]["time"].endswith("Z")
    assert wheel.filename not in {item["filename"] for item in page(server).json()["files"]}
    assert wheel.filename not in page(server, accept="text/html").text
    gone = httpx.get(f"{server.url}/files/demo-pkg/{wheel.filename}")
    assert gone.status_code == 410 and "contains malware (CVE-0000-0000)" in gone.text
    assert httpx.get(f"{server.url}/files/demo-pkg/{wheel.filename}.metadata").status_code == 410
    log = mirror.git("log", "-1", "--format=%an%n%B", "main")
    assert log.startswith("Test Mirror\ntakedown: demo-pkg demo_pkg-2.0-py3-none-any.whl")
    assert "reason: contains malware" in log

    # The next sync neither re-downloads nor re-lists it; verify agrees everything holds.
    assert "nothing to commit" in mirror.run("sync", check=True).stdout
    assert not blob.exists()
    verified = mirror.run("verify")
    assert verified.returncode == 0, verified.stdout
    again = mirror.run("takedown", wheel.filename, "--reason", "again", check=True)
    assert "already taken down" in again.stdout


def test_bad_input_is_one_line_and_commits_nothing(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    tip = mirror.git("rev-parse", "main")
    cases = [
        (["yank", "demo-pkg", "9.9", "--reason", "x"], "demo-pkg has no files of version 9.9"),
        (["yank", "no-such", "1.0", "--reason", "x"], "project no-such is not in the mirror"),
        (["yank", "demo-pkg", "1.0", "--reason", "  "], "non-empty --reason"),
        (["deprecate", "demo-pkg", "--status", "gone", "--reason", "x"], "unknown project status 'gone'"),
        (["takedown", "nothing-1.0.tar.gz", "--reason", "x"], "nothing-1.0.tar.gz is not in the mirror"),
        (["takedown", WHEEL, "--reason", ""], "non-empty --reason"),
    ]
    for args, message in cases:
        result = mirror.run(*args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gitmirror: error: ") and message in lines[0]
    assert mirror.run("yank", "demo-pkg").returncode == 2  # --reason is required
    assert mirror.git("rev-parse", "main") == tip
    # Repeating a decision is not an error and commits nothing.
    mirror.run("yank", "demo-pkg", "1.1", "--reason", "broken build", check=True)
    assert mirror.git("rev-parse", "main") == tip


def test_takedown_keeps_bytes_another_served_file_needs(tmp_path) -> None:
    """The store is content-addressed: two entries with the same bytes share one blob."""
    repo = MetadataRepo.init(tmp_path / "repo")
    store = BlobStore(tmp_path / "store")
    data = b"the same bytes under two names"
    digest = store.put_bytes(data)
    assert digest == hashlib.sha256(data).hexdigest()

    def manifest(name: str, filename: str) -> ProjectManifest:
        entry = FileEntry(
            filename=filename, version="1.0", sha256=digest, size=len(data), first_seen="2026-01-01T00:00:00Z"
        )
        return ProjectManifest(name=name).with_file(entry)

    repo.write_commit(
        {
            manifest_path("alpha"): manifest("alpha", "alpha-1.0.tar.gz").dumps(),
            manifest_path("beta"): manifest("beta", "beta-1.0.tar.gz").dumps(),
        },
        "seed",
    )
    result = takedown(repo, store, "alpha-1.0.tar.gz", "licence problem")
    assert "another served file has the same sha256" in result.message
    assert store.has(digest)
    assert repo.manifest(repo.tip(), "alpha").files["alpha-1.0.tar.gz"].tombstone is not None
    takedown(repo, store, "beta-1.0.tar.gz", "licence problem", project="beta")
    assert not store.has(digest)
    with pytest.raises(MarkError):
        takedown(repo, store, "beta-1.0.tar.gz", "x", project="alpha")
