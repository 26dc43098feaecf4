"""Fuzzing the two parsers that read untrusted bytes: ``manifest.loads`` and upstream page parsing.

Property: whatever the input, the parser either returns something whose every name is safe to
turn into a path, or raises its own one-line error type (``ManifestError``, ``UpstreamError``).
Any other exception would surface as a traceback, or worse, let a hostile name through.
"""

from __future__ import annotations

import json
import string

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitmirror.model.manifest import (
    FILE_KEYS,
    FileEntry,
    ManifestError,
    ProjectManifest,
    Tombstone,
    loads,
    manifest_path,
)
from gitmirror.model.names import SHA256_HEX, check_filename, is_normalized
from gitmirror.model.page import PageAnswer, RemoteProject, UpstreamError, legacy_kind, parse_page

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HOSTILE_TEXT = st.lists(
    st.sampled_from(list(string.ascii_letters + string.digits + "._-+!/\\\x00 ~:%") + ["е", "ｄ", "../", "é"]),
    max_size=40,
).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | HOSTILE_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(HOSTILE_TEXT, inner, max_size=3),
    max_leaves=8,
)


def assert_safe_manifest(manifest: ProjectManifest) -> None:
    assert is_normalized(manifest.name)
    assert manifest_path(manifest.name).startswith("projects/") and ".." not in manifest_path(manifest.name)
    for filename, entry in manifest.files.items():
        assert filename == entry.filename == check_filename(entry.filename)
        assert SHA256_HEX.match(entry.sha256)
        assert entry.core_metadata is None or SHA256_HEX.match(entry.core_metadata)


@FUZZ
@given(st.binary(max_size=600))
def test_manifest_parser_on_arbitrary_bytes(data: bytes) -> None:
    try:
        manifest = loads(data, "projects/fu/zz/fuzz.jsonl")
    except ManifestError as exc:
        assert "\n" not in str(exc) or str(exc).startswith("projects/")
        return
    assert_safe_manifest(manifest)


@FUZZ
@given(
    header=st.fixed_dictionaries(
        {"gitmirror-manifest": st.sampled_from([1, 1, 2, "1", None])},
        optional={
            "name": HOSTILE_TEXT | st.sampled_from(["demo-pkg", "Demo_Pkg", "x"]),
            "project-status": JSON_VALUES,
            "upstream-removed": JSON_VALUES,
        },
    ),
    lines=st.lists(
        st.dictionaries(
            st.sampled_from(sorted(FILE_KEYS)),
            JSON_VALUES | st.sampled_from(["a" * 64, "demo_pkg-1.0.tar.gz"]),
            max_size=len(FILE_KEYS),
        ),
        max_size=4,
    ),
)
def test_manifest_parser_on_structured_json_lines(header: dict, lines: list[dict]) -> None:
    data = "\n".join(json.dumps(item) for item in [header, *lines]).encode() + b"\n"
    try:
        manifest = loads(data)
    except ManifestError:
        return
    assert_safe_manifest(manifest)


VERSIONS = st.sampled_from(["1.0", "2.0rc1", "0.0.1.post3", "1!2.0", "3.0+local.1"])
DIGESTS = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
TIMES = st.sampled_from([None, "2026-01-31T12:00:00Z", "2020-02-02T00:00:00.123456Z"])


@st.composite
def manifests(draw: st.DrawFn) -> ProjectManifest:
    name = draw(st.sampled_from(["demo-pkg", "x", "ab", "abc", "zope-interface"]))
    files = {}
    for version in draw(st.lists(VERSIONS, unique=True, max_size=4)):
        filename = f"{name.replace('-', '_')}-{version}.tar.gz"
        stone = draw(
            st.none()
            | st.builds(
                Tombstone,
                reason=HOSTILE_TEXT.filter(lambda s: "\x00" not in s and s),
                time=st.just("2026-01-31T12:00:00Z"),
            )
        )
        files[filename] = FileEntry(
            filename=filename,
            version=version,
            sha256=draw(DIGESTS),
            size=draw(st.integers(0, 2**40)),
            requires_python=draw(st.none() | st.just(">=3.8")),
            upload_time=draw(TIMES),
            yanked=draw(st.booleans() | st.text(max_size=20).filter(lambda s: "\x00" not in s)),
            core_metadata=draw(st.none() | DIGESTS),
            first_seen="2026-01-31T12:00:00Z",
            upstream_removed=draw(TIMES),
            tombstone=stone,
        )
    status = draw(st.sampled_from(["active", "archived", "quarantined", "deprecated"]))
    return ProjectManifest(
        name=name,
        files=files,
        status=status,
        status_reason=draw(st.none() | st.just("why")),
        upstream_removed=draw(TIMES),
    )


