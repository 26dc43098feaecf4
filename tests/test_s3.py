"""The store in an S3 bucket (SeaweedFS, ``s3fixture``): what the directory store does, end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
from pathlib import Path

import boto3
import httpx

from gitmirror.storage.s3store import PART_BYTES

import crashhook
from conftest import Mirror
from fakeupstream import build_wheel
from s3fixture import new_bucket


def bucket_blobs(mirror: Mirror) -> dict[str, bytes]:
    """Every object under the store's ``blobs/``: name -> bytes."""
    client = _client(mirror)
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=mirror.bucket, Prefix="pypi/blobs/"):
        for item in page.get("Contents", []):
            found[item["Key"].rsplit("/", 1)[-1]] = client.get_object(Bucket=mirror.bucket, Key=item["Key"])[
                "Body"
            ].read()
    return found


def _endpoint(mirror: Mirror) -> str:
    text = (mirror.root / "mirror.yaml").read_text()
    return text.split("endpoint_url: ", 1)[1].split()[0]


def test_sync_into_a_bucket_then_pip_and_uv_install_through_serve(s3_mirror: Mirror, sample, serve, make_venv) -> None:
    """``init`` creates the bucket; a sync stores every blob there under its sha256 (nothing in a
    local blobs/); pip and uv install through ``gitmirror serve`` the bytes upstream published."""
    mirror = s3_mirror
    assert "s3://" in mirror.run("init", check=True).stdout
    result = mirror.run("sync", check=True)
    assert "8 files added" in result.stdout
    stored = bucket_blobs(mirror)
    assert stored and all(hashlib.sha256(data).hexdigest() == name for name, data in stored.items())
    for artifacts in sample.values():
        assert {artifact.sha256 for artifact in artifacts} <= set(stored)
    assert not (mirror.root / "mirror" / "local" / "blobs").exists()

    server = serve()
    pip_venv = make_venv("pip")
    installed = pip_venv.pip_install(server.index_url, "demo-pkg")
    assert installed.returncode == 0, installed.stderr
    assert pip_venv.run("import demo_pkg; print(demo_pkg.__version__)") == "1.0"
    uv_venv = make_venv("uv")
    installed = uv_venv.uv_install(server.index_url, "other-lib==0.2")
    assert installed.returncode == 0, installed.stderr
    assert uv_venv.run("import other_lib, demo_pkg; print(other_lib.__version__, demo_pkg.__version__)") == "0.2 1.0"

    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.0-py3-none-any.whl")
    answer = httpx.get(f"{server.url}/files/demo-pkg/{wheel.filename}")
    assert answer.status_code == 200 and hashlib.sha256(answer.content).hexdigest() == wheel.sha256
    assert answer.headers["etag"] == f'"{wheel.sha256}"'
    again = httpx.get(f"{server.url}/files/demo-pkg/{wheel.filename}", headers={"If-None-Match": f'"{wheel.sha256}"'})
    assert again.status_code == 304

    assert mirror.run("verify", check=True).returncode == 0
    assert "8 files added" not in mirror.run("sync", check=True).stdout  # a second run stores nothing again


def test_an_unreachable_bucket_stops_in_one_line(mirror: Mirror, s3_server, tmp_path: Path) -> None:
    mirror.configure("store: s3://gm-nowhere/p\ns3:\n  endpoint_url: http://127.0.0.1:9\n")
    result = mirror.run("init")
    assert result.returncode == 2
    assert result.stderr.startswith("gitmirror: ") and len(result.stderr.strip().splitlines()) == 1


