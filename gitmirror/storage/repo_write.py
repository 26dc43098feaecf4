"""Writing the metadata repository: commits, durable objects, and the one-writer lock.

Part of ``MetadataRepo`` (it inherits ``Writer``). Objects are written, and on disk, before the
branch moves, and the branch moves by one compare-and-swap, so a crash or a power loss at any point
leaves it at either the old or the new commit.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from dulwich.file import FileLocked
from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tag, Tree
from dulwich.pack import full_unpacked_object

from . import durable, signing
from .history import DEFAULT_BRANCH, History, RepoError

LOOSE_OBJECT_LIMIT = 1000
_DEFAULT_IDENTITY = "gitmirror <gitmirror@localhost>"
#: a ref lock this old belongs to no live git transaction (git holds one for a single update)
STALE_REF_LOCK_AGE = 10 * 60


class Writer(History):
    """Commits and tags written durably, one writer at a time."""

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
        changes: Mapping[str, bytes | None],
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
        commit.parents = [ObjectID(sha) for sha in ([parent] if parent else []) + list(merged)]
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
        if not self.move_ref(self.branch_ref(branch), parent, commit.id):
            raise RepoError(f"branch {branch} moved while this commit was being written; run again")
        sys.audit("gitmirror.crashpoint", "repo.ref-moved")
        return commit.id

    def write_durably(self, new_objects: list[ShaFile]) -> None:
        """Write objects (a commit's, a tag) and make them durable, before a ref may name them.

        dulwich writes object files without fsync (unless ``core.fsyncObjectFiles`` is set) and the
        ref file with one: after a power loss a branch or tag could name objects that never reached
        the disk. One ``syncfs`` of the repository's file system covers them all, as the
        blob store does for its blobs (``durable``); where there is none, ``os.sync``.

        Every commit and tag is signed first when the repository is set to sign (``signing``): all
        writers pass here, so none writes an unsigned one. Signing changes their ids.
        """
        signing.sign_objects(self.signing_policy(), new_objects)
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

    def _update_tree(self, tree_id: bytes | None, changes: dict[str, object], out: list[ShaFile]) -> ObjectID | None:
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

    def signing_policy(self) -> signing.SigningPolicy:
        """The key this repository signs with and the keys pushes to main need (its git config)."""
        return signing.signing_policy(self.git.get_config())

    def signature_of(self, sha: bytes) -> tuple[bytes, bytes | None, int] | None:
        """(signed content, armored signature or None, the object's time) of a commit or annotated
        tag; None for any other object (a lightweight tag's commit is judged as a commit)."""
        obj = self.git[ObjectID(sha)]
        return signing.signed_payload(obj) if isinstance(obj, Commit | Tag) else None

    def configure_signing(
        self, key: Path | None, allowed_signers: Path | None = None, require_signed_main: bool = False
    ) -> None:
        """Make every later commit and tag signed with ``key`` (``signing.signing_settings``)."""
        config = self.git.get_config()
        for (section, name), value in signing.signing_settings(key, allowed_signers, require_signed_main):
            config.set(section, name, value)
        config.write_to_path()

    def set_config(self, settings: Mapping[tuple[str, str], bool | str]) -> None:
        """Write ``(section, name) -> value`` into the repository's own git config."""
        config = self.git.get_config()
        for (section, name), value in settings.items():
            config.set((section.encode(),), name.encode(), value if isinstance(value, bool) else value.encode())
        config.write_to_path()


def _split(changes: Mapping[str, bytes | None]) -> dict[str, object]:
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
