"""Taken-down bytes never come back: not from upstream under another name or project, not by a push,
not by hydrate from an older snapshot, not by approving a review branch; verify finds a history
written around the hook."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

from gitmirror.model.manifest import FileEntry, ProjectManifest, Tombstone, loads, manifest_path
from gitmirror.model.page import RemoteFile, RemoteProject
from gitmirror.model.policy import UnrecordedTombstone, check_change, takedown_candidates, takedown_check
from gitmirror.model.takedowns import TakedownRecord, append, line_problems, listed, parse, shard_path, takedown_reason
from gitmirror.storage.repo import MetadataRepo
from gitmirror.sync.config import parse_selection
from gitmirror.sync.merge import merge

from conftest import Mirror, isolated_env
from fakeupstream import Artifact

DEMO = manifest_path("demo-pkg")
OTHER = manifest_path("other-lib")
SDIST = "demo_pkg-1.0.tar.gz"
DIGEST = "ab" * 32
RECORD = TakedownRecord(DIGEST, "demo-pkg", SDIST, "malware", "2026-01-01T00:00:00Z")


def blob(mirror: Mirror, digest: str) -> Path:
    return mirror.store / "blobs" / digest[:2] / digest[2:4] / digest


def entry(filename: str, digest: str = DIGEST, stone: str | None = None) -> FileEntry:
    tombstone = Tombstone(stone, "2026-01-02T00:00:00Z") if stone else None
    return FileEntry(filename, "1.0", digest, 10, first_seen="2026-01-01T00:00:00Z", tombstone=tombstone)


def taken_down(mirror: Mirror, sample) -> Artifact:
    """Sync the sample and take the demo-pkg 1.0 sdist down; returns it."""
    mirror.run("sync", check=True)
    mirror.run("takedown", SDIST, "--reason", "malware", check=True)
    return next(artifact for artifact in sample["demo-pkg"] if artifact.filename == SDIST)


# -- the pure rules ------------------------------------------------------------------------------


def test_index_format_and_shards() -> None:
    line = RECORD.line()
    assert line == (
        b'{"sha256":"' + DIGEST.encode() + b'","project":"demo-pkg","filename":"demo_pkg-1.0.tar.gz",'
        b'"reason":"malware","time":"2026-01-01T00:00:00Z"}\n'
    )
    assert shard_path(DIGEST) == "takedowns/ab.jsonl"
    shard = append(None, RECORD)
    assert parse(shard) == {DIGEST: RECORD}
    assert append(shard, RECORD) == shard  # one line per digest
    assert line_problems("takedowns/ab.jsonl", None, shard) == []
    assert "belongs in takedowns/ab.jsonl" in line_problems("takedowns/cd.jsonl", None, shard)[0]
    assert "malformed" in line_problems("takedowns/ab.jsonl", shard, shard + b'{"sha256":"ab"}\n')[0]
    assert "not a takedown shard path" in line_problems("takedowns/x/ab.jsonl", None, shard)[0]
    reads: list[str] = []
    found = listed(lambda path: reads.append(path) or shard, [DIGEST, "ab" + "00" * 31, "cd" * 32])
    assert found == {DIGEST: RECORD} and reads == ["takedowns/ab.jsonl", "takedowns/cd.jsonl"]  # one read per shard


def test_index_only_grows() -> None:
    shard = append(None, RECORD)
    other = TakedownRecord("ab" + "11" * 31, "x", "x-1.0.tar.gz", "legal", "2026-01-01T00:00:00Z")
    assert check_change("takedowns/ab.jsonl", shard, append(shard, other)) == []
    assert "audit log removed" in str(check_change("takedowns/ab.jsonl", shard, None)[0])
    rewritten = shard.replace(b"malware", b"nothing")
    assert "rewritten" in str(check_change("takedowns/ab.jsonl", shard, rewritten)[0])


def test_rule_finds_new_served_entries_and_new_tombstones() -> None:
    old = ProjectManifest("demo-pkg", {"a.tar.gz": entry("a-1.0.tar.gz")}).dumps()
    renamed = ProjectManifest("demo-pkg", {"a": entry("a-1.0.tar.gz"), "b": entry("b-1.0.tar.gz")}).dumps()
    assert takedown_candidates(old, renamed) == ([("b-1.0.tar.gz", DIGEST)], [])
    stoned = ProjectManifest("demo-pkg", {"a": entry("a-1.0.tar.gz", stone="malware")}).dumps()
    assert takedown_candidates(old, stoned) == ([], [("a-1.0.tar.gz", DIGEST)])
    assert takedown_candidates(stoned, stoned) == ([], [])
    yanked = old.replace(b'"yanked":false', b'"yanked":"bad"')
    assert takedown_candidates(old, yanked) == ([], [])  # a recorded file changing is not judged
    problems = takedown_check(DEMO, [("b-1.0.tar.gz", DIGEST)], [], {DIGEST: RECORD})
    assert "taken down as demo-pkg/demo_pkg-1.0.tar.gz (malware)" in str(problems[0])
    (missing,) = takedown_check(DEMO, [], [("a-1.0.tar.gz", DIGEST)], {})
    assert isinstance(missing, UnrecordedTombstone) and "not in takedowns/ab.jsonl" in str(missing)
    assert takedown_check(DEMO, [], [("a-1.0.tar.gz", DIGEST)], {DIGEST: RECORD}) == []


def test_merge_skips_taken_down_bytes_with_a_note() -> None:
    remote_file = RemoteFile(
        "demo_pkg-1.0.post1.tar.gz", "http://127.0.0.1/x", "1.0.post1", DIGEST, 10, None, None, False, None, None
    )
    remote = RemoteProject(name="demo-pkg", files=[remote_file])
    manifest, wanted, outcome = merge(
        None, remote, parse_selection("demo-pkg"), "2026-01-01T00:00:00Z", taken_down={DIGEST: RECORD}
    )
    assert wanted == [] and outcome.errors == [] and not manifest.files
    assert outcome.notes == [
        f"demo_pkg-1.0.post1.tar.gz not mirrored: its sha256 {DIGEST} was taken down as "
        "demo-pkg/demo_pkg-1.0.tar.gz (malware)"
    ]


# -- end to end ----------------------------------------------------------------------------------


def test_takedown_records_the_digest_in_the_same_commit(mirror: Mirror, sample) -> None:
    sdist = taken_down(mirror, sample)
    changed = mirror.git("show", "--name-only", "--format=", "main").split()
    assert sorted(changed) == sorted([DEMO, "marks/demo-pkg.jsonl", shard_path(sdist.sha256)])
    repo = MetadataRepo(mirror.repo)
    assert takedown_reason(repo, repo.tip(), sdist.sha256) == "malware"
    assert takedown_reason(repo, repo.tip(), "0" * 64) is None
    assert mirror.run("verify", check=True).returncode == 0


def test_upstream_offers_the_bytes_again_under_other_names(mirror: Mirror, sample, upstream) -> None:
    sdist = taken_down(mirror, sample)
    upstream.clear_requests()
    upstream.add("demo-pkg", Artifact("demo_pkg-1.0.post1.tar.gz", sdist.data))
    upstream.add("other_lib", Artifact("other_lib-9.0.tar.gz", sdist.data))
    result = mirror.run("sync")
    assert result.returncode == 0, result.stderr
    assert f"note: demo-pkg: demo_pkg-1.0.post1.tar.gz not mirrored: its sha256 {sdist.sha256} was taken down" in (
        result.stderr
    )
    assert "note: other-lib: other_lib-9.0.tar.gz not mirrored" in result.stderr
    assert result.stderr.count("not mirrored") == 2  # once per file
    assert "demo_pkg-1.0.post1.tar.gz" not in mirror.git("show", f"main:{DEMO}")
    assert "other_lib-9.0.tar.gz" not in mirror.git("show", f"main:{OTHER}")
    assert upstream.count("demo_pkg-1.0.post1.tar.gz") == 0 and upstream.count("other_lib-9.0.tar.gz") == 0
    assert not blob(mirror, sdist.sha256).exists()
    assert mirror.run("verify", check=True).returncode == 0


def push_setup(mirror: Mirror, sample, tmp_path: Path) -> tuple[Artifact, Path, dict[str, str]]:
    """A taken-down file in a bare repository with the hook installed, and a clone to push from."""
    sdist = taken_down(mirror, sample)
    assert mirror.run("install-hook", str(mirror.repo), check=True).returncode == 0
    work = tmp_path / "work"
    env = isolated_env(HOME=str(tmp_path))
    subprocess.run(["git", "clone", "-q", str(mirror.repo), str(work)], env=env, check=True, capture_output=True)
    return sdist, work, env


def push(work: Path, env: dict[str, str], message: str) -> subprocess.CompletedProcess[str]:
    for args in (["add", "-A"], ["commit", "-q", "-m", message]):
        subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True)
    return subprocess.run(["git", "push", "origin", "main"], cwd=work, env=env, capture_output=True, text=True)


def add_line(path: Path, record: dict) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record, separators=(",", ":")) + "\n")


def refusals(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The pusher's lines naming a path and a rule (not the framing lines around them)."""
    return [
        line.strip()
        for line in result.stderr.splitlines()
        if line.startswith("remote: gitmirror: ")
        and ": " in line[19:]
        and "breaks the" not in line
        and "push rejected" not in line
    ]


