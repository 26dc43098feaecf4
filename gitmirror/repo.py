"""The git metadata repository, read and written through dulwich's object database.

The repository is bare: nothing needs a checkout, readers see whole commits only, and a writer's
last step is one compare-and-swap of ``refs/heads/<branch>``. Objects are written, and on disk,
before the ref moves, so a crash or a power loss at any point leaves the branch at either the old
or the new commit.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dulwich.diff_tree import TreeChange
from dulwich.errors import NotGitRepository
from dulwich.file import FileLocked
from dulwich.object_store import BaseObjectStore, peel_sha
from dulwich.objects import Blob, Commit, ShaFile, Tree
from dulwich.pack import full_unpacked_object
from dulwich.repo import Repo

from . import durable, gittree
from .manifest import PROJECTS_DIR, ProjectManifest, loads, manifest_path, project_of_path

DEFAULT_BRANCH = "main"
LOOSE_OBJECT_LIMIT = 1000
_DEFAULT_IDENTITY = "gitmirror <gitmirror@localhost>"
#: a ref lock this old belongs to no live git transaction (git holds one for a single update)
STALE_REF_LOCK_AGE = 10 * 60


class RepoError(RuntimeError):
    """The repository is missing, locked, or a revision does not resolve."""


class MalformedTreeError(RepoError):
    """A tree git could read differently from gitmirror (``gittree``): refused, never guessed at."""


@contextmanager
def refusing_malformed() -> Iterator[None]:
    """Turn ``gittree.TreeError`` into ``MalformedTreeError``: one line naming the path and the rule."""
    try:
        yield
    except gittree.TreeError as exc:
        raise MalformedTreeError(str(exc)) from None


def peel(store: BaseObjectStore, sha: bytes) -> Commit | None:
    """The commit ``sha`` names after following tags, or None (a tree, a blob, a missing object)."""
    try:
        return commit if isinstance(commit := peel_sha(store, sha)[1], Commit) else None
    except KeyError:
        return None


class MetadataRepo:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        #: parsed commits and checked tree listings, by id (immutable, so never stale); bounded
        self._read_cache: dict[bytes | tuple[bytes, str], ShaFile | gittree.Listing] = {}
        try:
            self.git = Repo(str(self.path))
        except NotGitRepository as exc:
            raise RepoError(f"{self.path} is not a gitmirror repository (run `gitmirror init`)") from exc

    @classmethod
    def init(cls, path: Path, branch: str = DEFAULT_BRANCH) -> MetadataRepo:
        """Create the bare repository if needed; running it again changes nothing."""
        path = Path(path)
        if not (path / "HEAD").exists():
            # Build it beside the target and rename it into place: two first runs started together
            # then race on one atomic rename instead of interleaving half-made repositories.
            path.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-init-", dir=path.parent))
            try:
                Repo.init_bare(str(staging), default_branch=branch.encode()).close()
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
                os.rename(staging, path)
            except OSError:
                if not (path / "HEAD").exists():
                    raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return cls(path)

    # -- reading -----------------------------------------------------------------------------

    def branch_ref(self, branch: str = DEFAULT_BRANCH) -> bytes:
        return f"refs/heads/{branch}".encode()

    def tip(self, branch: str = DEFAULT_BRANCH) -> bytes | None:
        """The commit id a branch points at, or None for a branch with no commits yet."""
        try:
            return self.git.refs[self.branch_ref(branch)]
        except KeyError:
            return None

    def resolve(self, rev: str) -> bytes:
        """A commit id from a branch, tag, date or (abbreviated) commit id: ``snapshot.resolve``,
        the one resolution every command and the server use, so a name means the same everywhere."""
        from .snapshot import resolve

        return resolve(self, rev).commit

    def commit(self, sha: bytes) -> Commit:
        obj = self.git[sha]
        assert isinstance(obj, Commit)
        return obj

    def read_path(self, commit_id: bytes | None, path: str) -> bytes | None:
        """The bytes of the file at ``path`` in a commit, or None when absent (or a directory)."""
        entry = self.entry(commit_id, path)
        if entry is None or entry[0] not in gittree.FILE_MODES + (gittree.SYMLINK,):
            return None
        return self.blob(entry[1], path)

    def entry(self, commit_id: bytes | None, path: str) -> tuple[int, bytes] | None:
        """(mode, id) of ``path`` in a commit, or None when absent.

        Trees on the way are read through ``gittree``: a malformed one raises ``MalformedTreeError``.
        """
        if commit_id is None:
            return None
        commit = self._cached(commit_id)
        assert isinstance(commit, Commit)
        entry: tuple[int, bytes] | None = (gittree.TREE, commit.tree)
        parent = ""
        for part in path.split("/"):
            if entry is None or entry[0] != gittree.TREE:
                return None
            entry = self.tree(entry[1], parent).get(part.encode())
            parent = f"{parent}/{part}" if parent else part
        return entry

    def tree(self, tree_id: bytes, path: str = "") -> dict[bytes, tuple[int, bytes]]:
        """A tree's entries (name -> (mode, id)) as git reads them; ``MalformedTreeError`` if git could not."""
        key = (tree_id, path)  # the rules on modes depend on where the tree sits
        listing = self._read_cache.get(key)
        if not isinstance(listing, gittree.Listing):
            with refusing_malformed():
                listing = gittree.read_tree(self.git.object_store, tree_id, path)
                listing.checked()
            self._remember(key, listing)
        return listing.entries

    def blob(self, blob_id: bytes, path: str) -> bytes:
        """A file's bytes; ``MalformedTreeError`` when the object is missing or not a blob."""
        with refusing_malformed():
            return gittree.read_blob(self.git.object_store, blob_id, path)

    def tree_changes(self, old_tree: bytes | None, new_tree: bytes | None) -> Iterator[TreeChange]:
        """File changes between two trees (``gittree.changes``); ``MalformedTreeError`` on a malformed tree."""
        with refusing_malformed():
            yield from gittree.changes(self.git.object_store, old_tree, new_tree)

    def _cached(self, sha: bytes) -> ShaFile:
        """``self.git[sha]``, keeping commits (a sync reads each project's path twice)."""
        obj = self._read_cache.get(sha)
        if not isinstance(obj, ShaFile):
            obj = self.git[sha]
            if isinstance(obj, Commit):
                self._remember(sha, obj)
        return obj

    def _remember(self, key: bytes | tuple[bytes, str], value: ShaFile | gittree.Listing) -> None:
        if len(self._read_cache) >= 4096:
            self._read_cache.clear()
        self._read_cache[key] = value

    def manifest(self, commit_id: bytes | None, name: str) -> ProjectManifest | None:
        path = manifest_path(name)
        data = self.read_path(commit_id, path)
        return None if data is None else loads(data, path)

    def manifest_blobs(self, commit_id: bytes | None) -> Iterator[tuple[str, bytes]]:
        """(project, blob id) for every manifest of a commit, without reading the manifests."""
        if commit_id is None:
            return
        root = self.tree(self.commit(commit_id).tree)
        entry = root.get(PROJECTS_DIR.encode())
        if entry is not None and entry[0] == gittree.TREE:
            yield from self._walk(entry[1], PROJECTS_DIR)

    def _walk(self, tree_id: bytes, prefix: str) -> Iterator[tuple[str, bytes]]:
        for name, (mode, sha) in self.tree(tree_id, prefix).items():
            path = f"{prefix}/{name.decode()}"
            if mode == gittree.TREE:
                yield from self._walk(sha, path)
            elif mode in gittree.FILE_MODES:
                project = project_of_path(path)
                if project is not None:
                    yield project, sha

    def projects(self, commit_id: bytes | None) -> list[str]:
        return sorted(name for name, _ in self.manifest_blobs(commit_id))

    def manifests(self, commit_id: bytes | None) -> Iterator[ProjectManifest]:
        for name, blob_id in self.manifest_blobs(commit_id):
            path = manifest_path(name)
            yield loads(self.blob(blob_id, path), path)

    # -- writing -----------------------------------------------------------------------------

    def identity(self) -> bytes:
        """Who commits: the git environment variables, then git config, then a fixed default."""
        name = os.environ.get("GIT_AUTHOR_NAME")
        email = os.environ.get("GIT_AUTHOR_EMAIL")
        if not (name and email):
            config = self.git.get_config_stack()
            try:
                name = name or config.get((b"user",), b"name").decode()
                email = email or config.get((b"user",), b"email").decode()
            except KeyError:
                return _DEFAULT_IDENTITY.encode()
        return f"{name} <{email}>".encode()

    def write_commit(
        self,
        changes: dict[str, bytes | None],
        message: str,
        branch: str = DEFAULT_BRANCH,
        parent: bytes | None = None,
        merged: tuple[bytes, ...] = (),
    ) -> bytes:
        """Commit path changes (None deletes) on top of ``parent`` and move the branch there.

        ``merged`` commits become further parents: the commit records that their history is merged.

        The branch moves only if it still points at ``parent``: a concurrent writer makes this
        fail instead of silently dropping its commit.
        """
        base_tree = self.commit(parent).tree if parent else None
        new_objects: list[ShaFile] = []
        tree_id = self._update_tree(base_tree, _split(changes), new_objects)
        if tree_id is None:
            empty = Tree()
            new_objects.append(empty)
            tree_id = empty.id
        commit = Commit()
        commit.tree = tree_id
        commit.parents = ([parent] if parent else []) + list(merged)
        commit.author = commit.committer = self.identity()
        # Never earlier than the first parent: /snapshot/<date>/ walks first parents and relies on
        # dates that never go back (docs/refs.md), whatever this host's clock says.
        first_parent_time = self.commit(commit.parents[0]).commit_time if commit.parents else 0
        commit.author_time = commit.commit_time = max(int(time.time()), first_parent_time)
        commit.author_timezone = commit.commit_timezone = 0
        commit.encoding = b"UTF-8"
        commit.message = message.encode()
        new_objects.append(commit)
        sys.audit("gitmirror.crashpoint", "repo.trees-built")
        self.write_durably(new_objects)
        sys.audit("gitmirror.crashpoint", "repo.objects-written")
        ref = self.branch_ref(branch)
        moved = (
            self.git.refs.set_if_equals(ref, parent, commit.id) if parent else self.git.refs.add_if_new(ref, commit.id)
        )
        if not moved:
            raise RepoError(f"branch {branch} moved while this commit was being written; run again")
        sys.audit("gitmirror.crashpoint", "repo.ref-moved")
        return commit.id

    def write_durably(self, new_objects: list[ShaFile]) -> None:
        """Write objects (a commit's, a tag) and make them durable, before a ref may name them.

        dulwich writes object files without fsync (unless ``core.fsyncObjectFiles`` is set) and the
        ref file with one: after a power loss a branch or tag could name objects that never reached
        the disk. One ``syncfs`` of the repository's file system covers them all, as the
        blob store does for its blobs (``durable``); where there is none, ``os.sync``.
        """
        handle = durable.handle(self.path)  # before the objects: their write-back errors are reported
        try:
            if len(new_objects) <= LOOSE_OBJECT_LIMIT:
                # Small commits (yanks, approvals, a quiet sync) as loose objects, like git itself: one
                # pack per commit would make every later object lookup scan thousands of packs.
                for obj in _each_object(new_objects):
                    self.git.object_store.add_object(obj)
            else:
                store = self.git.object_store
                store.add_pack_data(len(new_objects), (full_unpacked_object(obj) for obj in _each_object(new_objects)))
            if handle is not None:
                durable.sync(handle, self.path)
            else:
                os.sync()
        finally:
            if handle is not None:
                os.close(handle)

    def _update_tree(self, tree_id: bytes | None, changes: dict[str, object], out: list[ShaFile]) -> bytes | None:
        """Rebuild only the trees on the changed paths; returns None for a tree left empty."""
        tree = Tree()
        if tree_id is not None:
            old = self.git[tree_id]
            assert isinstance(old, Tree)
            for item in old.iteritems():
                tree.add(item.path, item.mode, item.sha)
        for name, change in changes.items():
            key = name.encode()
            if isinstance(change, dict):
                sub = tree[key][1] if key in tree and tree[key][0] & 0o040000 else None
                new_sub = self._update_tree(sub, change, out)
                if new_sub is None:
                    if key in tree:
                        del tree[key]
                else:
                    tree.add(key, 0o040000, new_sub)
            elif change is None:
                if key in tree:
                    del tree[key]
            else:
                assert isinstance(change, bytes)
                blob = Blob.from_string(change)
                out.append(blob)
                tree.add(key, 0o100644, blob.id)
        if not len(tree):
            return None
        out.append(tree)
        return tree.id

    @contextmanager
    def writer_lock(self, wait: bool = False) -> Iterator[None]:
        """One writer at a time: sync, yank, approve and friends all take this lock.

        A ref another git process holds locked (a push through the hook, ``git gc``) makes the
        writer's compare-and-swap fail before the branch moves: that is one line to try again.
        """
        lock_path = self.path / "gitmirror.lock"
        with open(lock_path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError as exc:
                raise RepoError(f"another gitmirror process is writing to {self.path}; try again later") from exc
            try:
                self._remove_stale_git_locks()
                yield
            except FileLocked as exc:
                ref = os.path.relpath(os.fsdecode(exc.filename), self.path)
                raise RepoError(
                    f"{ref} is locked by another git process ({ref}.lock exists); try again later (a lock left by "
                    f"a killed process is removed once it is {STALE_REF_LOCK_AGE // 60} minutes old)"
                ) from exc
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _remove_stale_git_locks(self) -> None:
        """Drop what a killed writer left behind: ref ``*.lock`` files and unindexed packs, once old.

        A ref lock (under ``refs/``, ``packed-refs.lock``, ``HEAD.lock``) goes once older than
        ``STALE_REF_LOCK_AGE`` (10 minutes); a pack without its index and a ``tmp_pack_*`` file once
        older than dulwich's prune grace period (2 weeks, as ``git gc`` keeps unreferenced objects).
        Why: the writer lock excludes gitmirror only, and a concurrent ``git push`` or ``git gc`` holds
        a ref lock for one transaction and migrates a pack before its index, so a young one may be live.
        """
        now = time.time()
        refs = self.path / "refs"
        for lock in [*refs.rglob("*.lock"), self.path / "packed-refs.lock", self.path / "HEAD.lock"]:
            try:
                if now - lock.stat().st_mtime > STALE_REF_LOCK_AGE:
                    lock.unlink()
            except FileNotFoundError:
                pass  # its writer finished meanwhile
        self.git.object_store.prune()  # dulwich's default grace period

    def close(self) -> None:
        self.git.close()


def _split(changes: dict[str, bytes | None]) -> dict[str, object]:
    """Turn ``{"a/b/c": data}`` into nested ``{"a": {"b": {"c": data}}}``."""
    nested: dict[str, object] = {}
    for path, data in changes.items():
        parts = path.split("/")
        if any(part in ("", ".", "..", ".git") for part in parts):
            raise RepoError(f"refusing unsafe repository path {path!r}")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[parts[-1]] = data
    return nested


def _each_object(objects: list[ShaFile]) -> Iterator[ShaFile]:
    """``objects``, with a crash point before each: a crash between any two objects of a pack."""
    for obj in objects:
        sys.audit("gitmirror.crashpoint", "repo.object-packing")
        yield obj
