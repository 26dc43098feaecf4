"""What the mirror holds, at a glance: projects, files, bytes, the tip, the last sync, missing blobs.

Read-only: one pass over the manifests of one commit, one at a time, and an existence check per blob,
a look inside the wheel for a PEP 658 file an older sync kept there (docs/pep658.md); ``--verify``
re-hashes instead, for a periodic integrity check of the store. In review mode syncs commit to the
review branch, not ``main``: its tip and last sync are reported too, or a stalled sync would hide.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

from ..model.manifest import NeededBlob, ProjectManifest, blobs_needed_by, format_time
from ..serve.root_index import changed_projects
from ..storage.blobs import Blobs
from ..storage.metadata import blob_problem
from ..storage.repo import MetadataRepo
from ..storage.snapshot import list_tags
from ..storage.store import MISSING, BlobStore
from .status_counts import Counted, Row, StatusCounts, blob_of, changed_dirs, row_of

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
    """``review_branch``: the review branch in review mode, reported beside ``commit``.

    A directory store keeps the counts of the last commit counted (``status_counts``): from them a
    status reads only the manifests that changed since; ``verify`` re-hashes every blob, a full pass.
    """
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
    if isinstance(store, BlobStore) and not verify:
        counts = StatusCounts(store.root, TOTALS)
        try:
            counted = following(_copy(status), repo, store, commit, counts) or _count_all(
                _copy(status), repo, store, commit, False, counts
            )
        finally:
            counts.close()
        if counted is not None:
            return counted
    counted = _count_all(status, repo, store, commit, verify, None)
    assert counted is not None, "a count that records nothing always ends"
    return counted


def _copy(status: MirrorStatus) -> MirrorStatus:
    """``status`` with counts of its own, for an attempt that may be given up."""
    return replace(status, statuses={}, blobs_missing=[], blobs_damaged=[])


def _count_all(
    status: MirrorStatus, repo: MetadataRepo, store: Blobs, commit: bytes, verify: bool, counts: StatusCounts | None
) -> MirrorStatus | None:
    """Every manifest of ``commit``, one at a time, and every blob they need; with ``counts``, recorded
    there as they are counted (None when that fails: then count without)."""
    _history(status, repo, commit, None)
    dirs = counts.dir_stats() if counts is not None else None
    checked: dict[str, str] = {}  # a blob two files share is checked once; the project naming it
    shared: list[str] = []

    def rows() -> Iterator[Row]:
        for manifest in repo.manifests(commit):  # one pass, one manifest at a time
            _add(status, manifest, 1)
            for blob in blobs_needed_by([manifest]).values():
                owner = checked.get(blob.sha256)
                if owner is not None:
                    if owner != manifest.name:
                        shared.append(blob.sha256)
                    continue
                checked[blob.sha256] = manifest.name
                if verify:
                    _check(status, blob_problem(store, blob, rehash=True), blob.label)
                    continue
                missing, in_wheel = _presence(store, blob)
                if missing:
                    status.blobs_missing.append(blob.label)
                yield row_of(blob, missing, in_wheel)
        status.blobs_needed = len(checked)

    if counts is None or dirs is None:
        for _ in rows():
            pass
    elif not counts.save(None, commit.decode(), lambda: None if shared else _totals(status), dirs, (), rows()):
        if not shared:
            return None
        counts.forget()  # its totals would need every manifest naming a blob two projects share
    status.blobs_needed = len(checked)
    status.blobs_missing.sort()
    status.blobs_damaged.sort()
    return status


def following(
    status: MirrorStatus, repo: MetadataRepo, store: BlobStore, commit: bytes, counts: StatusCounts
) -> MirrorStatus | None:
    """The status of ``commit`` from the counts of the last commit counted and the changes since:
    the manifests the tree diff names, and the blobs of the store directories whose state moved.
    None when there are no counts to follow, or they cannot serve (a blob two projects share)."""
    before = counts.load()
    if before is None or repo.peel(before.commit.encode()) != before.commit.encode():
        return None  # nothing counted, or in another repository sharing the store
    dirs = counts.dir_stats()
    if dirs is None:
        return None
    for name in TOTALS:
        setattr(status, name, before.totals[name])
    status.statuses = dict(before.totals["statuses"])  # type: ignore[call-overload]
    _history(status, repo, commit, before)
    old = before.commit.encode()
    changed, removed = changed_projects(repo, old, commit) if old != commit else (set(), set())
    touched = changed | removed
    fresh: dict[str, Row] = {}  # the blobs checked now, by sha256
    for name in sorted(touched):
        previous = repo.manifest(old, name)
        if previous is not None:
            _add(status, previous, -1)
        current = repo.manifest(commit, name) if name in changed else None
        if current is None:
            continue
        _add(status, current, 1)
        for blob in blobs_needed_by([current]).values():
            owner = fresh[blob.sha256][1] if blob.sha256 in fresh else counts.owner(blob.sha256)
            if owner not in (None, name) and owner not in removed:
                return None
            fresh[blob.sha256] = row_of(blob, *_presence(store, blob))
    gone = list(counts.rows_of(touched))
    for row in counts.rows_in(changed_dirs(before.dirs, dirs)):
        if row[1] not in touched and row[0] not in fresh:
            fresh[row[0]] = row_of(blob_of(row), *_presence(store, blob_of(row)))
    missing = {row[0]: row for row in counts.missing() if row[1] not in touched}
    missing.update((row[0], row) for row in fresh.values())
    status.blobs_missing = sorted(f"{row[1]}/{row[2]}" for row in missing.values() if row[5])
    status.blobs_needed += sum(row[1] in touched for row in fresh.values()) - len(gone)
    counts.save(before.commit, commit.decode(), lambda: _totals(status), dirs, touched, fresh.values())
    return status


#: the counts a commit's record keeps (``commits`` and ``last_sync*``: of the branch's history)
TOTALS = (
    "blobs_needed",
    "projects",
    "files",
    "bytes",
    "yanked",
    "tombstoned",
    "upstream_removed",
    "statuses",
    "commits",
    "last_sync",
    "last_sync_commit",
)


def _totals(status: MirrorStatus) -> dict[str, object]:
    return {name: getattr(status, name) for name in TOTALS}


def _add(status: MirrorStatus, manifest: ProjectManifest, sign: int) -> None:
    """Count ``manifest`` in (``sign`` 1) or out (-1)."""
    status.projects += sign
    if manifest.status != "active":
        count = status.statuses.get(manifest.status, 0) + sign
        if count:
            status.statuses[manifest.status] = count
        else:
            status.statuses.pop(manifest.status, None)
    for entry in manifest.files.values():
        if not entry.served:
            status.tombstoned += sign
            continue
        status.files += sign
        status.bytes += sign * entry.size
        status.yanked += sign * entry.is_yanked
        status.upstream_removed += sign * (entry.upstream_removed is not None)


def _history(status: MirrorStatus, repo: MetadataRepo, commit: bytes, before: Counted | None) -> None:
    """Commits on the branch's own history and its last sync, down to the commit ``before`` counted."""
    status.commits, status.last_sync, status.last_sync_commit = 0, None, None
    for current in repo.first_parents(commit):
        if before is not None and current.id.decode() == before.commit:
            status.commits += int(before.totals["commits"])  # type: ignore[call-overload]
            if status.last_sync is None:
                status.last_sync = before.totals["last_sync"]  # type: ignore[assignment]
                status.last_sync_commit = before.totals["last_sync_commit"]  # type: ignore[assignment]
            return
        status.commits += 1
        if status.last_sync is None and current.message.startswith(b"sync:"):
            status.last_sync, status.last_sync_commit = _when(current.commit_time), current.id.decode()


def _presence(store: Blobs, blob: NeededBlob) -> tuple[bool, bool]:
    """(missing, read out of its wheel) for a blob, without re-hashing."""
    if store.has(blob.sha256):
        return False, False
    problem = blob_problem(store, blob, rehash=False)
    return problem == MISSING, problem is None


def _check(status: MirrorStatus, problem: str | None, label: str) -> None:
    if problem == MISSING:
        status.blobs_missing.append(label)
    elif problem is not None:
        status.blobs_damaged.append(f"{label}: {problem}")
