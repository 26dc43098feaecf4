"""``gitmirror verify``: a clean mirror passes; a bad commit anywhere in history, a corrupt, missing
or leftover blob fails with the problem named; a plain clone can be verified without the store."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from gitmirror.audit.verify import verify
from gitmirror.model.manifest import loads, manifest_path
from gitmirror.storage.repo import MetadataRepo

from conftest import Mirror, isolated_env

DEMO = manifest_path("demo-pkg")
WHEEL = "demo_pkg-1.0-py3-none-any.whl"


def rogue_commits(mirror: Mirror) -> None:
    """Write around the hook and the CLI (as a buggy tool or an intruder could): swap a hash, then undo it."""
    repo = MetadataRepo(mirror.repo)
    tip = repo.tip()
    original = repo.read_path(tip, DEMO)
    assert original is not None
    swapped = original.replace(loads(original).files[WHEEL].sha256.encode(), b"f" * 64)
    middle = repo.write_commit({DEMO: swapped}, "swap a wheel", parent=tip)
    repo.write_commit({DEMO: original}, "put it back", parent=middle)


def test_clean_mirror_verifies(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    mirror.run("yank", "demo-pkg", "1.0", "--reason", "test", check=True)
    result = mirror.run("verify")
    assert result.returncode == 0, result.stdout
    repo = MetadataRepo(mirror.repo)
    needed = {
        digest
        for manifest in repo.manifests(repo.tip())
        for entry in manifest.served_files()
        for digest in (entry.sha256, entry.core_metadata)
        if digest
    }
    assert len(needed) >= 12  # 8 files plus the wheels' core metadata
    summary = f"2 commits checked against the policy, 2 projects, 8 files, {len(needed)} blobs re-hashed"
    assert summary in result.stdout
    assert result.stdout.rstrip().endswith(": OK")


def test_a_bad_commit_deep_in_history_fails_even_when_undone(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    rogue_commits(mirror)
    result = mirror.run("verify")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].endswith(
        f"(swap a wheel): {DEMO}: sha256 of {WHEEL} changed from "
        f"{lines[0].split('changed from ')[1].split(' ')[0]} to {'f' * 64}"
    )
    assert "(put it back)" in lines[1]
    assert lines[-1].endswith("2 PROBLEMS")
    # The commit before the damage still verifies.
    assert mirror.run("verify", "--rev", mirror.git("rev-parse", "main~2").strip()[:12]).returncode == 0
    bad = mirror.run("verify", "--rev", "no-such-rev")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "gitmirror: error: unknown revision 'no-such-rev' (expected a commit id, tag, branch or ISO date)"
    )


def test_store_damage_is_found(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    wheel = next(a for a in sample["demo-pkg"] if a.filename == WHEEL)
    sdist = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.1.tar.gz")
    corrupt = mirror.store / "blobs" / wheel.sha256[:2] / wheel.sha256[2:4] / wheel.sha256
    os.chmod(corrupt, 0o644)
    corrupt.write_bytes(b"x" * wheel.size)
    missing = mirror.store / "blobs" / sdist.sha256[:2] / sdist.sha256[2:4] / sdist.sha256
    os.chmod(missing, 0o644)
    missing.unlink()
    result = mirror.run("verify")
    assert result.returncode == 1
    assert f"store: demo-pkg/{WHEEL} ({wheel.sha256}): content hashes to " in result.stdout
    assert f"store: demo-pkg/demo_pkg-1.1.tar.gz ({sdist.sha256}): missing from the store" in result.stdout
    assert mirror.run("verify", "--history-only").returncode == 0


def test_takedown_leftover_blob_is_reported(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    wheel = next(a for a in sample["demo-pkg"] if a.filename == WHEEL)
    blob = mirror.store / "blobs" / wheel.sha256[:2] / wheel.sha256[2:4] / wheel.sha256
    saved = blob.read_bytes()
    mirror.run("takedown", WHEEL, "--reason", "legal", check=True)
    blob.write_bytes(saved)  # as if the process died between commit and removal
    result = mirror.run("verify")
    assert result.returncode == 1 and f"demo-pkg/{WHEEL} was taken down but its blob is still stored" in result.stdout
    mirror.run("takedown", WHEEL, "--reason", "legal", check=True)
    assert mirror.run("verify").returncode == 0


def test_a_clone_verifies_without_the_store(mirror: Mirror, sample, tmp_path) -> None:
    mirror.run("sync", check=True)
    mirror.run("deprecate", "demo-pkg", "--reason", "moved", check=True)
    clone = tmp_path / "clone.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(mirror.repo), str(clone)], env=isolated_env(), check=True)
    result = subprocess.run(
        [sys.executable, "-m", "gitmirror", "verify", "--repo", str(clone), "--history-only"],
        env=isolated_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 commits checked" in result.stdout and "blobs" not in result.stdout


def test_empty_repository_and_in_process_report(mirror: Mirror, sample) -> None:
    mirror.run("init", check=True)
    result = mirror.run("verify")
    assert result.returncode == 0 and "nothing to verify" in result.stdout
    mirror.run("sync", check=True)
    report = verify(MetadataRepo(mirror.repo), None)
    assert report.ok and report.commits == 1 and report.blobs_checked == 0
    marks = json.loads(json.dumps(report.listing()))
    assert marks == []
