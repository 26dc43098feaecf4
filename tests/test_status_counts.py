"""`gitmirror status` follows the change: after a small sync it reads only the changed manifests,
and says what a full count says (a blob deleted from the store included)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from gitmirror.audit.status import collect
from gitmirror.model.manifest import ProjectManifest
from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.store import BlobStore

from conftest import Mirror
from fakeupstream import build_wheel


class CountingRepo(MetadataRepo):
    """The repository, counting the manifests a caller reads through its public readers."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.read: list[str] = []

    def manifest(self, commit_id: bytes | None, name: str) -> ProjectManifest | None:
        self.read.append(name)
        return super().manifest(commit_id, name)

    def manifests(self, commit_id: bytes | None) -> Iterator[ProjectManifest]:
        for manifest in super().manifests(commit_id):
            self.read.append(manifest.name)
            yield manifest


def full_count(mirror: Mirror, *args: str) -> str:
    """What `status` says with no counts kept (the file removed first)."""
    (mirror.store / "state" / "status.sqlite3").unlink(missing_ok=True)
    return mirror.run("status", *args, check=True).stdout


def test_status_after_a_small_sync_reads_only_the_changed_manifests(mirror: Mirror, sample, upstream) -> None:
    mirror.run("sync", check=True)
    first = mirror.run("status", "--json", check=True).stdout  # counts everything, keeps the counts
    assert first == full_count(mirror, "--json")
    mirror.run("tag", "v1", check=True)

    wheel = build_wheel("demo-pkg", "3.0")
    upstream.add("demo-pkg", wheel, upload_time=datetime.now(UTC) - timedelta(days=30))
    mirror.run("sync", check=True)
    repo = CountingRepo(mirror.repo)
    after = collect(repo, BlobStore(mirror.store), repo.tip("main"), "main")
    assert repo.read == ["demo-pkg", "demo-pkg"]  # before and after the sync; other-lib not read
    assert after.files == json.loads(first)["files"] + 1 and after.commits == 2
    assert json.dumps(after.to_json(), indent=2) + "\n" == full_count(mirror, "--json")

    again = CountingRepo(mirror.repo)
    text = "\n".join(collect(again, BlobStore(mirror.store), again.tip("main"), "main").lines()) + "\n"
    assert again.read == [] and text == full_count(mirror)  # the same commit: nothing read

    mirror.run("status", check=True)
    back = mirror.run("status", "--rev", "v1", "--json", check=True).stdout  # the diff walked backwards
    assert back == full_count(mirror, "--rev", "v1", "--json")


def test_a_blob_deleted_after_the_count_is_still_reported(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    mirror.run("status", check=True)
    other = sample["other-lib"][0]
    path = mirror.store / "blobs" / other.sha256[:2] / other.sha256[2:4] / other.sha256
    data = path.read_bytes()
    path.unlink()

    repo = CountingRepo(mirror.repo)
    status = collect(repo, BlobStore(mirror.store), repo.tip("main"), "main")
    assert repo.read == [] and status.blobs_missing == [f"other-lib/{other.filename}"]
    text = mirror.run("status", check=True).stdout
    assert f"missing  other-lib/{other.filename}\n" in text and "1 missing" in text
    assert text == full_count(mirror)

    path.write_bytes(data)  # back (as `gitmirror hydrate` would put it)
    assert collect(repo, BlobStore(mirror.store), repo.tip("main"), "main").blobs_missing == []


def test_a_damaged_counts_file_costs_a_full_count(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    expected = mirror.run("status", "--json", check=True).stdout
    (mirror.store / "state" / "status.sqlite3").write_bytes(b"not a database" * 100)
    assert mirror.run("status", "--json", check=True).stdout == expected
    assert mirror.run("status", "--json", check=True).stdout == expected  # counted again, and kept
    repo = CountingRepo(mirror.repo)
    collect(repo, BlobStore(mirror.store), repo.tip("main"), "main")
    assert repo.read == []
