"""The served index: PEP 691/503 negotiation, PEP 592/658/700/714 fields, file serving semantics."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest
from pypi_simple import ProjectPage

from conftest import Mirror, RunningServer
from fakeupstream import FakeUpstream, build_wheel, make_sample_index
from presynced import sample_site

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "application/vnd.pypi.simple.v1+html"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, dict]]:
    """One synced mirror and its server, shared by the tests that only read from it."""
    with sample_site(tmp_path_factory.mktemp("served") / "site") as (_mirror, server, sample):
        yield server, sample


@pytest.fixture
def server(served: tuple[RunningServer, dict]) -> RunningServer:
    return served[0]


@pytest.fixture
def sample(served: tuple[RunningServer, dict]) -> dict:
    return served[1]


def test_content_negotiation(server) -> None:
    url = f"{server.url}/simple/demo-pkg/"
    assert httpx.get(url, headers={"Accept": JSON}).headers["content-type"] == JSON
    assert httpx.get(url, headers={"Accept": HTML}).headers["content-type"] == HTML + "; charset=utf-8"
    assert httpx.get(url, headers={"Accept": "text/html"}).headers["content-type"].startswith("text/html")
    assert httpx.get(url, headers={"Accept": f"{HTML}, {JSON};q=0.5"}).headers["content-type"].startswith(HTML + ";")
    assert httpx.get(url).headers["content-type"].startswith("text/html")
    assert httpx.get(url, headers={"Accept": "image/png"}).status_code == 406
    assert httpx.get(url, headers={"Accept": JSON}).headers["vary"] == "Accept"


def test_json_and_html_pages_carry_the_same_facts(server, sample) -> None:
    url = f"{server.url}/simple/demo-pkg/"
    json_response = httpx.get(url, headers={"Accept": JSON})
    data = json_response.json()
    assert data["meta"]["api-version"] == "1.4"
    assert data["versions"] == ["1.0", "1.1", "2.0"]
    by_name = {item["filename"]: item for item in data["files"]}
    wheel = next(a for a in sample["demo-pkg"] if a.filename == "demo_pkg-1.1-py3-none-any.whl")
    item = by_name[wheel.filename]
    assert item["hashes"] == {"sha256": wheel.sha256}
    assert item["size"] == wheel.size
    assert item["yanked"] == "broken build"
    assert item["requires-python"] == ">=3.8"
    assert item["core-metadata"] == {"sha256": wheel.metadata_sha256}
    assert item["upload-time"].endswith("Z")
    json_page = ProjectPage.from_json_data(data, base_url=url)
    html_page = ProjectPage.from_html("demo-pkg", httpx.get(url, headers={"Accept": HTML}).content, base_url=url)
    for one, other in zip(json_page.packages, html_page.packages, strict=True):
        assert (one.filename, one.url, one.digests, one.is_yanked, one.yanked_reason, one.requires_python) == (
            other.filename,
            other.url,
            other.digests,
            other.is_yanked,
            other.yanked_reason,
            other.requires_python,
        )
        assert one.metadata_digests == other.metadata_digests


def test_root_lists_normalized_projects(server) -> None:
    assert httpx.get(f"{server.url}/simple/", headers={"Accept": JSON}).json()["projects"] == [
        {"name": "demo-pkg"},
        {"name": "other-lib"},
    ]
    assert 'href="other-lib/"' in httpx.get(f"{server.url}/simple/").text


def test_redirects_and_unknown_projects(server) -> None:
    response = httpx.get(f"{server.url}/simple/Other_Lib/")
    assert response.status_code == 301 and response.headers["location"] == "/simple/other-lib/"
    assert httpx.get(f"{server.url}/simple/demo-pkg").headers["location"] == "/simple/demo-pkg/"
    assert httpx.get(f"{server.url}/simple/nope/").status_code == 404
    assert httpx.get(f"{server.url}/simple/..%2Fetc/").status_code == 404


def test_page_etag_and_conditional_get(server) -> None:
    url = f"{server.url}/simple/demo-pkg/"
    first = httpx.get(url, headers={"Accept": JSON})
    again = httpx.get(url, headers={"Accept": JSON, "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_file_serving_headers_range_and_head(server, sample) -> None:
    wheel = next(a for a in sample["demo-pkg"] if a.filename.endswith(".whl"))
    url = f"{server.url}/files/demo-pkg/{wheel.filename}"
    response = httpx.get(url)
    assert response.content == wheel.data
    assert response.headers["etag"] == f'"{wheel.sha256}"'
    assert response.headers["content-length"] == str(wheel.size)
    assert "immutable" in response.headers["cache-control"]
    assert response.headers["x-content-type-options"] == "nosniff"  # a browser never runs it as a page
    partial = httpx.get(url, headers={"Range": "bytes=10-19"})
    assert partial.status_code == 206 and partial.content == wheel.data[10:20]
    head = httpx.head(url)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(wheel.size)
    assert httpx.get(url, headers={"If-None-Match": f'"{wheel.sha256}"'}).status_code == 304
    metadata = httpx.get(url + ".metadata")
    assert hashlib.sha256(metadata.content).hexdigest() == wheel.metadata_sha256
    assert httpx.get(f"{server.url}/files/demo-pkg/demo_pkg-9.9.tar.gz").status_code == 404
    assert httpx.get(f"{server.url}/files/other-lib/{wheel.filename}").status_code == 404


def test_new_sync_is_served_without_restart(mirror: Mirror, upstream: FakeUpstream, serve) -> None:
    make_sample_index(upstream)
    mirror.run("sync", check=True)
    server = serve()
    upstream.add("other_lib", build_wheel("other_lib", "0.3"))
    mirror.run("sync", check=True)
    data = httpx.get(f"{server.url}/simple/other-lib/", headers={"Accept": JSON}).json()
    assert "0.3" in data["versions"]