def test_push_bringing_the_bytes_back_is_refused(mirror: Mirror, sample, tmp_path: Path) -> None:
    sdist, work, env = push_setup(mirror, sample, tmp_path)
    before = mirror.git("rev-parse", "main")
    recorded = json.loads((work / DEMO).read_text().splitlines()[1])
    add_line(
        work / OTHER,
        {**recorded, "filename": "other_lib-9.0.tar.gz", "version": "9.0", "sha256": sdist.sha256, "size": sdist.size},
    )
    result = push(work, env, "serve it again as other-lib")
    assert result.returncode != 0
    (line,) = refusals(result)
    assert line.startswith(f"remote: gitmirror: {OTHER}: other_lib-9.0.tar.gz has sha256 {sdist.sha256}, taken down")
    assert "Traceback" not in result.stderr
    assert mirror.git("rev-parse", "main") == before


def test_push_of_a_tombstone_without_its_index_line_is_refused(mirror: Mirror, sample, tmp_path: Path) -> None:
    _sdist, work, env = push_setup(mirror, sample, tmp_path)
    lines = [json.loads(line) for line in (work / DEMO).read_text().splitlines()]
    wheel = next(line for line in lines if line.get("filename") == "demo_pkg-1.0-py3-none-any.whl")
    wheel["tombstone"] = {"reason": "legal", "time": "2026-01-01T00:00:00Z"}
    (work / DEMO).write_text("".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines))
    result = push(work, env, "quiet takedown")
    assert result.returncode != 0
    (line,) = refusals(result)
    assert f"{DEMO}: demo_pkg-1.0-py3-none-any.whl was taken down but its sha256" in line
    assert f"is not in {shard_path(wheel['sha256'])}" in line


