"""Core metadata parsing: the header fields a sync, a review and the dependency walk read."""

from __future__ import annotations

import glob
import io
import sys
import zipfile
from pathlib import Path

import pytest

from gitmirror.storage.metadata import from_wheel, parse


def test_fields_continuations_repeats_and_the_body() -> None:
    data = (
        b"Metadata-Version: 2.1\r\nName: demo-pkg\r\nVersion: 1.0\r\nSummary: one\r\n  two\r\n"
        b'Requires-Dist: a>=1\r\nrequires-dist: b; extra == "x"\r\nProvides-Extra: x\r\n'
        b"Project-URL: Home, https://example.invalid\r\n\r\nRequires-Dist: not-a-header-but-the-body\r\n"
    )
    metadata = parse(data)
    assert (metadata.name, metadata.version) == ("demo-pkg", "1.0")
    assert metadata.summary is not None and metadata.summary.split() == ["one", "two"]  # a continued value
    assert metadata.requires_dist == ("a>=1", 'b; extra == "x"')
    assert metadata.provides_extra == ("x",) and metadata.project_urls == ("Home, https://example.invalid",)


def test_utf8_values_unknown_and_empty_fields() -> None:
    metadata = parse("Name: x\nVersion: 1\nAuthor: Jürgen Łukasz\nSummary:  UNKNOWN \nHome-page:\n".encode())
    assert metadata.author == "Jürgen Łukasz"  # the specification's encoding
    assert metadata.summary is None and metadata.home_page is None
    assert parse(b"Name: x\nAuthor: \xff\xfe\n").name == "x"  # bytes that are no UTF-8: never an exception


@pytest.mark.parametrize(
    ("data", "name", "requires"),
    [
        (b"", "", ()),
        (b"\n\nName: x\nRequires-Dist: a\n", "", ()),  # an empty first line: no headers at all
        (b"Name: x\nVersion: 1\n\nRequires-Dist: a\n", "x", ()),  # the body is no header
        (b"Name: x\nName: y\nRequires-Python: >=3\nRequires-Python: <4\n", "x", ()),  # repeated: the first
        (b"Name: x\rVersion: 1\r\rRequires-Dist: a\r", "x", ()),
        (
            b"Name: x\nRequires-Dist: a\nRequires-Dist: b>=1; python_version < '3.12'\n",
            "x",
            ("a", "b>=1; python_version < '3.12'"),
        ),
    ],
)
def test_odd_headers(data: bytes, name: str, requires: tuple[str, ...]) -> None:
    metadata = parse(data)
    assert (metadata.name, metadata.requires_dist) == (name, requires)


def test_repeated_project_urls_all_kept() -> None:
    data = b"Name: x\nProject-URL: Home, https://a.invalid\nProject-URL: Home, https://b.invalid\n"
    assert parse(data).project_urls == ("Home, https://a.invalid", "Home, https://b.invalid")


def test_the_same_fields_as_packaging_on_installed_distributions() -> None:
    """Every METADATA of this interpreter's installed distributions reads as ``packaging`` reads it whole."""
    from packaging.metadata import parse_email

    found = glob.glob(str(Path(sys.prefix) / "lib" / "python3*" / "site-packages" / "*.dist-info" / "METADATA"))
    assert len(found) >= 10
    for data in (Path(path).read_bytes() for path in found):
        raw, _ = parse_email(data)
        metadata = parse(data)
        assert metadata.name == raw["name"] and metadata.version == raw["version"]
        assert list(metadata.requires_dist) == raw.get("requires_dist", [])
        assert metadata.requires_python == (raw.get("requires_python") or None)


METADATA = b"Metadata-Version: 2.1\nName: demo\nVersion: 1.0\nRequires-Dist: idna>=3\n\n" + b"A description. " * 200


def wheel(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


PLAIN = wheel(
    [("demo/__init__.py", b""), ("demo-1.0.dist-info/METADATA", METADATA), ("demo-1.0.dist-info/RECORD", b"")]
)
WHEELS = {
    "deflated": (PLAIN, METADATA),
    "stored": (wheel([("demo-1.0.dist-info/METADATA", METADATA)], zipfile.ZIP_STORED), METADATA),
    "bytes before the archive": (b"#!/bin/sh\nexit 0\n" + PLAIN, METADATA),
    "no METADATA": (wheel([("demo/__init__.py", b""), ("demo-1.0.dist-info/RECORD", b"")]), None),
    "METADATA elsewhere": (wheel([("demo-1.0.dist-info/sub/METADATA", METADATA), ("METADATA", METADATA)]), None),
    "truncated": (PLAIN[:-30], None),
    "not a zip": (b"not a zip at all" * 10, None),
    "empty": (b"", None),
    # the METADATA member's flags in the central directory say it is encrypted
    "encrypted": (PLAIN.replace(b"\x14\x00\x00\x00\x08\x00", b"\x14\x00\x01\x00\x08\x00"), None),
}


@pytest.mark.parametrize("case", WHEELS)
def test_a_wheels_metadata_from_a_file_or_memory(case: str, tmp_path: Path) -> None:
    """The top-level ``*.dist-info/METADATA``; None (never an exception) for what is no readable wheel."""
    data, expected = WHEELS[case]
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    path.write_bytes(data)
    assert from_wheel(path) == expected
    assert from_wheel(data) == expected
    assert from_wheel(memoryview(data)) == expected
