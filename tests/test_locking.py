"""One writer at a time, and readers that only ever see whole commits.

A sync is frozen (SIGSTOP, via ``GITMIRROR_PAUSE_AT``) at chosen points: while it holds the writer
lock a second sync or a yank fails fast with one clear line; while its commit is half written the
server keeps serving the previous commit; once it continues, everything completes normally.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

import crashhook
from conftest import GITMIRROR, Mirror, isolated_env
from fakeupstream import FakeUpstream, build_wheel

JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


@contextmanager
def paused_sync(mirror: Mirror, point: str, *args: str, **env: str) -> Iterator[subprocess.Popen[str]]:
    """A real ``gitmirror sync`` stopped at ``point``; continued (and awaited) when the block ends.

    Its output is then in ``process.output`` (stdout, stderr): the pipes are read to their end.
    """
    process = subprocess.Popen(
        [*GITMIRROR, "sync", *args],
        cwd=mirror.root,
        env=crashhook.environment(GITMIRROR_PAUSE_AT=point, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while process_state(process.pid) != "T":
            assert process.poll() is None, f"sync ended before reaching {point}: {process.communicate()}"
            assert time.monotonic() < deadline, f"sync never reached {point}"
            time.sleep(0.02)
        yield process
    finally:
        process.send_signal(signal.SIGCONT)
        process.output = process.communicate(timeout=120)  # type: ignore[attr-defined]


def test_second_sync_and_yank_fail_fast_while_a_sync_writes(mirror: Mirror, sample) -> None:
    with paused_sync(mirror, "sync.locked") as first:
        second = mirror.run("sync", timeout=30)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gitmirror: error: another gitmirror process is writing")
        yank = mirror.run("yank", "demo-pkg", "1.0", "--reason", "testing the lock", timeout=30)
        assert yank.returncode == 2 and "another gitmirror process is writing" in yank.stderr
        assert not (mirror.repo / "refs" / "heads" / "main").exists()  # nobody committed meanwhile
    assert first.returncode == 0, first.output
    assert mirror.git("rev-list", "--count", "main").strip() == "1"
    # And with the first writer gone, the lock is free again.
    assert mirror.run("yank", "demo-pkg", "1.0", "--reason", "after the sync").returncode == 0


def test_two_syncs_started_together_never_both_write(mirror: Mirror, sample) -> None:
    processes = [
        subprocess.Popen(
            [*GITMIRROR, "sync"],
            cwd=mirror.root,
            env=isolated_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(process.wait(timeout=120), process.communicate()[1]) for process in processes]
    winners = [code for code, _ in results if code == 0]
    losers = [stderr for code, stderr in results if code != 0]
    assert winners, results
    assert all("another gitmirror process is writing" in stderr or "nothing to commit" in stderr for stderr in losers)
    # However the race went, the history is linear and each file was added exactly once.
    log = mirror.git("log", "--format=%H %P", "main").splitlines()
    assert all(len(line.split()) <= 2 for line in log)
    manifest = mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl").splitlines()[1:]
    assert len(manifest) == len({json.loads(line)["filename"] for line in manifest}) == 6


def served_files(base: str) -> list[str]:
    response = httpx.get(f"{base}/simple/demo-pkg/", headers=JSON, timeout=10)
    assert response.status_code == 200
    return sorted(item["filename"] for item in response.json()["files"])


def test_serve_shows_the_old_commit_until_the_ref_moves(mirror: Mirror, sample, serve) -> None:
    mirror.run("sync", "demo-pkg==1.0", check=True)
    server = serve()
    before = served_files(server.url)
    assert before == ["demo_pkg-1.0-py3-none-any.whl", "demo_pkg-1.0.tar.gz"]
    for point, version in (("repo.objects-written", "1.1"), ("repo.ref-lock-written", "2.0")):
        with paused_sync(mirror, point, f"demo-pkg=={version}"):
            # Blobs are in the store and git objects written, but the branch has not moved.
            assert served_files(server.url) == before
            absent = httpx.get(f"{server.url}/files/demo-pkg/demo_pkg-{version}.tar.gz", timeout=10)
            assert absent.status_code == 404
        after = served_files(server.url)
        assert set(after) - set(before) == {f"demo_pkg-{version}.tar.gz", f"demo_pkg-{version}-py3-none-any.whl"}
        before = after
    assert len(served_files(server.url)) == 6


def test_pages_stay_consistent_while_syncs_commit(mirror: Mirror, upstream: FakeUpstream, sample, serve) -> None:
    """Readers hammer the server while several syncs commit: every page is exactly some commit's state."""
    mirror.run("sync", "demo-pkg==1.0", check=True)
    server = serve()
    seen: list[list[str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                try:
                    response = client.get(f"{server.url}/simple/demo-pkg/", headers=JSON)
                    seen.append(sorted(item["filename"] for item in response.json()["files"]))
                except Exception as exc:  # any error at all is a failure of the guarantee
                    failures.append(repr(exc))

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        for version in ("3.0", "3.1", "3.2"):
            upstream.add("demo-pkg", build_wheel("demo-pkg", version))
            mirror.run("sync", "demo-pkg", check=True)
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert not failures, failures[:3]
    states = set()
    for commit in mirror.git("rev-list", "main").split():
        manifest = mirror.git("show", f"{commit}:projects/de/mo/demo-pkg.jsonl").splitlines()[1:]
        states.add(tuple(sorted(json.loads(line)["filename"] for line in manifest)))
    assert seen and {tuple(files) for files in seen} <= states
