"""The immutability rule, written once: which manifest changes are allowed.

``check`` compares the old and new state of one project and lists every violation. The
pre-receive hook, ``verify`` and ``sync`` all call it (through ``check_change`` for raw bytes), so
the rule that protects users is the same wherever it is enforced.

Allowed: adding a project or a release file; setting or clearing ``yanked``; setting the PEP 792
project status; marking or unmarking ``upstream-removed``; backfilling a missing core-metadata hash
or upload time; turning a file into a tombstone with a non-empty reason. Everything else is a
violation. The audit logs beside the manifests (``conflicts/`` and ``marks/``) may only grow by
added lines: removing the record of a conflict or of a mirror decision would hide history.
Which entries a tree may hold at all (regular files here, no symlinks or gitlinks) is ``gittree``'s rule.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .gittree import AUDIT_LOG_DIRS
from .manifest import FileEntry, ManifestError, ProjectManifest, loads, project_of_path

# Facts about a file that never change once recorded.
_FROZEN_FIELDS = ("version", "sha256", "size", "requires_python", "first_seen")
# Facts that may be filled in later when upstream did not know them yet, but never changed.
_BACKFILL_FIELDS = ("core_metadata", "upload_time")


@dataclass(frozen=True)
class Violation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def check(old: ProjectManifest | None, new: ProjectManifest | None, path: str) -> list[Violation]:
    """Every way going from ``old`` to ``new`` breaks the immutability promise (empty: allowed)."""
    problems: list[Violation] = []
    if new is None:
        if old is not None:
            problems.append(Violation(path, f"project {old.name} removed"))
        return problems
    if old is not None and old.name != new.name:
        problems.append(Violation(path, f"project name changed from {old.name} to {new.name}"))
    old_files = old.files if old else {}
    for filename, before in old_files.items():
        after = new.files.get(filename)
        if after is None:
            problems.append(Violation(path, f"entry for {filename} removed"))
            continue
        problems += _file_changes(path, before, after)
    for filename, after in new.files.items():
        if filename not in old_files and after.tombstone is not None and not after.tombstone.reason.strip():
            problems.append(Violation(path, f"tombstone of {filename} has no reason"))
    return problems


def _file_changes(path: str, before: FileEntry, after: FileEntry) -> list[Violation]:
    problems = []
    name = before.filename
    for attribute in _FROZEN_FIELDS:
        old_value, new_value = getattr(before, attribute), getattr(after, attribute)
        if old_value != new_value:
            label = attribute.replace("_", "-")
            problems.append(Violation(path, f"{label} of {name} changed from {old_value} to {new_value}"))
    for attribute in _BACKFILL_FIELDS:
        old_value, new_value = getattr(before, attribute), getattr(after, attribute)
        if old_value is not None and old_value != new_value:
            label = attribute.replace("_", "-")
            problems.append(Violation(path, f"{label} of {name} changed from {old_value} to {new_value}"))
    if before.tombstone is not None:
        if after.tombstone is None:
            problems.append(Violation(path, f"{name} was un-tombstoned"))
        elif after.tombstone != before.tombstone:
            problems.append(Violation(path, f"tombstone of {name} was rewritten"))
    elif after.tombstone is not None and not after.tombstone.reason.strip():
        problems.append(Violation(path, f"tombstone of {name} has no reason"))
    return problems


def check_change(path: str, old: bytes | None, new: bytes | None) -> list[Violation]:
    """The policy for one repository path, from raw blob bytes (as a hook or verify sees them).

    Manifests must parse and sit at their canonical path; other paths under ``projects/`` are
    refused so nothing can hide beside the manifests. Audit logs only grow. Other paths (README,
    pages) carry no served state and are not judged here.
    """
    if path.split("/", 1)[0] in AUDIT_LOG_DIRS:
        return _check_audit_log(path, old, new)
    if not path.startswith("projects/"):
        return []
    if project_of_path(path) is None:
        return [Violation(path, "not a manifest path (projects/<shard>/<normalized-name>.jsonl)")] if new else []
    try:
        old_manifest = loads(old, path) if old is not None else None
    except ManifestError:
        old_manifest = None  # an earlier bad state was reported when it was introduced
    try:
        new_manifest = loads(new, path) if new is not None else None
    except ManifestError as exc:
        return [Violation(path, f"malformed manifest: {exc}")]
    if new_manifest is not None and project_of_path(path) != new_manifest.name:
        return [Violation(path, f"manifest names project {new_manifest.name}, path says otherwise")]
    return check(old_manifest, new_manifest, path)


def _check_audit_log(path: str, old: bytes | None, new: bytes | None) -> list[Violation]:
    if old is None:
        return []
    if new is None:
        return [Violation(path, "audit log removed")]
    # Every old line must survive; merges may interleave lines both sides appended.
    kept = Counter(new.splitlines())
    kept.subtract(old.splitlines())
    if any(count < 0 for count in kept.values()):
        return [Violation(path, "audit log rewritten (lines may be added, never changed or removed)")]
    return []
