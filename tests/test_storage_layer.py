"""One way to read git: only the storage layer imports dulwich, and what it offers answers right.

import-linter enforces the imports in CI (pyproject's contracts); this test also refuses reaching
``MetadataRepo.git`` from outside the storage layer, which no import shows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from dulwich.objects import Commit, Tag, Tree

import gitmirror
from gitmirror.storage.repo import MetadataRepo

PACKAGE = Path(gitmirror.__file__).parent
#: the storage layer: the only modules that may import dulwich or reach ``MetadataRepo.git``
STORAGE = PACKAGE / "storage"


def dulwich_uses(source: str) -> list[str]:
    """Each import of dulwich (top-level or inside a function) and each ``.git`` attribute reached."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "dulwich"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "dulwich":
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.Attribute) and node.attr == "git":
            found.append(f"line {node.lineno}: .git (dulwich's Repo behind MetadataRepo)")
    return found


def test_only_the_storage_layer_imports_dulwich() -> None:
    """import-linter checks the imports (``.ci/run``); this also catches ``.git`` reached from outside."""
    offenders = {}
    for module in sorted(PACKAGE.rglob("*.py")):
        uses = dulwich_uses(module.read_text())
        if uses and STORAGE not in module.parents:
            offenders[str(module.relative_to(PACKAGE))] = uses
    assert not offenders, f"dulwich outside the storage layer (ask MetadataRepo instead): {offenders}"


def test_the_rule_sees_every_spelling() -> None:
    sample = (
        "import dulwich\nfrom dulwich.repo import Repo\ndef f(r):\n    from dulwich import graph\n    return r.git\n"
    )
    assert len(dulwich_uses(sample)) == 4
    assert dulwich_uses("from .repo import MetadataRepo\nimport dulwich_like\n") == []


# -- what the storage layer answers -------------------------------------------------------------------


def commit(repo: MetadataRepo, parents: list[bytes], when: int, tree: Tree | None = None) -> bytes:
    """A commit dated ``when`` (the date is the pusher's to choose: nothing may trust it)."""
    tree = tree or Tree()
    made = Commit()
    made.tree = tree.id
    made.parents = parents
    made.author = made.committer = b"Test <test@example.invalid>"
    made.author_time = made.commit_time = when
    made.author_timezone = made.commit_timezone = 0
    made.message = f"at {when}\n".encode()
    repo.write_durably([tree, made])
    return made.id


@pytest.fixture
def repo(tmp_path: Path) -> MetadataRepo:
    repo = MetadataRepo.init(tmp_path / "repo.git")
    yield repo
    repo.close()


def test_ancestry_ignores_commit_dates(repo: MetadataRepo) -> None:
    """A commit dated before its ancestor still leads to it: dulwich's ``can_fast_forward`` would
    stop at that date and call a fast-forward a rewrite."""
    root = commit(repo, [], 2_000)
    old = commit(repo, [root], 3_000)
    backdated = commit(repo, [old], 1_000)
    new = commit(repo, [backdated], 4_000)
    assert repo.is_ancestor(old, new) and repo.is_ancestor(root, new) and repo.is_ancestor(new, new)
    assert not repo.is_ancestor(new, old)
    assert not repo.is_ancestor(b"f" * 40, new)  # a missing commit is nobody's ancestor
    side = commit(repo, [root], 500)
    assert repo.merge_base(side, new) == root
    assert repo.merge_base(None, new) is None
    assert repo.reachable([new], {root, side}) == {root}


def test_walks_first_parents_and_refs(repo: MetadataRepo) -> None:
    root = commit(repo, [], 1_000)
    side = commit(repo, [root], 1_100)
    merge = commit(repo, [root, side], 1_200)
    tip = commit(repo, [merge], 1_300)
    assert [c.id for c in repo.first_parents(tip)] == [tip, merge, root]
    assert [c.id for c in repo.first_parents(tip, stop=merge)] == [tip]
    assert [c.id for c in repo.walk([tip], exclude=[side], parents_first=True)] == [merge, tip]
    assert {c.id for c in repo.walk([tip])} == {root, side, merge, tip}
    assert repo.move_ref(b"refs/heads/main", None, tip) and not repo.move_ref(b"refs/heads/main", None, root)
    assert repo.has_ref(b"refs/heads/main") and not repo.has_ref(b"refs/heads/other")
    assert not repo.has_ref(b"refs/heads/../../config")  # never a path outside refs/
    tag = Tag()
    tag.name, tag.object, tag.tagger = b"v1", (Commit, root), b"Test <test@example.invalid>"
    tag.tag_time, tag.tag_timezone, tag.message = 1_400, 0, b"v1\n"
    repo.write_durably([tag])
    assert repo.move_ref(b"refs/tags/v1", None, tag.id)
    assert repo.peel(tag.id) == root and repo.peel(repo.commit(root).tree) is None
    assert repo.peeled_refs() == {b"refs/heads/main": tip, b"refs/tags/v1": root}


def test_changed_paths_and_directories(repo: MetadataRepo) -> None:
    first = repo.write_commit({"projects/a/alpha.toml": b"1", "projects/b/beta.toml": b"1"}, "one")
    second = repo.write_commit({"projects/a/alpha.toml": b"2", "projects/b/beta.toml": None}, "two", parent=first)
    assert sorted(repo.changed_paths(first, second)) == ["projects/a/alpha.toml", "projects/b/beta.toml"]
    assert sorted(repo.changed_paths(None, first)) == ["projects/a/alpha.toml", "projects/b/beta.toml"]
    assert list(repo.list_dir(second, "projects")) == ["a"]
    assert list(repo.list_dir(second, "projects/a")) == ["alpha.toml"]
    assert repo.list_dir(second, "projects/b") == {} and repo.list_dir(second, "projects/a/alpha.toml") == {}
