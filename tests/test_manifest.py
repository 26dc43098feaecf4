"""The manifest format is a public interface: deterministic bytes, strict parsing, stable paths."""

from __future__ import annotations

import json

import pytest

from gitmirror.model.manifest import FileEntry, ManifestError, ProjectManifest, Tombstone, loads, manifest_path
from gitmirror.model.names import UnsafeNameError, check_filename, normalize

SHA = "a" * 64


def entry(filename: str, version: str, **extra) -> FileEntry:
    return FileEntry(
        filename=filename, version=version, sha256=SHA, size=10, first_seen="2026-01-01T00:00:00Z", **extra
    )


def test_same_state_same_bytes_whatever_the_insertion_order() -> None:
    files = [entry("p-1.10.tar.gz", "1.10"), entry("p-1.2.tar.gz", "1.2"), entry("p-1.2-py3-none-any.whl", "1.2")]
    one = ProjectManifest(name="p")
    two = ProjectManifest(name="p")
    for item in files:
        one = one.with_file(item)
    for item in reversed(files):
        two = two.with_file(item)
    assert one.dumps() == two.dumps() == ProjectManifest(name="p").with_files(files).dumps()
    lines = one.dumps().decode().splitlines()
    # PEP 440 order, not string order: 1.2 before 1.10.
    assert [json.loads(line)["filename"] for line in lines[1:]] == [
        "p-1.2-py3-none-any.whl",
        "p-1.2.tar.gz",
        "p-1.10.tar.gz",
    ]


def test_round_trip_keeps_every_field() -> None:
    manifest = ProjectManifest(
        name="demo-pkg",
        status="deprecated",
        status_reason="use other",
        upstream_removed="2026-02-01T00:00:00Z",
    ).with_file(
        entry(
            "demo_pkg-1.0-py3-none-any.whl",
            "1.0",
            requires_python=">=3.8",
            upload_time="2026-01-01T00:00:00.123456Z",
            yanked="broken",
            core_metadata="b" * 64,
            upstream_removed="2026-02-01T00:00:00Z",
            tombstone=Tombstone(reason="leaked token", time="2026-03-01T00:00:00Z"),
        )
    )
    assert loads(manifest.dumps()) == manifest
    assert loads(manifest.dumps()).dumps() == manifest.dumps()


def test_adding_a_release_only_appends_or_inserts_lines() -> None:
    before = ProjectManifest(name="p").with_file(entry("p-1.0.tar.gz", "1.0"))
    after = before.with_file(entry("p-2.0.tar.gz", "2.0"))
    old_lines = before.dumps().decode().splitlines()
    new_lines = after.dumps().decode().splitlines()
    assert all(line in new_lines for line in old_lines) and len(new_lines) == len(old_lines) + 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"", "empty manifest"),
        (b'{"gitmirror-manifest":2,"name":"p"}\n', "unsupported format version"),
        (b'{"gitmirror-manifest":1,"name":"P_Q"}\n', "not normalized"),
        (b'{"gitmirror-manifest":1,"name":"p","extra":1}\n', "unknown key 'extra'"),
        (b'{"gitmirror-manifest":1,"name":"p"}\nnot json\n', ":2:"),
        (
            b'{"gitmirror-manifest":1,"name":"p"}\n{"filename":"../x.whl","version":"1","sha256":"'
            + SHA.encode()
            + b'","size":1}\n',
            "invalid distribution filename",
        ),
        (
            b'{"gitmirror-manifest":1,"name":"p"}\n{"filename":"p-1.whl","version":"1","sha256":"zz","size":1}\n',
            "invalid sha256",
        ),
        (
            b'{"gitmirror-manifest":1,"name":"p"}\n{"filename":"p-1.whl","version":"1","sha256":"'
            + SHA.encode()
            + b'","size":-1}\n',
            "size must be",
        ),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_parser_rejects_malformed_manifests_with_a_located_message(text: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        loads(text, "projects/1/p.jsonl")


def test_duplicate_entries_are_rejected() -> None:
    line = json.dumps(entry("p-1.0.tar.gz", "1.0").to_json())
    data = f'{{"gitmirror-manifest":1,"name":"p"}}\n{line}\n{line}\n'.encode()
    with pytest.raises(ManifestError, match="duplicate entry"):
        loads(data)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("a", "projects/1/a.jsonl"),
        ("ab", "projects/2/ab.jsonl"),
        ("abc", "projects/3/a/abc.jsonl"),
        ("demo-pkg", "projects/de/mo/demo-pkg.jsonl"),
    ],
)
def test_manifest_paths_follow_the_crates_io_layout(name: str, path: str) -> None:
    assert manifest_path(name) == path


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "x" * 300, "a\x00b", "ａｂｃ", "-lead", "Café"])
def test_hostile_project_names_never_become_paths(name: str) -> None:
    with pytest.raises(UnsafeNameError):
        manifest_path(normalize(name))


@pytest.mark.parametrize(
    "filename",
    ["../p-1.whl", "/abs/p-1.whl", "p-1.whl/../../x", "a\\b-1.whl", ".hidden.whl", "p-1.exe.txt", "p\x00-1.whl"],
)
def test_hostile_filenames_are_refused(filename: str) -> None:
    with pytest.raises(UnsafeNameError):
        check_filename(filename)
