"""The history of the metadata repository: refs peeled to commits, ancestry, walks, first parents.

Part of ``MetadataRepo`` (it inherits ``History``), so every module asks the repository
(``repo.is_ancestor(a, b)``, ``repo.walk(...)``) and none imports dulwich: one implementation of
each question, on dulwich's own helpers (``peel_sha``, ``dulwich.graph``, ``Walker``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from dulwich.graph import find_merge_base
from dulwich.object_store import peel_sha
from dulwich.objects import Commit, ObjectID, Tree
from dulwich.refs import Ref, check_ref_format
from dulwich.repo import Repo
from dulwich.walk import ORDER_DATE, ORDER_TOPO, Walker

DEFAULT_BRANCH = "main"


class RepoError(RuntimeError):
    """The repository is missing, locked, or a revision does not resolve."""


class History:
    """History queries over ``self.git`` (the dulwich repository ``MetadataRepo`` opens)."""

    git: Repo
    path: Path

    def branch_ref(self, branch: str = DEFAULT_BRANCH) -> bytes:
        return f"refs/heads/{branch}".encode()

    def tip(self, branch: str = DEFAULT_BRANCH) -> bytes | None:
        """The commit id a branch points at, or None for a branch with no commits yet."""
        try:
            return self.git.refs[Ref(self.branch_ref(branch))]
        except KeyError:
            return None

    def commit(self, sha: bytes) -> Commit:
        obj = self.git[sha]
        assert isinstance(obj, Commit)
        return obj

    def has_object(self, sha: bytes) -> bool:
        return ObjectID(sha) in self.git.object_store

    def peel(self, sha: bytes) -> bytes | None:
        """The commit id ``sha`` names after following tags, or None (a tree, a blob, a missing object)."""
        try:
            commit = peel_sha(self.git.object_store, ObjectID(sha))[1]
        except KeyError:
            return None
        return commit.id if isinstance(commit, Commit) else None

    def refs(self, base: bytes = b"refs/") -> dict[bytes, bytes]:
        """Full ref name -> the id it holds, for every ref under ``base``."""
        return {base + name: sha for name, sha in self.git.refs.as_dict(Ref(base)).items()}

    def has_ref(self, ref: bytes) -> bool:
        """Whether ``ref`` (a full name) exists; a name git would refuse (``..``, control characters)
        is never looked up, so user input cannot reach a path outside ``refs/``."""
        return check_ref_format(Ref(ref)) and Ref(ref) in self.git.refs

    def peeled_refs(self, base: bytes = b"refs/") -> dict[bytes, bytes]:
        """Full ref name -> commit id, for the refs under ``base`` that name a commit."""
        peeled = {ref: self.peel(sha) for ref, sha in self.refs(base).items()}
        return {ref: commit for ref, commit in peeled.items() if commit is not None}

    def move_ref(self, ref: bytes, old: bytes | None, new: bytes) -> bool:
        """Compare and swap: point ``ref`` at ``new`` if it still holds ``old`` (None: if it does not exist)."""
        refs, name, target = self.git.refs, Ref(ref), ObjectID(new)
        if old is None:
            return refs.add_if_new(name, target)
        return refs.set_if_equals(name, ObjectID(old), target)

    def is_ancestor(self, ancestor: bytes, descendant: bytes) -> bool:
        """Whether ``ancestor`` is reachable from ``descendant`` (a commit is its own ancestor).

        Asked as "is the merge base ``ancestor``": dulwich's ``can_fast_forward`` skips commits dated
        before ``ancestor``, and commit dates are the pusher's to choose. Missing commits: False.
        """
        try:
            return find_merge_base(self.git, [ObjectID(ancestor), ObjectID(descendant)]) == [ancestor]
        except KeyError:
            return False

    def merge_base(self, one: bytes | None, other: bytes | None) -> bytes | None:
        """A best common ancestor of two commits, or None (no common history, or a side is None)."""
        if one is None or other is None:
            return None
        bases = find_merge_base(self.git, [ObjectID(one), ObjectID(other)])
        return bases[0] if bases else None

    def walk(
        self, include: Iterable[bytes], exclude: Iterable[bytes] = (), parents_first: bool = False
    ) -> Iterator[Commit]:
        """Commits reachable from ``include`` but not from ``exclude``: newest first by commit date,
        or (``parents_first``) every commit after its parents."""
        heads = [ObjectID(sha) for sha in include]
        if not heads:
            return
        order = ORDER_TOPO if parents_first else ORDER_DATE
        stops = [ObjectID(sha) for sha in exclude]
        for entry in Walker(self.git.object_store, heads, exclude=stops, order=order, reverse=parents_first):
            yield entry.commit

    def reachable(self, starts: Iterable[bytes], wanted: set[bytes]) -> set[bytes]:
        """Which of ``wanted`` are reachable from ``starts``, walking only until all are found."""
        found: set[bytes] = set()
        if wanted:
            for commit in self.walk(starts):
                if commit.id in wanted:
                    found.add(commit.id)
                    if len(found) == len(wanted):
                        break
        return found

    def first_parents(self, tip: bytes | None, stop: bytes | None = None) -> Iterator[Commit]:
        """The first-parent line from ``tip`` down to the root, or to ``stop`` (not yielded)."""
        commit_id = tip
        while commit_id is not None and commit_id != stop:
            commit = self.git[commit_id]
            if not isinstance(commit, Commit):
                raise KeyError(commit_id)
            yield commit
            commit_id = commit.parents[0] if commit.parents else None

    def path_changes(
        self, tip: bytes | None, paths: Sequence[str], stop: bytes | None = None
    ) -> Iterator[tuple[Commit, tuple[bytes | None, ...]]]:
        """The commits of ``tip``'s first-parent line (down to ``stop``, not yielded) that changed
        any of ``paths``, newest first, each with the object ids of ``paths`` there (None: absent).

        What the branch served, change by change: a merge (an approval) counts as one change, the
        commit that made it the branch's state. Only ids are compared (read what they name through
        ``MetadataRepo``, which checks trees); each tree on the way is parsed once, so a commit
        that left a path's directories alone costs the parse of its root and top directories.
        """
        trees: dict[bytes, Tree] = {}

        def ids_at(commit: Commit | None) -> tuple[bytes | None, ...]:
            return self.path_ids(commit, paths, trees)

        newer: tuple[Commit, tuple[bytes | None, ...]] | None = None
        for commit in self.first_parents(tip, stop):
            ids = ids_at(commit)
            if newer is not None and newer[1] != ids:
                yield newer
            newer = (commit, ids)
        if newer is not None and newer[1] != ids_at(self.commit(stop) if stop is not None else None):
            yield newer

    def path_ids(
        self, commit: Commit | None, paths: Sequence[str], trees: dict[bytes, Tree] | None = None
    ) -> tuple[bytes | None, ...]:
        """The object ids of ``paths`` at ``commit`` (None: absent, or no commit); ``trees`` keeps
        the trees read on the way for the next call."""
        if commit is None:
            return (None,) * len(paths)
        trees = {} if trees is None else trees
        if len(trees) > 4096:
            trees.clear()
        return tuple(_lookup(self.git, trees, commit.tree, path.encode().split(b"/")) for path in paths)


def _lookup(git: Repo, trees: dict[bytes, Tree], tree_id: bytes, names: list[bytes]) -> bytes | None:
    """The id ``names`` (a path's parts) lead to from tree ``tree_id``, or None; trees kept in ``trees``."""
    current: bytes = tree_id
    for name in names:
        tree = trees.get(current)
        if tree is None:
            obj = git[ObjectID(current)]
            if not isinstance(obj, Tree):
                return None
            tree = trees[current] = obj
        try:
            current = tree[name][1]
        except KeyError:
            return None
    return current