@FUZZ
@given(manifests())
def test_manifest_round_trip_is_exact(manifest: ProjectManifest) -> None:
    data = manifest.dumps()
    parsed = loads(data)
    assert parsed == manifest
    assert parsed.dumps() == data
    assert data.isascii() and data.endswith(b"\n")


def page_answer(body: bytes, content_type: str) -> PageAnswer:
    return PageAnswer(200, "http://127.0.0.1:9/simple/demo-pkg/", {"content-type": content_type}, body)


def assert_safe_project(project: RemoteProject) -> None:
    for remote_file in project.files:
        check_filename(remote_file.filename)
        assert SHA256_HEX.match(remote_file.sha256)
        assert remote_file.url.startswith(("http://", "https://"))
        assert remote_file.core_metadata is None or SHA256_HEX.match(remote_file.core_metadata)
    for filename, kind in project.skipped.items():  # legacy files: never stored, but named in notes
        assert legacy_kind(filename) == kind and "/" not in filename


CONTENT_TYPES = st.sampled_from(
    [
        "application/vnd.pypi.simple.v1+json",
        "text/html",
        "text/html; charset=latin-1",
        "application/vnd.pypi.simple.v1+html",
        "application/octet-stream",
        "text/html; charset=nonsense",
    ]
)


@FUZZ
@given(body=st.binary(max_size=800), content_type=CONTENT_TYPES)
def test_page_parser_on_arbitrary_bytes(body: bytes, content_type: str) -> None:
    try:
        project = parse_page("demo-pkg", page_answer(body, content_type))
    except UpstreamError:
        return
    assert_safe_project(project)


@FUZZ
@given(
    files=st.lists(
        st.fixed_dictionaries(
            {
                "filename": HOSTILE_TEXT | st.sampled_from(["demo_pkg-1.0.tar.gz", "demo_pkg-1.0-py3-none-any.whl"]),
                "url": HOSTILE_TEXT
                | st.sampled_from(["http://127.0.0.1:9/f/demo_pkg-1.0.tar.gz", "file:///etc/passwd"]),
                "hashes": st.dictionaries(st.sampled_from(["sha256", "md5"]), HOSTILE_TEXT | DIGESTS, max_size=2),
            },
            optional={
                "yanked": JSON_VALUES,
                "requires-python": JSON_VALUES,
                "size": JSON_VALUES,
                "upload-time": JSON_VALUES,
                "core-metadata": JSON_VALUES,
            },
        ),
        max_size=4,
    ),
    meta=st.sampled_from([{"api-version": "1.1"}, {"api-version": "1.4"}, {}, {"api-version": 7}]),
)
def test_page_parser_on_structured_json_pages(files: list[dict], meta: dict) -> None:
    body = json.dumps({"meta": meta, "name": "demo-pkg", "files": files}).encode()
    try:
        project = parse_page("demo-pkg", page_answer(body, "application/vnd.pypi.simple.v1+json"))
    except UpstreamError:
        return
    assert_safe_project(project)
    skipped = sum(1 for item in files if item.get("filename") in project.skipped)  # by name: repeats count
    assert len(project.files) + len(project.rejected) + skipped == len(files)


@FUZZ
@given(links=st.lists(st.tuples(HOSTILE_TEXT, HOSTILE_TEXT | DIGESTS), max_size=5))
def test_page_parser_on_html_pages(links: list[tuple[str, str]]) -> None:
    anchors = "".join(f'<a href="http://127.0.0.1:9/f/{href}#sha256={digest}">{href}</a>\n' for href, digest in links)
    body = f"<!DOCTYPE html><html><body>{anchors}</body></html>".encode()
    try:
        project = parse_page("demo-pkg", page_answer(body, "text/html"))
    except UpstreamError:
        return
    assert_safe_project(project)
