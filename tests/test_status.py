"""`gitmirror status`: what is in the mirror, and what the store lacks."""

from __future__ import annotations

import json
import os

from conftest import Mirror


def test_status_reports_contents_and_missing_blobs(mirror: Mirror, sample) -> None:
    empty = mirror.run("init", check=True) and mirror.run("status", check=True)
    assert empty.stdout == "branch main: no commits yet (run `gitmirror sync`)\n"

    mirror.run("sync", check=True)
    tip = mirror.git("rev-parse", "main").strip()
    artifacts = sample["demo-pkg"] + sample["other-lib"]
    report = json.loads(mirror.run("status", "--json", check=True).stdout)
    assert report["commit"] == tip and report["last_sync_commit"] == tip and report["commits"] == 1
    assert (report["projects"], report["files"], report["yanked"], report["tombstoned"]) == (2, 8, 2, 0)
    assert report["bytes"] == sum(artifact.size for artifact in artifacts)
    assert report["blobs_missing"] == [] and report["blobs_damaged"] == []
    digests = {artifact.sha256 for artifact in artifacts} | {artifact.metadata_sha256 for artifact in artifacts}
    assert report["blobs_needed"] == len(digests - {None})

    text = mirror.run("status", check=True).stdout
    assert f"tip        main at {tip[:12]}" in text and "sync: 2 projects, 8 files added" in text
    assert "files      8 served" in text and "2 yanked" in text
    assert f"{report['blobs_needed']} of {report['blobs_needed']} blobs present, 0 missing" in text

    wheel = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == "demo_pkg-1.0-py3-none-any.whl")
    other = sample["other-lib"][1]
    path = mirror.store / "blobs" / wheel.sha256[:2] / wheel.sha256[2:4] / wheel.sha256
    path.unlink()
    damaged = mirror.store / "blobs" / other.sha256[:2] / other.sha256[2:4] / other.sha256
    os.chmod(damaged, 0o644)
    damaged.write_bytes(b"bit rot")
    text = mirror.run("status", check=True).stdout
    # PEP 658 files are blobs of their own: still there
    assert f"missing  demo-pkg/{wheel.filename}\n" in text and ".metadata\n" not in text and "1 missing" in text
    verified = mirror.run("status", "--verify", check=True).stdout
    assert f"DAMAGED  other-lib/{other.filename}: size 7, expected {other.size}" in verified

    mirror.run("tag", "v1", check=True)
    at_tag = json.loads(mirror.run("status", "--rev", "v1", "--json", check=True).stdout)
    assert at_tag["commit"] == tip and at_tag["tags"] == 1
    bad = mirror.run("status", "--rev", "nope")
    assert bad.returncode == 2
    assert bad.stderr == "gitmirror: error: unknown revision 'nope' (expected a commit id, tag, branch or ISO date)\n"
