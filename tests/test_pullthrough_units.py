"""The pure parts of the pull-through proxy, in process: settings, single-flight, batching, shared bodies."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from gitmirror.model.manifest import FileEntry, ProjectManifest, manifest_path
from gitmirror.model.page import RemoteFile, UpstreamError
from gitmirror.proxy import stream
from gitmirror.proxy.answers import BranchReader, Upstreamed
from gitmirror.proxy.batch import Batch, Pending, commit_batch, due
from gitmirror.proxy.pullthrough import PullThrough
from gitmirror.proxy.singleflight import SingleFlight
from gitmirror.proxy.stream import RELEASE_BYTES, DownloadFailed, SharedBody
from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.store import BlobStore
from gitmirror.sync.config import ConfigError, from_mapping
from gitmirror.sync.proxy_settings import ProxySettings

SHA = "a" * 64


def entry(filename: str, version: str = "1.0", sha256: str = SHA) -> FileEntry:
    return FileEntry(filename=filename, version=version, sha256=sha256, size=3, first_seen="2026-01-01T00:00:00Z")


# -- settings ------------------------------------------------------------------------------------


def test_proxy_settings_from_mirror_yaml() -> None:
    assert from_mapping({}).proxy is None
    assert from_mapping({"proxy": False}).proxy is None
    assert from_mapping({"proxy": True}).proxy == ProxySettings()
    settings = from_mapping(
        {"proxy": {"ttl": "1m", "commit_interval": 2.5, "commit_changes": 7, "allow": ["Acme-*"], "deny": ["acme-x"]}}
    ).proxy
    assert settings == ProxySettings(timedelta(minutes=1), 2.5, 7, ("acme-*",), ("acme-x",))
    assert settings.admits("acme-tools") and not settings.admits("acme-x") and not settings.admits("attrs")
    assert ProxySettings(deny=("evil*",)).admits("attrs") and not ProxySettings(deny=("evil*",)).admits("evil-pkg")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (3, "proxy must be true, false or a mapping"),
        ({"ttl": "soon"}, "proxy.ttl must be a duration"),
        ({"commit_interval": 0}, "proxy.commit_interval must be a positive number"),
        ({"commit_changes": 0}, "proxy.commit_changes must be a positive integer"),
        ({"commit_changes": True}, "proxy.commit_changes must be a positive integer"),
        ({"allow": "acme-*"}, "proxy.allow must be a list"),
        ({"deny": [""]}, "proxy.deny must be a list"),
        ({"tll": 5}, "unknown key 'proxy.tll'"),
    ],
)
def test_bad_proxy_settings_are_one_line(value: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"proxy": value})
    assert message in str(caught.value) and "\n" not in str(caught.value)


# -- single-flight -------------------------------------------------------------------------------


def test_single_flight_runs_one_task_per_key_at_a_time() -> None:
    calls: list[str] = []

    async def scenario() -> None:
        flights: SingleFlight[str, str] = SingleFlight()
        gate = asyncio.Event()

        async def work(key: str) -> str:
            calls.append(key)
            await gate.wait()
            return key.upper()

        tasks = [flights.start(key, lambda key=key: work(key)) for key in ["a"] * 20 + ["b"] * 5]  # type: ignore[misc]
        gate.set()
        results = await asyncio.gather(*tasks)
        assert results == ["A"] * 20 + ["B"] * 5
        assert flights.running("a") is None
        await flights.start("a", lambda: work("a"))  # over: the next request starts a new one

    asyncio.run(scenario())
    assert calls == ["a", "b", "a"]


def test_single_flight_shares_a_failure() -> None:
    async def scenario() -> list[BaseException]:
        flights: SingleFlight[str, None] = SingleFlight()

        async def fail() -> None:
            await asyncio.sleep(0)
            raise RuntimeError("upstream said no")

        tasks = [flights.start("x", fail) for _ in range(3)]
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    failures = asyncio.run(scenario())
    assert len({id(failure) for failure in failures}) == 1 and str(failures[0]) == "upstream said no"


# -- stale-while-revalidate ----------------------------------------------------------------------


def test_a_recorded_project_past_its_ttl_answers_at_once_while_one_refresh_runs(tmp_path: Path) -> None:
    record = ProjectManifest("demo").with_file(entry("demo-1.0.tar.gz"))
    offer = RemoteFile(
        "demo-1.1.tar.gz", "http://127.0.0.1:9/demo-1.1.tar.gz", "1.1", "b" * 64, 3, None, None, False, None, None
    )
    lines: list[str] = []
    counted: list[str] = []

    async def scenario() -> None:
        config = from_mapping({"upstream": "http://127.0.0.1:9/simple/", "proxy": {"ttl": "1m"}})
        reader = BranchReader(lambda name: record if name == "demo" else None, lambda: ["demo"])
        proxy = PullThrough(
            config, MetadataRepo.init(tmp_path / "repo"), BlobStore(tmp_path / "store"), reader, reader,
            log=lines.append, count_failure=counted.append,
        )  # fmt: skip
        proxy.known["demo"] = Upstreamed(time.monotonic() - 61, {offer.filename: offer})  # fetched 61 s ago
        fetches: list[str] = []
        upstream_answers = asyncio.Event()

        async def fetch(name: str, known: Upstreamed) -> None:  # upstream, as slow as the test says
            fetches.append(name)
            await upstream_answers.wait()
            raise UpstreamError(f"{name}: timed out")

        proxy._fetch = fetch  # type: ignore[method-assign]
        served = await asyncio.wait_for(asyncio.gather(*(proxy.project("demo") for _ in range(20))), timeout=1)
        assert {tuple(sorted(page.manifest.files)) for page in served} == {("demo-1.0.tar.gz", "demo-1.1.tar.gz")}
        assert {page.stale for page in served} == {None}  # the refresh has not failed (yet)
        await asyncio.sleep(0)
        assert fetches == ["demo"]  # twenty answers, one refresh in flight
        upstream_answers.set()
        running = proxy.refreshes.running("demo")
        assert running is not None
        await asyncio.gather(running, return_exceptions=True)
        await asyncio.sleep(0)  # its done callbacks
        assert counted == ["timeout"] and "refreshing demo in the background failed: demo: timed out" in lines[-1]
        after = await asyncio.wait_for(proxy.project("demo"), timeout=1)
        assert after.stale == "upstream unavailable: demo: timed out"  # X-Gitmirror-Stale and Warning: 110
        assert sorted(after.manifest.files) == ["demo-1.0.tar.gz", "demo-1.1.tar.gz"]
        await proxy.refreshes.cancel_all()

    asyncio.run(scenario())


def test_files_stored_at_once_are_all_recorded(tmp_path: Path) -> None:
    """Two unsized files of one project stored concurrently: each record keeps the other's file."""
    store = BlobStore(tmp_path / "store")
    offers = [
        RemoteFile(name, f"http://127.0.0.1:9/{name}", "1.0", store.put_bytes(name.encode()), None, None, None, False,
                   None, None)
        for name in ("demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl")
    ]  # fmt: skip

    async def scenario() -> ProjectManifest | None:
        config = from_mapping({"upstream": "http://127.0.0.1:9/simple/", "proxy": True})
        reader = BranchReader(lambda name: None, lambda: [])
        proxy = PullThrough(config, MetadataRepo.init(tmp_path / "repo"), store, reader, reader, log=print)
        proxy._upstream = object()  # type: ignore[assignment]  # never asked: both blobs are stored
        await asyncio.gather(*(proxy._stored("demo", offer) for offer in offers))
        return proxy.recorded("demo")

    recorded = asyncio.run(scenario())
    assert recorded is not None
    assert {name: item.size for name, item in recorded.files.items()} == {o.filename: len(o.filename) for o in offers}


