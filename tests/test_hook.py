"""The pre-receive hook under real ``git push``: a matrix of pushes, each accepted or refused as
the policy says, and a refused push leaves the bare repository exactly as it was."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gitmirror.audit.hooks import install, render_hook

from conftest import isolated_env

DEMO = "projects/de/mo/demo-pkg.jsonl"
OTHER = "projects/ot/he/other-lib.jsonl"
WHEEL = "demo_pkg-1.0-py3-none-any.whl"


class Remote:
    """A bare repository with the hook installed and a working clone to push from."""

    def __init__(self, template: Path, tmp_path: Path) -> None:
        self.bare = tmp_path / "served.git"
        shutil.copytree(template, self.bare)
        self.env = isolated_env(HOME=str(tmp_path))
        install(self.bare, sys.executable)  # in-process for speed; the CLI path has its own test
        self.work = tmp_path / "work"
        self.git("clone", "-q", str(self.bare), str(self.work), cwd=tmp_path)

    def gitmirror(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gitmirror", *args], env=self.env, capture_output=True, text=True, cwd=self.bare
        )

    def git(self, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["git", *args], cwd=cwd or self.work, env=self.env, capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed:\n{result.stderr}")
        return result

    def state(self) -> tuple[str, str]:
        """Refs and every object of the bare repository: a refused push must change neither."""
        refs = self.git("for-each-ref", cwd=self.bare).stdout
        objects = self.git("cat-file", "--batch-all-objects", "--batch-check", cwd=self.bare).stdout
        return refs, objects

    def edit(self, path: str, change: Callable[[list[dict]], None]) -> None:
        """Rewrite a manifest's JSON lines in the clone (what a hand edit or a rogue tool does)."""
        file = self.work / path
        records = [json.loads(line) for line in file.read_text().splitlines()]
        change(records)
        file.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records))

    def record_takedown(self, path: str, filename: str, reason: str = "malware") -> None:
        """Add the takedown index line a tombstone of ``filename`` needs in the same commit."""
        records = [json.loads(line) for line in (self.work / path).read_text().splitlines()]
        digest = next(record["sha256"] for record in records if record.get("filename") == filename)
        shard = self.work / "takedowns" / f"{digest[:2]}.jsonl"
        shard.parent.mkdir(exist_ok=True)
        record = {
            "sha256": digest,
            "project": "demo-pkg",
            "filename": filename,
            "reason": reason,
            "time": "2026-01-01T00:00:00Z",
        }
        with shard.open("a") as handle:
            handle.write(json.dumps(record, separators=(",", ":")) + "\n")

    def commit(self, message: str) -> None:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)

    def push(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.git("push", "origin", *(args or ("main",)), check=False)


@pytest.fixture
def remote(synced_repo: Path, tmp_path: Path) -> Remote:
    return Remote(synced_repo, tmp_path)


def entry(records: list[dict], filename: str) -> dict:
    return next(record for record in records if record.get("filename") == filename)


def new_release(records: list[dict]) -> None:
    records.append(
        {**entry(records, WHEEL), "filename": "demo_pkg-3.0-py3-none-any.whl", "version": "3.0", "sha256": "ab" * 32}
    )


def assert_accepted(remote: Remote, result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr
    local = remote.git("rev-parse", "HEAD").stdout
    assert remote.git("rev-parse", "main", cwd=remote.bare).stdout == local


def assert_refused(
    remote: Remote, before: tuple[str, str], result: subprocess.CompletedProcess[str], expected: str
) -> None:
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr
    assert remote.state() == before


def test_install_hook_writes_executable_using_this_python(remote: Remote) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.unlink()
    remote.git("config", "--unset", "receive.denyDeletes", cwd=remote.bare)
    result = remote.gitmirror("install-hook", str(remote.bare))
    assert result.returncode == 0, result.stderr
    assert hook.stat().st_mode & 0o111
    assert sys.executable in hook.read_text()
    config = remote.git("config", "--list", cwd=remote.bare).stdout
    assert "receive.denynonfastforwards=true" in config and "receive.denydeletes=true" in config
    assert "core.fsync=committed" in config  # git itself makes what a push writes durable
    # The hook shipped in the repository is the same script with a plain python3.
    shipped = Path(__file__).parent.parent / "hooks" / "pre-receive"
    assert shipped.read_text() == render_hook("python3")
    assert shipped.stat().st_mode & 0o111


def test_a_hook_installed_before_the_stage_layout_still_judges(remote: Remote) -> None:
    """Hooks written by earlier versions run ``python -m gitmirror.hooks``: that entry still refuses."""
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(render_hook(sys.executable).replace("gitmirror.audit.hooks", "gitmirror.hooks"))
    remote.edit(DEMO, lambda records: entry(records, "demo_pkg-1.0-py3-none-any.whl").update(sha256="c" * 64))
    remote.commit("rewrite a recorded hash")
    refused = remote.push()
    assert refused.returncode != 0 and "remote: gitmirror: " in refused.stderr and "sha256 of" in refused.stderr


def test_install_hook_keeps_a_foreign_hook_and_refuses_non_bare(remote: Remote, tmp_path: Path) -> None:
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\nexit 0\n")
    refused = remote.gitmirror("install-hook", str(remote.bare))
    assert refused.returncode == 2 and "not gitmirror's" in refused.stderr
    assert hook.read_text() == "#!/bin/sh\nexit 0\n"
    assert remote.gitmirror("install-hook", "--force", str(remote.bare)).returncode == 0
    not_bare = remote.gitmirror("install-hook", str(remote.work))
    assert not_bare.returncode == 2 and "not a bare repository" in not_bare.stderr
    missing = remote.gitmirror("install-hook", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "name, change",
    [
        ("new release", lambda r: new_release(r)),
        ("yank", lambda r: entry(r, WHEEL).update(yanked="broken on arm64")),
        ("unyank", lambda r: entry(r, "demo_pkg-1.1-py3-none-any.whl").update(yanked=False)),
        ("deprecation", lambda r: r[0].update({"project-status": {"status": "deprecated", "reason": "use x"}})),
        (
            "tombstone with reason",
            lambda r: entry(r, WHEEL).update(tombstone={"reason": "malware", "time": "2026-01-01T00:00:00Z"}),
        ),
        ("upstream-removed", lambda r: entry(r, WHEEL).update({"upstream-removed": "2026-01-01T00:00:00Z"})),
    ],
)
def test_allowed_changes_are_accepted(remote: Remote, name: str, change: Callable[[list[dict]], None]) -> None:
    remote.edit(DEMO, change)
    if name.startswith("tombstone"):
        remote.record_takedown(DEMO, WHEEL)  # a takedown lists its sha256 (tests/test_takedowns.py)
    remote.commit(name)
    assert_accepted(remote, remote.push())


@pytest.mark.parametrize(
    "change, expected",
    [
        (
            lambda r: entry(r, WHEEL).update(sha256="cd" * 32),
            f"remote: gitmirror: {DEMO}: sha256 of {WHEEL} changed from ",
        ),
        (lambda r: entry(r, WHEEL).update(size=1), f"{DEMO}: size of {WHEEL} changed from "),
        (lambda r: r.remove(entry(r, WHEEL)), f"{DEMO}: entry for {WHEEL} removed"),
        (
            lambda r: entry(r, WHEEL).update(filename="demo_pkg-1.0-py3-none-any-renamed.whl"),
            f"{DEMO}: entry for {WHEEL} removed",
        ),
        (
            lambda r: entry(r, WHEEL).update(tombstone={"reason": "", "time": "2026-01-01T00:00:00Z"}),
            f"{DEMO}: tombstone of {WHEEL} has no reason",
        ),
        (lambda r: r.append({"not": "a file"}), f"{DEMO}: malformed manifest"),
    ],
    ids=["edited-hash", "edited-size", "deleted-entry", "renamed-file-entry", "tombstone-without-reason", "garbage"],
)
def test_violating_changes_are_refused(remote: Remote, change: Callable[[list[dict]], None], expected: str) -> None:
    before = remote.state()
    remote.edit(DEMO, change)
    remote.commit("bad change")
    assert_refused(remote, before, remote.push(), expected)


def test_deleted_project_is_refused(remote: Remote) -> None:
    before = remote.state()
    remote.git("rm", "-q", OTHER)
    remote.commit("drop other-lib")
    assert_refused(remote, before, remote.push(), f"gitmirror: {OTHER}: project other-lib removed")


def test_renamed_manifest_is_refused(remote: Remote) -> None:
    before = remote.state()
    remote.git("mv", OTHER, "projects/ot/he/other-lib2.jsonl")
    remote.commit("rename")
    result = remote.push()
    assert_refused(remote, before, result, f"{OTHER}: project other-lib removed")
    assert "manifest names project other-lib, path says otherwise" in result.stderr


def test_untombstoning_is_refused(remote: Remote) -> None:
    stone = {"reason": "malware", "time": "2026-01-01T00:00:00Z"}
    remote.edit(DEMO, lambda r: entry(r, WHEEL).update(tombstone=stone))
    remote.record_takedown(DEMO, WHEEL)
    remote.commit("takedown")
    assert_accepted(remote, remote.push())
    before = remote.state()
    remote.edit(DEMO, lambda r: entry(r, WHEEL).pop("tombstone"))
    remote.commit("bring it back")
    assert_refused(remote, before, remote.push(), f"{DEMO}: {WHEEL} was un-tombstoned")


def test_bad_commit_reverted_in_the_same_push_is_still_refused(remote: Remote) -> None:
    before = remote.state()
    remote.edit(DEMO, lambda r: entry(r, WHEEL).update(sha256="cd" * 32))
    remote.commit("swap the wheel")
    remote.git("revert", "--no-edit", "HEAD")
    new_release_commit(remote)
    result = remote.push()
    assert_refused(remote, before, result, f"sha256 of {WHEEL} changed from")
    assert "(swap the wheel)" in result.stderr  # the offending commit is named, not the tip


def new_release_commit(remote: Remote) -> None:
    remote.edit(DEMO, new_release)
    remote.commit("new release")


def test_force_push_and_amended_commit_are_refused(remote: Remote) -> None:
    new_release_commit(remote)
    assert_accepted(remote, remote.push())
    before = remote.state()
    remote.git("commit", "-q", "--amend", "-m", "amended")
    assert_refused(remote, before, remote.push("--force", "main"), "main")
    remote.git("reset", "-q", "--hard", "HEAD~1")
    assert_refused(remote, before, remote.push("--force", "main"), "main")


def test_the_hook_alone_refuses_force_push_and_deletion(remote: Remote) -> None:
    """With git's own receive.deny* switched off, the hook still holds the line."""
    remote.git("config", "receive.denyNonFastForwards", "false", cwd=remote.bare)
    remote.git("config", "receive.denyDeletes", "false", cwd=remote.bare)
    remote.git("tag", "v1")
    assert_accepted(remote, remote.push("main", "v1"))
    before = remote.state()
    remote.git("commit", "-q", "--amend", "-m", "rewritten")
    assert_refused(
        remote, before, remote.push("--force", "main"), "gitmirror: refs/heads/main: non-fast-forward update"
    )
    assert_refused(remote, before, remote.push(":main"), "gitmirror: refs/heads/main: deleting a protected branch")
    assert_refused(remote, before, remote.push(":v1"), "gitmirror: refs/tags/v1: deleting a protected branch or tag")
    remote.git("tag", "-f", "v1")
    assert_refused(remote, before, remote.push("--force", "v1"), "gitmirror: refs/tags/v1: tags are immutable")


def test_deleting_a_branch_is_refused(remote: Remote) -> None:
    before = remote.state()
    assert_refused(remote, before, remote.push(":main"), "main")


def test_bad_history_on_a_new_branch_is_refused(remote: Remote) -> None:
    before = remote.state()
    remote.git("checkout", "-q", "-b", "sneaky")
    remote.git("rm", "-q", DEMO)
    remote.commit("drop demo")
    assert_refused(remote, before, remote.push("sneaky"), f"{DEMO}: project demo-pkg removed")


def test_several_good_commits_in_one_push_then_verify(remote: Remote) -> None:
    new_release_commit(remote)
    remote.edit(DEMO, lambda r: entry(r, WHEEL).update(yanked="regression"))
    remote.commit("yank")
    remote.edit(OTHER, lambda r: r[0].update({"project-status": {"status": "archived", "reason": None}}))
    remote.commit("archive")
    assert_accepted(remote, remote.push())
    verified = remote.gitmirror("verify", "--repo", str(remote.bare), "--history-only")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "4 commits checked" in verified.stdout


def test_conflict_log_may_grow_but_not_shrink(remote: Remote) -> None:
    log = remote.work / "conflicts" / "demo-pkg.jsonl"
    log.parent.mkdir()
    log.write_text('{"filename":"a"}\n')
    remote.commit("record")
    assert_accepted(remote, remote.push())
    log.write_text('{"filename":"a"}\n{"filename":"b"}\n')
    remote.commit("record more")
    assert_accepted(remote, remote.push())
    before = remote.state()
    log.write_text('{"filename":"b"}\n')
    remote.commit("forget a")
    assert_refused(remote, before, remote.push(), "conflicts/demo-pkg.jsonl: audit log rewritten")
