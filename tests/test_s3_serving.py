"""Several serving machines: two ``gitmirror serve --follow`` instances sharing one bucket and
following the sync's repository answer identical bytes while a sync runs, and refuse a rewrite."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import httpx

from conftest import GITMIRROR, Mirror, RunningServer, isolated_env, start_server, stop_server


def serving_machine(primary: Mirror, root: Path) -> Mirror:
    """A machine with a clone of the primary's repository and the same bucket settings."""
    root.mkdir()
    subprocess.run(
        ["git", "clone", "--quiet", "--bare", str(primary.repo), str(root / "mirror" / "repo")],
        env=isolated_env(),
        check=True,
    )
    (root / "mirror.yaml").write_text((primary.root / "mirror.yaml").read_text())
    return Mirror(root=root, upstream=primary.upstream)


def answers(server: RunningServer, project: str) -> dict[str, bytes]:
    """Every file the server's project page lists, with the bytes it serves (200s only)."""
    page = httpx.get(f"{server.url}/simple/{project}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    found = {}
    for file in page.json()["files"]:
        answer = httpx.get(f"{server.url}/simple/{project}/{file['url']}", follow_redirects=True)
        assert answer.status_code == 200, (file["filename"], answer.text)
        assert hashlib.sha256(answer.content).hexdigest() == file["hashes"]["sha256"]
        found[file["filename"]] = answer.content
    return found


def test_two_followers_serve_identical_bytes_while_a_sync_runs(s3_mirror: Mirror, sample, tmp_path: Path) -> None:
    primary = s3_mirror
    primary.run("sync", "demo-pkg==1.0", check=True)
    machines = [serving_machine(primary, tmp_path / name) for name in ("a", "b")]
    servers = [start_server(m.root, "--follow", str(primary.repo), "--follow-interval", "0.3") for m in machines]
    try:
        sync = subprocess.Popen([*GITMIRROR, "sync"], cwd=primary.root, env=isolated_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        while sync.poll() is None:  # every file either lists is whole, and both serve the same bytes
            seen = [answers(server, "demo-pkg") for server in servers]
            for name in set(seen[0]) & set(seen[1]):
                assert seen[0][name] == seen[1][name]
        assert sync.returncode == 0, sync.stderr.read() if sync.stderr else ""
        tip = primary.git("rev-parse", "main").strip()
        deadline = time.monotonic() + 30
        while any(m.git("rev-parse", "main").strip() != tip for m in machines):
            if time.monotonic() > deadline:
                stop_server(servers[0])
                said = servers[0].stderr()
                raise AssertionError(f"the followers did not reach the sync's commit:\n{said}")
            time.sleep(0.2)
        time.sleep(1.2)  # the server re-reads its branch tip at least once a second
        pages = [httpx.get(f"{server.index_url}other-lib/").content for server in servers]
        assert pages[0] == pages[1] and b"other_lib-0.2" in pages[0]
        everything = [answers(server, "demo-pkg") for server in servers]
        assert everything[0] == everything[1]
        assert {a.filename for a in sample["demo-pkg"]} <= set(everything[0])

        # a rewrite of the remote's history (main moved back) is not followed
        first = primary.git("rev-list", "--max-parents=0", "main").split()[0]
        primary.git("update-ref", "refs/heads/main", first)
        deadline = time.monotonic() + 30
        while any(_fetched(m) != first for m in machines):  # each follower has seen the rewrite
            assert time.monotonic() < deadline, "the followers did not fetch the rewritten branch"
            time.sleep(0.2)
        time.sleep(3)  # its push into itself, refused, and the line that says so
        assert all(m.git("rev-parse", "main").strip() == tip for m in machines)
    finally:
        for server in servers:
            stop_server(server)
    refusal = servers[0].stderr()
    assert "follow: refused main" in refusal


def _fetched(machine: Mirror) -> str:
    """The commit the machine's follower fetched last (empty before its first fetch)."""
    head = machine.repo / "FETCH_HEAD"
    return head.read_text().split()[0] if head.exists() and head.read_text().strip() else ""