# -- batching ------------------------------------------------------------------------------------


def test_a_batch_is_due_after_its_interval_or_its_number_of_changes() -> None:
    assert not due(0, None, 100.0, interval=10, changes=5)
    assert not due(3, 95.0, 100.0, interval=10, changes=5)
    assert due(3, 90.0, 100.0, interval=10, changes=5)
    assert due(5, 99.9, 100.0, interval=10, changes=5)


def test_a_batch_keeps_the_first_base_and_the_last_manifest() -> None:
    batch = Batch()
    first = ProjectManifest("demo")
    second = first.with_file(entry("demo-1.0.tar.gz"))
    batch.record("demo", Pending(None, first, changes=["recorded on first request"]), at=5.0)
    batch.record("demo", Pending(first, second, added=["demo-1.0.tar.gz"]), at=6.0)
    assert batch.started == 5.0 and batch.weight == 3
    taken = batch.take()
    assert taken["demo"].base is None and taken["demo"].manifest == second
    assert batch.items == {} and batch.started is None
    third = second.with_file(entry("demo-2.0.tar.gz", "2.0"))
    batch.record("demo", Pending(second, third, added=["demo-2.0.tar.gz"]), at=7.0)
    batch.put_back(taken, at=8.0)  # the commit failed: its changes come first
    assert batch.items["demo"].base is None and batch.items["demo"].manifest == third
    assert batch.items["demo"].added == ["demo-1.0.tar.gz", "demo-2.0.tar.gz"]


def test_a_batch_is_replayed_onto_a_branch_another_writer_moved(tmp_path: Path) -> None:
    repo = MetadataRepo.init(tmp_path / "repo")
    path = manifest_path("demo")
    before = ProjectManifest("demo").with_file(entry("demo-1.0.tar.gz"))
    parent = repo.write_commit({path: before.dumps()}, "sync: demo\n")
    proxied = before.with_file(entry("demo-1.1.tar.gz", "1.1"))
    synced = before.with_file(entry("demo-2.0.tar.gz", "2.0"))
    repo.write_commit({path: synced.dumps()}, "sync: demo 2.0\n", parent=parent)  # meanwhile
    commit = commit_batch(repo, "main", {"demo": Pending(before, proxied, added=["demo-1.1.tar.gz"])})
    assert commit is not None
    recorded = repo.manifest(commit, "demo")
    assert recorded is not None and sorted(recorded.files) == ["demo-1.0.tar.gz", "demo-1.1.tar.gz", "demo-2.0.tar.gz"]
    assert repo.commit(commit).message.decode().startswith("proxy: 1 project, 1 file added")