def test_removing_or_rewriting_an_index_line_is_refused(mirror: Mirror, sample, tmp_path: Path) -> None:
    sdist, work, env = push_setup(mirror, sample, tmp_path)
    shard = work / shard_path(sdist.sha256)
    original = shard.read_text()
    shard.write_text(original.replace("malware", "a mistake"))
    result = push(work, env, "rewrite the reason")
    assert result.returncode != 0
    assert refusals(result) == [
        f"remote: gitmirror: {shard_path(sdist.sha256)}: audit log rewritten (lines may be added, never changed or "
        "removed)"
    ]
    subprocess.run(["git", "reset", "-q", "--hard", "origin/main"], cwd=work, env=env, check=True)
    shard.unlink()
    result = push(work, env, "forget the takedown")
    assert result.returncode != 0 and f"{shard_path(sdist.sha256)}: audit log removed" in result.stderr
    subprocess.run(["git", "reset", "-q", "--hard", "origin/main"], cwd=work, env=env, check=True)
    (work / "takedowns" / "zz.jsonl").write_text("{}\n")
    result = push(work, env, "a shard elsewhere")
    assert result.returncode != 0 and "not a takedown shard path" in result.stderr


def test_hydrate_from_an_older_snapshot_does_not_bring_the_blob_back(mirror: Mirror, sample, tmp_path: Path) -> None:
    mirror.run("sync", check=True)
    before = mirror.git("rev-parse", "main").strip()
    source = tmp_path / "old-store"
    shutil.copytree(mirror.store, source)  # a copy made before the takedown still holds the bytes
    mirror.run("takedown", SDIST, "--reason", "malware", check=True)
    sdist = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == SDIST)
    shutil.rmtree(mirror.store)
    result = mirror.run("hydrate", "--from", str(source), "--rev", before)
    assert result.returncode == 0, result.stderr
    assert f"skipped demo-pkg/{SDIST} ({sdist.sha256[:12]}): taken down as demo-pkg/{SDIST}" in result.stderr
    assert not blob(mirror, sdist.sha256).exists()
    wheel = next(artifact for artifact in sample["demo-pkg"] if artifact.filename.endswith(".whl"))
    assert blob(mirror, wheel.sha256).is_file()  # everything else of that snapshot came back


