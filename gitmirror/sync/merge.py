"""The pure rules of a sync: how upstream's page folds into a recorded manifest, and what a run says.

Pure (no I/O): every immutability rule - conflicts kept, upstream removals marked, yanks and
status followed unless this mirror decided otherwise, taken-down bytes skipped - is testable in
process, and the run (``gitmirror.sync.sync``) only applies what these functions decide.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from ..model.decisions import LocalDecisions
from ..model.manifest import FileEntry, ProjectManifest
from ..model.page import RemoteFile, RemoteProject
from ..model.takedowns import TakedownRecord
from ..model.text import printable

EXIT_OK, EXIT_ERRORS, EXIT_CONFLICTS = 0, 1, 3
KNOWN_CONFLICT = " (conflict recorded before)"
#: changes a commit message lists one per line; beyond, it gives counts and the first ones
LISTED_CHANGES = 50


class FileChoice(Protocol):
    """Which new files of a project to mirror: a ``mirror.yaml`` entry or a run's ``ProjectChoice``."""

    def wants_file(self, remote_file: RemoteFile) -> bool: ...


@dataclass(frozen=True)
class Conflict:
    """Upstream now offers other bytes under a filename the mirror already serves."""

    project: str
    filename: str
    recorded_sha256: str
    recorded_size: int
    upstream_sha256: str
    upstream_size: int | None
    detected: str

    @property
    def text(self) -> str:
        upstream, kept = self.upstream_sha256, self.recorded_sha256
        return f"{self.project}: {self.filename} is {upstream} upstream, the mirror keeps {kept}"

    def to_json(self) -> dict[str, object]:
        return {
            "filename": self.filename,
            "recorded-sha256": self.recorded_sha256,
            "recorded-size": self.recorded_size,
            "upstream-sha256": self.upstream_sha256,
            "upstream-size": self.upstream_size,
            "detected": self.detected,
        }


@dataclass
class ProjectOutcome:
    name: str
    old: ProjectManifest | None = None
    new: ProjectManifest | None = None
    added: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # reported, never a failure (taken-down bytes skipped)
    #: filename -> type of the legacy files upstream lists that the mirror does not take
    skipped: dict[str, str] = field(default_factory=dict)
    #: conflicts ``conflicts/<project>.jsonl`` records already: warned about, not a failure
    known_conflicts: list[Conflict] = field(default_factory=list)

    @property
    def skipped_note(self) -> str | None:
        """One line for all of the project's legacy files, e.g. ``flask: skipped 14 legacy files (.egg 10, .exe 4)``."""
        if not self.skipped:
            return None
        kinds = sorted(Counter(self.skipped.values()).items(), key=lambda item: (-item[1], item[0]))
        counts = ", ".join(f"{kind} {count}" for kind, count in kinds)
        return f"{self.name}: skipped {_count(len(self.skipped), 'legacy file')} ({counts})"


@dataclass
class SyncResult:
    outcomes: list[ProjectOutcome]
    commit: bytes | None = None

    @property
    def files_added(self) -> int:
        return sum(len(outcome.added) for outcome in self.outcomes)

    @property
    def errors(self) -> list[str]:
        return [error for outcome in self.outcomes for error in outcome.errors]

    @property
    def conflicts(self) -> list[Conflict]:
        return [conflict for outcome in self.outcomes for conflict in outcome.conflicts]

    @property
    def exit_code(self) -> int:
        if self.conflicts:
            return EXIT_CONFLICTS
        return EXIT_ERRORS if self.errors else EXIT_OK

    def summary(self) -> str:
        changed = sum(1 for outcome in self.outcomes if outcome.added or outcome.changes)
        text = f"{len(self.outcomes)} projects checked, {changed} changed, {self.files_added} files added"
        if self.conflicts:
            text += f", {len(self.conflicts)} CONFLICTS"
        if self.errors:
            text += f", {len(self.errors)} errors"
        if self.commit:
            text += f"; commit {self.commit.decode()[:12]}"
        else:
            text += "; nothing to commit"
        return text


