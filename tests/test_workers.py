"""Release files are downloaded in worker processes, which never outlive their sync.

A point reached inside a worker acts on the sync itself (the test-side hook, ``crashhook``): a pause stops the
sync, a crash kills both. A sync killed from outside leaves no worker behind: an orphan would hold
the sync's output pipes open and could write into the store under the next run.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_locking import paused_sync, process_state

from gitmirror.model.hosts import HostPolicy
from gitmirror.storage import store as store_module
from gitmirror.storage.store import BlobStore
from gitmirror.upstream import fork_server, worker_process, workers
from gitmirror.upstream.transport import Transient

import crashhook
from conftest import GITMIRROR, Mirror, isolated_env
from fakeupstream import Artifact, FakeUpstream, build_wheel


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
    return [
        child for child in children(pid) if b"multiprocessing.forkserver" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]


def test_the_fork_server_starts_beside_the_syncs_own_start_up(mirror: Mirror, sample) -> None:
    """Started by `gitmirror sync` before it has asked upstream for anything (``fork_server.start_early``)."""
    with paused_sync(mirror, "sync.locked") as sync:
        assert fork_servers(sync.pid), "no fork server yet when the sync took its lock"
    assert sync.returncode == 0, sync.output
    assert mirror.run("verify").returncode == 0


def test_the_fork_server_is_started_without_importing_what_the_workers_run() -> None:
    """``fork_server`` starts the fork server before the sync imports the fetcher, the store and
    the rest of ``gitmirror.upstream.workers`` (57 ms): the fork server imports them itself, beside the sync."""
    assert [workers.__name__, "httpcore", "pypi_simple"] == fork_server.PRELOAD
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, gitmirror.upstream.fork_server; print(*sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        env=isolated_env(),
    ).stdout.split()
    assert "gitmirror.upstream.fork_server" in loaded
    heavy = {"gitmirror.upstream.workers", "gitmirror.upstream.transport", "gitmirror.storage.store"}
    heavy |= {"httpcore", "pypi_simple", "zipfile"}
    assert not heavy & set(loaded)


def test_what_html_pages_and_lockfiles_need_is_imported_only_for_them() -> None:
    """The download processes' fork server and a sync's start import neither a TOML parser nor
    ``packaging.pylock`` (``lockfiles:``)."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, gitmirror.upstream.workers, gitmirror.sync.sync, gitmirror.cli.cli; "
            "print(sorted({'tomllib', 'packaging.pylock'} & set(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=isolated_env(),
    )
    assert loaded.stdout.strip() == "[]"


def test_a_sync_that_fails_before_any_download_still_says_one_line(mirror: Mirror, sample) -> None:
    """The fork server started for it leaves with it, silently."""
    (mirror.root / "mirror.yaml").write_text("upstream: [not, a, url]\n")
    failed = subprocess.run(
        [*GITMIRROR, "sync"], cwd=mirror.root, env=isolated_env(), capture_output=True, text=True, timeout=60
    )
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
        [*GITMIRROR, "sync"],
        cwd=mirror.root,
        env=crashhook.environment(GITMIRROR_CRASH_AT="store.fsynced"),
        capture_output=True,
        text=True,
        timeout=120,
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


def many_files(upstream: FakeUpstream, count: int) -> list[Artifact]:
    artifacts = [Artifact(f"many-1.{number}.tar.gz", os.urandom(3_000 + number)) for number in range(count)]
    for artifact in artifacts:
        upstream.add("many", artifact)
    return artifacts


