"""Mirror-side decisions: yank, project status (deprecate) and takedown, each one git commit.

Each decision changes the project's manifest (so pages follow immediately) and appends a line to
the project's decision log ``marks/<project>.jsonl`` (who, when, what, why). The log is what
lets ``sync`` tell a decision of this mirror from upstream state: a mirror yank or status stays
when upstream does not have it. The commit's author, time and message carry the same facts, so
``git log`` is the audit trail. Every change passes ``policy.check`` before it is committed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..model.decisions import marks_path
from ..model.manifest import (
    PROJECT_STATUSES,
    FileEntry,
    ProjectManifest,
    Tombstone,
    blobs_needed_by,
    manifest_path,
    now,
)
from ..model.names import normalize
from ..model.policy import check
from ..model.takedowns import TakedownRecord, shard_path
from ..model.takedowns import append as append_record
from ..storage.blobs import Blobs
from ..storage.repo import DEFAULT_BRANCH, MetadataRepo, RepoError


class MarkError(RepoError):
    """A decision that cannot be applied: unknown project, version or file, or a missing reason."""


@dataclass(frozen=True)
class MarkResult:
    message: str
    commit: bytes | None = None
    removed_blobs: list[str] = field(default_factory=list)


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise MarkError("a non-empty --reason is required: it is what users and auditors will read")
    return reason


def _load(repo: MetadataRepo, parent: bytes | None, project: str) -> ProjectManifest:
    name = normalize(project)
    manifest = repo.manifest(parent, name)
    if manifest is None:
        raise MarkError(f"project {name} is not in the mirror")
    return manifest


def _commit(
    repo: MetadataRepo,
    parent: bytes | None,
    branch: str,
    old: ProjectManifest,
    new: ProjectManifest,
    record: Mapping[str, object],
    message: str,
    extra: dict[str, bytes] | None = None,
) -> bytes:
    path = manifest_path(new.name)
    violations = check(old, new, path)
    if violations:  # a bug here, never a reason to break the promise
        raise AssertionError("; ".join(map(str, violations)))
    identity = repo.identity().decode("utf-8", errors="replace")
    log_path = marks_path(new.name)
    log = repo.read_path(parent, log_path) or b""
    entry = {"time": now(), "by": identity, **record}
    log += (json.dumps(entry, separators=(",", ":"), ensure_ascii=True) + "\n").encode()
    changes = {path: new.dumps(), log_path: log, **(extra or {})}
    return repo.write_commit(changes, message, branch=branch, parent=parent)


def yank(
    repo: MetadataRepo, project: str, version: str, reason: str, undo: bool = False, branch: str = DEFAULT_BRANCH
) -> MarkResult:
    """Yank (PEP 592) or un-yank every file of one version; installers then skip it unless pinned."""
    reason = _reason(reason)
    with repo.writer_lock():
        parent = repo.tip(branch)
        old = _load(repo, parent, project)
        entries = [entry for entry in old.sorted_files() if _same_version(entry.version, version)]
        if not entries:
            raise MarkError(f"{old.name} has no files of version {version}")
        target: bool | str = False if undo else reason
        changed = [entry for entry in entries if entry.yanked != target]
        verb = "unyank" if undo else "yank"
        if not changed:
            return MarkResult(f"{old.name} {version}: already {verb}ed, nothing to commit")
        new = old
        for entry in changed:
            new = new.with_file(replace(entry, yanked=target))
        files = [entry.filename for entry in changed]
        message = f"{verb}: {old.name} {version}\n\nreason: {reason}\n" + "".join(f"file: {f}\n" for f in files)
        record = {"action": verb, "version": version, "files": files, "reason": reason}
        commit = _commit(repo, parent, branch, old, new, record, message)
    return MarkResult(f"{old.name} {version}: {verb}ed {len(files)} files", commit)


def _same_version(recorded: str, asked: str) -> bool:
    try:
        return Version(recorded) == Version(asked)
    except InvalidVersion:
        return recorded == asked


def set_status(repo: MetadataRepo, project: str, status: str, reason: str, branch: str = DEFAULT_BRANCH) -> MarkResult:
    """Set the PEP 792 project status (``active`` restores the default) with a reason."""
    if status not in PROJECT_STATUSES:
        raise MarkError(f"unknown project status {status!r}; choose one of {', '.join(PROJECT_STATUSES)}")
    reason = _reason(reason)
    with repo.writer_lock():
        parent = repo.tip(branch)
        old = _load(repo, parent, project)
        stored_reason = None if status == "active" else reason
        if (old.status, old.status_reason) == (status, stored_reason):
            return MarkResult(f"{old.name}: already {status}, nothing to commit")
        new = replace(old, status=status, status_reason=stored_reason)
        message = f"status: {old.name} {status}\n\nreason: {reason}\n"
        record = {"action": "status", "status": status, "reason": reason}
        commit = _commit(repo, parent, branch, old, new, record, message)
    return MarkResult(f"{old.name}: status {status}", commit)


def _find_file(repo: MetadataRepo, commit: bytes | None, filename: str, project: str | None) -> ProjectManifest:
    """The project holding ``filename``: from ``project``, from the filename, else by searching."""
    candidates: list[str] = []
    if project:
        candidates.append(normalize(project))
    else:
        try:
            if filename.endswith(".whl"):
                candidates.append(normalize(parse_wheel_filename(filename)[0]))
            else:
                candidates.append(normalize(parse_sdist_filename(filename)[0]))
        except (InvalidWheelFilename, InvalidSdistFilename, ValueError):
            pass
    for name in candidates:
        manifest = repo.manifest(commit, name)
        if manifest is not None and filename in manifest.files:
            return manifest
    if not project:
        for manifest in repo.manifests(commit):
            if filename in manifest.files:
                return manifest
    where = f"project {candidates[0]}" if project else "the mirror"
    raise MarkError(f"{filename} is not in {where}")


def takedown(
    repo: MetadataRepo,
    store: Blobs,
    filename: str,
    reason: str,
    project: str | None = None,
    branch: str = DEFAULT_BRANCH,
) -> MarkResult:
    """Tombstone a file: the entry stays with reason and time, the bytes leave the store.

    The same commit lists the sha256 in the takedown index (``gitmirror.model.takedowns``), so no sync,
    push or approval can serve those bytes again under another name. The commit comes first and
    the blobs go after it, so a crash in between leaves a file that is no longer served but still
    stored; running takedown again finishes the job (verify notices), and for a file taken down
    before the index existed, records its digest there.
    """
    reason = _reason(reason)
    with repo.writer_lock():
        parent = repo.tip(branch)
        old = _find_file(repo, parent, filename, project)
        entry: FileEntry = old.files[filename]
        commit = None
        stone = entry.tombstone or Tombstone(reason=reason, time=now())
        index_path = shard_path(entry.sha256)
        index = repo.read_path(parent, index_path)
        record = TakedownRecord(entry.sha256, old.name, filename, stone.reason, stone.time)
        indexed = append_record(index, record)
        if entry.tombstone is None:
            new = old.with_file(replace(entry, tombstone=stone))
            message = f"takedown: {old.name} {filename}\n\nreason: {reason}\nsha256: {entry.sha256}\n"
            mark = {"action": "takedown", "files": [filename], "sha256": entry.sha256, "reason": reason}
            commit = _commit(repo, parent, branch, old, new, mark, message, {index_path: indexed})
        elif indexed != (index or b""):
            message = (
                f"takedown: record {old.name} {filename} in the takedown index\n\n"
                f"reason: {stone.reason}\nsha256: {entry.sha256}\n"
            )
            commit = repo.write_commit({index_path: indexed}, message, branch=branch, parent=parent)
        needed = blobs_needed_by(repo.manifests(commit or parent))
        removed = [
            digest
            for digest in (entry.sha256, entry.core_metadata, entry.provenance)
            if digest and digest not in needed and store.remove(digest)
        ]
    if commit is None:
        return MarkResult(f"{filename} was already taken down; {len(removed)} leftover blobs removed", None, removed)
    if entry.tombstone is not None:
        return MarkResult(f"{old.name}: {filename} was already taken down; its sha256 is now in {index_path}", commit)
    kept = "" if entry.sha256 in removed else " (its bytes stay: another served file has the same sha256)"
    return MarkResult(f"{old.name}: {filename} taken down{kept}", commit, removed)
