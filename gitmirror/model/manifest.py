"""The per-project manifest: the public, line-oriented record of what the mirror serves.

One manifest per project lives at ``projects/<shard>/<normalized-name>.jsonl`` in the metadata
repository. Line 1 is the project header, every further line is one release file, each a JSON
object with a fixed key order, sorted by version then filename. The same state therefore always
serializes to the same bytes, and a new release shows up in ``git diff`` as added lines only.
The parser is strict because manifests also arrive from untrusted pushes (see ``hooks``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from packaging.version import InvalidVersion, Version

from .names import UnsafeNameError, check_filename, check_sha256, is_normalized, shard

FORMAT_VERSION = 1
PROJECT_STATUSES = ("active", "archived", "quarantined", "deprecated")
_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")  # fullmatch
_URL = re.compile(r"https?://[!#-;=?-~]+")  # fullmatch: printable ASCII, no quote, space, < or >
PROJECTS_DIR = "projects"
SUFFIX = ".jsonl"
#: PEP 740: a file's provenance object is served at its URL plus this suffix
PROVENANCE_SUFFIX = ".provenance"


class ManifestError(ValueError):
    """A manifest that does not follow the format; carries the path and line for the message."""


def now() -> str:
    """The current time in the manifest's time format (UTC, whole seconds)."""
    return format_time(datetime.now(UTC).replace(microsecond=0))


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``, the PEP 700 ``upload-time`` form."""
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}"
    return text + "Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def manifest_path(normalized: str) -> str:
    """Where a project's manifest lives in the repository (the name must be normalized)."""
    if not is_normalized(normalized):
        raise UnsafeNameError(f"not a normalized project name: {normalized!r}")
    return f"{PROJECTS_DIR}/{shard(normalized)}/{normalized}{SUFFIX}"


def project_of_path(path: str) -> str | None:
    """The project a repository path is the manifest of, or None for other paths."""
    if not (path.startswith(PROJECTS_DIR + "/") and path.endswith(SUFFIX)):
        return None
    name = path.rsplit("/", 1)[-1][: -len(SUFFIX)]
    if not is_normalized(name) or manifest_path(name) != path:
        return None
    return name


@dataclass(frozen=True)
class Tombstone:
    """Why and when a file was taken down; the entry stays, the bytes go."""

    reason: str
    time: str


@dataclass(frozen=True)
class FileEntry:
    filename: str
    version: str
    sha256: str
    size: int
    requires_python: str | None = None
    upload_time: str | None = None
    yanked: bool | str = False
    core_metadata: str | None = None
    first_seen: str = ""
    upstream_removed: str | None = None
    tombstone: Tombstone | None = None
    #: sha256 of the file's PEP 740 provenance object (a blob of its own in the store), or None
    provenance: str | None = None

    @property
    def is_yanked(self) -> bool:
        return self.yanked is not False

    @property
    def yanked_reason(self) -> str | None:
        return self.yanked if isinstance(self.yanked, str) else None

    @property
    def served(self) -> bool:
        """Tombstoned files vanish from the index; everything else is served forever."""
        return self.tombstone is None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "filename": self.filename,
            "version": self.version,
            "sha256": self.sha256,
            "size": self.size,
            "requires-python": self.requires_python,
            "upload-time": self.upload_time,
            "yanked": self.yanked,
            "core-metadata": self.core_metadata,
            "first-seen": self.first_seen,
        }
        if self.provenance:
            data["provenance"] = self.provenance
        if self.upstream_removed:
            data["upstream-removed"] = self.upstream_removed
        if self.tombstone:
            data["tombstone"] = {"reason": self.tombstone.reason, "time": self.tombstone.time}
        return data