def test_many_waiting_files_go_to_the_workers_several_to_a_message(
    upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each file keeps its own answer (its size, or its own failure) and is stored once; the last
    ones go one by one, so the run's end waits for no worker's backlog."""
    artifacts = many_files(upstream, 64)
    liar = artifacts[5]
    upstream.fault(liar.filename, "longer", extra=b"0123456789")  # its own IntegrityError, nobody else's
    store = BlobStore(tmp_path / "store")
    store.init()
    handed: list[int] = []
    hand_out = workers.DownloadProcesses._hand_out

    def counted(self: workers.DownloadProcesses) -> list:
        jobs = hand_out(self)
        handed.append(len(jobs))
        return jobs

    monkeypatch.setattr(workers.DownloadProcesses, "_hand_out", counted)

    async def download_all() -> list[int | BaseException]:
        processes = workers.DownloadProcesses(2, HostPolicy(upstream.url), 10)
        try:
            return await asyncio.gather(
                *(
                    processes.store_file(
                        str(store.root), upstream.file_url("many", artifact.filename), artifact.sha256, artifact.size
                    )
                    for artifact in artifacts
                ),
                return_exceptions=True,
            )
        finally:
            processes.close()

    answers = asyncio.run(download_all())
    honest = [number for number in range(64) if artifacts[number] is not liar]
    assert [answers[number] for number in honest] == [artifacts[number].size for number in honest]
    assert "announced" in str(answers[5]) and not store.has(liar.sha256)
    assert all(store.path(artifacts[number].sha256).read_bytes() == artifacts[number].data for number in honest)
    assert sum(handed) == 64 and max(handed) == workers.BATCH_FILES and handed[-1] == 1
    assert len(handed) <= 64 // 2, handed


def test_a_file_is_answered_once_named_and_a_blob_that_cannot_be_named_fails_its_file_alone(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """A message's blobs are made durable together and then named, before its answer; a blob that
    cannot be named fails its own file, not the others of its message."""
    artifacts = many_files(upstream, 24)
    store = BlobStore(tmp_path / "store")
    store.init()
    blocked = artifacts[7].sha256[:2]
    (store.blobs_dir / blocked).write_text("in the way")  # its fan-out directory cannot be made

    async def download_all() -> list[int | BaseException]:
        processes = workers.DownloadProcesses(2, HostPolicy(upstream.url), 10)

        async def one(artifact: Artifact) -> int:
            stored = await processes.store_file(
                str(store.root), upstream.file_url("many", artifact.filename), artifact.sha256, artifact.size
            )
            assert store.path(artifact.sha256).read_bytes() == artifact.data  # named before it was answered
            return stored

        try:
            return await asyncio.gather(*(one(artifact) for artifact in artifacts), return_exceptions=True)
        finally:
            processes.close()

    answers = asyncio.run(download_all())
    for artifact, answer in zip(artifacts, answers, strict=True):
        if artifact.sha256.startswith(blocked):
            assert isinstance(answer, NotADirectoryError) and not store.has(artifact.sha256)
        else:
            assert answer == artifact.size
    assert os.listdir(store.root / "tmp") == []


def checked_writers(unnamed: worker_process.Unnamed, store: BlobStore, count: int) -> list[tuple[bytes, object]]:
    """``count`` blobs written and checked as a message's jobs do, each added for ``publish``."""
    written = []
    for number in range(count):
        data = f"blob {number} ".encode() * 100
        unnamed.job = number
        writer = unnamed.writer(store, hashlib.sha256(data).hexdigest(), len(data))
        writer.write(data)
        writer.check()
        unnamed.add(writer)
        written.append((data, writer))
    return written


@pytest.mark.parametrize("has_syncfs", [True, False])
def test_a_messages_blobs_are_made_durable_together_then_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, has_syncfs: bool
) -> None:
    """One ``syncfs`` for all of them instead of a fsync each; a fsync each where there is none."""
    store = BlobStore(tmp_path / "store")
    store.init()
    synced, fsynced = [], []
    real_sync_all, real_fsync = store.sync_all, os.fsync
    if not has_syncfs:
        monkeypatch.setattr(store, "sync_handle", lambda: None)
    monkeypatch.setattr(store, "sync_all", lambda handle: synced.append(handle) or real_sync_all(handle))
    monkeypatch.setattr(store_module.os, "fsync", lambda fd: fsynced.append(fd) or real_fsync(fd))
    unnamed = worker_process.Unnamed()
    written = checked_writers(unnamed, store, 3)
    assert not any(store.has(hashlib.sha256(data).hexdigest()) for data, _writer in written)  # not yet
    unnamed.publish()
    assert unnamed.take_failures() == {}
    assert all(store.path(hashlib.sha256(data).hexdigest()).read_bytes() == data for data, _writer in written)
    assert (len(synced), len(fsynced)) == ((1, 0) if has_syncfs else (0, 3))
    assert os.listdir(store.root / "tmp") == []


