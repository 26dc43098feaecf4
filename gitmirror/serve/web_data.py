"""What the web pages show, gathered from git and the store: plain data for the templates.

Each function reads one commit through a ``MirrorView`` or ``MetadataRepo`` and returns dataclasses
and strings; nothing here renders or escapes (the templates do, with autoescape on), so every
upstream-provided string reaches the page only through Jinja2's escaping.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice

from packaging.version import InvalidVersion, Version

from ..model.manifest import FileEntry, ProjectManifest, project_of_path
from ..storage import metadata
from ..storage.blobs import Blobs
from ..storage.repo import Commit, MetadataRepo
from ..storage.snapshot import first_parent_line, list_tags
from ..sync.config import Config
from ..sync.unchanged import record_path
from .index import offers_files

RECENT_COMMITS = 20
PROJECTS_PER_COMMIT = 12
RECENT_PATHS = 2000
#: a release's requirements and summary the page shows (and keeps): upstream's metadata may hold any number
SHOWN_REQUIREMENTS = 200
SHOWN_SUMMARY = 1000
#: the projects a snapshot's diff page names of each kind (added, changed, removed); it counts them all
SHOWN_NAMES = 1000


def when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class CommitLine:
    commit: str
    time: str
    subject: str
    projects: list[str] = field(default_factory=list)
    more_projects: int | None = 0  # None: more than the diff read counted


def commit_line(commit: Commit, projects: list[str] | None = None, counted: bool = True) -> CommitLine:
    subject = commit.message.decode("utf-8", "replace").split("\n", 1)[0]
    shown = (projects or [])[:PROJECTS_PER_COMMIT]
    more = len(projects or []) - len(shown) if counted else None
    return CommitLine(commit.id.decode(), when(commit.commit_time), subject, shown, more)


def synced_branch(config: Config) -> str:
    """The branch syncs commit to: the review branch in review mode."""
    return config.review.branch if config.review.enabled else config.branch


def last_clean_sync(config: Config) -> float | None:
    """When the last sync of the whole configuration ended cleanly: its warm record's time, or None
    (a full sync deletes the record before it starts, so a failed or running sync leaves none)."""
    try:
        return os.stat(record_path(config, synced_branch(config))).st_mtime
    except OSError:
        return None


class PerTip(OrderedDict[tuple[object, ...], object]):
    """A small bounded memo for values that are functions of immutable commits."""

    def __init__(self, size: int = 64) -> None:
        super().__init__()
        self.size = size

    def remember(self, key: tuple[object, ...], value: object) -> object:
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)
        return value


def recent_changes(
    repo: MetadataRepo, tip: bytes | None, count: int = RECENT_COMMITS, paths_read: int = RECENT_PATHS
) -> list[CommitLine]:
    """The newest ``count`` commits of the branch with the projects each changed.

    At most ``paths_read`` changed paths of a commit are read: a first full sync changes every
    project, and the home page names a dozen of them, not all."""
    lines = []
    for commit in repo.first_parents(tip):
        parent = commit.parents[0] if commit.parents else None
        paths = list(islice(repo.changed_paths(parent, commit.id), paths_read + 1))
        changed = {project_of_path(path) for path in paths[:paths_read]}
        lines.append(commit_line(commit, sorted(name for name in changed if name), len(paths) <= paths_read))
        if len(lines) == count:
            break
    return lines


@dataclass
class FileRow:
    entry: FileEntry
    offered: bool  # listed on the simple page and downloadable

    @property
    def entry_status(self) -> str:
        if self.entry.tombstone is not None:
            return "taken down"
        if not self.offered:
            return "not offered"
        return "yanked" if self.entry.is_yanked else "served"


@dataclass(frozen=True)
class ShownMetadata:
    """What the page shows of a release's core metadata: the first requirements, their count, the
    start of the summary (kept per digest, so never more than a page's worth)."""

    requires_dist: tuple[str, ...]
    requires_total: int
    requires_python: str | None
    summary: str | None

    @classmethod
    def of(cls, parsed: metadata.CoreMetadata) -> ShownMetadata:
        summary = parsed.summary
        if summary is not None and len(summary) > SHOWN_SUMMARY:
            summary = summary[:SHOWN_SUMMARY] + "…"
        requires = parsed.requires_dist
        return cls(requires[:SHOWN_REQUIREMENTS], len(requires), parsed.requires_python, summary)


@dataclass
class Release:
    version: str
    files: list[FileRow]
    requires_dist: tuple[str, ...] | None  # the first SHOWN_REQUIREMENTS; None: no PEP 658 file in the store
    requires_total: int
    requires_python: str | None
    summary: str | None


def releases(manifest: ProjectManifest, store: Blobs, cache: PerTip) -> list[Release]:
    """The project's releases, newest first, with their core-metadata dependencies where the store
    holds a PEP 658 file of the release."""
    by_version: dict[str, list[FileEntry]] = {}
    for entry in manifest.sorted_files():
        by_version.setdefault(entry.version, []).append(entry)
    offered = offers_files(manifest)
    result = []
    for version in sorted(by_version, key=_version_order, reverse=True):
        entries = by_version[version]
        parsed = _release_metadata(entries, store, cache)
        result.append(
            Release(
                version=version,
                files=[FileRow(entry, offered and entry.served) for entry in entries],
                requires_dist=parsed.requires_dist if parsed else None,
                requires_total=parsed.requires_total if parsed else 0,
                requires_python=parsed.requires_python if parsed else None,
                summary=parsed.summary if parsed else None,
            )
        )
    return result


def _version_order(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def _release_metadata(entries: list[FileEntry], store: Blobs, cache: PerTip) -> ShownMetadata | None:
    for entry in entries:
        digest = entry.core_metadata
        if digest is None or entry.tombstone is not None:
            continue
        key = ("metadata", digest)
        if key in cache:
            return cache[key]  # type: ignore[return-value]
        if store.has(digest):
            try:
                parsed = ShownMetadata.of(metadata.parse(store.read_bytes(digest)))
            except OSError:
                continue
            cache.remember(key, parsed)
            return parsed
    return None


@dataclass(frozen=True)
class SnapshotRow:
    name: str
    commit: str
    time: str


def snapshots(repo: MetadataRepo, tip: bytes | None, branch: str) -> list[SnapshotRow]:
    """Every tag naming a state ``branch`` stood at (what ``/snapshot/<tag>/`` serves), newest first."""
    line = first_parent_line(repo, branch)
    served = [(name, commit) for name, commit in list_tags(repo) if tip is not None and line.holds(tip, commit)]
    rows = [(repo.commit(commit), name) for name, commit in served]
    rows.sort(key=lambda row: (row[0].commit_time, row[1]), reverse=True)
    return [SnapshotRow(name, commit.id.decode(), when(commit.commit_time)) for commit, name in rows]


@dataclass
class Names:
    """The first ``SHOWN_NAMES`` project names of one kind of change, and how many there are."""

    shown: list[str] = field(default_factory=list)
    total: int = 0

    def append(self, name: str) -> None:
        self.total += 1
        if len(self.shown) < SHOWN_NAMES:
            self.shown.append(name)


@dataclass
class SnapshotDiff:
    added: Names = field(default_factory=Names)
    changed: Names = field(default_factory=Names)
    removed: Names = field(default_factory=Names)


def snapshot_diff(repo: MetadataRepo, old: bytes, new: bytes | None) -> SnapshotDiff:
    """The projects whose manifests differ from ``old`` to ``new`` (the tip), the first of each kind
    named: against an old snapshot of a large mirror nearly every project changed."""
    diff = SnapshotDiff()
    for change in repo.changes(old, new):
        path = ((change.new and change.new.path) or (change.old and change.old.path) or b"").decode()
        name = project_of_path(path)
        if name is None:
            continue
        if change.old is None or change.old.path is None:
            diff.added.append(name)
        elif change.new is None or change.new.path is None:
            diff.removed.append(name)
        else:
            diff.changed.append(name)
    return diff