@dataclass(frozen=True)
class ProjectManifest:
    name: str
    files: dict[str, FileEntry] = field(default_factory=dict)
    status: str = "active"
    status_reason: str | None = None
    upstream_removed: str | None = None
    #: PEP 708, for projects hosted here (``model.hosted``): project pages elsewhere this one tracks, and
    #: the locations the operator declares as the same project; recorded so every commit's page keeps them
    tracks: tuple[str, ...] = ()
    alternate_locations: tuple[str, ...] = ()

    def with_file(self, entry: FileEntry) -> ProjectManifest:
        return replace(self, files={**self.files, entry.filename: entry})

    def with_files(self, entries: Iterable[FileEntry]) -> ProjectManifest:
        """``with_file`` of many at once: one copy of the files recorded so far, not one per entry
        (projects of thousands of files)."""
        return replace(self, files={**self.files, **{entry.filename: entry for entry in entries}})

    def served_files(self) -> list[FileEntry]:
        return [entry for entry in self.sorted_files() if entry.served]

    def sorted_files(self) -> list[FileEntry]:
        return sorted(self.files.values(), key=_file_order)

    def versions(self) -> list[str]:
        """Distinct versions of served files, oldest first (PEP 700 ``versions``)."""
        seen: dict[str, None] = {}
        for entry in self.served_files():
            seen.setdefault(entry.version, None)
        return list(seen)

    def header(self) -> dict[str, Any]:
        data: dict[str, Any] = {"gitmirror-manifest": FORMAT_VERSION, "name": self.name}
        if self.status != "active" or self.status_reason:
            data["project-status"] = {"status": self.status, "reason": self.status_reason}
        if self.upstream_removed:
            data["upstream-removed"] = self.upstream_removed
        if self.tracks:
            data["tracks"] = list(self.tracks)
        if self.alternate_locations:
            data["alternate-locations"] = list(self.alternate_locations)
        return data

    def dumps(self) -> bytes:
        lines = [_dump_line(self.header())]
        lines += [_dump_line(entry.to_json()) for entry in self.sorted_files()]
        return ("\n".join(lines) + "\n").encode()


@dataclass(frozen=True)
class NeededBlob:
    """A blob that a served file needs, with the URL path (project/filename) it is served under."""

    sha256: str
    size: int | None
    project: str
    filename: str
    #: for a PEP 658 file: its wheel, which older repositories read it out of (docs/pep658.md), None otherwise
    wheel: str | None = None

    @property
    def label(self) -> str:
        return f"{self.project}/{self.filename}"


def blobs_needed_by(manifests: Iterable[ProjectManifest]) -> dict[str, NeededBlob]:
    """Every blob the served files need (release files and core metadata), by sha256.

    Tombstoned files are left out: their bytes were taken down on purpose. The store is
    content-addressed, so one blob may serve several files; the first one names it (the first
    wheel, for a PEP 658 file: platform wheels of one release often share their METADATA).
    """
    needed: dict[str, NeededBlob] = {}
    for manifest in manifests:
        for entry in manifest.served_files():
            for blob in blobs_of(manifest.name, entry):
                known = needed.get(blob.sha256)
                if known is None or (known.wheel is None and blob.wheel and known.filename.endswith(".metadata")):
                    needed[blob.sha256] = blob
    return needed


def blobs_of(project: str, entry: FileEntry) -> list[NeededBlob]:
    """The blobs one served file needs: its own, its PEP 658 file's (readable out of a wheel) and its
    PEP 740 provenance object's."""
    blobs = [NeededBlob(entry.sha256, entry.size, project, entry.filename)]
    if entry.core_metadata:
        wheel = entry.sha256 if entry.filename.endswith(".whl") else None
        blobs.append(NeededBlob(entry.core_metadata, None, project, entry.filename + ".metadata", wheel))
    if entry.provenance:
        blobs.append(NeededBlob(entry.provenance, None, project, entry.filename + PROVENANCE_SUFFIX))
    return blobs


def _dump_line(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True)


def _file_order(entry: FileEntry) -> tuple[int, Any, str]:
    try:
        return (1, Version(entry.version), entry.filename)
    except InvalidVersion:
        return (0, entry.version, entry.filename)


FILE_KEYS = {
    "filename",
    "version",
    "sha256",
    "size",
    "requires-python",
    "upload-time",
    "yanked",
    "core-metadata",
    "first-seen",
    "upstream-removed",
    "tombstone",
    "provenance",
}
_HEADER_KEYS = {"gitmirror-manifest", "name", "project-status", "upstream-removed", "tracks", "alternate-locations"}


