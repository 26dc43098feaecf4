"""The store in an S3 bucket (SeaweedFS, ``s3fixture``): what the directory store does, end to end."""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import httpx

from conftest import Mirror
from s3fixture import s3_mirror, s3_server  # noqa: F401 - fixtures


def bucket_blobs(mirror: Mirror) -> dict[str, bytes]:
    """Every object under the store's ``blobs/``: name -> bytes."""
    client = boto3.client("s3", endpoint_url=_endpoint(mirror), region_name="us-east-1")
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=mirror.bucket, Prefix="pypi/blobs/"):
        for item in page.get("Contents", []):
            found[item["Key"].rsplit("/", 1)[-1]] = client.get_object(Bucket=mirror.bucket, Key=item["Key"])["Body"].read()
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


def test_an_unreachable_bucket_stops_in_one_line(mirror: Mirror, s3_server, tmp_path: Path) -> None:  # noqa: F811
    mirror.configure("store: s3://gm-nowhere/p\ns3:\n  endpoint_url: http://127.0.0.1:9\n")
    result = mirror.run("init")
    assert result.returncode == 2
    assert result.stderr.startswith("gitmirror: ") and len(result.stderr.strip().splitlines()) == 1
