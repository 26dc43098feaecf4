"""PEP 691 pages read with ``json``: what pypi_simple reads from the same page, field by field.

``page.parse_page`` reads JSON pages itself (pypi_simple's pydantic models cost the download
processes' fork server 0.34 s); pypi_simple is the oracle here, on the fake upstream's real pages
and on generated ones.
"""

from __future__ import annotations

import json
import string

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypi_simple import ProjectPage

from gitmirror.model.names import UnsafeNameError
from gitmirror.model.page import JSON_TYPE, LegacyFile, PageAnswer, RemoteFile, UpstreamError, _remote_file, parse_page

from fakeupstream import FakeUpstream

PAGE_URL = "http://127.0.0.1:9/simple/demo-pkg/"


def answer(body: bytes, content_type: str = JSON_TYPE, url: str = PAGE_URL) -> PageAnswer:
    return PageAnswer(200, url, {"content-type": content_type}, body)


def page(files: list[object], **top: object) -> bytes:
    return json.dumps({"meta": {"api-version": "1.1"}, "name": "demo-pkg", "files": files, **top}).encode()


def oracle(name: str, body: bytes, url: str = PAGE_URL) -> tuple[list[RemoteFile], int]:
    """What the sync made of the page through pypi_simple: the files, and how many were rejected."""
    files, rejected = [], 0
    for package in ProjectPage.from_json_data(json.loads(body), base_url=url).packages:
        try:
            files.append(_remote_file(name, package))
        except LegacyFile:
            continue  # skipped (``RemoteProject.skipped``), not rejected
        except (UpstreamError, UnsafeNameError):
            rejected += 1
    return files, rejected


@pytest.mark.parametrize("project", ["demo-pkg", "other-lib"])
def test_the_fake_upstreams_pages_read_as_pypi_simple_reads_them(sample, upstream: FakeUpstream, project: str) -> None:
    with httpx.Client(trust_env=False, timeout=5) as client:
        got = client.get(upstream.page_url(project), headers={"Accept": JSON_TYPE})
        html = client.get(upstream.page_url(project), headers={"Accept": "text/html"})
    headers = {key.lower(): value for key, value in got.headers.items()}
    ours = parse_page(project, PageAnswer(200, str(got.url), headers, got.content))
    files, rejected = oracle(project, got.content, str(got.url))
    assert ours.files == files and len(files) == len(sample[project]) and not ours.rejected and not rejected
    assert any(f.yanked for f in files) == (project == "demo-pkg")  # 1.1 is yanked: the field is read
    assert all(f.size and f.upload_time and f.url.startswith("http://127.0.0.1:") for f in files)
    assert ours.last_serial == str(json.loads(got.content)["meta"]["_last-serial"])
    from_html = parse_page(project, PageAnswer(200, str(html.url), {"content-type": "text/html"}, html.content))
    # HTML carries no sizes or upload times (PEP 700 is JSON only); everything else agrees
    assert [(f.filename, f.url, f.sha256, f.yanked, f.core_metadata, f.requires_python) for f in ours.files] == [
        (f.filename, f.url, f.sha256, f.yanked, f.core_metadata, f.requires_python) for f in from_html.files
    ]


