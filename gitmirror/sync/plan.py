"""``gitmirror plan``: what a sync would add (projects, files, bytes), without downloading a blob.

It runs the same selection and closure walk as ``sync`` and folds the pages into the recorded
manifests with the same pure ``merge``, so the plan is what the sync would do. It writes nothing:
neither the store, nor the repository, nor the local state (which it does read, so an
unchanged project costs one conditional request here too). Core metadata needed to follow
dependencies is read from the store when present, else downloaded into memory and discarded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model.manifest import now
from ..model.page import RemoteFile, UpstreamError
from ..storage.blobs import Blobs
from ..storage.repo import MetadataRepo, RepoError
from .closure import choose
from .config import Config, Selection
from .merge import merge
from .roots import roots as selection_roots
from .state import LocalState
from .store_config import open_store


@dataclass
class PlannedProject:
    name: str
    new_project: bool
    files: list[RemoteFile] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(item.size or 0 for item in self.files)


@dataclass
class Plan:
    projects: list[PlannedProject]
    warnings: list[str] = field(default_factory=list)
    pages_fetched: int = 0
    pages_not_modified: int = 0

    @property
    def changing(self) -> list[PlannedProject]:
        return [project for project in self.projects if project.files]

    @property
    def files(self) -> int:
        return sum(len(project.files) for project in self.projects)

    @property
    def bytes(self) -> int:
        return sum(project.bytes for project in self.projects)

    @property
    def unknown_sizes(self) -> int:
        return sum(1 for project in self.projects for item in project.files if item.size is None)

    @property
    def errors(self) -> list[str]:
        return [error for project in self.projects for error in project.errors]

    def summary(self) -> str:
        new = sum(1 for project in self.changing if project.new_project)
        text = (
            f"{len(self.projects)} projects selected: {len(self.changing)} would change ({new} new), "
            f"{self.files} files, {self.bytes} bytes to download"
        )
        if self.unknown_sizes:
            text += f" (+{self.unknown_sizes} files of unknown size)"
        if self.errors:
            text += f"; {len(self.errors)} errors"
        return text

    def lines(self) -> list[str]:
        lines = []
        for project in self.changing:
            marker = " (new project)" if project.new_project else ""
            lines.append(f"{project.name}{marker}: {len(project.files)} files, {project.bytes} bytes")
            lines += [f"  + {item.filename}" for item in sorted(project.files, key=lambda item: item.filename)]
        lines += [f"error: {error}" for error in self.errors]
        lines += [f"warning: {warning}" for warning in self.warnings]
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "projects": len(self.projects),
            "changing": len(self.changing),
            "files": self.files,
            "bytes": self.bytes,
            "unknown_sizes": self.unknown_sizes,
            "pages_fetched": self.pages_fetched,
            "pages_not_modified": self.pages_not_modified,
            "add": {
                project.name: [{"filename": item.filename, "size": item.size} for item in project.files]
                for project in self.changing
            },
            "errors": self.errors,
            "warnings": self.warnings,
        }


def make_plan(config: Config, selections: Sequence[Selection], with_files: bool = True) -> Plan:
    roots = selection_roots(config, selections, with_files=with_files)
    try:
        repo: MetadataRepo | None = MetadataRepo(config.repo)
    except RepoError:
        repo = None  # nothing mirrored yet: everything is new
    parent = repo.tip(config.branch) if repo else None
    unusable: list[str] = []  # the local state's one line, when it cannot serve
    state = LocalState(config.store, config.branch, config.upstream, writable=False, warn=unusable.append)
    state.load(parent)
    try:
        plan = asyncio.run(_plan(config, roots, repo, parent, open_store(config), state))
    finally:
        state.close()
    plan.warnings[:0] = [*roots.warnings, *unusable]
    return plan


async def _plan(
    config: Config,
    roots: Any,
    repo: MetadataRepo | None,
    parent: bytes | None,
    store: Blobs,
    state: LocalState,
) -> Plan:
    seen_at = now()
    async with config.open_upstream() as upstream:
        pages, choices = await choose(config, roots, upstream, store, state, persist=False)
        planned, skipped = [], []
        for choice in choices.values():
            old = repo.manifest(parent, choice.name) if repo else None
            project = PlannedProject(choice.name, new_project=old is None, errors=list(choice.errors))
            planned.append(project)
            try:
                remote = await pages.get(choice.name)
            except UpstreamError as exc:
                if not project.errors:
                    project.errors.append(str(exc))
                continue
            _manifest, wanted, outcome = merge(old, remote, choice, seen_at)
            project.files = wanted
            project.errors += [error for error in outcome.errors if error not in project.errors]
            if outcome.skipped_note:
                skipped.append(outcome.skipped_note)
        warnings = [warning for choice in choices.values() for warning in choice.warnings] + skipped
        return Plan(planned, warnings, pages.fetched, pages.not_modified)
