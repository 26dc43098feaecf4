"""The targeted METADATA reader answers plain wheels itself and agrees with ``zipfile`` on every
archive, odd ones included (where it is unsure, ``metadata.from_wheel`` asks ``zipfile``)."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest

from gitmirror import wheelzip
from gitmirror.metadata import from_wheel

METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: idna>=3\n\n" + b"A description. " * 200


def reference(data: bytes) -> bytes | None:
    """What ``zipfile`` reads: the first member named like ``*.dist-info/METADATA`` (None for what
    it cannot read at all)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for member in archive.namelist():
                parts = member.split("/")
                if len(parts) == 2 and parts[0].endswith(".dist-info") and parts[1] == "METADATA":
                    return archive.read(member)
    except (zipfile.BadZipFile, RuntimeError):  # RuntimeError: encrypted
        return None
    return None


def wheel(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED, comment: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
        archive.comment = comment
    return buffer.getvalue()


def many_members(count: int) -> list[tuple[str, bytes]]:
    code = [(f"demo/module_{number}.py", b"x = %d\n" % number) for number in range(count)]
    return [*code, ("demo-1.0.dist-info/METADATA", METADATA), ("demo-1.0.dist-info/RECORD", b"")]


PLAIN = {
    "deflated": wheel(many_members(3)),
    "stored": wheel(many_members(3), zipfile.ZIP_STORED),
    "with a comment": wheel(many_members(3), comment=b"built by hand"),
    # a central directory larger than the 64 KiB read first from the end of the file
    "3,000 members": wheel(many_members(3_000)),
    "no METADATA": wheel([("demo/__init__.py", b""), ("demo-1.0.dist-info/RECORD", b"")]),
    "METADATA elsewhere": wheel([("demo-1.0.dist-info/sub/METADATA", METADATA), ("METADATA", METADATA)]),
}


def stored(data: bytes, directory: Path) -> tuple[Path, bytes | None]:
    """The archive as a file, and what ``zipfile`` reads out of it."""
    path = directory / "demo.whl"
    path.write_bytes(data)
    return path, reference(data)


@pytest.mark.parametrize("case", PLAIN)
def test_plain_wheels_are_read_without_zipfile(case: str, tmp_path: Path) -> None:
    data = PLAIN[case]
    path, expected = stored(data, tmp_path)
    assert expected == (None if case in ("no METADATA", "METADATA elsewhere") else METADATA)
    assert wheelzip.read_metadata(str(path)) == expected
    assert wheelzip.read_metadata_from(data) == expected
    assert from_wheel(path) == expected


def patched(data: bytes, offset: int, value: int | None = None) -> bytes:
    """A 32-bit field of the METADATA member's central directory record set to ``value``
    (offsets: 16 CRC, 24 uncompressed size), or a 16-bit one when ``offset`` is 8 (the flags);
    without a value, the field's own with its lowest bit flipped."""
    record = data.index(b"demo-1.0.dist-info/METADATA", data.index(b"PK\x01\x02")) - 46
    field = struct.Struct("<H" if offset == 8 else "<L")
    if value is None:
        value = field.unpack_from(data, record + offset)[0] ^ 1
    return data[: record + offset] + field.pack(value) + data[record + offset + field.size :]


def two_metadata() -> bytes:
    with pytest.warns(UserWarning, match="Duplicate name"):
        return wheel([("a-1.dist-info/METADATA", b"Name: a\n"), ("b-1.dist-info/METADATA", METADATA),
                      ("a-1.dist-info/METADATA", b"Name: a, again\n")])


ODD = {
    "bytes before the archive": b"#!/bin/sh\nexit 0\n" + PLAIN["deflated"],
    "a CRC that does not match": patched(PLAIN["deflated"], 16),
    "two METADATA members": two_metadata(),
    "truncated": PLAIN["deflated"][:-30],
    "not a zip": b"not a zip at all" * 10,
    "empty": b"",
    "encrypted flag": patched(PLAIN["stored"], 8, 0x1),
}


@pytest.mark.parametrize("case", ODD)
def test_odd_archives_read_as_zipfile_reads_them(case: str, tmp_path: Path) -> None:
    data = ODD[case]
    path, expected = stored(data, tmp_path)
    assert wheelzip.read_metadata(str(path)) in (wheelzip.UNSURE, expected)
    assert from_wheel(path) == expected
    assert from_wheel(data) == expected
    if case in ("two METADATA members", "a CRC that does not match", "bytes before the archive"):
        assert wheelzip.read_metadata_from(data) is wheelzip.UNSURE


def test_a_member_that_inflates_past_its_recorded_size_is_left_to_zipfile() -> None:
    lying = patched(PLAIN["deflated"], 24, 10)
    assert wheelzip.read_metadata_from(lying) is wheelzip.UNSURE
    assert from_wheel(lying) == reference(lying)
