"""``gitmirror plan``: what a sync would add, with no release file downloaded and nothing written."""

from __future__ import annotations

import json

from conftest import Mirror
from fakeupstream import FakeUpstream, build_wheel


def file_downloads(upstream: FakeUpstream, mark: int = 0) -> list[str]:
    return [
        record.path
        for record in upstream.requests[mark:]
        if record.path.startswith("/files/") and not record.path.endswith(".metadata")
    ]


def test_plan_on_an_empty_mirror_lists_everything_and_downloads_nothing(
    mirror: Mirror, sample, upstream: FakeUpstream
) -> None:
    result = mirror.run("plan", "--json", check=True)
    plan = json.loads(result.stdout)
    expected_bytes = sum(artifact.size for artifacts in sample.values() for artifact in artifacts)
    assert plan["files"] == 8 and plan["bytes"] == expected_bytes and plan["changing"] == 2
    assert sorted(entry["filename"] for entry in plan["add"]["other-lib"]) == [
        "other_lib-0.1-py3-none-any.whl",
        "other_lib-0.2-py3-none-any.whl",
    ]
    assert file_downloads(upstream) == []
    assert not mirror.repo.exists() and not (mirror.store / "blobs").exists()


def test_plan_after_sync_shows_only_the_new_release(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    mirror.run("sync", check=True)
    tip = mirror.git("rev-parse", "main").strip()
    nothing = mirror.run("plan", check=True)
    assert "0 would change (0 new), 0 files, 0 bytes to download" in nothing.stdout
    new = build_wheel("demo-pkg", "1.5", requires_python=">=3.8")
    upstream.add("demo-pkg", new)
    mark = len(upstream.requests)
    result = mirror.run("plan", check=True)
    assert f"demo-pkg: 1 files, {new.size} bytes" in result.stdout
    assert f"  + {new.filename}" in result.stdout
    assert file_downloads(upstream, mark) == []
    assert mirror.git("rev-parse", "main").strip() == tip  # the plan committed nothing
    synced = mirror.run("sync", check=True)
    assert "1 files added" in synced.stdout or "1 file added" in synced.stdout


def test_plan_reports_closure_errors_with_exit_1(mirror: Mirror, upstream: FakeUpstream) -> None:
    upstream.add("top", build_wheel("top", "1.0", requires_dist=["nowhere"]))
    mirror.configure("projects: [top]\n")
    result = mirror.run("plan")
    assert result.returncode == 1
    assert "error: nowhere: not found upstream (required by projects: top -> top 1.0 requires nowhere)" in result.stdout