# -- shared bodies -------------------------------------------------------------------------------


def test_a_shared_body_holds_its_last_byte_until_verified_and_skips_repeated_bytes(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[bytes], list[bytes]]:
        body = SharedBody(asyncio.get_running_loop(), BlobStore(tmp_path), SHA)
        received: list[bytes] = []

        async def read() -> None:
            async for chunk in body.stream():
                received.append(chunk)

        reader = asyncio.create_task(read())
        body.extend(0, b"hello ")
        body.extend(0, b"hello wor")  # a retried attempt repeats the first bytes
        body.extend(9, b"ld")
        await asyncio.sleep(0)
        held = list(received)
        body.checked()
        await reader
        return held, received

    held, received = asyncio.run(scenario())
    assert b"".join(held) == b"hello worl"
    assert b"".join(received) == b"hello world"


def test_a_failed_shared_body_ends_every_reader_with_the_reason(tmp_path: Path) -> None:
    async def scenario() -> bytes:
        body = SharedBody(asyncio.get_running_loop(), BlobStore(tmp_path), SHA)
        body.extend(0, b"abc")
        body.finish("sha256 mismatch")
        got = b""
        with pytest.raises(DownloadFailed, match="sha256 mismatch"):
            async for chunk in body.stream():
                got += chunk
        return got

    assert asyncio.run(scenario()) == b"ab"


def test_bytes_every_reader_took_are_let_go_and_a_late_reader_reads_the_named_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = bytes(range(256)) * (3 * RELEASE_BYTES // 256)

    async def scenario() -> tuple[int, bytes, bool, bytes]:
        body = SharedBody(asyncio.get_running_loop(), store, hashlib.sha256(data).hexdigest())
        early = bytearray()

        async def read_early() -> None:
            async for chunk in body.stream():
                early.extend(chunk)

        reader = asyncio.create_task(read_early())
        await asyncio.sleep(0)
        for offset in range(0, len(data), 65536):
            body.extend(offset, data[offset : offset + 65536])
            await asyncio.sleep(0)
        kept = len(body.body)
        body.checked()  # verified: a reader along gets its last byte
        await reader
        late_reader = asyncio.ensure_future(_joined(body.stream()))
        for _ in range(5):
            await asyncio.sleep(0)
        waited = not late_reader.done()  # verified, not yet named: a late reader waits
        store.put_bytes(data)  # what the writer names once the bytes are verified
        body.finish()
        return kept, bytes(early), waited, await late_reader

    kept, early, waited, late = asyncio.run(scenario())
    assert kept < 2 * RELEASE_BYTES  # not the whole body
    assert early == data and waited and late == data


async def _joined(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])


def test_a_reader_that_stops_reading_holds_no_more_than_the_lag_bound_and_resumes_from_the_blob(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that stops reading (or reads a byte a minute) must not pin the whole file in memory."""
    monkeypatch.setattr(stream, "MAX_LAG_BYTES", 2 * RELEASE_BYTES)
    store = BlobStore(tmp_path)
    data = bytes(range(256)) * (8 * RELEASE_BYTES // 256)

    async def scenario() -> tuple[int, bytes]:
        body = SharedBody(asyncio.get_running_loop(), store, hashlib.sha256(data).hexdigest())
        chunks = body.stream()
        body.extend(0, data[:65536])
        first = await anext(chunks)  # the stalled client took one chunk, then stopped reading
        for offset in range(65536, len(data), 65536):
            body.extend(offset, data[offset : offset + 65536])
        kept = len(body.body)
        body.checked()
        store.put_bytes(data)
        body.finish()
        return kept, first + b"".join([chunk async for chunk in chunks])

    kept, got = asyncio.run(scenario())
    assert kept <= 3 * RELEASE_BYTES
    assert got == data


def test_a_download_every_client_left_keeps_no_more_than_the_lag_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Clients that hang up mid-download leave it running for the store: its bytes are not kept for nobody."""
    monkeypatch.setattr(stream, "MAX_LAG_BYTES", 2 * RELEASE_BYTES)
    loop = asyncio.new_event_loop()
    body = SharedBody(loop, BlobStore(tmp_path), SHA)
    for offset in range(0, 8 * RELEASE_BYTES, 65536):
        body.extend(offset, b"x" * 65536)
    loop.close()
    assert body.received == 8 * RELEASE_BYTES and len(body.body) <= 3 * RELEASE_BYTES
