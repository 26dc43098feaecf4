"""The transitive closure of a selection: which files of which projects a sync must mirror.

Starting from the user's requirements, each chosen release's core metadata is read (from the
store when already mirrored, else the PEP 658 file, else the wheel itself) and its
``Requires-Dist`` followed for every configured target environment, markers and extras evaluated
with ``packaging``. This is deliberately not a resolver: a mirror must hold every release any
installer in those environments could pick under the configured ``versions`` policy, so the walk
takes the union. A requirement nothing satisfies is reported with the chain that led to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from ..model.names import UnsafeNameError, normalize
from ..model.page import ProjectNotFound, RemoteFile, RemoteProject, UpstreamError
from ..storage.blobs import Blobs
from ..upstream.upstream import Upstream
from .pages import Pages
from .release_metadata import MetadataSource, StoreFile
from .roots import Pin, Roots
from .selection import ANY, Rules, rules_from
from .state import LocalState

if TYPE_CHECKING:
    from .config import Config

#: the requirements of one release the walk follows: each may cost a page request, and a hostile
#: upstream's metadata can list a million; real releases list at most a few hundred
MAX_REQUIREMENTS_FOLLOWED = 5_000


@dataclass
class ProjectChoice:
    """The files of one project a run should hold, and what went wrong choosing them."""

    name: str
    files: set[str] = field(default_factory=set)
    #: each said once, in the order said; and the releases whose dependencies could not be read, in
    #: the walk's order. Dicts, not lists: a project of thousands of releases made a list's
    #: membership test quadratic
    errors: dict[str, None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    without_metadata: dict[str, None] = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        """Notes, plus one line for all releases whose dependencies could not be read (old sdists)."""
        if not self.without_metadata:
            return list(self.notes)
        versions = ", ".join(list(self.without_metadata)[:5]) + (", ..." if len(self.without_metadata) > 5 else "")
        summary = (
            f"{self.name}: dependencies of {len(self.without_metadata)} release(s) unknown "
            f"(no wheel or PEP 658 metadata), not followed: {versions}"
        )
        return [*self.notes, summary]

    def wants_file(self, remote_file: RemoteFile) -> bool:
        return remote_file.filename in self.files

    def error(self, message: str) -> None:
        self.errors[message] = None


@dataclass(frozen=True)
class _Demand:
    name: str
    specifier: SpecifierSet
    extras: frozenset[str]
    targets: frozenset[int]
    chain: tuple[str, ...]
    exact: bool = False


def _chain_text(chain: tuple[str, ...]) -> str:
    return f" (required by {' -> '.join(chain)})" if chain else ""


class Resolver:
    """Walks requirements to the set of files to mirror per project."""

    def __init__(self, rules: Rules, pages: object, metadata: MetadataSource | None, follow: bool) -> None:
        self.rules = rules
        self.pages = pages  # anything with ``async get(name) -> RemoteProject`` (state.Pages)
        self.metadata = metadata
        self.follow = follow and metadata is not None
        self.choices: dict[str, ProjectChoice] = {}
        self._seen: set[tuple[str, str, frozenset[str], frozenset[int]]] = set()
        self._expanded: set[tuple[str, str, frozenset[str], frozenset[int]]] = set()
        self._constraints: dict[str, SpecifierSet] = {}
        self._group: asyncio.TaskGroup | None = None
        self.on_project: Callable[[str], None] = lambda name: None
        #: called as files join a project's choice (choices only grow): a sync starts their downloads
        self.on_chosen: Callable[[str, list[RemoteFile]], None] = lambda name, files: None

    def choice(self, name: str) -> ProjectChoice:
        if name not in self.choices:
            self.choices[name] = ProjectChoice(name)
            self.on_project(name)
        return self.choices[name]

    async def resolve(self, roots: Roots) -> dict[str, ProjectChoice]:
        self._constraints = roots.constraints
        async with asyncio.TaskGroup() as group:
            self._group = group
            for root in roots.requirements:
                targets = self._applicable(root.requirement, self.rules.target_ids, frozenset())
                if not targets:
                    continue  # e.g. ``pywin32; sys_platform == "win32"`` with no Windows target
                self._spawn(
                    _Demand(
                        name=root.name,
                        specifier=root.requirement.specifier,
                        extras=frozenset(root.requirement.extras),
                        targets=targets,
                        chain=(root.origin,),
                        exact=_is_exact(root.requirement.specifier),
                    )
                )
            for name, pins in roots.pins.items():
                group.create_task(self._pin(name, pins))
        return dict(sorted(self.choices.items()))

    def _applicable(self, requirement: Requirement, targets: frozenset[int], extras: frozenset[str]) -> frozenset[int]:
        return frozenset(target for target in targets if self.rules.marker_holds(requirement.marker, target, extras))

    def _spawn(self, demand: _Demand) -> None:
        key = (demand.name, str(demand.specifier), demand.extras, demand.targets)
        if (
            key in self._seen
            or self.rules.project_excluded(demand.name)
            or self.rules.hosted.kept_from_upstream(demand.name)
        ):
            return
        self._seen.add(key)
        self.choice(demand.name)
        assert self._group is not None
        self._group.create_task(self._visit(demand))

    async def _page(self, name: str, chain: tuple[str, ...]) -> RemoteProject | None:
        try:
            return await self.pages.get(name)  # type: ignore[attr-defined]
        except ProjectNotFound as exc:
            self.choice(name).error(f"{exc}{_chain_text(chain)}")
        except UpstreamError as exc:
            self.choice(name).error(f"{exc}{_chain_text(chain)}")
        return None

    async def _pin(self, name: str, pins: list[Pin]) -> None:
        """Lockfile entries: exactly the pinned files, found upstream by hash."""
        if self.rules.hosted.kept_from_upstream(name):
            return  # uploaded here, never filled from upstream (``model.hosted``)
        choice = self.choice(name)
        remote = await self._page(name, (pins[0].lockfile,))
        if remote is None:
            return
        by_hash = {remote_file.sha256: remote_file for remote_file in remote.files}
        for pin in pins:
            found = by_hash.get(pin.sha256)
            if found is None:
                choice.error(
                    f"{pin.lockfile}: {pin.filename or name} (sha256 {pin.sha256[:16]}...) not offered upstream"
                )
            else:
                choice.files.add(found.filename)
                self.on_chosen(name, [found])

    async def _visit(self, demand: _Demand) -> None:
        remote = await self._page(demand.name, demand.chain)
        if remote is None:
            return
        choice = self.choice(demand.name)
        specifier = demand.specifier & self._constraints.get(demand.name, SpecifierSet())
        selected = self._select(remote, specifier, demand)
        if not selected and remote.skipped and not remote.files:
            return  # upstream lists only legacy files: recorded with what it has, and noted (``sync``)
        if not selected:
            wanted = str(specifier) or "any version"
            choice.error(
                f"{demand.name}: no release matches {wanted} for {self.rules.label(demand.targets)}"
                f"{_chain_text(demand.chain)}"
            )
            return
        releases = _by_version(remote) if self.follow else {}
        for version, (files, targets) in selected.items():
            choice.files.update(remote_file.filename for remote_file in files)
            self.on_chosen(demand.name, files)
            if self.follow:
                assert self._group is not None
                self._group.create_task(self._expand(demand, releases.get(version, []), version, targets))

    def _select(
        self, remote: RemoteProject, specifier: SpecifierSet, demand: _Demand
    ) -> dict[str, tuple[list[RemoteFile], frozenset[int]]]:
        """version -> (files to mirror, targets it serves), under the ``versions`` policy."""
        by_version: dict[Version, list[tuple[RemoteFile, frozenset[int]]]] = {}
        for remote_file in remote.files:
            if self.rules.excluded(remote.name, remote_file):
                continue
            targets = self.rules.installable_in(remote_file) & demand.targets
            if not targets:
                continue
            try:
                by_version.setdefault(Version(remote_file.version), []).append((remote_file, targets))
            except InvalidVersion:
                continue
        limit = self.rules.versions
        if limit is None:
            matching = set(specifier.filter(by_version, prereleases=True))
        else:
            matching = set(specifier.filter(by_version))
        result: dict[str, tuple[list[RemoteFile], frozenset[int]]] = {}
        for target in demand.targets:
            candidates = [
                version
                for version in sorted(matching, reverse=True)
                if any(target in targets for _, targets in by_version[version])
                and (limit is None or demand.exact or not all(item.yanked for item, _ in by_version[version]))
            ]
            for version in candidates if limit is None else candidates[:limit]:
                files = [item for item, targets in by_version[version] if target in targets]
                previous_files, previous_targets = result.get(str(version), ([], frozenset()))
                merged = {item.filename: item for item in previous_files + files}
                result[str(version)] = (list(merged.values()), previous_targets | {target})
        return result

    async def _expand(self, demand: _Demand, files: list[RemoteFile], version: str, targets: frozenset[int]) -> None:
        """Follow the requirements of one release (``files``: all of its files upstream)."""
        key = (demand.name, version, demand.extras, targets)
        if key in self._expanded:
            return
        self._expanded.add(key)
        assert self.metadata is not None
        choice = self.choice(demand.name)
        try:
            metadata = await self.metadata.get(demand.name, version, files, choice.files)
        except (UpstreamError, UnsafeNameError) as exc:
            choice.error(f"{demand.name} {version}: cannot read its dependencies: {exc}{_chain_text(demand.chain)}")
            return
        if metadata is None:
            choice.without_metadata[version] = None
            return
        requires_dist = metadata.requires_dist
        if len(requires_dist) > MAX_REQUIREMENTS_FOLLOWED:
            choice.notes.append(
                f"{demand.name} {version} lists {len(requires_dist)} requirements: "
                f"only the first {MAX_REQUIREMENTS_FOLLOWED} are followed"
            )
            requires_dist = requires_dist[:MAX_REQUIREMENTS_FOLLOWED]
        for text in requires_dist:
            try:
                requirement = Requirement(text)
                name = normalize(requirement.name)
            except (InvalidRequirement, UnsafeNameError):
                choice.notes.append(f"{demand.name} {version}: unparseable requirement {text!r} skipped")
                continue
            if requirement.url:
                continue
            applicable = self._applicable(requirement, targets, demand.extras)
            if not applicable:
                continue
            link = f"{demand.name} {version} requires {requirement}"
            self._spawn(
                _Demand(
                    name=name,
                    specifier=requirement.specifier,
                    extras=frozenset(requirement.extras),
                    targets=applicable,
                    chain=demand.chain + (link,),
                    exact=_is_exact(requirement.specifier),
                )
            )


async def choose(
    config: Config,
    roots: Roots,
    upstream: Upstream,
    store: Blobs,
    state: LocalState,
    *,
    must_refetch: Callable[[str], bool] = lambda name: False,
    persist: bool = True,
    on_project: Callable[[str], None] = lambda name: None,
    stash: dict[str, bytes] | None = None,
    store_file: StoreFile | None = None,
    on_chosen: Callable[[str, list[RemoteFile]], None] = lambda name, files: None,
) -> tuple[Pages, dict[str, ProjectChoice]]:
    """Fetch the pages the selection needs (conditionally) and decide every file to mirror."""
    pages = Pages(upstream, state, must_refetch)
    metadata = MetadataSource(upstream, store, persist=persist, stash=stash, store_file=store_file, cache=state)
    resolver = Resolver(rules_from(config), pages, metadata, follow=config.dependencies)
    resolver.on_project = on_project
    resolver.on_chosen = on_chosen
    return pages, await resolver.resolve(roots)


def _by_version(remote: RemoteProject) -> dict[str, list[RemoteFile]]:
    """A project's files by the version they claim, in the page's order, once per visit: picking
    each release's files out of the whole page would make the walk quadratic in its releases
    (``bench/walk_bench.py``)."""
    releases: dict[str, list[RemoteFile]] = {}
    for remote_file in remote.files:
        releases.setdefault(remote_file.version, []).append(remote_file)
    return releases


def _is_exact(specifier: SpecifierSet) -> bool:
    """``==1.2`` pins may pick yanked releases (PEP 592); ranges may not."""
    return any(spec.operator in ("==", "===") and "*" not in spec.version for spec in specifier)


__all__ = ["ANY", "MetadataSource", "ProjectChoice", "Resolver"]
