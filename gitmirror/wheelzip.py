"""A wheel's ``*.dist-info/METADATA`` read with a few positioned reads, not ``zipfile``.

Every wheel a sync stores is read once for its dependencies, and the server, ``verify``,
``hydrate`` and ``render`` read a PEP 658 file out of its wheel whenever it is asked for.
``zipfile.ZipFile`` builds a ``ZipInfo`` for every member before it can open one: 57-100 us of
the 530-620 us a download process spends on a small wheel, and about 1 ms for pip's own wheel
(400 members). This reader reads the end of the file, walks the central directory's raw records
for the one name, and reads that member only: 20-29 us, and 0.23 ms for pip's wheel.

It answers only where it is sure to agree with ``zipfile``: a plain archive (no zip64, no bytes
before the archive, one METADATA, stored or deflated, not encrypted, sizes and CRC as recorded).
Anything else is ``UNSURE`` and the caller asks ``zipfile`` (``metadata.from_wheel``).
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from typing import Final

UNSURE: Final = object()

ReadAt = Callable[[int, int], bytes]  # (offset, length) -> the bytes there

_END = struct.Struct("<4s4H2LH")  # end of central directory record
_END_SIGNATURE = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_CENTRAL = struct.Struct("<4s4B4HL2L5H2L")
_CENTRAL_SIGNATURE = b"PK\x01\x02"
_LENGTHS = struct.Struct("<5H2L")  # a central record's name, extra and comment lengths, ..., header offset
_LENGTHS_AT = 28
_LOCAL = struct.Struct("<4s2B4HL2L2H")
_LOCAL_SIGNATURE = b"PK\x03\x04"
_TAIL_BYTES = 64 * 1024  # the end record and, for most wheels, the whole central directory
_MAX_COMMENT = 0xFFFF
_ENCRYPTED = 0x1
_STORED, _DEFLATED = 0, 8


def is_metadata_member(name: str) -> bool:
    """``<distribution>.dist-info/METADATA`` at the top of the archive: a wheel's core metadata."""
    directory, _, file = name.partition("/")
    return file == "METADATA" and directory.endswith(".dist-info")


def read_metadata(path: str) -> bytes | None | object:
    """The METADATA member of the wheel at ``path``: its bytes, None (a plain archive without
    one), or ``UNSURE``. Raises OSError when the file cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        return _metadata(lambda offset, length: os.pread(fd, length, offset), size)
    finally:
        os.close(fd)


def read_metadata_from(data: bytes | memoryview) -> bytes | None | object:
    """``read_metadata`` of a wheel in memory."""
    view = memoryview(data)
    return _metadata(lambda offset, length: bytes(view[offset : offset + length]), len(data))


def _metadata(read_at: ReadAt, size: int) -> bytes | None | object:
    tail_start = max(0, size - _TAIL_BYTES - _END.size)
    tail = read_at(tail_start, size - tail_start)
    end = _end_record(tail)
    if end is None:
        return UNSURE
    end_at, (_sig, disk, cd_disk, on_disk, entries, cd_size, cd_offset, _comment) = end
    if disk or cd_disk or on_disk != entries or entries == 0xFFFF or 0xFFFFFFFF in (cd_size, cd_offset):
        return UNSURE  # a split or zip64 archive
    if _ZIP64_LOCATOR in tail[max(0, end_at - 20) : end_at]:
        return UNSURE
    if tail_start + end_at != cd_offset + cd_size:
        return UNSURE  # bytes before the archive (zipfile reads those at an offset) or a lying record
    in_tail = cd_offset >= tail_start  # most wheels: their whole directory is in the last 64 KiB
    directory = tail[cd_offset - tail_start : end_at] if in_tail else read_at(cd_offset, cd_size)
    member = _find(directory, entries, cd_offset)
    if member is None or member is UNSURE:
        return member
    return _read_member(read_at, *member)


def _end_record(tail: bytes) -> tuple[int, tuple] | None:
    """Where the end record starts in ``tail``, and its fields; None when not found or odd."""
    at = len(tail) - _END.size
    if at >= 0 and tail[at : at + 4] == _END_SIGNATURE and tail[-2:] == b"\0\0":
        return at, _END.unpack_from(tail, at)
    at = tail.rfind(_END_SIGNATURE, max(0, len(tail) - _END.size - _MAX_COMMENT))
    if at < 0 or at + _END.size > len(tail):
        return None
    fields = _END.unpack_from(tail, at)
    if at + _END.size + fields[-1] != len(tail):
        return None  # a comment that does not end the file: leave it to zipfile
    return at, fields


def _find(directory: bytes, entries: int, cd_offset: int) -> tuple[int, int, int, int, int, bytes, int] | None | object:
    """(local header offset, compression, compressed size, size, CRC, name, where the next member
    starts) of the one METADATA.

    Only the lengths and offset of each record are unpacked on the way: pip's wheel has 400 members.
    """
    found = None
    starts = []
    at = 0
    end = len(directory)
    for _ in range(entries):
        if not directory.startswith(_CENTRAL_SIGNATURE, at) or at + _CENTRAL.size > end:
            return UNSURE
        name_length, extra_length, comment_length, _disk, _internal, _external, start = _LENGTHS.unpack_from(
            directory, at + _LENGTHS_AT
        )
        starts.append(start)
        name_end = at + _CENTRAL.size + name_length
        if directory.endswith(b"/METADATA", name_end - 9, name_end):  # a cheap look before the rule
            name = directory[at + _CENTRAL.size : name_end]
            if is_metadata_member(name.decode("latin-1")):  # byte for byte: the rule's characters are ASCII
                record = _CENTRAL.unpack_from(directory, at)
                flags, method, crc, packed, unpacked = record[5], record[6], record[9], record[10], record[11]
                if found is not None or flags & _ENCRYPTED or method not in (_STORED, _DEFLATED):
                    return UNSURE
                if not name.isascii() or b"\0" in name:  # zipfile decodes by a flag and cuts at NUL
                    return UNSURE
                if 0xFFFFFFFF in (packed, unpacked, start):
                    return UNSURE
                found = (start, method, packed, unpacked, crc, name)
        at = name_end + extra_length + comment_length
    if at != end:
        return UNSURE
    if found is None:
        return None
    following = min((start for start in starts if start > found[0]), default=cd_offset)
    return (*found, following)


def _read_member(
    read_at: ReadAt, offset: int, method: int, packed: int, unpacked: int, crc: int, name: bytes, following: int
) -> bytes | object:
    """The member's bytes, checked as ``zipfile`` checks them (its local header's name, entries
    that overlap, the CRC)."""
    header = read_at(offset, _LOCAL.size + len(name))
    if len(header) < _LOCAL.size or header[:4] != _LOCAL_SIGNATURE:
        return UNSURE
    fields = _LOCAL.unpack_from(header)
    name_length, extra_length = fields[-2], fields[-1]
    if header[_LOCAL.size :] != name or name_length != len(name):
        return UNSURE
    start = offset + _LOCAL.size + name_length + extra_length
    if start + packed > following:
        return UNSURE  # runs into the next member (or the directory): zipfile says "Overlapped entries"
    data = read_at(start, packed)
    if method == _DEFLATED:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            data = inflater.decompress(data, unpacked + 1)  # no more than recorded: a bomb stops here
        except zlib.error:
            return UNSURE
        if not inflater.eof:
            return UNSURE
    if len(data) != unpacked or zlib.crc32(data) != crc:
        return UNSURE
    return data
