"""The root page follows each commit through the tree diff from the last one it listed (``root_index``),
and lists exactly what a whole walk of that commit lists, served over HTTP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from gitmirror.model.manifest import ProjectManifest, manifest_path
from gitmirror.serve.index import root_html
from gitmirror.serve.root_index import RootIndex, updated
from gitmirror.storage.repo import MetadataRepo


def _commit(repo: MetadataRepo, names: list[str], removed: list[str] = (), parent: bytes | None = None) -> bytes:
    changes: dict[str, bytes | None] = {manifest_path(name): ProjectManifest(name).dumps() for name in names}
    changes.update({manifest_path(name): None for name in removed})
    return repo.write_commit(changes, "test", parent=parent)


def test_updated_merges_and_drops_in_one_sorted_pass() -> None:
    assert updated(["a", "c", "e"], {"b", "f"}, {"c"}) == ["a", "b", "e", "f"]
    assert updated(["a"], set(), set()) == ["a"]


def test_the_list_follows_each_commit_as_a_whole_walk_would(tmp_path: Path) -> None:
    repo = MetadataRepo.init(tmp_path / "repo")
    clustered = [f"django-{n}" for n in range(300)] + ["ab", "xyz", "six"]
    first = _commit(repo, clustered)
    second = _commit(repo, ["django-new", "aa", "pytest-x"], removed=["django-7", "xyz"], parent=first)
    third = _commit(repo, ["django-8"], parent=second)  # changed, not added: the list stays
    root = RootIndex(repo.path)
    for commit in (first, second, third, first, None, third):
        names = root.names(commit)
        assert names == repo.projects(commit)
    assert "django-new" in root.names(second) and "xyz" not in root.names(second)
    page = asyncio.run(root.page(third, "html", root_html))
    assert page == root_html(repo.projects(third))


def test_the_server_lists_a_new_project_after_a_sync(mirror, sample, upstream, serve) -> None:
    from fakeupstream import build_wheel

    mirror.run("sync", check=True)
    server = serve()
    before = httpx.get(f"{server.url}/simple/").text
    assert "demo-pkg/" in before and "late-pkg/" not in before
    upstream.add("late-pkg", build_wheel("late-pkg", "1.0"))
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n  - late-pkg\n")
    mirror.run("sync", check=True)
    after = httpx.get(f"{server.url}/simple/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    assert [project["name"] for project in after["projects"]] == ["demo-pkg", "late-pkg", "other-lib"]
