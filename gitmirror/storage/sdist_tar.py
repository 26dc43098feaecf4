"""Reading a ``.tar.gz`` (an sdist) member by member in bounded memory, whatever its headers claim.

tarfile reads a pax or GNU long-name header whole into memory, copies the archive's global pax
headers into every member, follows GNU sparse maps block by block, and keeps every member it has
read: a small gzip of a hostile tar could make any of these gigabytes. ``open_tar_gz`` refuses such
headers past their bounds (``tarfile.ReadError``) and ``members`` holds none it has yielded.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import IO, Any

#: the largest pax or GNU long-name header of one member (real ones are a few hundred bytes)
MAX_EXTENDED_HEADER_BYTES = 1 << 20
#: all global pax headers of an archive together: every member gets a copy (git archive writes ~50 bytes)
MAX_GLOBAL_HEADER_BYTES = 4 << 10
_EXTENDED = (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class _BoundedTarInfo(tarfile.TarInfo):
    def _proc_member(self, archive: Any) -> Any:  # tarfile's hook for every header, before it reads more
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise tarfile.ReadError(f"{self.name}: a sparse member (no source tree has one)")
        if self.type in _EXTENDED and self.size > MAX_EXTENDED_HEADER_BYTES:
            raise tarfile.ReadError(f"an extended header of {self.size} bytes")
        if self.type == tarfile.XGLTYPE:
            archive.global_header_bytes += self.size
            if archive.global_header_bytes > MAX_GLOBAL_HEADER_BYTES:
                raise tarfile.ReadError(f"global headers of over {MAX_GLOBAL_HEADER_BYTES} bytes")
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