def merge(
    old: ProjectManifest | None,
    remote: RemoteProject,
    selection: FileChoice,
    seen_at: str,
    local: LocalDecisions | None = None,
    taken_down: Mapping[str, TakedownRecord] | None = None,
    pep708: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> tuple[ProjectManifest, list[RemoteFile], ProjectOutcome]:
    """Fold an upstream page into the recorded manifest, as the immutability policy allows.

    ``local`` holds this mirror's own yanks and status (``gitmirror yank``/``deprecate``): they win
    over upstream's state, so the next sync does not undo an operator's decision. ``taken_down``
    holds the takedown index's records of the page's digests: a new file with such bytes is not
    mirrored (a note says why), whatever its name or project. ``pep708``: the PEP 708 ``tracks`` and
    ``alternate-locations`` the project's pages carry whatever upstream says (a hosted project's);
    None: upstream's own, passed through.

    Returns the manifest without the new files (they are added only once their blobs are safely
    stored), the new files to download, and what changed. Pure: no I/O, so every rule is testable.
    """
    outcome = ProjectOutcome(name=remote.name, old=old, errors=list(remote.rejected), skipped=dict(remote.skipped))
    manifest = old or ProjectManifest(name=remote.name)
    if manifest.upstream_removed:
        manifest = replace(manifest, upstream_removed=None)
        outcome.changes.append("back upstream")
    status, status_reason = local.status if local and local.status else (remote.status, remote.status_reason)
    if (status, status_reason) != (manifest.status, manifest.status_reason):
        manifest = replace(manifest, status=status, status_reason=status_reason)
        reason = f" ({printable(status_reason)})" if status_reason else ""
        outcome.changes.append(f"status {status}{reason}")
    if pep708 is None:
        pep708 = (tuple(remote.tracks), tuple(remote.alternate_locations))
    if pep708 != (manifest.tracks, manifest.alternate_locations):
        manifest = replace(manifest, tracks=pep708[0], alternate_locations=pep708[1])
        outcome.changes.append("PEP 708 tracks and alternate-locations changed")
    upstream_names = {remote_file.filename for remote_file in remote.files}
    wanted: list[RemoteFile] = []
    for remote_file in remote.files:
        recorded = manifest.files.get(remote_file.filename)
        if recorded is None:
            if selection.wants_file(remote_file):
                record = taken_down.get(remote_file.sha256) if taken_down else None
                if record is None:
                    wanted.append(remote_file)
                else:
                    outcome.notes.append(
                        f"{remote_file.filename} not mirrored: its sha256 {remote_file.sha256} was taken down "
                        f"as {record.project}/{record.filename} ({record.reason})"
                    )
            continue
        if recorded.sha256 != remote_file.sha256:
            outcome.conflicts.append(
                Conflict(
                    project=remote.name,
                    filename=recorded.filename,
                    recorded_sha256=recorded.sha256,
                    recorded_size=recorded.size,
                    upstream_sha256=remote_file.sha256,
                    upstream_size=remote_file.size,
                    detected=seen_at,
                )
            )
            continue
        updated = _follow_upstream(recorded, remote_file)
        if local and recorded.filename in local.yanked:
            updated = replace(updated, yanked=local.yanked[recorded.filename])
        if updated != recorded:
            outcome.changes.append(_describe_change(recorded, updated))
            manifest = manifest.with_file(updated)
    for entry in list(manifest.files.values()):
        if entry.filename not in upstream_names and not entry.upstream_removed:
            manifest = manifest.with_file(replace(entry, upstream_removed=seen_at))
            outcome.changes.append(f"{entry.filename} removed upstream (kept)")
    return manifest, wanted, outcome


def _follow_upstream(recorded: FileEntry, remote_file: RemoteFile) -> FileEntry:
    """The changes upstream may make to a recorded file: yank state, backfills, reappearance."""
    return replace(
        recorded,
        yanked=remote_file.yanked,
        upstream_removed=None,
        core_metadata=recorded.core_metadata or remote_file.core_metadata,
        upload_time=recorded.upload_time or remote_file.upload_time,
    )


def _describe_change(before: FileEntry, after: FileEntry) -> str:
    if before.yanked != after.yanked:
        if after.is_yanked:
            reason = f" ({printable(after.yanked_reason)})" if after.yanked_reason else ""
            return f"{after.filename} yanked{reason}"
        return f"{after.filename} unyanked"
    if before.upstream_removed and not after.upstream_removed:
        return f"{after.filename} back upstream"
    return f"{after.filename} metadata backfilled"


def removed_upstream(old: ProjectManifest, seen_at: str) -> tuple[ProjectManifest, ProjectOutcome]:
    """Upstream dropped the whole project: keep serving everything, marked as such."""
    outcome = ProjectOutcome(name=old.name, old=old)
    if old.upstream_removed:
        return old, outcome
    files = {
        name: entry if entry.upstream_removed else replace(entry, upstream_removed=seen_at)
        for name, entry in old.files.items()
    }
    outcome.changes.append("project removed upstream (kept)")
    return replace(old, files=files, upstream_removed=seen_at), outcome


def new_entry(remote_file: RemoteFile, seen_at: str, has_metadata: bool, size: int) -> FileEntry:
    return FileEntry(
        filename=remote_file.filename,
        version=remote_file.version,
        sha256=remote_file.sha256,
        size=size,
        requires_python=remote_file.requires_python,
        upload_time=remote_file.upload_time,
        yanked=remote_file.yanked,
        core_metadata=remote_file.core_metadata if has_metadata else None,
        first_seen=seen_at,
    )


def recorded_conflicts(log: bytes) -> set[tuple[str, str]]:
    """(filename, upstream sha256) pairs a ``conflicts/<project>.jsonl`` log already records."""
    return {
        (record["filename"], record["upstream-sha256"])
        for record in (json.loads(line) for line in log.decode().splitlines() if line)
    }


def commit_message(outcomes: list[ProjectOutcome]) -> str:
    """A subject a reviewer can scan in ``git log --oneline``, and a body of the changes: every one
    when there are at most ``LISTED_CHANGES``, else counts and the first of them (conflicts first).

    Bounded because every reader of the commit (the server, the hook, the next commit) parses the
    whole message, and a full-index sync adds millions of files; the diff is the complete list.
    """
    touched = [outcome for outcome in outcomes if outcome.added or outcome.changes or outcome.conflicts]
    files = sum(len(outcome.added) for outcome in touched)
    new_projects = sum(1 for outcome in touched if outcome.old is None)
    subject = f"sync: {_count(len(touched), 'project')}, {_count(files, 'file')} added"
    if new_projects:
        subject += f" ({new_projects} new)"
    listed: list[str] = []  # every project's lines, its conflicts last
    conflicts: list[str] = []
    for outcome in sorted(touched, key=lambda item: item.name):
        found = [f"{outcome.name}: CONFLICT {conflict.filename}" for conflict in outcome.conflicts]
        conflicts += found[: LISTED_CHANGES + 1 - len(conflicts)]
        if len(listed) <= LISTED_CHANGES:
            listed += [f"{outcome.name}: + {filename}" for filename in sorted(outcome.added)]
            listed += [f"{outcome.name}: {change}" for change in outcome.changes] + found
    if len(listed) <= LISTED_CHANGES:
        return subject + "\n\n" + "\n".join(listed) + "\n"
    changes = sum(len(outcome.changes) for outcome in touched)
    conflicted = sum(len(outcome.conflicts) for outcome in touched)
    total = files + changes + conflicted
    shown = (conflicts + [line for line in listed if ": CONFLICT " not in line])[:LISTED_CHANGES]
    summary = (
        f"{_count(total, 'change')}: {_count(files, 'file')} added, {_count(changes, 'other change')}, "
        f"{_count(conflicted, 'conflict')}; the first {len(shown)} (`git diff --stat` lists every manifest):"
    )
    return subject + "\n\n" + summary + "\n" + "\n".join(shown) + f"\n... and {total - len(shown)} more\n"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