DIGEST = "a" * 64
NAMES = st.sampled_from(["demo_pkg-1.0.tar.gz", "demo_pkg-1.0-py3-none-any.whl", "other-1.0.tar.gz", "x.exe"])
TEXT = st.text(alphabet=string.ascii_letters + string.digits + "./:=<>!, ", max_size=20)
WELL_TYPED_FILE = st.fixed_dictionaries(
    {
        "filename": NAMES,
        "url": st.sampled_from(
            [
                "demo_pkg-1.0.tar.gz",
                "/files/demo_pkg-1.0.tar.gz",
                "http://127.0.0.1:9/f/x",
                "file:///etc/passwd",
                "https://127.0.0.1/y#sha256=" + DIGEST,
            ]
        ),
        "hashes": st.dictionaries(st.sampled_from(["sha256", "md5"]), st.sampled_from([DIGEST, "B" * 64, "../x"])),
    },
    optional={
        "requires-python": st.none() | TEXT,
        "core-metadata": st.none() | st.booleans() | st.dictionaries(st.just("sha256"), st.sampled_from([DIGEST, "z"])),
        "yanked": st.booleans() | TEXT,
        "size": st.none() | st.integers(min_value=0, max_value=10**12),
        "upload-time": st.none()
        | st.sampled_from(["2026-01-31T12:00:00Z", "2026-01-31T12:00:00.123456+00:00", "2026-01-31T13:00:00+01:00"]),
        "gpg-sig": st.booleans(),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    files=st.lists(WELL_TYPED_FILE, max_size=5),
    serial=st.none() | st.integers(0, 10**9) | st.just("77"),
    status=st.sampled_from([{}, {"status": "archived"}, {"status": "deprecated", "reason": "use x"}]),
)
def test_well_typed_pages_read_as_pypi_simple_reads_them(files: list[dict], serial: object, status: dict) -> None:
    meta: dict[str, object] = {"api-version": "1.4"}
    if serial is not None:
        meta["_last-serial"] = serial
    body = json.dumps({"meta": meta, "name": "demo-pkg", "files": files, "project-status": status}).encode()
    ours = parse_page("demo-pkg", answer(body))
    expected, rejected = oracle("demo-pkg", body)
    assert ours.files == expected and len(ours.rejected) == rejected
    assert ours.skipped == {item["filename"]: ".exe" for item in files if item["filename"] == "x.exe"}
    pypi = ProjectPage.from_json_data(json.loads(body))
    assert (ours.status, ours.status_reason) == (str(pypi.status or "active"), pypi.status_reason)
    assert ours.last_serial == pypi.last_serial


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xff\xfe", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON"),  # deeper than the interpreter's stack
        (b"[]", "not a PEP 691 project page"),
        (json.dumps({"name": "demo-pkg", "files": []}).encode(), "not a PEP 691 project page"),
        (page([], meta={"api-version": 1}), "not a PEP 691 project page"),
        (
            json.dumps({"meta": {"api-version": "1.0"}, "files": "nope", "name": "x"}).encode(),
            "not a PEP 691 project page",
        ),
        (page([], **{"project-status": {"status": "gone"}}), "not a PEP 691 project page"),
        (page([], **{"project-status": None}), "not a PEP 691 project page"),
        (
            json.dumps({"meta": {"api-version": "2.0"}, "name": "demo-pkg", "files": []}).encode(),
            "unsupported api-version '2.0'",
        ),
        (
            json.dumps({"meta": {"api-version": "one"}, "name": "demo-pkg", "files": []}).encode(),
            "unsupported api-version 'one'",
        ),
    ],
)
def test_what_is_no_page_is_one_line(body: bytes, why: str) -> None:
    with pytest.raises(UpstreamError) as raised:
        parse_page("demo-pkg", answer(body))
    assert str(raised.value) == f"demo-pkg: invalid project page ({why})"


def test_a_malformed_file_entry_is_rejected_and_the_rest_of_the_page_stays() -> None:
    good = {
        "filename": "demo_pkg-1.0.tar.gz",
        "url": "demo_pkg-1.0.tar.gz",
        "hashes": {"sha256": DIGEST},
        "size": 5,
        "upload-time": "2026-01-31T12:00:00Z",
        "yanked": "broken",
    }
    bad = [
        "not an object",
        {"url": "x", "hashes": {}},
        {**good, "filename": "demo_pkg-1.1.tar.gz", "size": "5"},
        {**good, "filename": "demo_pkg-1.2.tar.gz", "size": True},
        {**good, "filename": "demo_pkg-1.3.tar.gz", "hashes": {"sha256": 5}},
        {**good, "filename": "demo_pkg-1.4.tar.gz", "upload-time": "yesterday"},
        {**good, "filename": "demo_pkg-1.5.tar.gz", "yanked": None},
        {**good, "filename": "demo_pkg-1.6.tar.gz", "core-metadata": "yes"},
    ]
    project = parse_page("demo-pkg", answer(page([good, *bad], meta={"api-version": "1.4", "_last-serial": 9})))
    [only] = project.files
    assert only.url == "http://127.0.0.1:9/simple/demo-pkg/demo_pkg-1.0.tar.gz"  # relative to the page
    assert (only.size, only.upload_time, only.yanked, only.sha256) == (5, "2026-01-31T12:00:00Z", "broken", DIGEST)
    assert len(project.rejected) == len(bad) and project.last_serial == "9"
    assert "a file entry without a filename, skipped" in project.rejected
    assert "'demo_pkg-1.4.tar.gz': malformed upload-time, skipped" in project.rejected
