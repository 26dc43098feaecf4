"""Which projects this mirror hosts itself, and whether upstream may ever fill them.

``mirror.yaml`` ``hosted:`` names them (exact names and glob patterns, matched against the
normalized name). A hosted project is written only by uploads: no writer (sync, the pull-through
proxy) may merge an upstream project of the same name into it, not even a higher version, unless
its entry says it tracks that upstream project (PEP 708 ``tracks``). That one rule is what keeps a
public project from taking a private name (dependency confusion), so every writer asks here.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, replace

from .manifest import ProjectManifest

_SEPARATORS = re.compile(r"[-_.]+")


def normalize_pattern(pattern: str) -> str:
    """A name or glob in the PEP 503 form names are matched in (``Acme_*`` matches ``acme-lib``)."""
    return _SEPARATORS.sub("-", pattern).lower()


@dataclass(frozen=True)
class HostedProject:
    """One ``hosted:`` entry: a normalized name or glob, and the PEP 708 data its pages carry."""

    pattern: str
    tracks: tuple[str, ...] = ()
    alternate_locations: tuple[str, ...] = ()
    #: one of ``tracks`` is the configured upstream's page of the project: sync may fill it from there
    follows_upstream: bool = False

    @property
    def is_glob(self) -> bool:
        return any(char in self.pattern for char in "*?[")

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern) if self.is_glob else name == self.pattern


@dataclass(frozen=True)
class HostedSettings:
    """``hosted:`` of ``mirror.yaml``; the default hosts nothing (every upload is refused)."""

    projects: tuple[HostedProject, ...] = ()
    #: reads (pages and files) need a token too: a private index
    read_auth: bool = False
    #: the largest upload body accepted, in bytes
    max_upload_size: int = 1 << 30

    def entry(self, name: str) -> HostedProject | None:
        """The entry hosting normalized ``name``: an exact name first, else the first matching glob."""
        exact = [project for project in self.projects if not project.is_glob and project.matches(name)]
        if exact:
            return exact[0]
        return next((project for project in self.projects if project.matches(name)), None)

    def is_hosted(self, name: str) -> bool:
        return self.entry(name) is not None

    def kept_from_upstream(self, name: str) -> bool:
        """True when no writer may take ``name`` from upstream: hosted here, not tracking upstream's."""
        entry = self.entry(name)
        return entry is not None and not entry.follows_upstream


def with_pep708(manifest: ProjectManifest, settings: HostedSettings) -> ProjectManifest:
    """``manifest`` carrying the PEP 708 data ``hosted:`` declares for it: every writer of a hosted
    project's manifest records them, so each commit's page says what ``mirror.yaml`` said when it was
    written. A project not hosted here keeps what it has (upstream's own, passed through by sync)."""
    entry = settings.entry(manifest.name)
    if entry is None:
        return manifest
    tracks, alternates = entry.tracks, entry.alternate_locations
    if (manifest.tracks, manifest.alternate_locations) == (tracks, alternates):
        return manifest
    return replace(manifest, tracks=tracks, alternate_locations=alternates)
