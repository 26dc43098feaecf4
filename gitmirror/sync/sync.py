"""One sync run: upstream pages -> verified blobs in the store -> manifests -> one git commit.

The order is what makes a run crash-safe: blobs are published (atomically) before any manifest
mentions them, and the branch moves in a single compare-and-swap at the very end. An interrupted
run leaves only unreferenced, complete blobs, which the next run reuses instead of downloading.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..model.decisions import local_decisions, marks_path
from ..model.manifest import FileEntry, ProjectManifest, manifest_path, now
from ..model.page import ProjectNotFound, RemoteFile, UpstreamError
from ..model.policy import CONFLICTS_DIR, check
from ..model.takedowns import Lookup, repo_reader
from ..storage.blobs import Blobs
from ..storage.metadata import WheelMetadata, read_stored_wheel
from ..storage.repo import MetadataRepo
from ..upstream.upstream import Upstream
from . import unchanged
from .closure import ProjectChoice, choose
from .config import Config, Selection
from .downloads import Fetched, RunDownloads
from .hosted_headers import with_hosted_headers
from .merge import (
    EXIT_OK,
    KNOWN_CONFLICT,
    ProjectOutcome,
    SyncResult,
    commit_message,
    merge,
    new_entry,
    recorded_conflicts,
    removed_upstream,
)
from .pages import Pages
from .progress import Progress
from .provenance import mirror_provenance, served_blobs
from .roots import Roots
from .roots import roots as selection_roots
from .state import LocalState

Log = Callable[[str], None]


class Syncer:
    def __init__(
        self, config: Config, repo: MetadataRepo, store: Blobs, log: Log = print, progress: Progress | None = None
    ) -> None:
        self.config = config
        self.repo = repo
        self.store = store
        self.log = log
        self.progress = progress or Progress()
        self.pages: Pages | None = None
        self._manifests: dict[tuple[bytes | None, str], ProjectManifest | None] = {}
        self.downloads = RunDownloads(store, self.progress)
        self.warnings: list[str] = []  # every warning of the run, shown or not (``sync --json`` has them all)
        self._shown_before: set[str] = set()  # warnings an earlier run showed: not shown again (``_warn``)
        self._shown: set[str] = set()  # this run's warnings that are now shown, for the next run
        self.notices: list[str] = []  # said before the run's own warnings, once per change like them
        self._takedowns = Lookup([])  # the takedown index at the run's parent and at main

    def run(self, selections: list[Selection], branch: str | None = None, with_files: bool | None = None) -> SyncResult:
        """Sync ``selections`` (plus, by default when they are the configured ones, requirements and lockfiles)."""
        branch = branch or self.config.branch
        configured = list(selections) == list(self.config.projects)
        if with_files is None:
            with_files = configured
        # only a run of everything mirror.yaml (read from a file) selects may vouch for the next one
        whole_config = with_files and configured and self.config.source_sha256 is not None
        roots = selection_roots(self.config, selections, with_files=with_files)
        with self.repo.writer_lock(), _collector_relaxed():
            sys.audit("gitmirror.crashpoint", "sync.locked")
            unchanged.forget(self.config, branch)
            self.store.init()
            self.store.clean_tmp()
            sys.audit("gitmirror.crashpoint", "sync.tmp-cleaned")
            parent = self.repo.tip(branch)
            main_tip = self.repo.tip(self.config.branch)
            self._takedowns = Lookup([repo_reader(self.repo, parent), repo_reader(self.repo, main_tip)])
            seen_at = now()
            state = LocalState(  # its one line when the file cannot serve is shown at every run
                self.store.root, branch, self.config.upstream, writable=True, warn=self._warn_always
            )
            state.load(parent)
            self._shown_before = state.shown_warnings()
            for notice in self.notices:
                self._warn(notice)
            for warning in roots.warnings:
                self._warn(f"warning: {warning}")
            for selection in selections:
                if self.config.hosted.kept_from_upstream(selection.name):
                    hosted = "hosted here (hosted: in mirror.yaml), never taken from upstream"
                    self._warn(f"note: {selection.name}: {hosted}")
            # read before the first page: a change upstream during this run moves it past the record's
            serial = unchanged.upstream_serial(self.config.upstream, self.config.timeout) if whole_config else None
            try:
                outcomes = asyncio.run(self._gather(roots, parent, seen_at, state))
                outcomes = with_hosted_headers(self.repo, parent, self.config.hosted, outcomes)
                self.store.clean_tmp()  # what a download process killed mid-file left; every writer is done
                result = SyncResult(outcomes=outcomes)
                sys.audit("gitmirror.crashpoint", "sync.downloads-done")
                result.commit = self._commit(outcomes, parent, branch)
                sys.audit("gitmirror.crashpoint", "sync.committed")
                if self.pages is not None:
                    # a run of part of the selection adds to what was shown; a whole run replaces it
                    shown = self._shown if with_files and configured else self._shown | self._shown_before
                    # a disk that refuses costs the next run every page (one warning line), never this commit
                    state.save(result.commit or parent, self.pages.fresh, shown)
                if serial is not None and result.exit_code == EXIT_OK:
                    self._record(serial, roots, outcomes, branch)
            finally:
                state.close()
        return result

    def _warn_always(self, line: str) -> None:
        self.log(f"warning: {line}")

    def _warn(self, line: str, note: bool = False) -> None:
        """A warning is shown once per change: when it first appears, or reads differently (a new
        legacy file changes the count), not at every run that finds the same state. ``note``:
        shown as per-project news (not in ``--quiet``), else always, like errors."""
        self.warnings.append(line)
        if line in self._shown_before:
            self._shown.add(line)
            return
        if note:
            self.progress.note(line)
            if not self.progress.shows_notes:
                return  # not seen: the next run that shows notes shows it
        else:
            self.log(line)
        self._shown.add(line)

    def _record(self, serial: str, roots: Roots, outcomes: list[ProjectOutcome], branch: str) -> None:
        """Leave what lets the next run prove it would change nothing (``gitmirror.sync.unchanged``)."""
        manifests = [manifest for outcome in outcomes if (manifest := outcome.new or outcome.old) is not None]
        assert self.config.source is not None and self.config.source_sha256 is not None
        branches = sorted({self.config.branch, branch})
        dirs = unchanged.blob_dirs(served_blobs(manifests))
        unchanged.Record(
            serial=serial,
            config_file=str(self.config.source.resolve()),
            config_sha256=self.config.source_sha256,
            upstream=self.config.upstream,
            timeout=self.config.timeout,
            repo=str(self.repo.path.resolve()),
            store=str(self.store.root.resolve()),
            branches=branches,
            inputs=dict(roots.sources),
            refs=unchanged.refs_digest(self.repo.path, branches),
            blob_dirs=dirs,
            blob_dirs_state=unchanged.blob_dirs_state(str(self.store.root.resolve()), dirs) or "",
            projects=len(outcomes),
            warnings=tuple(self.warnings),
        ).save(unchanged.record_path(self.config, branch), names=(outcome.name for outcome in outcomes))

    def _old_manifest(self, parent: bytes | None, name: str) -> ProjectManifest | None:
        """The recorded manifest at ``parent``, read once per run (healing checks and merges share it)."""
        key = (parent, name)
        if key not in self._manifests:
            self._manifests[key] = self.repo.manifest(parent, name)
        return self._manifests[key]

    def _chosen_download(
        self, upstream: Upstream, parent: bytes | None, name: str, remote_file: RemoteFile
    ) -> asyncio.Future[WheelMetadata | None] | None:
        """The run's download of a file the walk chose (started now if need be); None when its
        bytes may not be stored: recorded with other bytes (a conflict), or taken down under this or
        any other name (its blob was deleted on purpose and must stay gone)."""
        old = self._old_manifest(parent, name)
        recorded = old.files.get(remote_file.filename) if old else None
        if recorded is not None and (recorded.sha256 != remote_file.sha256 or not recorded.served):
            return None
        if recorded is None and self._takedowns.record(remote_file.sha256) is not None:
            return None
        return self.downloads.start(upstream, remote_file)

    async def _store_for_closure(
        self, upstream: Upstream, parent: bytes | None, name: str, remote_file: RemoteFile
    ) -> WheelMetadata | None:
        """The closure reads a release's dependencies out of a wheel this run stores anyway."""
        download = self._chosen_download(upstream, parent, name, remote_file)
        if download is None:
            return None
        wheel = await asyncio.shield(download)
        if wheel is None:  # stored before this run: read here
            sha256, metadata_sha256 = remote_file.sha256, remote_file.core_metadata
            wheel = await asyncio.to_thread(read_stored_wheel, self.store, sha256, metadata_sha256)
        return wheel

    def _needs_healing(self, parent: bytes | None, name: str) -> bool:
        """A recorded file whose blob is gone: its page must be fetched even if upstream says 304."""
        old = self._old_manifest(parent, name)
        return old is not None and any(
            entry.served and not self.store.has(entry.sha256) for entry in old.files.values()
        )

    async def _gather(
        self,
        roots: Roots,
        parent: bytes | None,
        seen_at: str,
        state: LocalState,
    ) -> list[ProjectOutcome]:
        async with self.config.open_upstream() as upstream:

            def start_downloads(name: str, files: list[RemoteFile]) -> None:
                """Files join a choice for good: download them now, not after the whole walk."""
                for remote_file in files:
                    if not self.store.has(remote_file.sha256):  # a warm run stops here, once per file
                        self._chosen_download(upstream, parent, name, remote_file)

            self.pages, choices = await choose(
                self.config,
                roots,
                upstream,
                self.store,
                state,
                must_refetch=lambda name: self._needs_healing(parent, name),
                on_project=self.progress.project_found,
                stash=self.downloads.metadata_stash,
                store_file=lambda name, remote_file: self._store_for_closure(upstream, parent, name, remote_file),
                on_chosen=start_downloads,
            )
            for choice in choices.values():
                for warning in choice.warnings:
                    self._warn(f"warning: {warning}", note=True)

            async def tracked(choice: ProjectChoice) -> ProjectOutcome:
                outcome = await self._project(upstream, choice, parent, seen_at, self.pages)
                self.progress.project_done(outcome.name, len(outcome.added), len(outcome.errors))
                return outcome

            outcomes = list(await asyncio.gather(*(tracked(choice) for choice in choices.values())))
            # done by now (each file's outcome waited for its download); none may outlive ``upstream``
            await self.downloads.wait_all()
        for outcome in outcomes:
            self._report(outcome, parent)
        return outcomes

    def _report(self, outcome: ProjectOutcome, parent: bytes | None) -> None:
        """New conflicts and errors are shown at every run (they set the exit code); a conflict
        already recorded and the legacy files skipped are warnings, shown once per change."""
        if outcome.conflicts:
            known = recorded_conflicts(self.repo.read_path(parent, f"{CONFLICTS_DIR}/{outcome.name}.jsonl") or b"")
            found, outcome.conflicts = outcome.conflicts, []
            for conflict in found:
                is_known = (conflict.filename, conflict.upstream_sha256) in known
                (outcome.known_conflicts if is_known else outcome.conflicts).append(conflict)
        for conflict in outcome.conflicts:
            self.log(f"CONFLICT {conflict.text}")
            self._shown.add(f"warning: {conflict.text}{KNOWN_CONFLICT}")  # what the next run would say
        for conflict in outcome.known_conflicts:
            self._warn(f"warning: {conflict.text}{KNOWN_CONFLICT}")
        if outcome.skipped_note:
            self._warn(f"note: {outcome.skipped_note}", note=True)
        for error in outcome.errors:
            self.log(f"error: {error}")
        for note in outcome.notes:
            self._warn(f"note: {outcome.name}: {note}", note=True)

    async def _project(
        self,
        upstream: Upstream,
        selection: ProjectChoice,
        parent: bytes | None,
        seen_at: str,
        pages: Pages | None = None,
    ) -> ProjectOutcome:
        old = self._old_manifest(parent, selection.name)
        choice_errors = list(selection.errors)
        try:
            remote = await (pages.get(selection.name) if pages else upstream.project(selection.name))
        except ProjectNotFound as exc:
            if old is None:
                return ProjectOutcome(name=selection.name, errors=choice_errors or [str(exc)])
            manifest, outcome = removed_upstream(old, seen_at)
            outcome.new = manifest
            return outcome
        except UpstreamError as exc:
            return ProjectOutcome(name=selection.name, old=old, errors=choice_errors or [str(exc)])
        assert remote is not None
        sys.audit("gitmirror.crashpoint", "sync.page-fetched")
        local = local_decisions(self.repo.read_path(self.repo.tip(self.config.branch), marks_path(selection.name)))
        recorded_files = old.files if old else {}
        taken_down = {
            remote_file.sha256: record
            for remote_file in remote.files
            if remote_file.filename not in recorded_files and (record := self._takedowns.record(remote_file.sha256))
        }
        hosted = self.config.hosted.entry(selection.name)  # a hosted project that tracks upstream
        pep708 = (hosted.tracks, hosted.alternate_locations) if hosted else None
        manifest, wanted, outcome = merge(old, remote, selection, seen_at, local, taken_down, pep708)
        outcome.errors += choice_errors
        healing = [
            remote_file
            for remote_file in remote.files
            if (recorded := manifest.files.get(remote_file.filename)) is not None
            and recorded.sha256 == remote_file.sha256
            and recorded.served
            and not self.store.has(recorded.sha256)
        ]
        fetching = wanted + healing
        results: list[Fetched | None] = [self.downloads.finished(remote_file) for remote_file in fetching]
        waiting = [number for number, result in enumerate(results) if result is None]
        awaited = await asyncio.gather(*(self.downloads.fetch(upstream, fetching[number]) for number in waiting))
        for number, fetched in zip(waiting, awaited, strict=True):
            results[number] = fetched
        added: dict[str, FileEntry] = {}
        for remote_file, result in zip(fetching, results, strict=True):
            assert result is not None
            ok, has_metadata, errors = result
            outcome.errors += errors
            if ok and remote_file.filename not in manifest.files and remote_file.filename not in added:
                # Upstream need not announce sizes (PEP 700 is optional): record what was stored.
                size = self.downloads.size(remote_file.sha256)
                added[remote_file.filename] = new_entry(remote_file, seen_at, has_metadata, size)
                outcome.added.append(remote_file.filename)
        if added:
            manifest = manifest.with_files(added.values())
        recheck = pages is None or selection.name in pages.fresh  # a page unchanged since: nothing to compare
        manifest = await mirror_provenance(upstream, self.store, manifest, remote, outcome, recheck, seen_at)
        sys.audit("gitmirror.crashpoint", "sync.project-merged")
        # a project upstream lists only legacy files for is recorded with what it has: nothing
        if manifest.files or old is not None or (remote.skipped and not remote.files):
            outcome.new = manifest
        return outcome

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
                # only new ones (``_report`` set the known ones apart): recorded, and exit 3
                path = f"{CONFLICTS_DIR}/{outcome.name}.jsonl"
                existing = self.repo.read_path(parent, path) or b""
                lines = [json.dumps(c.to_json(), separators=(",", ":")) for c in outcome.conflicts]
                changes[path] = existing + ("\n".join(lines) + "\n").encode()
        if not changes:
            return None
        return self.repo.write_commit(changes, commit_message(outcomes), branch=branch, parent=parent)


@contextmanager
def _collector_relaxed() -> Iterator[None]:
    """Fewer cyclic garbage collections during a run; the old settings after it.

    A run allocates many short-lived objects; frozen, what exists when it starts (modules,
    manifests) is never scanned again, and a larger first generation collects less often.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], 50_000), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