def loads(data: bytes, path: str = "<manifest>") -> ProjectManifest:
    """Parse a manifest strictly; any deviation raises ManifestError naming path and line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not UTF-8") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ManifestError(f"{path}: empty manifest")
    try:
        header = _object(lines[0], _HEADER_KEYS)
        if header.get("gitmirror-manifest") != FORMAT_VERSION:
            raise ValueError(f"unsupported format version {header.get('gitmirror-manifest')!r}")
        name = _string(header, "name")
        if not is_normalized(name):
            raise ValueError(f"project name {name!r} is not normalized")
        status, reason = "active", None
        if "project-status" in header:
            marker = header["project-status"]
            if not isinstance(marker, dict) or set(marker) - {"status", "reason"}:
                raise ValueError("project-status must be an object with status and reason")
            marked = marker.get("status")
            if not isinstance(marked, str) or marked not in PROJECT_STATUSES:
                raise ValueError(f"unknown project status {marked!r}")
            status = marked
            reason = _optional_string(marker, "reason")
        manifest = ProjectManifest(
            name=name,
            status=status,
            status_reason=reason,
            upstream_removed=_optional_time(header, "upstream-removed"),
            tracks=_urls(header, "tracks"),
            alternate_locations=_urls(header, "alternate-locations"),
        )
    except (ValueError, UnsafeNameError) as exc:
        raise ManifestError(f"{path}:1: {exc}") from exc
    files: dict[str, FileEntry] = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            entry = _file_entry(_object(line, FILE_KEYS))
        except (ValueError, UnsafeNameError) as exc:
            raise ManifestError(f"{path}:{number}: {exc}") from exc
        if entry.filename in files:
            raise ManifestError(f"{path}:{number}: duplicate entry for {entry.filename}")
        files[entry.filename] = entry
    return replace(manifest, files=files)


def _object(line: str, allowed: set[str]) -> dict[str, Any]:
    value = json.loads(line)
    if not isinstance(value, dict):
        raise ValueError("line is not a JSON object")
    unknown = set(value) - allowed
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}")
    return value


def _string(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    if "\x00" in value or len(value) > 10_000:
        raise ValueError(f"{key} is not acceptable text")
    return value


def _optional_string(data: dict[str, Any], key: str) -> str | None:
    if data.get(key) is None:
        return None
    value = data[key]
    if not isinstance(value, str) or "\x00" in value or len(value) > 10_000:
        raise ValueError(f"{key} must be a string")
    return value


def is_page_url(url: object) -> bool:
    """Whether ``url`` may be recorded as PEP 708 data: an http(s) URL that cannot break out of a page."""
    return isinstance(url, str) and _URL.fullmatch(url) is not None and len(url) <= 2000


def _urls(data: dict[str, Any], key: str) -> tuple[str, ...]:
    """A PEP 708 list of http(s) URLs (absent: none); they end up in pages, so nothing else is taken."""
    value = data.get(key, [])
    if not isinstance(value, list) or not all(is_page_url(url) for url in value):
        raise ValueError(f"{key} must be a list of http(s) URLs")
    return tuple(value)


def _optional_time(data: dict[str, Any], key: str) -> str | None:
    value = _optional_string(data, key)
    if value is not None and not _TIME.fullmatch(value):
        raise ValueError(f"{key} must be a UTC time like 2026-01-31T12:00:00Z")
    return value


def _file_entry(data: dict[str, Any]) -> FileEntry:
    size = data.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ValueError("size must be a non-negative integer")
    yanked = data.get("yanked", False)
    if not isinstance(yanked, bool | str):
        raise ValueError("yanked must be true, false or a reason")
    core = data.get("core-metadata")
    if core is not None:
        check_sha256(core)
    provenance = data.get("provenance")
    if provenance is not None:
        check_sha256(provenance)
    tombstone = None
    if data.get("tombstone") is not None:
        stone = data["tombstone"]
        if not isinstance(stone, dict) or set(stone) != {"reason", "time"}:
            raise ValueError("tombstone must be an object with reason and time")
        if _optional_time(stone, "time") is None:
            raise ValueError("tombstone time must be a UTC time like 2026-01-31T12:00:00Z")
        tombstone = Tombstone(reason=_optional_string(stone, "reason") or "", time=stone["time"])
    return FileEntry(
        filename=check_filename(_string(data, "filename")),
        version=_string(data, "version"),
        sha256=check_sha256(_string(data, "sha256")),
        size=size,
        requires_python=_optional_string(data, "requires-python"),
        upload_time=_optional_time(data, "upload-time"),
        yanked=yanked,
        core_metadata=core,
        first_seen=_optional_time(data, "first-seen") or "",
        upstream_removed=_optional_time(data, "upstream-removed"),
        tombstone=tombstone,
        provenance=provenance,
    )
