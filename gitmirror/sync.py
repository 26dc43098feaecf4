"""One sync run: upstream pages -> verified blobs in the store -> manifests -> one git commit.

The order is what makes a run crash-safe: blobs are published (atomically) before any manifest
mentions them, and the branch moves in a single compare-and-swap at the very end. An interrupted
run leaves only unreferenced, complete blobs, which the next run reuses instead of downloading.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from .config import Config, Selection
from .manifest import FileEntry, ProjectManifest, manifest_path, now
from .policy import check
from .repo import MetadataRepo
from .store import BlobStore
from .upstream import ProjectNotFound, RemoteFile, RemoteProject, Upstream, UpstreamError

CONFLICTS_DIR = "conflicts"
EXIT_OK, EXIT_ERRORS, EXIT_CONFLICTS = 0, 1, 3

Log = Callable[[str], None]


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
    selection: Selection,
    seen_at: str,
) -> tuple[ProjectManifest, list[RemoteFile], ProjectOutcome]:
    """Fold an upstream page into the recorded manifest, as the immutability policy allows.

    Returns the manifest without the new files (they are added only once their blobs are safely
    stored), the new files to download, and what changed. Pure: no I/O, so every rule is testable.
    """
    outcome = ProjectOutcome(name=remote.name, old=old, errors=list(remote.rejected))
    manifest = old or ProjectManifest(name=remote.name)
    if manifest.upstream_removed:
        manifest = replace(manifest, upstream_removed=None)
        outcome.changes.append("back upstream")
    if (remote.status, remote.status_reason) != (manifest.status, manifest.status_reason):
        manifest = replace(manifest, status=remote.status, status_reason=remote.status_reason)
        reason = f" ({remote.status_reason})" if remote.status_reason else ""
        outcome.changes.append(f"status {remote.status}{reason}")
    upstream_names = {remote_file.filename for remote_file in remote.files}
    wanted: list[RemoteFile] = []
    for remote_file in remote.files:
        recorded = manifest.files.get(remote_file.filename)
        if recorded is None:
            if selection.wants(remote_file.version):
                wanted.append(remote_file)
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
            reason = f" ({after.yanked_reason})" if after.yanked_reason else ""
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


def _entry(remote_file: RemoteFile, seen_at: str, has_metadata: bool, size: int) -> FileEntry:
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


class Syncer:
    def __init__(self, config: Config, repo: MetadataRepo, store: BlobStore, log: Log = print) -> None:
        self.config = config
        self.repo = repo
        self.store = store
        self.log = log

    def run(self, selections: list[Selection], branch: str | None = None) -> SyncResult:
        branch = branch or self.config.branch
        with self.repo.writer_lock():
            self.store.init()
            self.store.clean_tmp()
            parent = self.repo.tip(branch)
            seen_at = now()
            outcomes = asyncio.run(self._gather(selections, parent, seen_at))
            result = SyncResult(outcomes=outcomes)
            result.commit = self._commit(outcomes, parent, branch)
        return result

    async def _gather(self, selections: list[Selection], parent: bytes | None, seen_at: str) -> list[ProjectOutcome]:
        async with Upstream(
            self.config.upstream,
            concurrency=self.config.concurrency,
            timeout=self.config.timeout,
            retries=self.config.retries,
        ) as upstream:
            tasks = [self._project(upstream, selection, parent, seen_at) for selection in selections]
            outcomes = list(await asyncio.gather(*tasks))
        for outcome in outcomes:
            self._report(outcome)
        return outcomes

    def _report(self, outcome: ProjectOutcome) -> None:
        for conflict in outcome.conflicts:
            self.log(
                f"CONFLICT {conflict.project}: {conflict.filename} is {conflict.upstream_sha256} upstream, "
                f"the mirror keeps {conflict.recorded_sha256}"
            )
        for error in outcome.errors:
            self.log(f"error: {error}")

    async def _project(
        self, upstream: Upstream, selection: Selection, parent: bytes | None, seen_at: str
    ) -> ProjectOutcome:
        old = self.repo.manifest(parent, selection.name)
        try:
            remote = await upstream.project(selection.name)
        except ProjectNotFound as exc:
            if old is None:
                return ProjectOutcome(name=selection.name, errors=[str(exc)])
            manifest, outcome = removed_upstream(old, seen_at)
            outcome.new = manifest
            return outcome
        except UpstreamError as exc:
            return ProjectOutcome(name=selection.name, old=old, errors=[str(exc)])
        assert remote is not None
        manifest, wanted, outcome = merge(old, remote, selection, seen_at)
        healing = [
            remote_file
            for remote_file in remote.files
            if (recorded := manifest.files.get(remote_file.filename)) is not None
            and recorded.sha256 == remote_file.sha256
            and recorded.served
            and not self.store.has(recorded.sha256)
        ]
        results = await asyncio.gather(*(self._fetch(upstream, remote_file) for remote_file in wanted + healing))
        for remote_file, (ok, has_metadata, errors) in zip(wanted + healing, results, strict=True):
            outcome.errors += errors
            if ok and remote_file.filename not in manifest.files:
                # Upstream need not announce sizes (PEP 700 is optional): record what was stored.
                size = self.store.path(remote_file.sha256).stat().st_size
                manifest = manifest.with_file(_entry(remote_file, seen_at, has_metadata, size))
                outcome.added.append(remote_file.filename)
        if manifest.files or old is not None:
            outcome.new = manifest
        return outcome

    async def _fetch(self, upstream: Upstream, remote_file: RemoteFile) -> tuple[bool, bool, list[str]]:
        """Download a file and its core metadata; returns (file ok, metadata ok, errors)."""
        errors: list[str] = []
        try:
            if not self.store.has(remote_file.sha256):
                await upstream.download(
                    remote_file.url,
                    lambda: self.store.writer(remote_file.sha256, remote_file.size),
                    remote_file.filename,
                )
        except UpstreamError as exc:
            return False, False, [str(exc)]
        has_metadata = False
        if remote_file.core_metadata and remote_file.metadata_url:
            try:
                if not self.store.has(remote_file.core_metadata):
                    await upstream.download(
                        remote_file.metadata_url,
                        lambda: self.store.writer(remote_file.core_metadata or "", None),
                        remote_file.filename + ".metadata",
                    )
                has_metadata = True
            except UpstreamError as exc:
                errors.append(str(exc))
        return True, has_metadata, errors

    def _commit(self, outcomes: list[ProjectOutcome], parent: bytes | None, branch: str) -> bytes | None:
        changes: dict[str, bytes | None] = {}
        for outcome in outcomes:
            if outcome.new is not None and (outcome.added or outcome.changes or outcome.old is None):
                path = manifest_path(outcome.name)
                violations = check(outcome.old, outcome.new, path)
                if violations:  # a bug in merge(), never a reason to break the promise
                    raise AssertionError("; ".join(map(str, violations)))
                data = outcome.new.dumps()
                if outcome.old is None or outcome.old.dumps() != data:
                    changes[path] = data
            if outcome.conflicts:
                path, data = self._conflict_record(parent, outcome.name, outcome.conflicts)
                if data is not None:
                    changes[path] = data
        if not changes:
            return None
        return self.repo.write_commit(changes, commit_message(outcomes), branch=branch, parent=parent)

    def _conflict_record(
        self, parent: bytes | None, name: str, conflicts: list[Conflict]
    ) -> tuple[str, bytes | None]:
        """Append each conflict once to ``conflicts/<project>.jsonl`` (re-syncs add nothing)."""
        path = f"{CONFLICTS_DIR}/{name}.jsonl"
        existing = self.repo.read_path(parent, path) or b""
        known = {
            (record["filename"], record["upstream-sha256"])
            for record in (json.loads(line) for line in existing.decode().splitlines() if line)
        }
        lines = [
            json.dumps(conflict.to_json(), separators=(",", ":"))
            for conflict in conflicts
            if (conflict.filename, conflict.upstream_sha256) not in known
        ]
        if not lines:
            return path, None
        return path, existing + ("\n".join(lines) + "\n").encode()


def commit_message(outcomes: list[ProjectOutcome]) -> str:
    """A subject a reviewer can scan in ``git log --oneline`` and a body listing every change."""
    touched = [outcome for outcome in outcomes if outcome.added or outcome.changes or outcome.conflicts]
    files = sum(len(outcome.added) for outcome in touched)
    new_projects = sum(1 for outcome in touched if outcome.old is None)
    subject = f"sync: {_count(len(touched), 'project')}, {_count(files, 'file')} added"
    if new_projects:
        subject += f" ({new_projects} new)"
    body = []
    for outcome in sorted(touched, key=lambda item: item.name):
        body += [f"{outcome.name}: + {filename}" for filename in sorted(outcome.added)]
        body += [f"{outcome.name}: {change}" for change in outcome.changes]
        body += [f"{outcome.name}: CONFLICT {conflict.filename}" for conflict in outcome.conflicts]
    return subject + "\n\n" + "\n".join(body) + "\n"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
