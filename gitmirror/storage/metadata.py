"""Core metadata (``METADATA`` / ``PKG-INFO``) of a release: dependencies and who published it.

Read from inside the wheel, or from upstream's PEP 658 file, a blob of its own (docs/pep658.md).
Dependency closures, review reports and status pages all need the same few fields, parsed the
same way.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from packaging.metadata import parse_email

from ..model.limits import MAX_METADATA_BYTES
from ..model.manifest import FileEntry, NeededBlob
from .blobs import Blobs
from .bounded_archives import UNREADABLE, members, open_tar_gz, open_zip
from .store import MISSING


@dataclass(frozen=True)
class CoreMetadata:
    name: str
    version: str
    requires_dist: tuple[str, ...] = ()
    requires_python: str | None = None
    provides_extra: tuple[str, ...] = ()
    author: str | None = None
    author_email: str | None = None
    home_page: str | None = None
    project_urls: tuple[str, ...] = field(default=())
    summary: str | None = None


_EMPTY_LINE = re.compile(rb"\r?\n\r?\n|\r\r")  # where the headers end at the latest


def parse(data: bytes) -> CoreMetadata:
    """Parse METADATA bytes with ``packaging.metadata.parse_email``; tolerant of what real uploads
    contain: a field packaging cannot take (a single-use field given twice, bytes that are not
    UTF-8) is read from its first value, never an exception.

    Only the headers are parsed: the description after them can be most of the file and is not used.
    """
    end = _EMPTY_LINE.search(data)
    raw, unparsed = parse_email(data[: end.start()] if end else data)
    fields: Mapping[str, object] = raw  # looked up by a computed key

    def first(key: str, header: str) -> str | None:
        value = fields.get(key)
        if not isinstance(value, str):
            value = unparsed[header][0] if unparsed.get(header) else None
        value = value.strip() if value is not None else None
        return value if value not in (None, "", "UNKNOWN") else None

    def every(key: str, header: str) -> tuple[str, ...]:
        values = fields.get(key)
        if not isinstance(values, list) or not values:
            values = unparsed.get(header) or []
        return tuple(value.strip() for value in values)

    urls = raw.get("project_urls")
    return CoreMetadata(
        name=first("name", "name") or "",
        version=first("version", "version") or "",
        requires_dist=every("requires_dist", "requires-dist"),
        requires_python=first("requires_python", "requires-python"),
        provides_extra=every("provides_extra", "provides-extra"),
        author=first("author", "author"),
        author_email=first("author_email", "author-email"),
        home_page=first("home_page", "home-page"),
        project_urls=tuple(f"{label}, {url}" for label, url in urls.items())
        if urls is not None
        else every("project_urls", "project-url"),
        summary=first("summary", "summary"),
    )


def from_wheel(wheel: str | Path | bytes | memoryview | IO[bytes]) -> bytes | None:
    """The METADATA bytes inside a wheel (a file, or the wheel in memory), or None when it has none
    or cannot be read (no zip, damaged, encrypted, an unknown compression: a hostile upload must not
    stop a sync or a server).

    The first ``<distribution>.dist-info/METADATA`` at the top of the archive, as installers read it;
    one that says it inflates past ``MAX_METADATA_BYTES`` is not read (a zip bomb would fill memory).
    """
    source = io.BytesIO(wheel) if isinstance(wheel, bytes | memoryview) else wheel
    try:
        with open_zip(source) as archive:
            for info in archive.infolist():
                directory, _, file = info.filename.partition("/")
                if file == "METADATA" and directory.endswith(".dist-info"):
                    return archive.read(info) if info.file_size <= MAX_METADATA_BYTES else None
    except UNREADABLE:
        return None
    return None


#: a PKG-INFO larger than this is not read: core metadata is a few kB, the description included
MAX_PKG_INFO = 1_000_000


def from_sdist(sdist: bytes | IO[bytes], filename: str) -> bytes | None:
    """The top-level ``<directory>/PKG-INFO`` of an sdist (a ``.tar.gz``, or a ``.zip`` by its
    ``filename``), read without extracting anything; None when it has none or cannot be read."""
    source = io.BytesIO(sdist) if isinstance(sdist, bytes) else sdist
    try:
        if filename.endswith(".zip"):
            with open_zip(source) as archive:
                for info in archive.infolist():
                    if _is_top_pkg_info(info.filename) and info.file_size < MAX_PKG_INFO:
                        return archive.read(info)
            return None
        with open_tar_gz(source) as tarball:
            for member in members(tarball):
                if _is_top_pkg_info(member.name) and member.isfile() and member.size < MAX_PKG_INFO:
                    handle = tarball.extractfile(member)
                    return handle.read() if handle else None
    except UNREADABLE:
        return None
    return None


def _is_top_pkg_info(member: str) -> bool:
    parts = member.split("/")
    return len(parts) == 2 and parts[1] == "PKG-INFO"


def from_stored_wheel(store: Blobs, sha256: str) -> bytes | None:
    """``from_wheel`` of a stored blob, read in place (an S3 store fetches the ranges zipfile reads)."""
    with store.open(sha256) as wheel:
        return from_wheel(wheel)


@dataclass(frozen=True)
class WheelMetadata:
    """The core metadata inside a wheel just stored (``read_stored_wheel``)."""

    metadata: CoreMetadata | None  # None: the wheel has no METADATA (or is no zip)
    upstreams: bool  # the same bytes as upstream's PEP 658 file, or upstream offers none

    @property
    def serves_pep658(self) -> bool:
        """Upstream's PEP 658 file is this wheel's METADATA: stored from it (``keep_pep658``), never downloaded."""
        return self.metadata is not None and self.upstreams


def read_stored_wheel(store: Blobs, sha256: str, metadata_sha256: str | None) -> WheelMetadata:
    """Read a stored wheel's METADATA, and store it as upstream's PEP 658 file when it is that file.

    Done where the wheel was downloaded (a download process) as soon as it is stored: a sync
    needs the dependencies of every release it walks, and the PEP 658 file then costs no download.
    """
    inside = from_stored_wheel(store, sha256)
    wheel = wheel_metadata(inside, metadata_sha256)
    if inside is not None and metadata_sha256 is not None and keep_pep658(store, wheel, metadata_sha256):
        store.put_bytes(inside, metadata_sha256)
    return wheel


def wheel_metadata(inside: bytes | None, metadata_sha256: str | None) -> WheelMetadata:
    """What a wheel's METADATA (``from_wheel``) says, and whether it is upstream's PEP 658 file."""
    if inside is None:
        return WheelMetadata(None, False)
    upstreams = metadata_sha256 is None or hashlib.sha256(inside).hexdigest() == metadata_sha256
    return WheelMetadata(parse(inside), upstreams)


def keep_pep658(store: Blobs, wheel: WheelMetadata, metadata_sha256: str) -> bool:
    """Whether the wheel's METADATA is upstream's PEP 658 file and the store lacks its blob."""
    return wheel.serves_pep658 and not store.has(metadata_sha256)


def in_wheel(store: Blobs, metadata_sha256: str, wheel_sha256: str | None) -> bytes | None:
    """A PEP 658 file read out of its stored wheel: the wheel's METADATA when its sha256 is the
    file's, else None (no wheel, wheel not stored, or upstream's file differs from it).

    Syncs store every PEP 658 file as a blob of its own; repositories synced before that kept the
    ones equal to their wheel's METADATA only inside the wheel (docs/pep658.md): they are still served.
    """
    if wheel_sha256 is None or not store.has(wheel_sha256):
        return None
    inside = from_stored_wheel(store, wheel_sha256)
    if inside is None or hashlib.sha256(inside).hexdigest() != metadata_sha256:
        return None
    return inside


def blob_problem(store: Blobs, blob: NeededBlob, rehash: bool) -> str | None:
    """What keeps ``store`` from serving ``blob`` (None: nothing): its file missing, or damaged
    when ``rehash``; a PEP 658 file readable out of its wheel is there."""
    problem = store.verify(blob.sha256, blob.size) if rehash else None if store.has(blob.sha256) else MISSING
    if problem == MISSING and in_wheel(store, blob.sha256, blob.wheel) is not None:
        return None
    return problem


def materialize(store: Blobs, blob: NeededBlob) -> bool:
    """Give ``blob`` a file in ``store`` (a PEP 658 file kept in its wheel is written out now), for
    what links to files (``render``, ``hydrate``); False when the store cannot have it (not there, not in a
    stored wheel, or a store that cannot be written: a render of a read-only one lists it missing)."""
    if store.has(blob.sha256):
        return True
    data = in_wheel(store, blob.sha256, blob.wheel)
    if data is None:
        return False
    try:
        store.put_bytes(data, blob.sha256)
    except OSError:
        return False
    return True


def for_entry(store: Blobs, entry: FileEntry) -> CoreMetadata | None:
    """The metadata of a recorded file, from the store; None when it cannot be known offline."""
    if entry.core_metadata and store.has(entry.core_metadata):
        return parse(store.read_bytes(entry.core_metadata))  # upstream's PEP 658 file
    if entry.filename.endswith(".whl") and store.has(entry.sha256):
        data = from_stored_wheel(store, entry.sha256)
        return parse(data) if data is not None else None
    return None
