"""Opening distribution archives (a ``.tar.gz`` sdist, a wheel or ``.zip`` sdist) in bounded memory
and time, whatever their headers claim: every reader of an uploaded or mirrored archive goes
through here, so a small hostile archive cannot turn into gigabytes.

tarfile reads a pax or GNU long-name header whole into memory, copies the archive's global pax
headers into every member, follows GNU sparse maps block by block, and keeps every member it has
read; zipfile keeps a ``ZipInfo`` of several hundred bytes per central directory entry (which may
be a few dozen bytes, all naming the same data). ``open_tar_gz`` and ``open_zip`` refuse such
archives before reading them (``ArchiveTooLarge``, one line), and ``members`` holds no tar member
it has yielded. Reading what a member unpacks to costs time in proportion: tar members are
refused past ``MAX_UNPACKED_BYTES`` before their data is read.
"""

from __future__ import annotations

import gzip
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

#: what one distribution may unpack to: far beyond any real one (the largest wheels unpack to a few GB)
MAX_UNPACKED_BYTES = 16 << 30
#: the largest pax or GNU long-name header of one member (real ones are a few hundred bytes)
MAX_EXTENDED_HEADER_BYTES = 1 << 20
#: all global pax headers of an archive together: every member gets a copy (git archive writes ~50 bytes)
MAX_GLOBAL_HEADER_BYTES = 4 << 10
#: the largest zip central directory opened: about 150,000 members, far beyond any real distribution
MAX_ZIP_DIRECTORY_BYTES = 8 << 20
_EXTENDED = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
#: what reading a damaged, hostile or foreign archive raises (RuntimeError: an encrypted zip member;
#: NotImplementedError: a compression zipfile lacks): every reader gives up on these the same way
UNREADABLE = (
    tarfile.TarError,
    zipfile.BadZipFile,
    OSError,
    RuntimeError,
    NotImplementedError,
    zlib.error,
    EOFError,
    ValueError,
)


class ArchiveTooLarge(tarfile.ReadError, zipfile.BadZipFile):
    """An archive past one of this module's bounds (a ``tarfile.TarError`` and a ``zipfile.BadZipFile``,
    so every reader that gives up on a damaged archive gives up on it too); the message is one line."""


class _BoundedTarInfo(tarfile.TarInfo):
    def _proc_member(self, archive: Any) -> Any:  # tarfile's hook for every header, before it reads more
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise ArchiveTooLarge(f"{self.name} is a sparse member (no source tree has one)")
        if self.type in _EXTENDED and self.size > MAX_EXTENDED_HEADER_BYTES:
            raise ArchiveTooLarge(f"an extended header of {self.size} bytes is over {MAX_EXTENDED_HEADER_BYTES}")
        if self.type == tarfile.XGLTYPE:
            archive.global_header_bytes += self.size
            if archive.global_header_bytes > MAX_GLOBAL_HEADER_BYTES:
                raise ArchiveTooLarge(f"its global headers are over {MAX_GLOBAL_HEADER_BYTES} bytes")
        if self.offset + self.size > MAX_UNPACKED_BYTES:
            raise ArchiveTooLarge(f"it unpacks to over {MAX_UNPACKED_BYTES} bytes")
        return super()._proc_member(archive)  # type: ignore[misc]  # not in the stubs


class _BoundedTarFile(tarfile.TarFile):
    tarinfo = _BoundedTarInfo

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.global_header_bytes = 0  # before ``__init__`` reads the first header
        super().__init__(*args, **kwargs)


def open_tar_gz(source: IO[bytes]) -> tarfile.TarFile:
    """``source`` opened as a gzip-compressed tar whose headers are bounded (``tarfile.TarError`` else)."""
    return _BoundedTarFile.open(fileobj=source, mode="r:gz")


def members(tarball: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Every member of ``tarball`` in order; none is kept once the next is read (unlike iterating it)."""
    while (member := tarball.next()) is not None:
        tarball.members.clear()  # type: ignore[attr-defined]  # what iterating it keeps
        yield member


def gunzip_to_end(handle: IO[bytes]) -> None:
    """Read a gzip stream to its end, where gzip checks its CRC and length; refused past
    ``MAX_UNPACKED_BYTES`` (what follows a tar's last member is bounded by nothing else)."""
    unpacked = 0
    with gzip.GzipFile(fileobj=handle, mode="rb") as stream:
        while chunk := stream.read(1 << 20):
            unpacked += len(chunk)
            if unpacked > MAX_UNPACKED_BYTES:
                raise ArchiveTooLarge(f"it unpacks to over {MAX_UNPACKED_BYTES} bytes")


def open_zip(source: str | Path | IO[bytes]) -> zipfile.ZipFile:
    """``source`` as a ``zipfile.ZipFile``, refused (``ArchiveTooLarge``) when its central directory is too large."""
    if isinstance(source, str | Path):
        with open(source, "rb") as handle:
            _check_directory_size(handle)
    else:
        _check_directory_size(source)
    return zipfile.ZipFile(source)


def check_unpacked_size(archive: zipfile.ZipFile) -> None:
    """Refuse a zip whose members say they unpack to over ``MAX_UNPACKED_BYTES`` (zipfile reads no
    member past its stated size), before reading them all costs that much time."""
    if sum(info.file_size for info in archive.infolist()) > MAX_UNPACKED_BYTES:
        raise ArchiveTooLarge(f"it unpacks to over {MAX_UNPACKED_BYTES} bytes")


def _check_directory_size(handle: IO[bytes]) -> None:
    end = zipfile._EndRecData(handle)  # type: ignore[attr-defined]  # zipfile's own reader of the end record
    size = end[zipfile._ECD_SIZE] if end is not None else 0  # type: ignore[attr-defined]
    if size > MAX_ZIP_DIRECTORY_BYTES:
        raise ArchiveTooLarge(
            f"its central directory of {size} bytes is over {MAX_ZIP_DIRECTORY_BYTES} "
            "(far beyond any real distribution)"
        )
