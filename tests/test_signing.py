"""Signed history: every commit and tag the mirror writes is SSH-signed as git signs, git itself
verifies them, ``verify --keys`` checks the whole history, and the hook can require signed pushes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from gitmirror.audit.hooks import install
from gitmirror.storage.repo import MetadataRepo

from conftest import Mirror, isolated_env, stop_server
from fakeupstream import build_wheel
from sshkeys import allowed_signers, git, make_key

pytestmark = pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="OpenSSH's ssh-keygen is not installed")

DEMO = "projects/de/mo/demo-pkg.jsonl"


def write_commit_object(repo: Path, raw: str) -> str:
    """Store ``raw`` as a commit object as it is (no check, no signing); returns its id."""
    command = ["git", "hash-object", "-t", "commit", "-w", "--stdin"]
    stored = subprocess.run(
        command, cwd=repo, input=raw, env=isolated_env(), capture_output=True, text=True, check=True
    )
    return stored.stdout.strip()


def test_every_commit_and_tag_the_mirror_writes_is_signed_git_verifies(mirror: Mirror, sample: dict, tmp_path: Path):
    key = make_key(tmp_path, "mirror-key")
    allowed = allowed_signers(tmp_path, ("mirror@example.invalid", key))
    mirror.configure(f"projects: [demo-pkg]\nsigning:\n  key: {key}\n")
    mirror.run("init", check=True)
    mirror.run("sync", check=True)
    mirror.run("yank", "demo-pkg", "1.0", "--reason", "broken", check=True)
    mirror.run("deprecate", "demo-pkg", "--reason", "use other-lib", check=True)
    mirror.run("takedown", "demo_pkg-2.0.tar.gz", "--reason", "malware", check=True)
    mirror.run("tag", "v1", check=True)
    mirror.run("render", "--branch", "pages", check=True)
    # git itself, told only which keys to trust, finds each commit good ("G") and the tag too
    trust = ("-c", f"gpg.ssh.allowedSignersFile={allowed}")
    log = git(*trust, "log", "--format=%G? %GS %s", "main", cwd=mirror.repo).stdout.splitlines()
    log += git(*trust, "log", "--format=%G? %GS %s", "pages", "--not", "main", cwd=mirror.repo).stdout.splitlines()
    assert len(log) == 5 and all(line.startswith("G mirror@example.invalid ") for line in log), log
    shown = git(*trust, "log", "--show-signature", "-1", "main", cwd=mirror.repo).stdout
    assert 'Good "git" signature for mirror@example.invalid with ED25519 key' in shown
    git(*trust, "verify-commit", "main", cwd=mirror.repo)
    git(*trust, "verify-tag", "v1", cwd=mirror.repo)
    verified = mirror.run("verify", "--history-only", "--keys", str(allowed))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "4 commits and 1 tags signed by allowed keys: mirror@example.invalid (5)" in verified.stdout
    # the same history judged against another key: every commit and the tag are refused
    (tmp_path / "other").mkdir()
    stranger = allowed_signers(tmp_path / "other", ("x", make_key(tmp_path, "stranger")))
    refused = mirror.run("verify", "--history-only", "--keys", str(stranger))
    assert refused.returncode == 1 and "a key not in" in refused.stdout and "5 problem(s)" in refused.stdout


def test_init_signing_key_signs_and_a_tampered_commit_fails_verify(mirror: Mirror, sample: dict, tmp_path: Path):
    key = make_key(tmp_path, "mirror-key")
    allowed = allowed_signers(tmp_path, ("mirror", key))
    mirror.configure("projects: [demo-pkg]\n")
    mirror.run("sync", check=True)  # before signing was turned on
    mirror.run("init", "--signing-key", str(key), check=True)
    mirror.configure("projects: [demo-pkg, other_lib]\n")
    mirror.run("sync", check=True)
    unsigned_past = mirror.run("verify", "--history-only", "--keys", str(allowed))
    assert unsigned_past.returncode == 1 and ": not signed" in unsigned_past.stdout
    since = ("--signed-from", mirror.git("rev-parse", "main").strip())
    assert mirror.run("verify", "--history-only", "--keys", str(allowed), *since).returncode == 0
    # The tip rewritten with its signature kept (its message changed): the signature no longer holds.
    raw = git("cat-file", "commit", "main", cwd=mirror.repo).stdout
    forged = write_commit_object(mirror.repo, raw + "\nA line added after signing.\n")
    git("update-ref", "refs/heads/main", forged, cwd=mirror.repo)
    result = mirror.run("verify", "--history-only", "--keys", str(allowed), *since)
    assert result.returncode == 1
    assert f"commit {forged[:12]}: bad signature" in result.stdout
    trust = f"gpg.ssh.allowedSignersFile={allowed}"
    assert git("-c", trust, "verify-commit", forged, cwd=mirror.repo, check=False).returncode != 0
    # The tip's content kept and one character of its Ed25519 signature changed: refused the same way.
    lines = raw.split("\n")
    last = max(i for i, line in enumerate(lines) if line.startswith(" -----END SSH SIGNATURE")) - 1
    lines[last] = lines[last][:5] + ("B" if lines[last][5] == "A" else "A") + lines[last][6:]
    altered = write_commit_object(mirror.repo, "\n".join(lines))
    git("update-ref", "refs/heads/main", altered, cwd=mirror.repo)
    result = mirror.run("verify", "--history-only", "--keys", str(allowed), *since)
    assert result.returncode == 1 and f"commit {altered[:12]}: bad signature" in result.stdout, result.stdout
    assert git("-c", trust, "verify-commit", altered, cwd=mirror.repo, check=False).returncode != 0
    # an unusable key stops init in one line, before anything is written
    (tmp_path / "not-a-key").write_text("hello\n")
    bad = mirror.run("init", "--signing-key", str(tmp_path / "not-a-key"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "not an unencrypted OpenSSH private key" in bad.stderr


def test_the_hook_requires_pushes_to_main_signed_by_an_allowed_key(synced_repo: Path, tmp_path: Path):
    bare = tmp_path / "served.git"
    shutil.copytree(synced_repo, bare)
    install(bare, sys.executable)
    pusher, stranger = make_key(tmp_path, "pusher"), make_key(tmp_path, "stranger")
    allowed = allowed_signers(tmp_path, ("pusher@example.invalid", pusher))
    MetadataRepo(bare).configure_signing(None, allowed, require_signed_main=True)
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)
    manifest = work / DEMO
    before = git("rev-parse", "main", cwd=bare).stdout

    def commit_and_push(message: str, *sign: str) -> subprocess.CompletedProcess[str]:
        git("reset", "-q", "--hard", "origin/main", cwd=work)
        manifest.write_text(manifest.read_text().replace('"yanked":false', '"yanked":"broken"', 1))
        git("-c", "gpg.format=ssh", *sign, "commit", "-q", "-am", message, cwd=work)
        return git("push", "origin", "main", cwd=work, check=False)

    unsigned = commit_and_push("yank, unsigned")
    assert unsigned.returncode != 0
    assert "remote: gitmirror: refs/heads/main: commit " in unsigned.stderr
    assert ": not signed; pushes to main must be signed" in unsigned.stderr
    signing = ("-c", "commit.gpgSign=true", "-c")
    foreign = commit_and_push("yank, signed by a stranger", *signing, f"user.signingKey={stranger}")
    assert foreign.returncode != 0 and f"a key not in {allowed}" in foreign.stderr, foreign.stderr
    assert git("rev-parse", "main", cwd=bare).stdout == before
    signed = commit_and_push("yank, signed", *signing, f"user.signingKey={pusher}")
    assert signed.returncode == 0, signed.stderr
    assert git("rev-parse", "main", cwd=bare).stdout == git("rev-parse", "HEAD", cwd=work).stdout


def test_the_hook_requires_pushed_annotated_tags_signed_by_an_allowed_key(synced_repo: Path, tmp_path: Path):
    bare = tmp_path / "served.git"
    shutil.copytree(synced_repo, bare)
    install(bare, sys.executable)
    pusher, stranger = make_key(tmp_path, "pusher"), make_key(tmp_path, "stranger")
    allowed = allowed_signers(tmp_path, ("pusher@example.invalid", pusher))
    work = tmp_path / "work"
    git("clone", "-q", str(bare), str(work), cwd=tmp_path)

    def tag_and_push(name: str, *how: str) -> subprocess.CompletedProcess[str]:
        git("-c", "gpg.format=ssh", *how, "tag", "-m", f"release {name}", name, "origin/main", cwd=work)
        return git("push", "origin", f"refs/tags/{name}", cwd=work, check=False)

    def refusals(pushed: subprocess.CompletedProcess[str]) -> list[str]:
        return [line.rstrip() for line in pushed.stderr.splitlines() if line.startswith("remote: gitmirror: refs/")]

    # Without the requirement an unsigned annotated tag is taken as before.
    assert tag_and_push("before").returncode == 0
    MetadataRepo(bare).configure_signing(None, allowed, require_signed_main=True)
    unsigned = tag_and_push("unsigned", "-c", "tag.gpgSign=false")
    assert unsigned.returncode != 0
    assert refusals(unsigned) == [
        "remote: gitmirror: refs/tags/unsigned: not signed; tags must be signed by an allowed key "
        "(as pushes to main must)"
    ], unsigned.stderr
    foreign = tag_and_push("foreign", "-c", "tag.gpgSign=true", "-c", f"user.signingKey={stranger}")
    assert foreign.returncode != 0
    (refused,) = refusals(foreign)
    assert refused.startswith("remote: gitmirror: refs/tags/foreign: signed by SHA256:")
    assert refused.endswith(f", a key not in {allowed}; tags must be signed by an allowed key (as pushes to main must)")
    assert git("tag", "--list", cwd=bare).stdout.split() == ["before"]
    signed = tag_and_push("signed", "-c", "tag.gpgSign=true", "-c", f"user.signingKey={pusher}")
    assert signed.returncode == 0, signed.stderr
    trust = f"gpg.ssh.allowedSignersFile={allowed}"
    git("-c", trust, "verify-tag", "signed", cwd=bare)
    # A lightweight tag has no signature to check; it names a commit of main, as any new tag must.
    git("tag", "light", "origin/main", cwd=work)
    assert git("push", "origin", "refs/tags/light", cwd=work, check=False).returncode == 0


def test_proxy_records_uploads_and_approvals_are_signed_too(mirror: Mirror, sample: dict, serve, tmp_path: Path):
    key = make_key(tmp_path, "mirror-key")
    allowed = allowed_signers(tmp_path, ("mirror@example.invalid", key))
    signing = f"signing:\n  key: {key}\n"
    mirror.configure(f"projects: [demo-pkg]\nhosted: ['acme-*']\nproxy:\n  commit_interval: 1\n{signing}")
    mirror.run("sync", check=True)
    token = mirror.run("token", "create", "ci", check=True).stdout.strip().splitlines()[-1]
    server = serve()
    # the proxy records a project nobody listed; an upload records a hosted file
    assert httpx.get(server.index_url + "other-lib/", timeout=30).status_code == 200
    upload = build_wheel("acme-tool", "1.0")
    form = {":action": "file_upload", "protocol_version": "1", "name": "acme-tool", "version": "1.0"}
    form |= {"filetype": "bdist_wheel", "pyversion": "py3", "sha256_digest": upload.sha256}
    files = {"content": (upload.filename, upload.data, "application/octet-stream")}
    posted = httpx.post(server.url + "/legacy/", data=form, files=files, auth=("__token__", token), timeout=30)
    assert posted.status_code == 200, posted.text
    stop_server(server)  # a clean stop commits the proxy's batch
    # review mode: a new release waits in incoming until approved
    mirror.configure(f"projects: [demo-pkg]\nreview:\n  enabled: true\n  cooldown: 7d\n{signing}")
    newer = build_wheel("demo-pkg", "3.0")
    mirror.upstream.add("demo-pkg", newer, upload_time=datetime.now(UTC) - timedelta(days=30))
    mirror.run("sync", check=True)
    mirror.run("approve", "demo-pkg==3.0", check=True)
    subjects = git("log", "--format=%s", "main", cwd=mirror.repo).stdout
    assert "proxy: " in subjects and "acme-tool" in subjects and "approve: " in subjects, subjects
    trust = ("-c", f"gpg.ssh.allowedSignersFile={allowed}")
    log = git(*trust, "log", "--format=%G? %s", "main", "incoming", cwd=mirror.repo).stdout.splitlines()
    assert log and all(line.startswith("G ") for line in log), log
    verified = mirror.run("verify", "--history-only", "--keys", str(allowed))
    assert verified.returncode == 0 and f"{len(log)} commits and 0 tags signed" in verified.stdout, verified.stdout


def test_mirror_yaml_makes_the_hook_require_signed_pushes(mirror: Mirror, sample: dict, tmp_path: Path):
    key, pusher = make_key(tmp_path, "mirror-key"), make_key(tmp_path, "pusher")
    allowed = allowed_signers(tmp_path, ("mirror@example.invalid", key), ("pusher@example.invalid", pusher))
    signing = f"signing:\n  key: {key}\n  allowed_signers: {allowed}\n  require_signed_main: true\n"
    mirror.configure(f"projects: [demo-pkg]\n{signing}")
    mirror.run("init", check=True)
    mirror.run("install-hook", check=True)
    mirror.run("sync", check=True)
    work = tmp_path / "work"
    git("clone", "-q", str(mirror.repo), str(work), cwd=tmp_path)
    manifest = work / DEMO
    manifest.write_text(manifest.read_text().replace('"yanked":false', '"yanked":"broken"', 1))
    git("commit", "-q", "-am", "yank, unsigned", cwd=work)
    refused = git("push", "origin", "main", cwd=work, check=False)
    assert refused.returncode != 0 and ": not signed; pushes to main must be signed" in refused.stderr
    signing_options = ("-c", "gpg.format=ssh", "-c", f"user.signingKey={pusher}")
    git(*signing_options, "commit", "-q", "--amend", "-S", "--no-edit", cwd=work)
    pushed = git("push", "origin", "main", cwd=work, check=False)
    assert pushed.returncode == 0, pushed.stderr
    mirror.run("deprecate", "demo-pkg", "--reason", "use other-lib", check=True)  # the mirror's own writes sign
    verified = mirror.run("verify", "--history-only", "--keys", str(allowed))
    assert verified.returncode == 0, verified.stdout
    assert "mirror@example.invalid (2), pusher@example.invalid (1)" in verified.stdout, verified.stdout