def test_kill_9_mid_upload_leaves_nothing_under_the_final_name_and_the_next_sync_completes(
    s3_mirror: Mirror, upstream
) -> None:
    """A sync SIGKILLed while a multipart upload of a 12 MB wheel is half sent: no object under the
    wheel's sha256, no commit; the next sync stores it whole."""
    mirror = s3_mirror
    big = build_wheel("big-pkg", "1.0", payload_size=12 << 20)
    assert len(big.data) > PART_BYTES  # sent as a multipart upload
    upstream.add("big-pkg", big)
    mirror.configure("projects:\n  - big-pkg\n" + _settings(mirror))
    mirror.run("init", check=True)
    killed = mirror.run("sync", env=crashhook.variables(GITMIRROR_CRASH_AT="store.uploading"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert big.sha256 not in bucket_blobs(mirror)
    assert "main" not in mirror.git("branch", "--list")
    mirror.run("sync", check=True)
    stored = bucket_blobs(mirror)
    assert hashlib.sha256(stored[big.sha256]).hexdigest() == big.sha256


def test_verify_catches_a_tampered_object_and_a_missing_one(s3_mirror: Mirror, sample) -> None:
    mirror = s3_mirror
    mirror.run("sync", check=True)
    assert mirror.run("verify").returncode == 0
    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.0-py3-none-any.whl")
    client = _client(mirror)
    key = f"pypi/blobs/{wheel.sha256[:2]}/{wheel.sha256[2:4]}/{wheel.sha256}"
    client.put_object(Bucket=mirror.bucket, Key=key, Body=b"not the wheel")
    result = mirror.run("verify")
    assert result.returncode != 0
    assert wheel.filename in result.stdout + result.stderr
    damaged = json.loads(mirror.run("status", "--verify", "--json", check=True).stdout)
    assert wheel.filename in json.dumps(damaged)
    client.delete_object(Bucket=mirror.bucket, Key=key)
    result = mirror.run("verify")
    assert result.returncode != 0 and "missing" in (result.stdout + result.stderr).lower()


def test_hydrate_into_a_bucket_from_a_directory_and_back(
    mirror: Mirror,
    sample,
    s3_server,
    tmp_path: Path,
) -> None:
    """A directory mirror's blobs hydrate an empty bucket (verified); a second directory mirror
    hydrates from that bucket (``--from s3://``, the endpoint from ``AWS_ENDPOINT_URL``)."""
    mirror.run("sync", check=True)
    bucket = new_bucket()
    in_bucket = _clone(mirror, tmp_path / "in-bucket", s3_server.settings(bucket))
    in_bucket.bucket = bucket  # type: ignore[attr-defined]
    in_bucket.run("init", check=True)
    result = in_bucket.run("hydrate", "--from", str(mirror.store), check=True)
    assert "8 fetched" in result.stdout, result.stdout
    assert set(bucket_blobs(in_bucket)) == {path.name for path in (mirror.store / "blobs").glob("*/*/*")}
    in_bucket.run("verify", check=True)

    back = _clone(mirror, tmp_path / "back", "")
    result = back.run("hydrate", "--from", f"s3://{bucket}/pypi", env={"AWS_ENDPOINT_URL": s3_server.endpoint})
    assert result.returncode == 0, result.stderr
    assert "8 fetched" in result.stdout
    back.run("verify", check=True)


def test_render_with_base_url_at_the_bucket(s3_mirror: Mirror, sample, tmp_path: Path) -> None:
    """``render --files bucket --base-url <bucket>``: pages link into the bucket, where each file is
    a copy of its blob under ``files/<project>/<filename>``; symlinks make no sense there."""
    mirror = s3_mirror
    mirror.run("sync", check=True)
    out = tmp_path / "site"
    refused = mirror.run("render", "--out", str(out))
    assert refused.returncode == 2 and "--files must be one of copy, bucket, none" in refused.stderr
    base = f"{_endpoint(mirror)}/{mirror.bucket}/pypi/"
    mirror.run("render", "--out", str(out), "--files", "bucket", "--base-url", base, check=True)
    page = json.loads((out / "simple" / "demo-pkg" / "index.json").read_text())
    assert page["files"]
    for file in page["files"]:
        assert file["url"].startswith(base)
        body = httpx.get(file["url"]).content  # SeaweedFS without identities answers anonymous reads
        assert hashlib.sha256(body).hexdigest() == file["hashes"]["sha256"]
    copied = tmp_path / "copied"
    mirror.run("render", "--out", str(copied), "--files", "copy", check=True)
    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.0-py3-none-any.whl")
    assert (copied / "files" / "demo-pkg" / wheel.filename).read_bytes() == wheel.data


def _settings(mirror: Mirror) -> str:
    text = (mirror.root / "mirror.yaml").read_text()
    return text[text.index("store: ") :]


def _client(mirror: Mirror):  # type: ignore[no-untyped-def]
    return boto3.client("s3", endpoint_url=_endpoint(mirror), region_name="us-east-1")


def _clone(mirror: Mirror, root: Path, settings: str) -> Mirror:
    """A mirror with a copy of ``mirror``'s repository and an empty store of its own."""
    root.mkdir()
    shutil.copytree(mirror.repo, root / "mirror" / "repo", symlinks=True)
    clone = Mirror(root=root, upstream=mirror.upstream)
    clone.configure("projects:\n  - demo-pkg\n  - other_lib\n" + settings)
    return clone


def test_takedown_deletes_the_object_and_export_store_writes_the_directory_layout(
    s3_mirror: Mirror, sample, tmp_path: Path
) -> None:
    mirror = s3_mirror
    mirror.run("sync", check=True)
    exported = tmp_path / "export"
    mirror.run("export-store", "--out", str(exported), check=True)
    assert {path.name for path in (exported / "blobs").glob("*/*/*")} == set(bucket_blobs(mirror))
    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.0-py3-none-any.whl")
    mirror.run("takedown", wheel.filename, "--reason", "legal", check=True)
    assert wheel.sha256 not in bucket_blobs(mirror)
    assert mirror.run("verify").returncode == 0  # a taken-down file is not needed


def test_serve_redirects_to_presigned_urls_when_configured(s3_mirror: Mirror, sample, serve) -> None:
    """``presign_seconds``: a file request answers 302 to a URL the bucket serves itself, uncached."""
    mirror = s3_mirror
    mirror.configure("projects:\n  - demo-pkg\n" + _settings(mirror) + "  presign_seconds: 60\n")
    mirror.run("sync", check=True)
    server = serve()
    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.0-py3-none-any.whl")
    answer = httpx.get(f"{server.url}/files/demo-pkg/{wheel.filename}")
    assert answer.status_code == 302 and answer.headers["cache-control"] == "no-store"
    assert answer.headers["location"].startswith(_endpoint(mirror)) and "X-Amz-Signature" in answer.headers["location"]
    assert hashlib.sha256(httpx.get(answer.headers["location"]).content).hexdigest() == wheel.sha256
    missing = httpx.get(f"{server.url}/files/demo-pkg/no_such-1.0-py3-none-any.whl")
    assert missing.status_code == 404
