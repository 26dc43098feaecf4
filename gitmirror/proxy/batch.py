"""What the proxy recorded and has not committed yet, when that becomes a commit, and the commit.

The proxy records as it serves (a page merged, a file stored) but commits in batches: one commit
per ``commit_interval`` seconds or per ``commit_changes`` changes, never one per request. Until
then the batch is the record the proxy serves from, so every page stays consistent with what was
promised. The commit takes the same writer lock as ``sync``; when ``main`` moved meanwhile (a sync,
an approve), the batch's changes are replayed onto its tip by review's three-way rules
(``sync.incoming.project_changes``/``apply``) and judged by the immutability policy like any commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model.manifest import ProjectManifest, manifest_path
from ..model.policy import CONFLICTS_DIR, check
from ..storage.repo import MetadataRepo
from ..sync.incoming import apply, catch_up, merged_conflicts, project_changes
from ..sync.merge import Conflict, ProjectOutcome, commit_message


@dataclass
class Pending:
    """One project's uncommitted record: the manifest it started from and the one to commit."""

    base: ProjectManifest | None
    manifest: ProjectManifest
    added: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def weight(self) -> int:
        """How many changes it counts for against ``commit_changes``."""
        return len(self.added) + len(self.changes) + len(self.conflicts) + (self.base is None)

    def then(self, later: Pending) -> Pending:
        """This change followed by ``later`` (recorded on top of this one's manifest)."""
        return Pending(
            self.base,
            later.manifest,
            self.added + later.added,
            self.changes + later.changes,
            self.conflicts + later.conflicts,
        )


class Batch:
    """The uncommitted changes by project, and since when the oldest waits (``started``)."""

    def __init__(self) -> None:
        self.items: dict[str, Pending] = {}
        self.started: float | None = None

    def record(self, name: str, change: Pending, at: float) -> None:
        earlier = self.items.get(name)
        self.items[name] = change if earlier is None else earlier.then(change)
        if self.started is None:
            self.started = at

    @property
    def weight(self) -> int:
        return sum(item.weight for item in self.items.values())

    def take(self) -> dict[str, Pending]:
        """Everything recorded so far, for one commit; the batch starts empty."""
        items, self.items, self.started = self.items, {}, None
        return items

    def put_back(self, items: dict[str, Pending], at: float) -> None:
        """A commit that failed: its changes come first again, before what was recorded since."""
        for name, item in items.items():
            later = self.items.get(name)
            self.items[name] = item if later is None else item.then(later)
        if items and self.started is None:
            self.started = at


def due(weight: int, started: float | None, now: float, interval: float, changes: int) -> bool:
    """Whether a batch of ``weight`` changes, the oldest recorded at ``started``, is to be committed now."""
    if started is None or weight == 0:
        return False
    return weight >= changes or now - started >= interval


def commit_batch(repo: MetadataRepo, branch: str, items: dict[str, Pending], main: str | None = None) -> bytes | None:
    """Commit ``items`` on top of ``branch`` under the writer lock; None when nothing changed.
    ``main``: ``branch`` is its review branch, brought up to date with it first (as a sync does).

    Raises ``RepoError`` when another writer holds the lock (the batch waits for the next try).
    """
    with repo.writer_lock():
        if main is not None:
            catch_up(repo, main, branch)
        parent = repo.tip(branch)
        files: dict[str, bytes | None] = {}
        outcomes = []
        for name, item in sorted(items.items()):
            path = manifest_path(name)
            current = repo.manifest(parent, name)
            new = item.manifest
            if current != item.base:  # another writer moved the branch: replay what the proxy changed
                replayed = [c for c in project_changes(name, item.base, current, item.manifest) if c.kind != "rewrite"]
                new = apply(current, name, replayed)
            violations = check(current, new, path)
            if violations:  # a bug, never a reason to break the promise
                raise AssertionError("; ".join(map(str, violations)))
            data = new.dumps()
            if current is None or current.dumps() != data:
                files[path] = data
            if item.conflicts:
                records = [conflict.to_json() for conflict in item.conflicts]
                files[f"{CONFLICTS_DIR}/{name}.jsonl"] = merged_conflicts(repo, parent, name, records)
            outcomes.append(ProjectOutcome(name, current, new, item.added, item.changes, item.conflicts))
        if not files:
            return None
        message = "proxy" + commit_message(outcomes).removeprefix("sync")
        return repo.write_commit(files, message, branch=branch, parent=parent)
