"""What a review report says, and how it is written: JSON for machines, Markdown for a pull request.

Apart from building it (``gitmirror.review.review``), so the shape and its renderings read and test on
their own: rendering is pure, the report of a commit pair renders the same everywhere.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any


@dataclass
class FileRow:
    filename: str
    size: int
    python: str
    platform: str
    upload_time: str | None
    yanked: bool | str


@dataclass
class DependencyChanges:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    repinned: list[tuple[str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.repinned)


@dataclass
class ReleaseReport:
    version: str
    previous: str | None
    files: list[FileRow]
    requires_dist: list[str] | None  # None: the metadata is not in the store
    dependencies: DependencyChanges
    flags: list[str] = field(default_factory=list)
    needs_reviewer: bool = False  # a flag beyond age: ``approve --policy`` leaves it to a human


@dataclass
class ProjectReport:
    name: str
    new_project: bool
    releases: list[ReleaseReport] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    @property
    def approve_command(self) -> str:
        return f"gitmirror approve {self.name}"


@dataclass
class Report:
    base: str
    head: str
    base_commit: str | None
    head_commit: str | None
    generated: str
    cooldown: str
    projects: list[ProjectReport]
    new_projects: dict[str, list[str]]  # project -> the new releases that require it

    @property
    def flag_count(self) -> int:
        return sum(len(p.flags) + sum(len(r.flags) for r in p.releases) for p in self.projects)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"


def format_duration(span: timedelta) -> str:
    """``7d``, ``12h``, ``90m``: the largest unit that states ``span`` exactly, as ``mirror.yaml`` writes it."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def size_text(size: int) -> str:
    """A size for people: ``2.5 MB``, ``800 B``."""
    for unit, scale in (("MB", 1_000_000), ("kB", 1_000)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def age_text(span: timedelta) -> str:
    """An age for people: hours up to two days, then days."""
    hours = span.total_seconds() / 3600
    if hours < 48:
        return f"{max(hours, 0):.0f} hours"
    return f"{hours / 24:.0f} days"


def to_markdown(report: Report) -> str:
    """The report as Markdown a reviewer pastes into a pull request."""
    lines = [f"# gitmirror review: `{report.base}..{report.head}`", ""]
    base = (report.base_commit or "empty")[:12]
    head = (report.head_commit or "empty")[:12]
    releases = sum(len(p.releases) for p in report.projects)
    files = sum(len(r.files) for p in report.projects for r in p.releases)
    lines.append(
        f"{len(report.projects)} projects with pending changes, {releases} new releases, {files} new files, "
        f"{report.flag_count} flags (`{base}..{head}`, cooldown {report.cooldown}, generated {report.generated})."
    )
    if not report.projects:
        lines += ["", "Nothing is pending: everything on the review branch is already served."]
        return "\n".join(lines) + "\n"
    flagged = [(p.name, r.version, flag) for p in report.projects for r in p.releases for flag in r.flags] + [
        (p.name, None, flag) for p in report.projects for flag in p.flags
    ]
    if flagged:
        lines += ["", "## Flags", ""]
        lines += [f"- **{name}{' ' + version if version else ''}**: {flag}" for name, version, flag in flagged]
    if report.new_projects:
        lines += ["", "## New projects", ""]
        for name, dependents in report.new_projects.items():
            why = f" (required by {', '.join(dependents)})" if dependents else ""
            lines.append(f"- `{name}`{why}")
    for project in report.projects:
        lines += ["", f"## {project.name}{' (new project)' if project.new_project else ''}"]
        for release in project.releases:
            lines += _release_markdown(release)
        if project.changes:
            lines += ["", "### Other changes", ""] + [f"- {change}" for change in project.changes]
        if project.conflicts:
            lines += ["", "### Conflicts", ""]
            for record in project.conflicts:
                lines.append(
                    f"- `{record.get('filename')}`: the mirror keeps `{str(record.get('recorded-sha256'))[:16]}`, "
                    f"upstream now has `{str(record.get('upstream-sha256'))[:16]}` (detected {record.get('detected')})"
                )
        lines += ["", f"Approve: `{project.approve_command}`"]
    return "\n".join(lines) + "\n"


def _release_markdown(release: ReleaseReport) -> list[str]:
    against = f"previous {release.previous}" if release.previous else "first release in the mirror"
    lines = [
        "",
        f"### {release.version} ({against})",
        "",
        "| file | size | python | platform | uploaded |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in release.files:
        yanked = " (yanked)" if row.yanked is not False else ""
        cells = [f"`{row.filename}`{yanked}", size_text(row.size), row.python, row.platform, row.upload_time or "?"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    deps = release.dependencies
    if release.requires_dist is None:
        lines.append("Dependencies: unknown (no core metadata in the store).")
    elif not release.previous:
        listed = ", ".join(f"`{r}`" for r in release.requires_dist) or "none"
        lines.append(f"Requires-Dist: {listed}")
    elif not deps:
        lines.append(f"Dependencies: unchanged since {release.previous}.")
    else:
        lines.append(f"Dependency changes since {release.previous}:")
        lines += [f"- added `{r}`" for r in deps.added]
        lines += [f"- removed `{r}`" for r in deps.removed]
        lines += [f"- re-pinned `{old}` -> `{new}`" for old, new in deps.repinned]
    if release.flags:
        lines += [""] + [f"- **flag**: {flag}" for flag in release.flags]
    return lines
