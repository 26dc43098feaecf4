"""Whether an uploaded zip (a wheel, a ``.zip`` sdist) reads the same to every reader: whole, and
unambiguous, so the bytes the mirror checks and serves are the bytes an installer unpacks.

zipfile follows the central directory; a streaming installer follows the local headers from the
start. An archive where they differ (a name listed twice, bytes no listed member accounts for, a
local header that disagrees with its entry) could show one METADATA to the mirror and another to
pip, so it is refused; zipfile offers no such check, hence the local headers read here.
"""

from __future__ import annotations

import struct
import zipfile

from ..storage.bounded_archives import check_unpacked_size

#: a zip local file header (zipfile's layout), ending with its name's and extra field's lengths
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
#: a member whose CRC and sizes follow its data, in a descriptor of one of these sizes
_DATA_DESCRIPTOR = 0x08
_DESCRIPTOR_SIZES = (12, 16, 20, 24)
#: a local header's size or CRC field that defers to its zip64 extra field
_ZIP64_SIZE = 0xFFFFFFFF


def zip_problem(archive: zipfile.ZipFile) -> str | None:
    """Why ``archive`` is refused (a name listed twice, a damaged member, bytes read otherwise by
    a streaming reader), or None; ``ArchiveTooLarge`` when it unpacks past the bound, before any
    member is read."""
    twice = _listed_twice(archive.namelist())
    if twice is not None:
        return f"it lists {twice} twice"
    check_unpacked_size(archive)
    damaged = archive.testzip()
    if damaged is not None:
        return f"{damaged} is damaged"
    return _read_otherwise(archive)


def _read_otherwise(archive: zipfile.ZipFile) -> str | None:
    """Why a reader that follows a zip's local headers from its start, as a streaming installer
    does, would read other members or other bytes than zipfile, which follows the central directory
    (bytes no listed member accounts for, a local header that disagrees with its entry), or None."""
    handle = archive.fp
    assert handle is not None  # an open archive
    position, descriptor = 0, False
    for info in sorted(archive.infolist(), key=lambda info: info.header_offset):
        if descriptor and info.header_offset - position in _DESCRIPTOR_SIZES:
            position = info.header_offset  # the previous member's CRC and sizes, after its data
        if info.header_offset != position:
            return f"its bytes {position} to {info.header_offset} belong to no member it lists"
        handle.seek(info.header_offset)
        local = _LOCAL_HEADER.unpack(handle.read(_LOCAL_HEADER.size))
        flags, method, crc, compressed, size, name_length, extra_length = local[3:5] + local[7:]
        descriptor = bool(flags & _DATA_DESCRIPTOR)
        stated = (crc, compressed, size) if not descriptor else (info.CRC, info.compress_size, info.file_size)
        listed = (info.CRC, info.compress_size, info.file_size)
        if method != info.compress_type or not all(a in (b, _ZIP64_SIZE) for a, b in zip(stated, listed, strict=True)):
            return f"the local header of {info.filename} disagrees with its central directory entry"
        position = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length + info.compress_size
    start = archive.start_dir  # where zipfile found the central directory
    if descriptor and start - position in _DESCRIPTOR_SIZES:
        position = start
    if position != start:
        return f"its bytes {position} to {start} belong to no member it lists"
    return None


def _listed_twice(names: list[str]) -> str | None:
    """A member name a zip lists twice: readers differ on which one counts (the served METADATA
    could differ from the one an installer reads), so such an archive is refused."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None
