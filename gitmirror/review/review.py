"""The review report of ``BASE..HEAD`` (default ``main..incoming``): what approving would let in.

Built here, written as Markdown or JSON by ``gitmirror.review.review_report``. Per project it shows
the new releases with their files, each release's dependency changes against the release before
it (read from the core metadata the sync already stored), the marks upstream set, conflicts, and
flags worth a human look. Everything is read offline from git and the store: the report of a
commit pair is the same wherever and whenever it is produced, except for the ages it states.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..model.manifest import FileEntry, ProjectManifest, format_time, manifest_path
from ..storage import metadata
from ..storage.blobs import Blobs
from ..storage.repo import MetadataRepo, RepoError
from ..sync.config import Config
from ..sync.incoming import Change, ProjectPending, pending, uploaded_at
from ..sync.roots import roots as selection_roots
from ..sync.selection import Rules, SelectionError, rules_from
from .review_report import (
    DependencyChanges,
    FileRow,
    ProjectReport,
    ReleaseReport,
    Report,
    age_text,
    format_duration,
    size_text,
)

SIZE_JUMP_RATIO = 2.0
SIZE_JUMP_MIN_BYTES = 100_000
_WATCHED_FIELDS = (("author", "Author"), ("author_email", "Author-email"), ("home_page", "Home-page"))


def needing_reviewer(report: Report) -> set[tuple[str, str]]:
    """(project, version) of new releases with flags a human should look at before they are served."""
    return {(p.name, r.version) for p in report.projects for r in p.releases if r.needs_reviewer}


def parse_range(text: str | None, cfg: Config) -> tuple[str, str]:
    """``BASE..HEAD`` (``...`` works too); a lone ``HEAD`` means ``main..HEAD``."""
    if not text:
        return cfg.branch, cfg.review.branch
    separator = "..." if "..." in text else ".."
    if separator not in text:
        return cfg.branch, text
    base, _, head = text.partition(separator)
    if not base or not head:
        raise RepoError(f"expected a range like main..incoming, got {text!r}")
    return base, head


def build(repo: MetadataRepo, store: Blobs, cfg: Config, base: str, head: str, now: datetime | None = None) -> Report:
    now = now or datetime.now(UTC)
    base_commit, head_commit = _resolve(repo, base, cfg), _resolve(repo, head, cfg)
    items = pending(repo, base_commit, head_commit)
    projects = [_project(item, store, cfg.review.cooldown, now) for item in items]

    def served(name: str) -> bool:
        return repo.entry(base_commit, manifest_path(name)) is not None

    extras = functools.cache(lambda: requested_extras(cfg, repo, store, head_commit, projects))
    _flag_unserved_dependencies(projects, served, cfg, extras)
    new_projects: dict[str, list[str]] = {p.name: [] for p in projects if p.new_project}
    for project in projects:
        for release in project.releases:
            for requirement in release.dependencies.added + [new for _, new in release.dependencies.repinned]:
                name = _requirement_name(requirement)
                if name in new_projects:
                    new_projects[name].append(f"{project.name} {release.version}")
    return Report(
        base=base,
        head=head,
        base_commit=base_commit.decode() if base_commit else None,
        head_commit=head_commit.decode() if head_commit else None,
        generated=format_time(now.replace(microsecond=0)),
        cooldown=format_duration(cfg.review.cooldown),
        projects=projects,
        new_projects=new_projects,
    )


def _resolve(repo: MetadataRepo, rev: str, cfg: Config) -> bytes | None:
    """A branch without commits yet (main before the first approval) is the empty state."""
    if rev in (cfg.branch, cfg.review.branch) and repo.tip(rev) is None:
        if rev == cfg.review.branch and repo.tip(cfg.branch) is None:
            raise RepoError(f"there is no branch {rev}: enable review in mirror.yaml and run sync")
        return None if rev == cfg.branch else repo.tip(cfg.branch)
    return repo.resolve(rev)


def requested_extras(
    cfg: Config, repo: MetadataRepo, store: Blobs, head: bytes | None, projects: list[ProjectReport]
) -> dict[str, set[str]]:
    """The extras anything asks for, by project: the configuration's roots, the newest release of
    every project at ``head`` and the releases under review (what the sync's closure would follow)."""
    try:
        requirements = [root.requirement for root in selection_roots(cfg, cfg.projects).requirements]
    except SelectionError:  # an unreadable requirements file (the sync says so): mirror.yaml's roots
        requirements = [selection.requirement for selection in cfg.projects]
    texts = [text for project in projects for release in project.releases for text in release.requires_dist or []]
    for manifest in repo.manifests(head):
        newest = _previous_version(manifest, None)
        files = [entry for entry in manifest.files.values() if entry.version == newest and entry.served]
        found = release_metadata(store, files) if files else None
        texts += list(found.requires_dist) if found else []
    for text in texts:
        try:
            requirements.append(Requirement(text))
        except InvalidRequirement:
            continue
    wanted: dict[str, set[str]] = {}
    for requirement in requirements:
        if requirement.extras:
            wanted.setdefault(canonicalize_name(requirement.name), set()).update(requirement.extras)
    return wanted


def _flag_unserved_dependencies(
    projects: list[ProjectReport], served: Callable[[str], bool], cfg: Config, extras: Callable[[], dict[str, set[str]]]
) -> None:
    """Flag a new dependency the mirror does not serve, when it applies: its marker holds in a
    target environment with the extras asked for (``extra == "docs"`` nobody asked for does not).

    ``extras`` reads every project's newest release: asked only when a new dependency is not served.
    """
    try:
        rules = rules_from(cfg)
    except SelectionError:
        rules = Rules()
    for project in projects:
        for release in project.releases:
            for text in release.dependencies.added:
                try:
                    requirement = Requirement(text)
                except InvalidRequirement:
                    continue
                name = canonicalize_name(requirement.name)
                if served(name):
                    continue
                asked = frozenset(extras().get(project.name, ()))
                if not any(rules.marker_holds(requirement.marker, target, asked) for target in rules.target_ids):
                    continue
                release.flags.append(f"new dependency {name} is not served by this mirror yet")


def _project(item: ProjectPending, store: Blobs, cooldown: timedelta, now: datetime) -> ProjectReport:
    report = ProjectReport(name=item.name, new_project=item.main is None)
    head = item.head or item.main
    for version in item.new_versions:
        new_files = [c.entry for c in item.changes if c.kind == "new-file" and c.version == version and c.entry]
        report.releases.append(_release(version, new_files, head, store, cooldown, now))
    for change in item.changes:
        if change.kind == "new-file":
            continue
        if change.kind == "conflict":
            report.conflicts.append(change.after)
            report.flags.append(f"conflict: upstream re-published {change.filename} with other bytes")
            continue
        report.changes.append(change.describe())
        flag = _change_flag(change)
        if flag:
            report.flags.append(flag)
    return report


def _change_flag(change: Change) -> str | None:
    if change.kind == "rewrite":
        return f"{change.describe()} (the immutability policy refuses this)"
    if change.kind == "unyank":
        return f"{change.filename} un-yanked upstream: installable again once approved"
    if change.kind == "status" and change.after[0] != "active":
        return f"project marked {change.after[0]} upstream"
    if change.kind == "status":
        return f"project back to active from {change.before[0]}"
    if change.kind in ("upstream-removed", "project-upstream-removed"):
        return f"{change.filename or 'project'} removed upstream (the mirror keeps serving it)"
    return None


def _release(
    version: str,
    new_files: list[FileEntry],
    head: ProjectManifest | None,
    store: Blobs,
    cooldown: timedelta,
    now: datetime,
) -> ReleaseReport:
    previous = _previous_version(head, version)
    old_files = [e for e in head.files.values() if e.version == previous and e.served] if head and previous else []
    new_meta = release_metadata(store, new_files)
    old_meta = release_metadata(store, old_files) if old_files else None
    old_deps = list(old_meta.requires_dist) if old_meta else []
    release = ReleaseReport(
        version=version,
        previous=previous,
        files=[_row(entry) for entry in new_files],
        requires_dist=list(new_meta.requires_dist) if new_meta else None,
        dependencies=dependency_changes(old_deps, list(new_meta.requires_dist)) if new_meta else DependencyChanges(),
    )
    flags = release.flags
    moments = [uploaded_at(entry) for entry in new_files]
    youngest = max((m for m in moments if m is not None), default=None)
    if youngest is None:
        flags.append("upload time unknown")
    elif now - youngest < cooldown:
        flags.append(f"uploaded {age_text(now - youngest)} ago, within the {format_duration(cooldown)} cooldown")
    if new_meta is None:
        flags.append("core metadata not available: dependencies unknown")
    has_wheel = any(entry.filename.endswith(".whl") for entry in new_files)
    if not has_wheel and any(entry.filename.endswith(".whl") for entry in old_files):
        flags.append(f"sdist only, while {previous} shipped wheels (installing it runs a build)")
        release.needs_reviewer = True
    if new_meta and old_meta:
        for attribute, label in _WATCHED_FIELDS:
            before, after = getattr(old_meta, attribute), getattr(new_meta, attribute)
            if before != after:
                flags.append(f"{label} changed since {previous}: {before!r} -> {after!r}")
                release.needs_reviewer = True
    for entry in new_files:
        match = _comparable(entry, old_files)
        if match and entry.size >= match.size * SIZE_JUMP_RATIO and entry.size - match.size >= SIZE_JUMP_MIN_BYTES:
            flags.append(
                f"size jump: {entry.filename} is {size_text(entry.size)}, {match.filename} was {size_text(match.size)}"
            )
            release.needs_reviewer = True
    return release  # the flag for unserved dependencies is added by ``_flag_unserved_dependencies``


def _previous_version(head: ProjectManifest | None, version: str | None) -> str | None:
    """The highest other version below ``version`` (new releases count: each is diffed against its
    predecessor); with ``version`` None, the highest served version."""
    if head is None:
        return None
    try:
        current = Version(version) if version is not None else None
    except InvalidVersion:
        return None
    best: tuple[Version, str] | None = None
    for entry in head.files.values():
        try:
            candidate = Version(entry.version)
        except InvalidVersion:
            continue
        below = current is None or candidate < current
        if below and entry.served and (best is None or candidate > best[0]):
            best = (candidate, entry.version)
    return best[1] if best else None


def release_metadata(store: Blobs, files: list[FileEntry]) -> metadata.CoreMetadata | None:
    """A release's core metadata: PEP 658 file or wheel first, then the sdist's PKG-INFO."""
    ordered = sorted(files, key=lambda entry: (not entry.filename.endswith(".whl"), entry.filename))
    for entry in ordered:
        found = metadata.for_entry(store, entry)
        if found is not None:
            return found
    for entry in ordered:
        if entry.filename.endswith(".tar.gz") and store.has(entry.sha256):
            data = metadata.from_sdist(store.read_bytes(entry.sha256), entry.filename)
            if data is not None:
                return metadata.parse(data)
    return None


def dependency_changes(old: list[str], new: list[str]) -> DependencyChanges:
    """Requires-Dist added, removed, or re-pinned (same project and marker, other specifier or extras)."""
    before, after = _keyed(old), _keyed(new)
    return DependencyChanges(
        added=[after[key] for key in after if key not in before],
        removed=[before[key] for key in before if key not in after],
        repinned=[(before[key], after[key]) for key in after if key in before and before[key] != after[key]],
    )


def _keyed(requirements: list[str]) -> dict[tuple[str, str], str]:
    result: dict[tuple[str, str], str] = {}
    for text in requirements:
        try:
            parsed = Requirement(text)
            key = (canonicalize_name(parsed.name), str(parsed.marker or ""))
            result[key] = str(parsed)
        except InvalidRequirement:
            result[(text, "")] = text
    return result


def _requirement_name(text: str) -> str | None:
    try:
        return canonicalize_name(Requirement(text).name)
    except InvalidRequirement:
        return None


def _row(entry: FileEntry) -> FileRow:
    python, platform = file_kind(entry.filename)
    return FileRow(entry.filename, entry.size, python, platform, entry.upload_time, entry.yanked)


def file_kind(filename: str) -> tuple[str, str]:
    """(python tag, platform tag) of a wheel; ("source", "any") for an sdist."""
    if filename.endswith(".whl"):
        parts = filename[: -len(".whl")].split("-")
        if len(parts) >= 5:
            return parts[-3], parts[-1]
    return "source", "any"


def _comparable(entry: FileEntry, old_files: list[FileEntry]) -> FileEntry | None:
    """The previous release's file of the same kind (same wheel tags, or the sdist)."""
    kind = file_kind(entry.filename)
    for old in old_files:
        if file_kind(old.filename) == kind:
            return old
    return None
