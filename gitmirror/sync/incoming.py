"""What the review branch holds that ``main`` does not serve yet, and keeping that branch current.

Review mode syncs into a branch nobody installs from (``incoming``). A change is *pending* when
that branch made it since its merge base with ``main`` and ``main`` does not have it yet. Comparing
three states instead of two is what keeps a yank committed on ``main`` while ``incoming`` waited
from showing up (or being approved) as an "unyank", and it is also how ``main``'s own changes are
merged forward into ``incoming`` so the next review starts from what ``main`` serves.

The same two functions serve both directions: ``project_changes(base, target, source)`` lists what
``source`` changed since ``base`` that ``target`` lacks, and ``apply`` replays those changes onto
``target``. Whatever comes out is still judged by ``policy.check`` before it is committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..model.manifest import (
    PROJECTS_DIR,
    FileEntry,
    ProjectManifest,
    Tombstone,
    loads,
    manifest_path,
    now,
    parse_time,
    project_of_path,
)
from ..model.policy import CONFLICTS_DIR, check
from ..model.takedowns import TAKEDOWNS_DIR, TakedownRecord, is_shard_path, parse
from ..model.text import printable
from ..storage.gittree import FILE_MODES, TREE
from ..storage.repo import MetadataRepo, RepoError

_MISSING = object()
# Facts of a recorded file that sync may change later (everything else is frozen).
_MUTABLE_FIELDS = ("yanked", "upstream_removed", "core_metadata", "upload_time", "tombstone", "provenance")
_FROZEN_FIELDS = ("version", "sha256", "size", "requires_python", "first_seen")


@dataclass(frozen=True, eq=False)
class Change:
    """One approvable unit: a new file, one changed fact of a file, or one project-level fact.

    Compared by identity: two projects can hold equal-looking changes that are approved separately.
    """

    project: str
    kind: str  # new-file, yank, unyank, upstream-removed, back-upstream, backfill, tombstone, rewrite,
    #            status, project-upstream-removed, project-back-upstream, conflict, pep708
    filename: str | None = None
    version: str | None = None
    field: str | None = None
    before: Any = None
    after: Any = None

    @property
    def entry(self) -> FileEntry | None:
        return self.after if isinstance(self.after, FileEntry) else None

    def describe(self) -> str:
        """One line for commit messages and reports (upstream's reasons escaped onto it)."""
        return printable(self._described())

    def _described(self) -> str:
        if self.kind == "new-file":
            return f"+ {self.filename}"
        if self.kind == "yank":
            reason = f" ({self.after})" if isinstance(self.after, str) else ""
            return f"yank {self.filename}{reason}"
        if self.kind in ("unyank", "back-upstream", "upstream-removed"):
            return f"{self.kind} {self.filename}"
        if self.kind == "backfill":
            return f"backfill {self.field.replace('_', '-') if self.field else ''} of {self.filename}"
        if self.kind == "tombstone":
            return f"tombstone {self.filename} ({self.after.reason})"
        if self.kind == "rewrite":
            return f"REWRITE {self.field} of {self.filename}: {self.before} -> {self.after}"
        if self.kind == "status":
            status, reason = self.after
            return f"status {status}" + (f" ({reason})" if reason else "")
        if self.kind == "pep708":
            tracks, alternates = self.after
            return f"PEP 708 tracks {list(tracks)}, alternate-locations {list(alternates)}"
        if self.kind == "conflict":
            return f"conflict {self.after.get('filename')} (upstream {str(self.after.get('upstream-sha256'))[:12]})"
        return self.kind.replace("project-", "project ")


@dataclass
class ProjectPending:
    name: str
    main: ProjectManifest | None
    head: ProjectManifest | None
    changes: list[Change] = field(default_factory=list)

    @property
    def new_versions(self) -> list[str]:
        versions: dict[str, None] = {}
        for change in self.changes:
            if change.kind == "new-file" and change.version is not None:
                versions.setdefault(change.version, None)
        return list(versions)


def _field_change(
    name: str, base: FileEntry | None, target: FileEntry, source: FileEntry, attribute: str
) -> Change | None:
    before, after = getattr(target, attribute), getattr(source, attribute)
    if before == after:
        return None
    original = getattr(base, attribute) if base is not None else _MISSING
    if original is not _MISSING and after == original:
        return None  # only the target changed it: nothing to bring over
    if attribute == "yanked":
        kind = "yank" if after is not False else "unyank"
    elif attribute == "upstream_removed":
        kind = "upstream-removed" if after else "back-upstream"
    elif attribute in ("core_metadata", "upload_time", "provenance"):
        kind = "backfill" if before is None else "rewrite"
    else:
        kind = "tombstone" if before is None else "rewrite"
    return Change(name, kind, source.filename, source.version, attribute, before, after)


def project_changes(
    name: str,
    base: ProjectManifest | None,
    target: ProjectManifest | None,
    source: ProjectManifest | None,
) -> list[Change]:
    """What ``source`` changed since ``base`` that ``target`` does not have, in manifest order."""
    if source is None:
        return []  # a project deleted on the source side is never carried over (policy forbids it)
    changes: list[Change] = []
    source_header = (source.status, source.status_reason)
    target_header = (target.status, target.status_reason) if target else ("active", None)
    if source_header != target_header and (base is None or source_header != (base.status, base.status_reason)):
        changes.append(Change(name, "status", before=target_header, after=source_header))
    target_removed = target.upstream_removed if target else None
    if source.upstream_removed != target_removed and (base is None or source.upstream_removed != base.upstream_removed):
        kind = "project-upstream-removed" if source.upstream_removed else "project-back-upstream"
        after = source.upstream_removed
        changes.append(Change(name, kind, field="upstream_removed", before=target_removed, after=after))
    source_pep708 = (source.tracks, source.alternate_locations)
    target_pep708 = (target.tracks, target.alternate_locations) if target else ((), ())
    if source_pep708 != target_pep708 and (base is None or source_pep708 != (base.tracks, base.alternate_locations)):
        changes.append(Change(name, "pep708", before=target_pep708, after=source_pep708))
    target_files = target.files if target else {}
    base_files = base.files if base else {}
    for entry in source.sorted_files():
        recorded = target_files.get(entry.filename)
        if recorded is None:
            changes.append(Change(name, "new-file", entry.filename, entry.version, after=entry))
            continue
        for attribute in _FROZEN_FIELDS:
            if getattr(recorded, attribute) != getattr(entry, attribute):
                changes.append(
                    Change(
                        name,
                        "rewrite",
                        entry.filename,
                        entry.version,
                        attribute,
                        getattr(recorded, attribute),
                        getattr(entry, attribute),
                    )
                )
        for attribute in _MUTABLE_FIELDS:
            change = _field_change(name, base_files.get(entry.filename), recorded, entry, attribute)
            if change is not None:
                changes.append(change)
    return changes


def apply(target: ProjectManifest | None, name: str, changes: Iterable[Change]) -> ProjectManifest:
    """Replay changes onto a manifest (conflict records live elsewhere and are skipped here)."""
    result = target or ProjectManifest(name=name)
    for change in changes:
        if change.kind == "new-file" and change.entry is not None:
            result = result.with_file(change.entry)
        elif change.kind == "status":
            status, reason = change.after
            result = replace(result, status=status, status_reason=reason)
        elif change.kind in ("project-upstream-removed", "project-back-upstream"):
            result = replace(result, upstream_removed=change.after)
        elif change.kind == "pep708":
            result = replace(result, tracks=change.after[0], alternate_locations=change.after[1])
        elif change.filename is not None and change.field is not None:
            entry = result.files.get(change.filename)
            if entry is not None:
                result = result.with_file(replace(entry, **{change.field: change.after}))
    return result


def conflict_records(repo: MetadataRepo, commit: bytes | None, name: str) -> list[dict[str, Any]]:
    data = repo.read_path(commit, f"{CONFLICTS_DIR}/{name}.jsonl") or b""
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def _conflict_blobs(repo: MetadataRepo, commit: bytes | None) -> dict[str, bytes]:
    return {
        name[: -len(".jsonl")]: sha
        for name, (mode, sha) in repo.list_dir(commit, CONFLICTS_DIR).items()
        if name.endswith(".jsonl") and mode != TREE
    }


def pending(repo: MetadataRepo, target: bytes | None, source: bytes | None) -> list[ProjectPending]:
    """Per project, what ``source`` (incoming) holds that ``target`` (main) does not serve yet."""
    base = repo.merge_base(target, source)
    result: dict[str, ProjectPending] = {}
    for name, blob_id in _changed_manifests(repo, target, source):
        path = manifest_path(name)
        head = loads(repo.blob(blob_id, path), path)
        main = repo.manifest(target, name)
        changes = project_changes(name, repo.manifest(base, name), main, head)
        if changes:
            result[name] = ProjectPending(name, main, head, changes)
    target_conflicts = _conflict_blobs(repo, target)
    for name, blob_id in _conflict_blobs(repo, source).items():
        if target_conflicts.get(name) == blob_id:
            continue
        known = {json.dumps(record, sort_keys=True) for record in conflict_records(repo, target, name)}
        records = [r for r in conflict_records(repo, source, name) if json.dumps(r, sort_keys=True) not in known]
        if not records:
            continue
        item = result.get(name) or ProjectPending(name, repo.manifest(target, name), repo.manifest(source, name))
        item.changes += [Change(name, "conflict", record.get("filename"), after=record) for record in records]
        result[name] = item
    return [result[name] for name in sorted(result)]


def _changed_manifests(repo: MetadataRepo, target: bytes | None, source: bytes | None) -> Iterator[tuple[str, bytes]]:
    """(project, manifest blob id at ``source``) for every manifest ``source`` holds with other bytes
    than ``target``: the pruned tree diff, so the cost follows the change, not the repository."""
    for change in repo.changes(target, source):
        if change.new is not None and change.new.mode in FILE_MODES:
            name = project_of_path(change.new.path.decode())
            if name is not None:
                yield name, change.new.sha


def merged_conflicts(repo: MetadataRepo, target: bytes | None, name: str, records: list[dict[str, Any]]) -> bytes:
    """``conflicts/<name>.jsonl`` of ``target`` with the given records appended once each."""
    existing = repo.read_path(target, f"{CONFLICTS_DIR}/{name}.jsonl") or b""
    known = {json.dumps(record, sort_keys=True) for record in conflict_records(repo, target, name)}
    lines = []
    for record in records:
        key = json.dumps(record, sort_keys=True)
        if key not in known:
            known.add(key)
            lines.append(json.dumps(record, separators=(",", ":")))
    return existing + ("\n".join(lines) + "\n").encode() if lines else existing


def catch_up(repo: MetadataRepo, main: str, incoming: str) -> str:
    """Bring ``main``'s state into the review branch (create, fast-forward or merge); caller holds the lock.

    Afterwards ``main`` is an ancestor of ``incoming``, so the next review and sync start from what
    ``main`` serves, and a reviewer's ``git merge incoming`` is a plain fast-forward.
    """
    main_tip, incoming_tip = repo.tip(main), repo.tip(incoming)
    ref = repo.branch_ref(incoming)
    if main_tip is None:
        return "nothing on main yet"
    if incoming_tip is None:
        if not repo.move_ref(ref, None, main_tip):
            raise RepoError(f"branch {incoming} appeared while it was being created; run again")
        return f"created {incoming} at {main}"
    if repo.is_ancestor(main_tip, incoming_tip):
        return f"{incoming} already contains {main}"
    if repo.is_ancestor(incoming_tip, main_tip):
        if not repo.move_ref(ref, incoming_tip, main_tip):
            raise RepoError(f"branch {incoming} moved while it was being updated; run again")
        return f"fast-forwarded {incoming} to {main}"
    base = repo.merge_base(main_tip, incoming_tip)
    changes: dict[str, bytes | None] = {}
    violations = []
    for item in pending(repo, incoming_tip, main_tip):
        path = manifest_path(item.name)
        manifests = [c for c in item.changes if c.kind != "conflict"]
        if manifests:
            before = item.main  # the target side of pending(): incoming's manifest
            after = apply(before, item.name, manifests)
            violations += check(before, after, path)
            changes[path] = after.dumps()
        records = [c.after for c in item.changes if c.kind == "conflict"]
        if records:
            changes[f"{CONFLICTS_DIR}/{item.name}.jsonl"] = merged_conflicts(repo, incoming_tip, item.name, records)
    if violations:
        raise RepoError(f"cannot merge {main} into {incoming}: {violations[0]}")
    changes.update(_other_paths(repo, base, main_tip, incoming_tip))
    _carry_takedowns(repo, base, main_tip, incoming_tip, changes)
    repo.write_commit(
        changes,
        f"merge {main} into {incoming}\n\nKeeps the review branch on top of what {main} serves.\n",
        branch=incoming,
        parent=incoming_tip,
        merged=(main_tip,),
    )
    return f"merged {main} into {incoming}"


def _other_paths(repo: MetadataRepo, base: bytes | None, main: bytes, incoming: bytes) -> dict[str, bytes | None]:
    """Paths outside manifests and conflict records that ``main`` changed and ``incoming`` did not."""
    result: dict[str, bytes | None] = {}
    for path in repo.changed_paths(base, main):
        if path.startswith((PROJECTS_DIR + "/", CONFLICTS_DIR + "/", TAKEDOWNS_DIR + "/")):
            continue
        if repo.read_path(incoming, path) == repo.read_path(base, path):
            result[path] = repo.read_path(main, path)
    return result


def _carry_takedowns(
    repo: MetadataRepo, base: bytes | None, main: bytes, incoming: bytes, changes: dict[str, bytes | None]
) -> None:
    """Merge ``main``'s takedown index into the review branch's (lines of both, nothing lost), and
    turn a served file the review branch added with bytes ``main`` has taken down since into a
    tombstone: otherwise the merge would serve those bytes again (``policy.takedown_check``)."""
    fresh: dict[str, TakedownRecord] = {}
    for path in repo.changed_paths(base, main):
        if not is_shard_path(path):
            continue
        ours, theirs = repo.read_path(incoming, path) or b"", repo.read_path(main, path) or b""
        known = set(ours.splitlines())
        added = [line for line in theirs.splitlines() if line not in known]
        if added:
            ours += b"" if not ours or ours.endswith(b"\n") else b"\n"
            changes[path] = ours + b"\n".join(added) + b"\n"
        recorded = parse(ours)
        fresh.update({digest: record for digest, record in parse(theirs).items() if digest not in recorded})
    if not fresh:
        return
    for path in repo.changed_paths(base, incoming):
        name = project_of_path(path)
        if name is None:
            continue
        data = changes.get(path) or repo.read_path(incoming, path)
        manifest = loads(data, path) if data else None
        if manifest is None:
            continue
        stones = []
        for entry in manifest.served_files():
            record = fresh.get(entry.sha256)
            if record is not None:
                why = f"same bytes as {record.project}/{record.filename}, taken down: {record.reason}"
                stones.append(replace(entry, tombstone=Tombstone(why, now())))
        if stones:
            changes[path] = manifest.with_files(stones).dumps()


def uploaded_at(entry: FileEntry) -> datetime | None:
    """When upstream published a file: its upload time, else (later, so stricter) when the mirror first saw it."""
    stamp = entry.upload_time or entry.first_seen
    return parse_time(stamp) if stamp else None


def sync_branch(repo: MetadataRepo, main: str, incoming: str | None) -> str:
    """The branch a sync commits to: ``main``, or in review mode the review branch brought up to date."""
    if incoming is None:
        return main
    with repo.writer_lock():
        catch_up(repo, main, incoming)
    return incoming