def test_approving_a_review_branch_with_the_bytes_is_refused(mirror: Mirror, sample, upstream) -> None:
    mirror.run("sync", check=True)
    review = "review:\n  enabled: true\n  cooldown: 0s\n  auto_approve: [other-lib]\n"
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n" + review)
    sdist = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == SDIST)
    upstream.add("other_lib", Artifact("other_lib-9.0.tar.gz", sdist.data))
    mirror.run("sync", check=True)  # waits on incoming, served nowhere yet
    mirror.run("takedown", SDIST, "--reason", "malware", check=True)
    main = mirror.git("rev-parse", "main")
    for args in (["other-lib"], ["--all"]):
        refused = mirror.run("approve", *args)
        assert refused.returncode == 2, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("gitmirror: ") and "refused by the takedown index" in line
        assert f"{OTHER}: other_lib-9.0.tar.gz has sha256 {sdist.sha256}, taken down" in line
        assert mirror.git("rev-parse", "main") == main
    held = mirror.run("approve", "--policy", check=True)
    assert "held other-lib: + other_lib-9.0.tar.gz (sha256 taken down as demo-pkg/demo_pkg-1.0.tar.gz)" in held.stdout
    # The next sync merges main's takedown into the review branch: the file becomes a tombstone there.
    mirror.run("sync", check=True)
    incoming = json.loads(mirror.git("show", f"incoming:{OTHER}").splitlines()[-1])
    assert incoming["filename"] == "other_lib-9.0.tar.gz" and "taken down: malware" in incoming["tombstone"]["reason"]
    mirror.run("approve", "--all", check=True)
    assert mirror.run("verify", check=True).returncode == 0
    assert not blob(mirror, sdist.sha256).exists()


def test_verify_reports_a_history_written_around_the_hook(mirror: Mirror, sample) -> None:
    sdist = taken_down(mirror, sample)
    repo = MetadataRepo(mirror.repo)
    tip = repo.tip()
    other = repo.manifest(tip, "other-lib")
    recorded = repo.manifest(tip, "demo-pkg").files[SDIST]
    again = FileEntry("other_lib-9.0.tar.gz", "9.0", sdist.sha256, sdist.size, first_seen=recorded.first_seen)
    repo.write_commit({OTHER: other.with_file(again).dumps()}, "sneak it back", parent=tip)
    demo = repo.manifest(repo.tip(), "demo-pkg")
    wheel = demo.files["demo_pkg-1.0-py3-none-any.whl"]
    stone = Tombstone("quiet", "2026-01-01T00:00:00Z")
    repo.write_commit({DEMO: demo.with_file(replace_stone(wheel, stone)).dumps()}, "quiet takedown", parent=repo.tip())
    result = mirror.run("verify", "--history-only")
    assert result.returncode == 1
    assert f"(sneak it back): {OTHER}: other_lib-9.0.tar.gz has sha256 {sdist.sha256}, taken down" in result.stdout
    assert "(quiet takedown): " in result.stdout and "running `gitmirror takedown` on that file again" in result.stdout


def replace_stone(entry: FileEntry, stone: Tombstone) -> FileEntry:
    return replace(entry, tombstone=stone)


def test_old_takedowns_are_backfilled_by_running_takedown_again(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    repo = MetadataRepo(mirror.repo)
    demo = repo.manifest(repo.tip(), "demo-pkg")
    stone = Tombstone("from before the index", "2026-01-01T00:00:00Z")
    repo.write_commit(
        {DEMO: demo.with_file(replace_stone(demo.files[SDIST], stone)).dumps()}, "old takedown", parent=repo.tip()
    )
    reported = mirror.run("verify")
    assert reported.returncode == 1 and "(old takedown)" in reported.stdout
    backfill = mirror.run("takedown", SDIST, "--reason", "ignored: the tombstone keeps its reason", check=True)
    assert "already taken down; its sha256 is now in takedowns/" in backfill.stdout
    sdist = next(artifact for artifact in sample["demo-pkg"] if artifact.filename == SDIST)
    record = parse(mirror.git("show", f"main:{shard_path(sdist.sha256)}").encode())[sdist.sha256]
    assert (record.reason, record.time) == ("from before the index", "2026-01-01T00:00:00Z")
    assert mirror.run("verify", check=True).returncode == 0
    assert loads(mirror.git("show", f"main:{DEMO}").encode(), DEMO).files[SDIST].tombstone == stone
