"""The pull-through proxy writing into an S3 bucket (SeaweedFS, ``s3fixture``): the same promise as
with a directory store, end to end through real pip and a real server process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from test_pullthrough import JSON, file_requests, get, recorded
from test_s3 import bucket_blobs

from gitmirror.proxy.stream import RELEASE_BYTES, SharedBody, TeeWriter
from gitmirror.storage.s3client import S3Settings
from gitmirror.storage.s3store import S3Store

from conftest import Mirror, stop_server
from fakeupstream import build_wheel
from s3fixture import S3Server, new_bucket


def s3_proxy_mirror(mirror: Mirror, s3_server: S3Server, settings: str) -> None:
    """The ``mirror`` fixture without projects, in proxy mode, its store in a fresh bucket, initialised."""
    bucket = new_bucket()
    mirror.configure(f"proxy:\n{settings}" + s3_server.settings(bucket))
    mirror.bucket = bucket  # type: ignore[attr-defined]
    mirror.run("init", check=True)


def test_pip_installs_an_unlisted_project_through_the_proxy_into_a_bucket(
    mirror: Mirror, s3_server: S3Server, sample, serve, make_venv
) -> None:
    s3_proxy_mirror(mirror, s3_server, "  ttl: 0\n  commit_interval: 3600\n")
    server = serve()
    first = make_venv("pip")
    result = first.pip_install(server.index_url, "other-lib==0.2")
    assert result.returncode == 0, result.stderr
    assert first.run("import other_lib, demo_pkg; print(demo_pkg.__version__)") == "1.0"
    assert file_requests(mirror.upstream) == 2  # the two wheels, once each
    stored = bucket_blobs(mirror)
    wheels = {a.filename: a for artifacts in sample.values() for a in artifacts}
    for filename in ("other_lib-0.2-py3-none-any.whl", "demo_pkg-1.0-py3-none-any.whl"):
        assert stored[wheels[filename].sha256] == wheels[filename].data
    assert not (mirror.root / "mirror" / "local" / "blobs").exists()

    second = make_venv("again")  # recorded, not committed yet: read back from the bucket
    result = second.pip_install(server.index_url, "other-lib==0.2")
    assert result.returncode == 0, result.stderr
    assert second.run("import other_lib, demo_pkg; print(demo_pkg.__version__)") == "1.0"
    assert file_requests(mirror.upstream) == 2

    stop_server(server)  # a clean stop commits the batch
    assert "other_lib-0.2-py3-none-any.whl" in recorded(mirror, "other-lib")
    assert "demo_pkg-1.0-py3-none-any.whl" in recorded(mirror, "demo-pkg")
    verify = mirror.run("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr

    server = serve()  # committed: the mirror's own file route answers from the bucket
    third = make_venv("committed")
    result = third.pip_install(server.index_url, "other-lib==0.2")
    assert result.returncode == 0, result.stderr
    assert file_requests(mirror.upstream) == 2


@pytest.mark.parametrize("kind", ["wrong_hash", "truncate"])
def test_bytes_upstream_got_wrong_never_reach_the_bucket(mirror: Mirror, s3_server: S3Server, serve, kind: str) -> None:
    s3_proxy_mirror(mirror, s3_server, "  ttl: 0\n  commit_interval: 1\n")
    wheel = build_wheel("target", "1.0", payload_size=200_000)
    mirror.upstream.add("target", wheel)
    mirror.upstream.fault(wheel.filename, kind, times=-1)
    server = serve()
    page = get(server.index_url + "target/", headers=JSON)
    announced = next(item["hashes"]["sha256"] for item in page.json()["files"] if item["filename"] == wheel.filename)
    url = f"{server.url}/files/target/{wheel.filename}"
    with pytest.raises(httpx.HTTPError):
        get(url, timeout=30).raise_for_status()
    stored = bucket_blobs(mirror)
    assert announced not in stored and wheel.sha256 not in stored  # nothing under the final key
    assert all(hashlib.sha256(data).hexdigest() == name for name, data in stored.items())

    mirror.upstream.clear_faults()
    assert get(server.index_url + "target/").status_code == 200
    assert get(url, timeout=30).content == wheel.data
    stop_server(server)
    assert bucket_blobs(mirror)[wheel.sha256] == wheel.data
    manifest = recorded(mirror, "target")
    assert wheel.sha256 in manifest and manifest.count(wheel.filename) == 1
    verify = mirror.run("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_late_reader_waits_for_the_upload_then_reads_the_bucket(s3_server: S3Server, tmp_path: Path) -> None:
    store = S3Store(S3Settings(new_bucket(), "pypi", endpoint_url=s3_server.endpoint), tmp_path)
    store.init()
    data = bytes(range(256)) * (3 * RELEASE_BYTES // 256)
    sha256 = hashlib.sha256(data).hexdigest()

    async def scenario() -> tuple[bool, bool, bytes]:
        body = SharedBody(asyncio.get_running_loop(), store, sha256, keep=False)  # every byte is let go
        writer = TeeWriter(store.writer(sha256, len(data)), body)
        await asyncio.to_thread(writer.write, data)
        await asyncio.sleep(0)
        late = asyncio.ensure_future(_joined(body.stream()))
        await asyncio.to_thread(writer.check)  # verified: the upload starts
        for _ in range(5):
            await asyncio.sleep(0)
        waited = not late.done()
        await asyncio.to_thread(writer.publish)
        body.finish()
        return waited, body.base == len(data), await late

    waited, let_go, late = asyncio.run(scenario())
    assert waited and let_go and late == data
    assert store.verify(sha256, len(data)) is None


async def _joined(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in chunks])
