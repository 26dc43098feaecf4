"""The git metadata repository, read and written through dulwich's object database.

The repository is bare: nothing needs a checkout, readers see whole commits only, and a writer's
last step is one compare-and-swap of ``refs/heads/<branch>`` (``repo_write``). ``MetadataRepo`` is
the storage layer's one handle on it: this module reads trees and files (through ``gittree``),
``history`` answers questions about commits and refs, ``repo_write`` writes; no other layer
imports dulwich.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from dulwich.diff_tree import TreeChange
from dulwich.errors import NotGitRepository
from dulwich.object_store import DiskObjectStore
from dulwich.objects import Commit, ShaFile
from dulwich.repo import Repo

from ..model.manifest import PROJECTS_DIR, ProjectManifest, loads, manifest_path, project_of_path
from . import gittree
from .history import DEFAULT_BRANCH, RepoError
from .repo_write import STALE_REF_LOCK_AGE, Writer

__all__ = ["DEFAULT_BRANCH", "STALE_REF_LOCK_AGE", "Commit", "MalformedTreeError", "MetadataRepo", "RepoError"]


class MalformedTreeError(RepoError):
    """A tree git could read differently from gitmirror (``gittree``): refused, never guessed at.

    ``problems`` lists every malformed entry found (``gittree.Problem``); the message is the first.
    """

    def __init__(self, error: gittree.TreeError) -> None:
        super().__init__(str(error))
        self.problems = error.problems


@contextmanager
def refusing_malformed() -> Iterator[None]:
    """Turn ``gittree.TreeError`` into ``MalformedTreeError``: one line naming the path and the rule."""
    try:
        yield
    except gittree.TreeError as exc:
        raise MalformedTreeError(exc) from None


class MetadataRepo(Writer):
    """The one handle on the metadata repository; ``Commit`` (re-exported here) is what its walks yield."""

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

    @classmethod
    def with_quarantine(cls, path: Path | str, env: Mapping[str, str]) -> MetadataRepo:
        """The repository as a pre-receive hook must see it: its objects plus the ones being pushed,
        which git keeps in a quarantine directory (named by ``env``) until the hook accepts them."""
        repo = cls(Path(path))
        store = repo.git.object_store
        seen = {Path(store.path).resolve()}
        extra = [env.get("GIT_QUARANTINE_PATH", ""), env.get("GIT_OBJECT_DIRECTORY", "")]
        for directory in extra + env.get("GIT_ALTERNATE_OBJECT_DIRECTORIES", "").split(os.pathsep):
            if not directory:
                continue
            where = (repo.path / directory).resolve()  # an absolute directory stays itself
            if where not in seen and where.is_dir():
                seen.add(where)
                store.alternates.append(DiskObjectStore(str(where)))
        return repo

    @property
    def bare(self) -> bool:
        return bool(self.git.bare)

    # -- reading -----------------------------------------------------------------------------

    def resolve(self, rev: str) -> bytes:
        """A commit id from a branch, tag, date or (abbreviated) commit id: ``snapshot.resolve``,
        the one resolution every command and the server use, so a name means the same everywhere."""
        from .snapshot import resolve

        return resolve(self, rev).commit

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

    def tree(self, tree_id: bytes, path: str = "") -> Mapping[bytes, tuple[int, bytes]]:
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

    def list_dir(self, commit_id: bytes | None, path: str) -> dict[str, tuple[int, bytes]]:
        """The entries (name -> (mode, id)) of directory ``path`` at a commit; empty when there is none."""
        entry = self.entry(commit_id, path)
        if entry is None or entry[0] != gittree.TREE:
            return {}
        return {name.decode(): value for name, value in self.tree(entry[1], path).items()}

    def changes(
        self, old: bytes | None, new: bytes | None, report: Callable[[gittree.Problem], None] | None = None
    ) -> Iterator[TreeChange]:
        """File changes from commit ``old`` (None: nothing) to commit ``new``, unchanged subtrees skipped.

        Every tree of ``new`` that is walked is read by ``gittree``: a malformed one raises
        ``MalformedTreeError``, or with ``report`` its problems go there and its bad entries are left out.
        """
        old_tree = self.commit(old).tree if old is not None else None
        new_tree = self.commit(new).tree if new is not None else None
        with refusing_malformed():
            yield from gittree.changes(self.git.object_store, old_tree, new_tree, report)

    def changed_paths(self, old: bytes | None, new: bytes) -> Iterator[str]:
        """The path of every file added, changed or removed from commit ``old`` to commit ``new``."""
        for change in self.changes(old, new):
            yield (change.new or change.old).path.decode()  # type: ignore[union-attr]

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

    def manifest_blobs(self, commit_id: bytes | None, shard: str | None = None) -> Iterator[tuple[str, bytes]]:
        """(project, blob id) for every manifest of a commit (or of one ``shard`` directory, as
        ``model.names.shard`` names it), without reading the manifests."""
        if commit_id is None:
            return
        tree_id, path = self.commit(commit_id).tree, ""
        for part in [PROJECTS_DIR, *(shard.split("/") if shard else [])]:
            entry = self.tree(tree_id, path).get(part.encode())
            if entry is None or entry[0] != gittree.TREE:
                return
            tree_id, path = entry[1], f"{path}/{part}" if path else part
        yield from self._manifests_under(tree_id, path)

    def _manifests_under(self, tree_id: bytes, prefix: str) -> Iterator[tuple[str, bytes]]:
        for name, (mode, sha) in self.tree(tree_id, prefix).items():
            path = f"{prefix}/{name.decode()}"
            if mode == gittree.TREE:
                yield from self._manifests_under(sha, path)
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

    def close(self) -> None:
        self.git.close()
