"""What sync does when upstream breaks the promise for us: replaced bytes, deleted files and projects,
and the changes upstream may make (yank, unyank, PEP 792 status)."""

from __future__ import annotations

import hashlib
import json

import httpx

from conftest import Mirror
from fakeupstream import build_wheel

DEMO = "projects/de/mo/demo-pkg.jsonl"
OTHER = "projects/ot/he/other-lib.jsonl"
SDIST = "demo_pkg-1.0.tar.gz"
JSON = "application/vnd.pypi.simple.v1+json"


def manifest(mirror: Mirror, path: str = DEMO) -> dict[str, dict]:
    lines = [json.loads(line) for line in mirror.git("show", f"main:{path}").splitlines()]
    return {line.get("filename", "header"): line for line in lines}


def test_replaced_file_is_kept_recorded_and_exits_3(mirror: Mirror, sample, upstream, serve) -> None:
    mirror.run("sync", check=True)
    original = next(a for a in sample["demo-pkg"] if a.filename == SDIST)
    before = manifest(mirror)[SDIST]
    replaced = upstream.replace_file("demo-pkg", SDIST, b"other bytes under the same name")
    upstream.add("other_lib", build_wheel("other_lib", "0.3", requires_python=">=3.8"))

    result = mirror.run("sync")
    assert result.returncode == 3, result.stderr
    assert f"CONFLICT demo-pkg: {SDIST} is {replaced.sha256} upstream, the mirror keeps {original.sha256}" in (
        result.stderr
    )
    assert "1 CONFLICTS" in result.stdout
    # The mirror's entry is untouched and the other project still synced in the same run.
    assert manifest(mirror)[SDIST] == before
    assert "other_lib-0.3-py3-none-any.whl" in manifest(mirror, OTHER)
    (record,) = [json.loads(line) for line in mirror.git("show", "main:conflicts/demo-pkg.jsonl").splitlines()]
    assert record["filename"] == SDIST
    assert (record["recorded-sha256"], record["recorded-size"]) == (original.sha256, original.size)
    assert (record["upstream-sha256"], record["upstream-size"]) == (replaced.sha256, replaced.size)
    assert record["detected"].endswith("Z")
    assert f"demo-pkg: CONFLICT {SDIST}" in mirror.git("log", "-1", "--format=%B", "main")

    # The original bytes are what the mirror keeps serving.
    server = serve()
    body = httpx.get(f"{server.url}/files/demo-pkg/{SDIST}").content
    assert hashlib.sha256(body).hexdigest() == original.sha256

    # A known conflict is said once, when recorded: neither said nor recorded again, nor a new failure.
    again = mirror.run("sync")
    assert again.returncode == 0, again.stderr
    assert "CONFLICT" not in again.stderr and SDIST not in again.stderr
    assert len(mirror.git("show", "main:conflicts/demo-pkg.jsonl").splitlines()) == 1
    # Yet another upload under the same name is a new conflict.
    upstream.replace_file("demo-pkg", SDIST, b"third version")
    assert mirror.run("sync").returncode == 3
    assert len(mirror.git("show", "main:conflicts/demo-pkg.jsonl").splitlines()) == 2
    assert mirror.run("verify").returncode == 0


def test_deleted_file_and_project_stay_served_marked_upstream_removed(mirror: Mirror, sample, upstream, serve) -> None:
    mirror.run("sync", check=True)
    upstream.remove_file("demo-pkg", SDIST)
    upstream.remove_project("other_lib")
    result = mirror.run("sync")
    assert result.returncode == 0, result.stderr
    demo = manifest(mirror)
    assert demo[SDIST]["upstream-removed"].endswith("Z")
    assert "upstream-removed" not in demo["demo_pkg-1.0-py3-none-any.whl"]
    other = manifest(mirror, OTHER)
    assert other["header"]["upstream-removed"].endswith("Z")
    assert all(entry.get("upstream-removed") for name, entry in other.items() if name != "header")

    server = serve()
    files = {
        item["filename"]
        for item in httpx.get(f"{server.url}/simple/demo-pkg/", headers={"Accept": JSON}).json()["files"]
    }
    assert SDIST in files
    assert httpx.get(f"{server.url}/simple/other-lib/").status_code == 200
    wheel = sample["other-lib"][0]
    body = httpx.get(f"{server.url}/files/other-lib/{wheel.filename}").content
    assert hashlib.sha256(body).hexdigest() == wheel.sha256

    # Coming back upstream clears the mark; nothing was ever lost.
    upstream.add("other_lib", build_wheel("other_lib", "0.4", requires_python=">=3.8"))
    mirror.run("sync", check=True)
    other = manifest(mirror, OTHER)
    assert "upstream-removed" not in other["header"] and "other_lib-0.4-py3-none-any.whl" in other
    assert mirror.run("verify").returncode == 0


def test_upstream_yank_unyank_and_status_are_mirrored(mirror: Mirror, sample, upstream) -> None:
    mirror.run("sync", check=True)
    upstream.yank("demo-pkg", "demo_pkg-2.0-py3-none-any.whl", "bad metadata")
    upstream.unyank("demo-pkg", "demo_pkg-1.1-py3-none-any.whl")
    upstream.set_status("demo-pkg", "archived", "read only now")
    mirror.run("sync", check=True)
    demo = manifest(mirror)
    assert demo["demo_pkg-2.0-py3-none-any.whl"]["yanked"] == "bad metadata"
    assert demo["demo_pkg-1.1-py3-none-any.whl"]["yanked"] is False
    assert demo["header"]["project-status"] == {"status": "archived", "reason": "read only now"}
    message = mirror.git("log", "-1", "--format=%B", "main")
    assert "demo_pkg-2.0-py3-none-any.whl yanked (bad metadata)" in message
    assert "demo_pkg-1.1-py3-none-any.whl unyanked" in message
    diff = mirror.git("diff", "--numstat", "main~1", "main").split()
    assert diff == ["3", "3", DEMO]  # header and two entries changed in place, nothing removed
    upstream.set_status("demo-pkg", None)
    mirror.run("sync", check=True)
    assert "project-status" not in manifest(mirror)["header"]
    assert mirror.run("verify").returncode == 0
