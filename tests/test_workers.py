"""Release files are downloaded in worker processes, which never outlive their sync.

A point reached inside a worker acts on the sync itself (``crashpoints.adopt``): a pause stops the
sync, a crash kills both. A sync killed from outside leaves no worker behind: an orphan would hold
the sync's output pipes open and could write into the store under the next run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_locking import paused_sync, process_state

from gitmirror import fork_server, workers

from conftest import GITMIRROR, Mirror, isolated_env


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    try:
        return process_state(pid) in ("Z", "X")
    except OSError:
        return True


def fork_servers(pid: int) -> list[int]:
    return [child for child in children(pid)
            if b"multiprocessing.forkserver" in Path(f"/proc/{child}/cmdline").read_bytes()]


def test_the_fork_server_starts_beside_the_syncs_own_start_up(mirror: Mirror, sample) -> None:
    """Started by the launcher before the sync has asked upstream for anything (``fork_server.start_early``)."""
    with paused_sync(mirror, "sync.locked") as sync:
        assert fork_servers(sync.pid), "no fork server yet when the sync took its lock"
    assert sync.returncode == 0, sync.output
    assert mirror.run("verify").returncode == 0


def test_the_fork_server_is_started_without_importing_what_the_workers_run() -> None:
    """``fork_server`` starts the fork server before the sync imports the fetcher, the store and
    the rest of ``gitmirror.workers`` (57 ms): the fork server imports them itself, beside the sync."""
    assert [workers.__name__] == fork_server.PRELOAD
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, gitmirror.fork_server; print(*sorted(sys.modules))"],
        capture_output=True, text=True, check=True, env=isolated_env(),
    ).stdout.split()
    assert "gitmirror.fork_server" in loaded
    assert not {"gitmirror.workers", "gitmirror.fetch", "gitmirror.store", "http.client", "zipfile"} & set(loaded)


def test_a_sync_that_fails_before_any_download_still_says_one_line(mirror: Mirror, sample) -> None:
    """The fork server started for it leaves with it, silently."""
    (mirror.root / "mirror.yaml").write_text("upstream: [not, a, url]\n")
    failed = subprocess.run([*GITMIRROR, "sync"], cwd=mirror.root, env=isolated_env(),
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 2
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert failed.stderr.startswith("gitmirror: error:"), failed.stderr


def test_a_pause_inside_a_download_process_stops_the_sync(mirror: Mirror, sample) -> None:
    with paused_sync(mirror, "store.chunk-written") as sync:
        fork_servers = children(sync.pid)
        workers = [pid for server in fork_servers for pid in children(server)]
        assert workers, "the release files were not downloaded in worker processes"
        assert all(process_state(pid) != "T" for pid in workers)  # the worker paused the sync, not itself
    assert sync.returncode == 0, sync.output
    assert mirror.run("verify").returncode == 0


def test_download_processes_leave_when_the_sync_is_killed(mirror: Mirror, sample) -> None:
    with paused_sync(mirror, "store.chunk-written") as sync:
        workers = [pid for server in children(sync.pid) for pid in children(server)]
        assert workers
        sync.kill()
        sync.wait(timeout=30)
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in workers):
            assert time.monotonic() < deadline, "a download process outlived its killed sync"
            time.sleep(0.05)
    rerun = mirror.run("sync")
    assert rerun.returncode == 0, rerun.stderr
    assert mirror.run("verify").returncode == 0
    assert not list((mirror.store / "tmp").iterdir())


def test_a_crash_inside_a_download_process_kills_the_sync(mirror: Mirror, sample) -> None:
    killed = subprocess.run(
        [*GITMIRROR, "sync"], cwd=mirror.root, env=isolated_env(GITMIRROR_CRASH_AT="store.fsynced"),
        capture_output=True, text=True, timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL
    assert not (mirror.repo / "refs" / "heads" / "main").exists()
    assert mirror.run("sync").returncode == 0
    assert mirror.run("verify").returncode == 0
    assert os.listdir(mirror.store / "tmp") == []


def test_a_download_process_that_dies_is_replaced_and_its_file_retried(mirror: Mirror, sample) -> None:
    with paused_sync(mirror, "store.chunk-written") as sync:
        workers = [pid for server in children(sync.pid) for pid in children(server)]
        assert workers
        for pid in workers:  # the OOM killer's choice, say: the sync itself lives on
            os.kill(pid, signal.SIGKILL)
    assert sync.returncode == 0, sync.output  # the files of the killed workers were fetched again
    assert not list((mirror.store / "tmp").iterdir())  # and their partial files removed
    assert mirror.run("verify").returncode == 0


def test_with_a_proxy_configured_files_download_in_the_syncs_own_threads(mirror: Mirror, sample) -> None:
    """The workers speak plain HTTP only; httpx, which speaks to proxies, does the work instead."""
    proxy = {"http_proxy": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost"}  # proxy never reached
    with paused_sync(mirror, "store.chunk-written", **proxy) as sync:
        assert children(sync.pid) == []  # the sync paused itself: no fork server, no workers
    assert sync.returncode == 0
    assert mirror.run("verify").returncode == 0
