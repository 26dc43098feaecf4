"""What the mirror holds, at a glance: projects, files, bytes, the tip, the last sync, missing blobs.

Read-only: one pass over the manifests of one commit, one at a time, and an existence check per blob,
a look inside the wheel for a PEP 658 file an older sync kept there (docs/pep658.md); ``--verify``
re-hashes instead, for a periodic integrity check of the store. In review mode syncs commit to the
review branch, not ``main``: its tip and last sync are reported too, or a stalled sync would hide.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from ..model.manifest import blobs_needed_by, format_time
from ..storage.blobs import Blobs
from ..storage.metadata import blob_problem
from ..storage.repo import MetadataRepo
from ..storage.snapshot import list_tags
from ..storage.store import MISSING

SHOWN_MISSING = 20


@dataclass
class MirrorStatus:
    branch: str
    commit: str | None = None
    commit_time: str | None = None
    commit_subject: str | None = None
    commits: int = 0
    last_sync: str | None = None
    last_sync_commit: str | None = None
    tags: int = 0
    projects: int = 0
    files: int = 0
    bytes: int = 0
    yanked: int = 0
    tombstoned: int = 0
    upstream_removed: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    blobs_needed: int = 0
    blobs_missing: list[str] = field(default_factory=list)
    blobs_damaged: list[str] = field(default_factory=list)
    review_branch: str | None = None  # review mode: where syncs commit
    review_commit: str | None = None
    review_last_sync: str | None = None
    review_last_sync_commit: str | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    def lines(self) -> list[str]:
        if self.commit is None:
            return [f"branch {self.branch}: no commits yet (run `gitmirror sync`)", *self._review_lines()]
        out = [
            f"tip        {self.branch} at {self.commit[:12]} ({self.commit_time}) {self.commit_subject}",
            f"history    {self.commits} commits, {self.tags} tags",
            f"last sync  {self.last_sync or 'never'}"
            + (f" ({self.last_sync_commit[:12]})" if self.last_sync_commit else ""),
            *self._review_lines(),
            f"projects   {self.projects}"
            + "".join(f", {count} {status}" for status, count in sorted(self.statuses.items())),
            f"files      {self.files} served ({_human(self.bytes)}), {self.yanked} yanked, "
            f"{self.tombstoned} taken down, {self.upstream_removed} removed upstream (kept)",
            f"store      {self.blobs_needed - len(self.blobs_missing) - len(self.blobs_damaged)} of "
            f"{self.blobs_needed} blobs present, {len(self.blobs_missing)} missing"
            + (f", {len(self.blobs_damaged)} DAMAGED" if self.blobs_damaged else ""),
        ]
        for label in self.blobs_missing[:SHOWN_MISSING]:
            out.append(f"  missing  {label}")
        if len(self.blobs_missing) > SHOWN_MISSING:
            out.append(f"  ... and {len(self.blobs_missing) - SHOWN_MISSING} more (`gitmirror hydrate` fetches them)")
        out += [f"  DAMAGED  {label}" for label in self.blobs_damaged]
        return out

    def _review_lines(self) -> list[str]:
        if self.review_branch is None:
            return []
        if self.review_commit is None:
            return [f"review     {self.review_branch}: no commits yet (the next `gitmirror sync` creates it)"]
        last = self.review_last_sync or "never"
        where = f" ({self.review_last_sync_commit[:12]})" if self.review_last_sync_commit else ""
        return [f"review     {self.review_branch} at {self.review_commit[:12]}, last sync {last}{where}"]


def _human(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _when(timestamp: int) -> str:
    return format_time(datetime.fromtimestamp(timestamp, UTC))


def _last_sync(repo: MetadataRepo, tip: bytes) -> tuple[str, str] | None:
    """(time, commit id) of the newest sync commit reachable from ``tip``, merges included: on the
    review branch a sync may sit behind the merge that carried ``main`` in."""
    for commit in repo.walk([tip]):
        if commit.message.startswith(b"sync:"):
            return _when(commit.commit_time), commit.id.decode()
    return None


def collect(
    repo: MetadataRepo,
    store: Blobs,
    commit: bytes | None,
    branch: str = "main",
    verify: bool = False,
    review_branch: str | None = None,
) -> MirrorStatus:
    """``review_branch``: the review branch in review mode, reported beside ``commit``."""
    status = MirrorStatus(branch=branch, review_branch=review_branch)
    review_tip = repo.tip(review_branch) if review_branch else None
    if review_tip is not None:
        status.review_commit = review_tip.decode()
        status.review_last_sync, status.review_last_sync_commit = _last_sync(repo, review_tip) or (None, None)
    if commit is None:
        return status
    tip = repo.commit(commit)
    status.commit = commit.decode()
    status.commit_time = _when(tip.commit_time)
    status.commit_subject = tip.message.decode("utf-8", "replace").split("\n", 1)[0]
    status.tags = len(list_tags(repo))
    for current in repo.first_parents(commit):  # the branch's own history
        status.commits += 1
        if status.last_sync is None and current.message.startswith(b"sync:"):
            status.last_sync, status.last_sync_commit = _when(current.commit_time), current.id.decode()
    checked: set[str] = set()  # a blob two files share is checked once
    for manifest in repo.manifests(commit):  # one pass, one manifest at a time
        status.projects += 1
        if manifest.status != "active":
            status.statuses[manifest.status] = status.statuses.get(manifest.status, 0) + 1
        for entry in manifest.files.values():
            if not entry.served:
                status.tombstoned += 1
                continue
            status.files += 1
            status.bytes += entry.size
            status.yanked += entry.is_yanked
            status.upstream_removed += entry.upstream_removed is not None
        for blob in blobs_needed_by([manifest]).values():
            if blob.sha256 not in checked:
                checked.add(blob.sha256)
                _check(status, blob_problem(store, blob, rehash=verify), blob.label)
    status.blobs_needed = len(checked)
    status.blobs_missing.sort()
    status.blobs_damaged.sort()
    return status


def _check(status: MirrorStatus, problem: str | None, label: str) -> None:
    if problem == MISSING:
        status.blobs_missing.append(label)
    elif problem is not None:
        status.blobs_damaged.append(f"{label}: {problem}")