def test_when_the_disk_refuses_the_sync_no_blob_of_the_message_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BlobStore(tmp_path / "store")
    store.init()

    def failing(handle: int) -> None:
        raise OSError(errno.EIO, "Input/output error", str(store.root))

    monkeypatch.setattr(store, "sync_all", failing)
    unnamed = worker_process.Unnamed()
    checked_writers(unnamed, store, 2)
    unnamed.publish()
    failures = unnamed.take_failures()
    assert sorted(failures) == [0, 1] and all(failure.errno == errno.EIO for failure in failures.values())
    assert list(store) == [] and os.listdir(store.root / "tmp") == []


def test_the_store_syncs_its_file_system_where_linux_can(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    handle = store.sync_handle()
    assert (handle is not None) is sys.platform.startswith("linux")
    if handle is not None:
        store.sync_all(handle)
        os.close(handle)


def test_a_worker_killed_with_several_files_fails_each_of_them_for_a_retry(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    """Files its batch had finished too: their answers were never sent, so they are tried again
    (``Upstream`` retries a ``Transient``), and the other workers' files stand."""
    artifacts = many_files(upstream, 64)
    upstream.fault(artifacts[2].filename, "delay", seconds=30)  # holds its worker's batch
    store = BlobStore(tmp_path / "store")
    store.init()

    async def kill_the_held_worker() -> list[int | BaseException]:
        processes = workers.DownloadProcesses(2, HostPolicy(upstream.url), 60)
        try:
            downloads = [
                asyncio.ensure_future(
                    processes.store_file(
                        str(store.root), upstream.file_url("many", artifact.filename), artifact.sha256, artifact.size
                    )
                )
                for artifact in artifacts
            ]
            deadline = time.monotonic() + 30
            while not (
                len(busy := [w for w in processes._workers if w.waiting]) == 1
                and sum(download.done() for download in downloads) + len(busy[0].waiting) == 64
            ):
                assert time.monotonic() < deadline, "the other files did not finish"
                await asyncio.sleep(0.02)
            assert len(busy[0].waiting) > 1
            os.kill(busy[0].process.pid, signal.SIGKILL)
            return await asyncio.gather(*downloads, return_exceptions=True)
        finally:
            processes.close()

    answers = asyncio.run(kill_the_held_worker())
    failed = [number for number, answer in enumerate(answers) if isinstance(answer, BaseException)]
    assert 2 in failed and len(failed) > 1
    assert all(isinstance(answers[number], Transient) for number in failed)
    assert all(answers[number] == artifacts[number].size for number in range(64) if number not in failed)
    assert os.listdir(store.root / "tmp") == []


def test_a_page_answer_longer_than_the_pipe_buffer_arrives_whole_under_uvloop(upstream: FakeUpstream) -> None:
    """``serve`` runs on uvloop, which makes every watched descriptor non-blocking: an answer longer
    than the socket's buffer (a page of 1,500 files) must still be read whole, not taken for a dead
    download process."""
    uvloop = pytest.importorskip("uvloop")
    upstream.add("wide", build_wheel("wide", "1.0"))
    upstream.fault("wide", "huge_page", times=-1, entries=1500)

    async def read_page() -> object:
        processes = workers.DownloadProcesses(1, HostPolicy(upstream.url), 10)
        try:
            headers = {"Accept": "application/vnd.pypi.simple.v1+json"}
            return await processes.project("wide", upstream.url + "wide/", headers)
        finally:
            processes.close()

    page = uvloop.run(read_page())
    assert page is not None and len(page.files) == 1500  # type: ignore[attr-defined]
