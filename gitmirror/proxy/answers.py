"""What the pull-through proxy answers a page or file request with, and what it remembers of upstream."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..model.manifest import ProjectManifest
from ..model.page import RemoteFile
from .stream import SharedBody


class Unavailable(Exception):
    """No answer for a request: an HTTP status and one line of why."""

    def __init__(self, status: int, line: str) -> None:
        super().__init__(line)
        self.status = status
        self.line = line


@dataclass
class Upstreamed:
    """What the last refresh of a project learnt upstream (kept in memory only)."""

    fetched_at: float | None = None
    offers: dict[str, RemoteFile] = field(default_factory=dict)
    missing: bool = False
    failed: str | None = None  # why the last refresh failed (None: it did not)


@dataclass(frozen=True)
class Served:
    """A project page to render: the record plus the offers, and why it may be stale (None: current)."""

    manifest: ProjectManifest
    stale: str | None = None


@dataclass(frozen=True)
class Stored:
    """A file whose verified blob (``sha256``) is in the store."""

    sha256: str


@dataclass(frozen=True)
class Streaming:
    """A file on its way from upstream; ``size`` as announced."""

    body: SharedBody
    size: int | None
    sha256: str


@dataclass(frozen=True)
class BranchReader:
    """The manifests and project names at the tip of one branch (the server's cached view)."""

    manifest: Callable[[str], ProjectManifest | None]
    names: Callable[[], list[str]]
