"""The legacy upload form (what twine, ``uv publish``, flit and hatch POST), checked before anything is kept.

A multipart POST with ``:action=file_upload``, ``name``, ``version``, ``content`` (the file),
``sha256_digest`` and the core metadata fields. ``check_form`` judges the fields (pure), ``check_file``
the received bytes: the digest, for a wheel that it is a zip archive whose ``.dist-info`` and
METADATA name the project and version its filename does (an installer trusts both), for an sdist
that its archive is whole and its PKG-INFO names them too. Every refusal
is an ``UploadRefused`` carrying its HTTP status and the one line the client shows.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from ..model.limits import MAX_METADATA_BYTES
from ..model.names import UnsafeNameError, check_filename, check_sha256, normalize
from ..storage import metadata as core_metadata
from ..storage.bounded_archives import (
    UNREADABLE,
    ArchiveTooLarge,
    gunzip_to_end,
    members,
    open_tar_gz,
    open_zip,
)
from .archive_checks import zip_problem

#: the forms a file may be uploaded in: what installers take from an index
WHEEL, SDIST = "bdist_wheel", "sdist"
_SDIST_SUFFIXES = (".tar.gz", ".zip")
#: an sdist with more members than this is refused: far beyond any real source tree (reading each costs time)
MAX_SDIST_MEMBERS = 200_000


class UploadRefused(Exception):
    """An upload answered with ``status`` and one line of why; nothing of it is kept."""

    def __init__(self, status: int, line: str) -> None:
        super().__init__(line)
        self.status = status
        self.line = line


def bad(line: str) -> UploadRefused:
    return UploadRefused(400, line)


@dataclass(frozen=True)
class UploadForm:
    """The checked fields of one upload."""

    project: str  # normalized
    version: str  # the filename's, in PEP 440 normal form (what a sync records)
    filename: str
    sha256: str
    requires_python: str | None

    @property
    def is_wheel(self) -> bool:
        return self.filename.endswith(".whl")


def check_form(fields: Mapping[str, str], filename: str | None) -> UploadForm:
    """The upload's fields, checked against each other and against the file's name."""
    action = fields.get(":action")
    if action != "file_upload":
        raise bad(f"unsupported :action {action!r} (only file_upload)")
    for field in ("name", "version", "sha256_digest"):
        if not fields.get(field, "").strip():
            raise bad(f"missing field {field}")
    if not filename:
        raise bad("missing field content (the file)")
    try:
        project = normalize(fields["name"].strip())
        check_filename(filename)
    except UnsafeNameError as exc:
        raise bad(str(exc)) from None
    try:
        version = Version(fields["version"].strip())
    except InvalidVersion:
        raise bad(f"invalid version {fields['version']!r}") from None
    digest = fields["sha256_digest"].strip().lower()
    try:
        check_sha256(digest)
    except UnsafeNameError:
        raise bad(f"sha256_digest {fields['sha256_digest']!r} is not a sha256 hex digest") from None
    named, named_version = _name_and_version(filename)
    if named != project or named_version != version:
        raise bad(f"{filename} does not match the upload's name {project} and version {version}")
    requires_python = fields.get("requires_python", "").strip() or None
    if requires_python is not None and not _is_specifier(requires_python):
        raise bad(f"invalid requires_python {requires_python!r} (a version specifier such as >=3.9)")
    return UploadForm(project, str(named_version), filename, digest, requires_python)  # as a sync records it


def _name_and_version(filename: str) -> tuple[str, Version]:
    """The project and version a distribution filename names (``packaging``'s parsers)."""
    try:
        if filename.endswith(".whl"):
            name, version, _build, _tags = parse_wheel_filename(filename)
        elif filename.endswith(_SDIST_SUFFIXES):
            name, version = parse_sdist_filename(filename)
        else:
            raise bad(f"{filename}: only wheels (.whl) and sdists (.tar.gz, .zip) are accepted")
    except (InvalidWheelFilename, InvalidSdistFilename) as exc:
        raise bad(f"{filename}: {exc}") from None
    return name, version


def same_distribution(filename: str, recorded: str) -> bool:
    """Whether an installer could take ``recorded`` (a file of the same project) where it takes
    ``filename``: the same version and, for two wheels, the same build tag and a tag in common; for
    two sdists, the same version (one per release). A filename that does not parse (a legacy
    format) is no such file. A second spelling of a recorded file would let other bytes be installed."""
    try:
        if filename.endswith(".whl") and recorded.endswith(".whl"):
            _name, version, build, tags = parse_wheel_filename(filename)
            _name, other_version, other_build, other_tags = parse_wheel_filename(recorded)
            return (version, build) == (other_version, other_build) and not tags.isdisjoint(other_tags)
        if not filename.endswith(".whl") and not recorded.endswith(".whl"):
            return parse_sdist_filename(filename)[1] == parse_sdist_filename(recorded)[1]
    except (InvalidWheelFilename, InvalidSdistFilename):
        pass
    return False


def file_sha256(handle: IO[bytes]) -> tuple[str, int]:
    """The sha256 and size of an uploaded file (read from its start, in chunks)."""
    handle.seek(0)
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    handle.seek(0)
    return digest.hexdigest(), size


def check_file(form: UploadForm, handle: IO[bytes]) -> tuple[int, bytes | None, str | None]:
    """Check the bytes: their sha256 is the form's, a wheel is a wheel of its filename.

    Returns the size, the wheel's METADATA (its PEP 658 file; None for an sdist) and the
    Requires-Python to record (the wheel's METADATA, else the form's).
    """
    digest, size = file_sha256(handle)
    if digest != form.sha256:
        raise bad(f"sha256_digest {form.sha256} does not match the uploaded file (sha256 {digest})")
    if size == 0:
        raise bad(f"{form.filename} is empty")
    if not form.is_wheel:
        sdist_pkg_info(form, handle)
        return size, None, form.requires_python
    metadata = wheel_metadata(form, handle)
    requires_python = core_metadata.parse(metadata).requires_python
    if requires_python is not None and not _is_specifier(requires_python):
        raise bad(f"{form.filename}: its METADATA has an invalid Requires-Python {requires_python!r}")
    return size, metadata, requires_python


def _is_specifier(text: str) -> bool:
    """A Requires-Python is recorded forever and installers parse it: only a valid specifier set is kept."""
    try:
        SpecifierSet(text)
    except InvalidSpecifier:
        return False
    return True


def wheel_metadata(form: UploadForm, handle: IO[bytes]) -> bytes:
    """The METADATA of a wheel whose archive, ``.dist-info`` and metadata all name the form's project
    and version; every member's CRC is checked (a damaged wheel fails at install, not here, otherwise)."""
    with _reading(form, handle, "wheel", "not a zip archive"), open_zip(handle) as archive:
        metadata = _metadata_member(form, archive)
    _check_names_the_upload(metadata, "METADATA", form)
    return metadata


def sdist_pkg_info(form: UploadForm, handle: IO[bytes]) -> bytes:
    """The PKG-INFO of an sdist whose archive is whole (gzip's CRC read to the end, a zip's member
    CRCs) and whose top-level ``<directory>/PKG-INFO`` names the form's project and version, as the
    build backends that install it will read them."""
    kind = "zip" if form.filename.endswith(".zip") else "gzip-compressed tar"
    with _reading(form, handle, "sdist", f"not a {kind} archive"):
        _read_whole(handle, form.filename)
    pkg_info = core_metadata.from_sdist(handle, form.filename)
    handle.seek(0)
    if pkg_info is None:
        raise bad(f"{form.filename} is not a valid sdist: it has no PKG-INFO in its top-level directory")
    _check_names_the_upload(pkg_info, "PKG-INFO", form)
    return pkg_info


@contextmanager
def _reading(form: UploadForm, handle: IO[bytes], kind: str, unreadable: str) -> Iterator[None]:
    """Read the upload's archive: what cannot be read, or is past a bound, is one 400 line; the
    file is rewound for the next reader either way."""
    try:
        yield
    except ArchiveTooLarge as exc:
        raise bad(f"{form.filename} is not a valid {kind}: {exc}") from None
    except UNREADABLE:
        raise bad(f"{form.filename} is not a valid {kind}: {unreadable}") from None
    finally:
        handle.seek(0)


def _check_names_the_upload(metadata: bytes, member: str, form: UploadForm) -> None:
    parsed = core_metadata.parse(metadata)
    if not _same(parsed.name, parsed.version, form):
        raise bad(
            f"{form.filename}: its {member} says {parsed.name or '?'} {parsed.version or '?'}, "
            f"the upload {form.project} {form.version}"
        )


def _read_whole(handle: IO[bytes], filename: str) -> None:
    """Read an archive to its end, so a damaged one fails here rather than at install."""
    if filename.endswith(".zip"):
        with open_zip(handle) as archive:
            problem = zip_problem(archive)
        if problem is not None:
            raise bad(f"{filename} is not a valid sdist: {problem}")
        return
    with open_tar_gz(handle) as tarball:
        for count, _member in enumerate(members(tarball), 1):  # every header parses
            if count > MAX_SDIST_MEMBERS:
                raise bad(f"{filename} is not a valid sdist: it has over {MAX_SDIST_MEMBERS} members")
    handle.seek(0)
    gunzip_to_end(handle)


def _metadata_member(form: UploadForm, archive: zipfile.ZipFile) -> bytes:
    not_a_wheel = f"{form.filename} is not a valid wheel"
    names = archive.namelist()
    problem = zip_problem(archive)
    if problem is not None:
        raise bad(f"{not_a_wheel}: {problem}")
    dist_infos = {name.split("/", 1)[0] for name in names if name.split("/", 1)[0].endswith(".dist-info")}
    if len(dist_infos) != 1:
        raise bad(f"{not_a_wheel}: it needs exactly one .dist-info directory, has {len(dist_infos)}")
    dist_info = dist_infos.pop()
    for required in ("METADATA", "WHEEL", "RECORD"):
        if f"{dist_info}/{required}" not in names:
            raise bad(f"{not_a_wheel}: {dist_info}/{required} is missing")
    name, _, version = dist_info.removesuffix(".dist-info").rpartition("-")
    if not _same(name, version, form):
        raise bad(f"{not_a_wheel}: its {dist_info} does not match {form.project} {form.version}")
    metadata = archive.getinfo(f"{dist_info}/METADATA")
    if metadata.file_size > MAX_METADATA_BYTES:
        raise bad(f"{not_a_wheel}: its METADATA inflates to {metadata.file_size} bytes, over {MAX_METADATA_BYTES}")
    return archive.read(metadata)


def _same(name: str, version: str, form: UploadForm) -> bool:
    try:
        return canonicalize_name(name) == form.project and Version(version) == Version(form.version)
    except InvalidVersion:
        return False
