"""The immutability rule, written once: which manifest changes are allowed.

``check`` compares the old and new state of one project and lists every violation. The
pre-receive hook, ``verify`` and ``sync`` all call it (through ``check_change`` for raw bytes), so
the rule that protects users is the same wherever it is enforced.

Allowed: adding a project or a release file; setting or clearing ``yanked``; setting the PEP 792
project status; marking or unmarking ``upstream-removed``; backfilling a missing core-metadata hash
or upload time; turning a file into a tombstone with a non-empty reason. Everything else is a
violation. The audit logs beside the manifests (``conflicts/``, ``marks/`` and ``takedowns/``) may
only grow by added lines: removing the record of a conflict or of a mirror decision would hide history.
A file's PEP 740 ``provenance`` digest is a backfill too: recorded once, then frozen like the file.
Which entries a tree may hold at all (regular files here, no symlinks or gitlinks) is ``gittree``'s rule.

One rule spans paths, as taken-down bytes must not come back under another name or project: within
one commit, every entry that becomes a tombstone has its sha256 in the commit's takedown index
(``gitmirror.model.takedowns``), and no served entry the commit adds has a sha256 listed there
(``takedown_candidates`` finds the entries, ``takedown_check`` judges them).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

from .decisions import MARKS_DIR
from .manifest import FileEntry, ManifestError, ProjectManifest, loads, project_of_path
from .names import SHA256_HEX
from .takedowns import TAKEDOWNS_DIR, TakedownRecord, line_problems, shard_path

#: top-level folders of append-only JSON Lines audit logs: they may only gain lines
CONFLICTS_DIR = "conflicts"
AUDIT_LOG_DIRS = (CONFLICTS_DIR, MARKS_DIR, TAKEDOWNS_DIR)

# Facts about a file that never change once recorded.
_FROZEN_FIELDS = ("version", "sha256", "size", "requires_python", "first_seen")
# Facts that may be filled in later when upstream did not know them yet, but never changed.
_BACKFILL_FIELDS = ("core_metadata", "upload_time", "provenance")


@dataclass(frozen=True)
class Violation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class UnrecordedTombstone(Violation):
    """A tombstone whose digest the commit's takedown index does not list (``verify`` tells a
    takedown made before the index existed, and backfilled since, from a fresh one)."""

    sha256: str = ""


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
    if path.split("/", 1)[0] == TAKEDOWNS_DIR:
        return _check_takedown_shard(path, old, new)
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


def _check_takedown_shard(path: str, old: bytes | None, new: bytes | None) -> list[Violation]:
    problems = _check_audit_log(path, old, new)
    if new is not None:
        problems += [Violation(path, problem) for problem in line_problems(path, old, new)]
    return problems


# (filename, sha256) of manifest entries
Entries = list[tuple[str, str]]


def takedown_candidates(old: bytes | None, new: bytes | None) -> tuple[Entries, Entries]:
    """The entries of one manifest change that the takedown rule judges: served entries that are
    new (not in ``old``), and entries that became tombstones (new ones included).

    Only the lines that differ are parsed (an added or changed entry is a line ``old`` lacks), so
    the cost follows the change, not the manifest. Malformed lines are left to ``check_change``,
    which refuses them.
    """
    old_lines = set((old or b"").splitlines())
    new_lines = set((new or b"").splitlines())
    before = {entry["filename"]: entry for entry in _file_records(old_lines - new_lines)}
    unchanged = {entry["filename"] for entry in _file_records(old_lines & new_lines)}
    served: Entries = []
    tombstoned: Entries = []
    for entry in _file_records(new_lines - old_lines):
        name, digest = entry["filename"], entry["sha256"]
        previous = before.get(name)
        if previous is None and name in unchanged:
            continue  # a duplicate line of a recorded entry: check_change refuses the manifest
        if entry.get("tombstone") is not None:
            if previous is None or previous.get("tombstone") is None:
                tombstoned.append((name, digest))
        elif previous is None:
            served.append((name, digest))
    return served, tombstoned


def _file_records(lines: set[bytes]) -> list[dict]:
    """The file lines among ``lines`` (key order is not trusted: a pushed line may have any)."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if (
            isinstance(record, dict)
            and isinstance(record.get("filename"), str)
            and isinstance(record.get("sha256"), str)
            and SHA256_HEX.match(record["sha256"])
        ):
            records.append(record)
    return records


def takedown_check(
    path: str, served: Entries, tombstoned: Entries, listed: Mapping[str, TakedownRecord]
) -> list[Violation]:
    """The takedown rule for one manifest change, given the commit's index entries of its digests."""
    problems: list[Violation] = []
    for filename, digest in served:
        record = listed.get(digest)
        if record is not None:
            problems.append(
                Violation(
                    path,
                    f"{filename} has sha256 {digest}, taken down as {record.project}/{record.filename} "
                    f"({record.reason}); taken-down bytes are never served again",
                )
            )
    for filename, digest in tombstoned:
        if digest not in listed:
            message = (
                f"{filename} was taken down but its sha256 {digest} is not in {shard_path(digest)} "
                "(a takedown records its digest in the same commit)"
            )
            problems.append(UnrecordedTombstone(path, message, digest))
    return problems
