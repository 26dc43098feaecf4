"""Tests of the fake upstream index itself.

If the fake lies, every gitmirror test built on it lies too, so these checks
use independent parsers (pypi_simple, packaging, zipfile/tarfile) and real
installers (pip, uv) rather than the fake's own view of itself.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from packaging.metadata import Metadata
from packaging.requirements import InvalidRequirement
from packaging.utils import parse_sdist_filename, parse_wheel_filename
from pypi_simple import DistributionPackage, IndexPage, ProjectPage, ProjectStatus

from conftest import copy_venv
from fakeupstream import (
    Artifact,
    FakeUpstream,
    build_sdist,
    build_wheel,
    make_sample_index,
    negotiate,
)

JSON = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
#: What pip sends.
PIP_ACCEPT = f"{JSON}, {HTML_V1}; q=0.1, text/html; q=0.01"

WHEEL_10 = "demo_pkg-1.0-py3-none-any.whl"
WHEEL_11 = "demo_pkg-1.1-py3-none-any.whl"
WHEEL_20 = "demo_pkg-2.0-py3-none-any.whl"
UV = Path(sys.executable).with_name("uv")


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample() -> Iterator[tuple[FakeUpstream, dict[str, list[Artifact]]]]:
    """A read-only sample index shared by the module (tests must not mutate it)."""
    with FakeUpstream() as up:
        yield up, make_sample_index(up)


@pytest.fixture
def up() -> Iterator[FakeUpstream]:
    """A private, mutable index with the sample data."""
    with FakeUpstream() as upstream:
        make_sample_index(upstream)
        yield upstream


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=5) as c:
        yield c


def get_json(client: httpx.Client, up: FakeUpstream, project: str) -> httpx.Response:
    return client.get(up.page_url(project), headers={"Accept": JSON})


def get_html(client: httpx.Client, up: FakeUpstream, project: str) -> httpx.Response:
    return client.get(up.page_url(project), headers={"Accept": "text/html"})


def by_filename(page: ProjectPage) -> dict[str, DistributionPackage]:
    return {p.filename: p for p in page.packages}


def clean_env() -> dict[str, str]:
    """Environment for installers: no PIP_*/UV_* settings, no config files, no proxies.

    The host sets PIP_* variables and a global pip.conf with extra indexes;
    letting any of them in would make the install tests non-hermetic.
    """
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_")) and k.lower() not in proxies and k != "VIRTUAL_ENV"
    }
    env.update(PIP_CONFIG_FILE=os.devnull, UV_NO_CONFIG="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    return env


def run(cmd: list[str | Path]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(c) for c in cmd], env=clean_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory, venv_template: Path) -> Path:
    """One fresh virtualenv (with pip) for the whole module."""
    path = tmp_path_factory.mktemp("venv") / "venv"
    copy_venv(venv_template, path)
    return path / "bin" / "python"


def pip_install(python: Path, index_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run(
        [
            python,
            "-m",
            "pip",
            "install",
            "--index-url",
            index_url,
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
            "--force-reinstall",
            *args,
        ]
    )


def downloads(up: FakeUpstream) -> list[str]:
    """Paths of the distribution files (not PEP 658 metadata) fetched successfully."""
    return [
        r.path
        for r in up.requests
        if r.path.startswith("/files/") and not r.path.endswith(".metadata") and r.status == 200
    ]


def installed_version(python: Path, module: str) -> str:
    return run([python, "-c", f"import {module}; print({module}.__version__)"]).stdout.strip()


# --------------------------------------------------------------------------
# artifacts
# --------------------------------------------------------------------------


def test_wheel_is_deterministic_and_well_formed() -> None:
    kwargs = dict(
        requires_python=">=3.8",
        requires_dist=["attrs>=20", 'pytest; extra == "test"'],
        extras=["test"],
        summary="Sum",
        author="Ann",
        home_page="http://127.0.0.1/x",
    )
    art = build_wheel("Demo.Pkg", "1.0.0", **kwargs)
    assert build_wheel("Demo.Pkg", "1.0.0", **kwargs).data == art.data
    assert build_wheel("Demo.Pkg", "1.0.1", **kwargs).data != art.data
    assert art.filename == "demo_pkg-1.0.0-py3-none-any.whl"
    name, version, _, tags = parse_wheel_filename(art.filename)
    assert (name, str(version), [str(t) for t in tags]) == ("demo-pkg", "1.0.0", ["py3-none-any"])
    assert art.sha256 == hashlib.sha256(art.data).hexdigest()
    assert art.size == len(art.data)
    assert art.requires_python == ">=3.8"

    with zipfile.ZipFile(io.BytesIO(art.data)) as zf:
        assert zf.namelist() == [
            "demo_pkg/__init__.py",
            "demo_pkg-1.0.0.dist-info/METADATA",
            "demo_pkg-1.0.0.dist-info/WHEEL",
            "demo_pkg-1.0.0.dist-info/RECORD",
        ]
        assert all(i.date_time == (2020, 2, 2, 0, 0, 0) for i in zf.infolist())
        assert zf.read("demo_pkg/__init__.py") == b'__version__ = "1.0.0"\n'
        assert zf.read("demo_pkg-1.0.0.dist-info/METADATA") == art.metadata
        wheel = zf.read("demo_pkg-1.0.0.dist-info/WHEEL").decode()
        assert "Wheel-Version: 1.0\n" in wheel and "Root-Is-Purelib: true\n" in wheel
        assert "Tag: py3-none-any\n" in wheel
        rows = list(csv.reader(io.StringIO(zf.read("demo_pkg-1.0.0.dist-info/RECORD").decode())))
        assert {r[0] for r in rows} == set(zf.namelist())
        for path, digest, size in rows:
            if path.endswith("RECORD"):
                assert (digest, size) == ("", "")
                continue
            content = zf.read(path)
            b64 = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={b64}"
            assert int(size) == len(content)

    assert art.metadata is not None
    meta = Metadata.from_email(art.metadata, validate=True)
    assert meta.name == "Demo.Pkg" and str(meta.version) == "1.0.0"
    assert str(meta.requires_python) == ">=3.8"
    assert [str(r) for r in meta.requires_dist or []] == ["attrs>=20", 'pytest; extra == "test"']
    assert meta.provides_extra == ["test"]
    assert (meta.summary, meta.author, meta.home_page) == ("Sum", "Ann", "http://127.0.0.1/x")


def test_wheel_tags_payload_and_validation() -> None:
    art = build_wheel("x", "2", tag="py2.py3-none-any", payload_size=100_000)
    assert art.filename == "x-2-py2.py3-none-any.whl"
    with zipfile.ZipFile(io.BytesIO(art.data)) as zf:
        wheel = zf.read("x-2.dist-info/WHEEL").decode()
        assert "Tag: py2-none-any\n" in wheel and "Tag: py3-none-any\n" in wheel
        payload = zf.read("x/payload.bin")
    assert len(payload) == 100_000 and art.size > 100_000
    assert build_wheel("x", "2", tag="py2.py3-none-any", payload_size=100_000).data == art.data
    with zipfile.ZipFile(io.BytesIO(build_wheel("x", "3", payload_size=100_000).data)) as zf:
        assert zf.read("x/payload.bin") != payload  # each artifact gets its own bytes
    with pytest.raises(InvalidRequirement):
        build_wheel("x", "1", requires_dist=["not a requirement!!"])


def read_member(tf: tarfile.TarFile, name: str) -> bytes:
    member = tf.extractfile(name)
    assert member is not None, name
    return member.read()


def test_sdist_is_deterministic_and_buildable_layout() -> None:
    art = build_sdist("demo-pkg", "1.0", requires_python=">=3.8", requires_dist=["attrs"], payload_size=1000)
    assert (
        art.data
        == build_sdist("demo-pkg", "1.0", requires_python=">=3.8", requires_dist=["attrs"], payload_size=1000).data
    )
    assert art.filename == "demo_pkg-1.0.tar.gz"
    assert parse_sdist_filename(art.filename)[0] == "demo-pkg"
    assert art.metadata is None and art.requires_python == ">=3.8"
    assert art.data[4:8] == b"\0\0\0\0"  # gzip header mtime
    with tarfile.open(fileobj=io.BytesIO(art.data)) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert set(members) == {
            "demo_pkg-1.0",
            "demo_pkg-1.0/demo_pkg",
            "demo_pkg-1.0/PKG-INFO",
            "demo_pkg-1.0/pyproject.toml",
            "demo_pkg-1.0/demo_pkg/__init__.py",
            "demo_pkg-1.0/demo_pkg/payload.bin",
        }
        assert len({m.mtime for m in members.values()}) == 1
        assert {(m.uid, m.gid, m.uname) for m in members.values()} == {(0, 0, "")}
        pkg_info = read_member(tf, "demo_pkg-1.0/PKG-INFO")
        pyproject = tomllib.loads(read_member(tf, "demo_pkg-1.0/pyproject.toml").decode())
        init = read_member(tf, "demo_pkg-1.0/demo_pkg/__init__.py")
        assert members["demo_pkg-1.0/demo_pkg/payload.bin"].size == 1000
    meta = Metadata.from_email(pkg_info)
    assert (meta.name, str(meta.version), str(meta.requires_python)) == ("demo-pkg", "1.0", ">=3.8")
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"
    assert pyproject["project"] == {
        "name": "demo-pkg",
        "version": "1.0",
        "requires-python": ">=3.8",
        "dependencies": ["attrs"],
    }
    assert init == b'__version__ = "1.0"\n'


def test_artifact_from_path_reads_wheel_metadata(tmp_path: Path) -> None:
    art = build_wheel("demo-pkg", "1.0", requires_python=">=3.9")
    path = tmp_path / art.filename
    path.write_bytes(art.data)
    assert Artifact.from_path(path) == art


# --------------------------------------------------------------------------
# pages
# --------------------------------------------------------------------------


@pytest.mark.parametrize("project", ["demo-pkg", "other_lib"])
def test_json_and_html_pages_agree(
    sample: tuple[FakeUpstream, dict[str, list[Artifact]]], client: httpx.Client, project: str
) -> None:
    up, added = sample
    rj, rh = get_json(client, up, project), get_html(client, up, project)
    assert rj.status_code == rh.status_code == 200
    assert rj.headers["content-type"] == JSON
    assert rh.headers["content-type"] == "text/html; charset=utf-8"
    pj = ProjectPage.from_json_data(rj.json(), str(rj.url))
    ph = ProjectPage.from_html(project, rh.content, str(rh.url))
    assert pj.repository_version == ph.repository_version == "1.4"
    assert pj.last_serial == rj.headers["x-pypi-last-serial"]

    def key(p: DistributionPackage) -> tuple[object, ...]:
        return (
            p.filename,
            p.url,
            p.digests,
            p.is_yanked,
            p.yanked_reason,
            p.requires_python,
            bool(p.has_metadata),
            p.metadata_digests or None,
        )

    assert [key(p) for p in pj.packages] == [key(p) for p in ph.packages]
    arts = {a.filename: a for a in added[rj.json()["name"]]}
    assert [p.filename for p in pj.packages] == list(arts)
    for pkg in pj.packages:
        art = arts[pkg.filename]
        assert pkg.digests == {"sha256": art.sha256}
        assert pkg.size == art.size
        assert pkg.url == up.file_url(project, art.filename)
        assert pkg.upload_time is not None and pkg.upload_time < datetime.now(UTC) - timedelta(days=30)
        if art.metadata is not None:
            assert pkg.metadata_digests == {"sha256": hashlib.sha256(art.metadata).hexdigest()}
        else:
            assert not pkg.has_metadata


def test_sample_index_content(sample: tuple[FakeUpstream, dict[str, list[Artifact]]], client: httpx.Client) -> None:
    up, added = sample
    assert {k: [a.filename for a in v] for k, v in added.items()} == {
        "demo-pkg": [
            WHEEL_10,
            "demo_pkg-1.0.tar.gz",
            WHEEL_11,
            "demo_pkg-1.1.tar.gz",
            WHEEL_20,
            "demo_pkg-2.0.tar.gz",
        ],
        "other-lib": ["other_lib-0.1-py3-none-any.whl", "other_lib-0.2-py3-none-any.whl"],
    }
    doc = get_json(client, up, "demo-pkg").json()
    assert doc["name"] == "demo-pkg" and doc["versions"] == ["1.0", "1.1", "2.0"]
    files = {f["filename"]: f for f in doc["files"]}
    assert files[WHEEL_11]["yanked"] == files["demo_pkg-1.1.tar.gz"]["yanked"] == "broken build"
    assert files[WHEEL_10]["yanked"] is False
    assert files[WHEEL_20]["requires-python"] == ">=3.99"
    assert files["demo_pkg-1.0.tar.gz"]["core-metadata"] is False
    times = [datetime.fromisoformat(f["upload-time"]) for f in doc["files"]]
    assert times == sorted(times)
    assert all(len(f["upload-time"]) == len("2020-01-01T00:00:00.000000Z") for f in doc["files"])
    other = ProjectPage.from_json_data(get_json(client, up, "other-lib").json())
    meta = client.get(other.packages[1].url + ".metadata")
    assert "Requires-Dist: demo-pkg>=1.0" in meta.text


def test_project_list(sample: tuple[FakeUpstream, dict[str, list[Artifact]]], client: httpx.Client) -> None:
    up, _ = sample
    rj = client.get(up.url, headers={"Accept": JSON})
    rh = client.get(up.url, headers={"Accept": "text/html"})
    assert rj.headers["content-type"] == JSON
    assert IndexPage.from_json_data(rj.json()).projects == ["demo-pkg", "other_lib"]
    assert IndexPage.from_html(rh.content).projects == ["demo-pkg", "other_lib"]
    assert rj.json()["meta"]["_last-serial"] == up.serial == int(rj.headers["x-pypi-last-serial"])
    assert 'href="/simple/other-lib/"' in rh.text


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (PIP_ACCEPT, JSON),
        (f"text/html, {JSON}", "text/html; charset=utf-8"),
        (f"text/html;q=0.5, {JSON};q=0.9", JSON),
        ("application/vnd.pypi.simple.latest+json", JSON),
        (HTML_V1, HTML_V1),
        ("*/*", "text/html; charset=utf-8"),
        ("text/*", "text/html; charset=utf-8"),
    ],
)
def test_content_negotiation(
    sample: tuple[FakeUpstream, dict[str, list[Artifact]]], client: httpx.Client, accept: str, expected: str
) -> None:
    up, _ = sample
    r = client.get(up.page_url("demo-pkg"), headers={"Accept": accept})
    assert r.status_code == 200
    assert r.headers["content-type"] == expected
    assert r.headers["vary"] == "Accept"


def test_content_negotiation_edges(
    sample: tuple[FakeUpstream, dict[str, list[Artifact]]], client: httpx.Client
) -> None:
    up, _ = sample
    assert negotiate(None) == negotiate("") == "text/html"
    assert negotiate(f"{JSON};q=0, text/html;q=0") is None
    assert client.get(up.page_url("demo-pkg"), headers={"Accept": "application/json"}).status_code == 406


def test_html_only_and_json_only(up: FakeUpstream, client: httpx.Client) -> None:
    up.html_only = True
    r = get_json(client, up, "demo-pkg")
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert len(ProjectPage.from_html("demo-pkg", r.content).packages) == 6
    up.html_only, up.json_only = False, True
    r = get_html(client, up, "demo-pkg")
    assert r.headers["content-type"] == JSON
    assert len(r.json()["files"]) == 6


def test_redirects_and_not_found(sample: tuple[FakeUpstream, dict[str, list[Artifact]]], client: httpx.Client) -> None:
    up, added = sample
    for path in ("Demo_Pkg/", "demo.pkg/", "demo-pkg", "OTHER_LIB"):
        r = client.get(up.url + path)
        assert r.status_code == 301, path
    assert client.get(up.url + "Demo_Pkg/").headers["location"] == "/simple/demo-pkg/"
    assert client.get(up.url + "other_lib/").headers["location"] == "/simple/other-lib/"
    assert client.get(up.url + "Demo_Pkg/", follow_redirects=True).status_code == 200
    assert client.get(up.url + "nope/").status_code == 404
    assert client.get(up.url + "demo-pkg/extra/").status_code == 404
    assert client.get(up.files_url + "demo-pkg/nope.whl").status_code == 404
    assert client.get(up.files_url + "demo-pkg/demo_pkg-1.0.tar.gz.metadata").status_code == 404
    assert client.get(up.base_url + "/elsewhere").status_code == 404


def test_files_metadata_and_head(sample: tuple[FakeUpstream, dict[str, list[Artifact]]], client: httpx.Client) -> None:
    up, added = sample
    for art in added["demo-pkg"]:
        r = client.get(up.file_url("demo-pkg", art.filename))
        assert r.status_code == 200
        assert r.content == art.data
        assert r.headers["content-type"] == "application/octet-stream"
        assert int(r.headers["content-length"]) == art.size
    wheel = added["demo-pkg"][0]
    r = client.get(up.file_url("demo-pkg", wheel.filename) + ".metadata")
    assert r.content == wheel.metadata
    head = client.head(up.file_url("demo-pkg", wheel.filename))
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) == wheel.size
    page_head = client.head(up.page_url("demo-pkg"), headers={"Accept": JSON})
    assert page_head.status_code == 200 and page_head.content == b""
    assert page_head.headers["etag"] == get_json(client, up, "demo-pkg").headers["etag"]


def test_etag_and_serials(up: FakeUpstream, client: httpx.Client) -> None:
    first = get_json(client, up, "demo-pkg")
    etag = first.headers["etag"]
    html_etag = get_html(client, up, "demo-pkg").headers["etag"]
    assert etag != html_etag  # the format is part of the validator
    r = client.get(up.page_url("demo-pkg"), headers={"Accept": JSON, "If-None-Match": etag})
    assert r.status_code == 304 and r.content == b""
    assert r.headers["etag"] == etag
    assert up.count("/simple/demo-pkg/", status=304) == 1
    r = client.get(up.page_url("demo-pkg"), headers={"Accept": JSON, "If-None-Match": html_etag})
    assert r.status_code == 200

    serial, demo_serial = up.serial, up.last_serial("demo-pkg")
    assert int(first.headers["x-pypi-last-serial"]) == demo_serial
    up.yank("other-lib", "other_lib-0.1-py3-none-any.whl", "oops")
    assert up.serial == serial + 1 and up.last_serial("demo-pkg") == demo_serial
    assert up.last_serial("other_lib") == serial + 1
    r = client.get(up.page_url("demo-pkg"), headers={"Accept": JSON, "If-None-Match": etag})
    assert r.status_code == 304  # another project's change leaves this page alone

    up.yank("demo-pkg", WHEEL_10, "bad")
    r = client.get(up.page_url("demo-pkg"), headers={"Accept": JSON, "If-None-Match": etag})
    assert r.status_code == 200 and r.headers["etag"] != etag
    assert int(r.headers["x-pypi-last-serial"]) == up.serial == serial + 2


def test_mutations(up: FakeUpstream, client: httpx.Client) -> None:
    def files() -> dict[str, dict[str, object]]:
        return {f["filename"]: f for f in get_json(client, up, "demo-pkg").json()["files"]}

    up.yank("demo-pkg", WHEEL_10)
    assert files()[WHEEL_10]["yanked"] is True
    assert 'data-yanked=""' in get_html(client, up, "demo-pkg").text
    up.unyank("demo-pkg", WHEEL_10)
    assert files()[WHEEL_10]["yanked"] is False

    new = up.replace_file("demo-pkg", WHEEL_10, b"conflicting bytes")
    assert files()[WHEEL_10]["hashes"] == {"sha256": hashlib.sha256(b"conflicting bytes").hexdigest()}
    assert files()[WHEEL_10]["size"] == len(b"conflicting bytes") == new.size
    assert client.get(up.file_url("demo-pkg", WHEEL_10)).content == b"conflicting bytes"

    up.remove_file("demo-pkg", WHEEL_20)
    assert WHEEL_20 not in files()
    assert client.get(up.file_url("demo-pkg", WHEEL_20)).status_code == 404
    with pytest.raises(KeyError):
        up.remove_file("demo-pkg", WHEEL_20)

    art = build_wheel("demo-pkg", "3.0")
    with pytest.raises(ValueError):
        up.add("demo-pkg", build_wheel("demo-pkg", "1.1"))
    up.add("Demo.Pkg", art, upload_time="2024-05-06T07:08:09Z", requires_python=">=3.10", core_metadata=False)
    entry = files()[art.filename]
    assert entry["upload-time"] == "2024-05-06T07:08:09.000000Z"
    assert entry["requires-python"] == ">=3.10"
    assert entry["core-metadata"] is False and entry["data-dist-info-metadata"] is False
    assert client.get(up.file_url("demo-pkg", art.filename) + ".metadata").status_code == 404
    assert 'data-requires-python="&gt;=3.10"' in get_html(client, up, "demo-pkg").text

    up.remove_project("other_lib")
    assert get_json(client, up, "other-lib").status_code == 404
    assert IndexPage.from_json_data(client.get(up.url, headers={"Accept": JSON}).json()).projects == ["demo-pkg"]


@pytest.mark.parametrize("status", ["archived", "deprecated", "quarantined"])
def test_project_status(up: FakeUpstream, client: httpx.Client, status: str) -> None:
    up.set_status("demo-pkg", status, "see <elsewhere> & more")
    pj = ProjectPage.from_json_data(get_json(client, up, "demo-pkg").json())
    rh = get_html(client, up, "demo-pkg")
    ph = ProjectPage.from_html("demo-pkg", rh.content)
    assert pj.status == ph.status == ProjectStatus(status)
    assert pj.status_reason == ph.status_reason == "see <elsewhere> & more"
    assert 'content="see &lt;elsewhere&gt; &amp; more"' in rh.text
    if status == "quarantined":
        assert pj.packages == ph.packages == []
        assert client.get(up.file_url("demo-pkg", WHEEL_10)).status_code == 404
    else:
        assert len(pj.packages) == 6
    up.set_status("demo-pkg", None)
    assert "project-status" not in get_json(client, up, "demo-pkg").json()
    with pytest.raises(ValueError):
        up.set_status("demo-pkg", "retired")


def test_request_log(up: FakeUpstream, client: httpx.Client) -> None:
    up.clear_requests()
    get_json(client, up, "demo-pkg")
    client.get(up.file_url("demo-pkg", WHEEL_10), headers={"X-Test": "1"})
    client.head(up.file_url("demo-pkg", WHEEL_10))
    client.get(up.url + "missing/")
    assert [(r.method, r.path, r.status) for r in up.requests] == [
        ("GET", "/simple/demo-pkg/", 200),
        ("GET", f"/files/demo-pkg/{WHEEL_10}", 200),
        ("HEAD", f"/files/demo-pkg/{WHEEL_10}", 200),
        ("GET", "/simple/missing/", 404),
    ]
    assert up.requests[0].headers["Accept"] == JSON
    assert up.requests[1].headers["X-Test"] == "1"
    assert up.count() == 4 and up.count(WHEEL_10) == 2 and up.count(status=404) == 1
    assert up.count(WHEEL_10, method="HEAD") == 1
    up.clear_requests()
    assert up.requests == [] and up.count() == 0


# --------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------


def test_fault_status_times_and_retry_after(up: FakeUpstream, client: httpx.Client) -> None:
    fault = up.fault("/simple/demo-pkg/", "status", code=503, retry_after=7, times=2)
    for remaining in (1, 0):
        r = get_json(client, up, "demo-pkg")
        assert r.status_code == 503 and r.headers["retry-after"] == "7"
        assert fault.remaining == remaining
    assert get_json(client, up, "demo-pkg").status_code == 200
    assert get_json(client, up, "other-lib").status_code == 200  # other paths unaffected

    up.fault(WHEEL_10, "status", code=429, times=-1)
    for _ in range(3):
        r = client.get(up.file_url("demo-pkg", WHEEL_10))
        assert r.status_code == 429 and "retry-after" not in r.headers
    assert up.count(WHEEL_10, status=429) == 3
    up.clear_faults()
    assert client.get(up.file_url("demo-pkg", WHEEL_10)).status_code == 200
    with pytest.raises(ValueError):
        up.fault("x", "explode")


def test_fault_delay_triggers_client_timeout(up: FakeUpstream) -> None:
    up.fault(WHEEL_10, "delay", seconds=3)
    with httpx.Client(trust_env=False, timeout=0.3) as fast, pytest.raises(httpx.ReadTimeout):
        fast.get(up.file_url("demo-pkg", WHEEL_10))
    start = time.monotonic()
    with httpx.Client(trust_env=False, timeout=5) as c:
        assert c.get(up.file_url("demo-pkg", WHEEL_10)).status_code == 200
    assert time.monotonic() - start < 1


def test_fault_delay_then_answers(up: FakeUpstream, client: httpx.Client) -> None:
    up.fault("/simple/", "delay", seconds=0.3)
    start = time.monotonic()
    assert get_json(client, up, "demo-pkg").status_code == 200
    assert time.monotonic() - start >= 0.3


def test_fault_truncate(up: FakeUpstream, client: httpx.Client) -> None:
    art = up.artifact("demo-pkg", WHEEL_10)
    up.fault(WHEEL_10, "truncate")
    received = bytearray()
    with client.stream("GET", up.file_url("demo-pkg", WHEEL_10)) as r:
        assert r.status_code == 200 and int(r.headers["content-length"]) == art.size
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in r.iter_raw():
                received += chunk
    assert bytes(received) == art.data[: art.size // 2]
    assert client.get(up.file_url("demo-pkg", WHEEL_10)).content == art.data


def test_fault_reset(up: FakeUpstream, client: httpx.Client) -> None:
    art = up.artifact("demo-pkg", WHEEL_10)
    up.fault(WHEEL_10, "reset")
    with client.stream("GET", up.file_url("demo-pkg", WHEEL_10)) as r:
        assert r.status_code == 200
        with pytest.raises(httpx.TransportError):
            r.read()
    assert client.get(up.file_url("demo-pkg", WHEEL_10)).content == art.data


def test_fault_wrong_hash(up: FakeUpstream, client: httpx.Client) -> None:
    art = up.artifact("demo-pkg", WHEEL_10)
    fault = up.fault(WHEEL_10, "wrong_hash")
    assert client.get(up.file_url("demo-pkg", WHEEL_10)).status_code == 200  # downloads don't consume it
    assert fault.remaining == 1
    bad = by_filename(ProjectPage.from_json_data(get_json(client, up, "demo-pkg").json()))
    assert bad[WHEEL_10].digests["sha256"] != art.sha256
    assert bad["demo_pkg-1.0.tar.gz"].digests["sha256"] == up.artifact("demo-pkg", "demo_pkg-1.0.tar.gz").sha256
    assert client.get(up.file_url("demo-pkg", WHEEL_10)).content == art.data
    good = by_filename(ProjectPage.from_html("demo-pkg", get_html(client, up, "demo-pkg").content))
    assert good[WHEEL_10].digests["sha256"] == art.sha256

    up.fault("demo_pkg-1.0", "wrong_hash")
    page = by_filename(ProjectPage.from_html("demo-pkg", get_html(client, up, "demo-pkg").content))
    assert page[WHEEL_10].digests["sha256"] != art.sha256
    assert page["demo_pkg-1.0.tar.gz"].digests["sha256"] != up.artifact("demo-pkg", "demo_pkg-1.0.tar.gz").sha256


def test_fault_longer(up: FakeUpstream, client: httpx.Client) -> None:
    art = up.artifact("demo-pkg", WHEEL_10)
    up.fault(WHEEL_10, "longer", extra=b"x" * 10)
    r = client.get(up.file_url("demo-pkg", WHEEL_10))
    assert r.content == art.data + b"x" * 10
    announced = {f["filename"]: f for f in get_json(client, up, "demo-pkg").json()["files"]}[WHEEL_10]
    assert announced["size"] == art.size and announced["hashes"]["sha256"] == art.sha256
    assert len(r.content) > announced["size"]

    # Content-Length of the real file, more bytes on the wire: the client must not take them.
    up.fault(WHEEL_10, "longer", extra=b"y" * 10, match_content_length=False)
    with client.stream("GET", up.file_url("demo-pkg", WHEEL_10)) as r:
        assert int(r.headers["content-length"]) == art.size
        assert r.read() == art.data
    assert client.get(up.file_url("demo-pkg", WHEEL_10)).content == art.data


def test_fault_invalid_page(up: FakeUpstream, client: httpx.Client) -> None:
    up.fault("/simple/demo-pkg/", "invalid_page")
    r = get_json(client, up, "demo-pkg")
    assert r.status_code == 200 and r.headers["content-type"] == JSON
    with pytest.raises(json.JSONDecodeError):
        r.json()
    up.fault("/simple/demo-pkg/", "invalid_page")
    r = get_html(client, up, "demo-pkg")
    assert r.status_code == 200
    assert ProjectPage.from_html("demo-pkg", r.content).packages == []
    up.fault("/simple/demo-pkg/", "invalid_page", body=b'{"meta": {}}')
    assert get_json(client, up, "demo-pkg").content == b'{"meta": {}}'
    up.fault(WHEEL_10, "invalid_page")  # page faults never hit downloads
    assert client.get(up.file_url("demo-pkg", WHEEL_10)).status_code == 200
    assert len(get_json(client, up, "demo-pkg").json()["files"]) == 6


def test_fault_redirect_loop(up: FakeUpstream, client: httpx.Client) -> None:
    up.fault("/simple/demo-pkg/", "redirect_loop", times=-1)
    r = get_json(client, up, "demo-pkg")
    assert r.status_code == 302 and r.headers["location"] == "/simple/demo-pkg/"
    with pytest.raises(httpx.TooManyRedirects):
        client.get(up.page_url("demo-pkg"), follow_redirects=True)


@pytest.mark.parametrize("accept", [JSON, "text/html"])
def test_fault_huge_page(up: FakeUpstream, client: httpx.Client, accept: str) -> None:
    entries = 25_000 if accept == JSON else 8_000  # HTML parsing is the slow part
    up.fault("/simple/demo-pkg/", "huge_page", entries=entries)
    r = client.get(up.page_url("demo-pkg"), headers={"Accept": accept})
    assert r.status_code == 200
    assert r.headers["transfer-encoding"] == "chunked" and "content-length" not in r.headers
    page = ProjectPage.from_json_data(r.json()) if accept == JSON else ProjectPage.from_html("demo-pkg", r.content)
    assert len(page.packages) == entries
    assert page.packages[-1].filename == f"demo_pkg-0.0.{entries - 1}.tar.gz"
    assert len(get_json(client, up, "demo-pkg").json()["files"]) == 6  # consumed


def test_fault_huge_project_list(up: FakeUpstream, client: httpx.Client) -> None:
    up.fault("/simple/", "huge_page", entries=3000)
    assert len(IndexPage.from_json_data(client.get(up.url, headers={"Accept": JSON}).json()).projects) == 3000


def test_stop_does_not_wait_for_delayed_handlers() -> None:
    up = FakeUpstream().start()
    make_sample_index(up)
    up.fault("/simple/", "delay", seconds=30)
    with httpx.Client(trust_env=False, timeout=0.2) as c, pytest.raises(httpx.ReadTimeout):
        c.get(up.url)
    start = time.monotonic()
    up.stop()
    assert time.monotonic() - start < 3
    with pytest.raises(RuntimeError):
        _ = up.url


# --------------------------------------------------------------------------
# real installers
# --------------------------------------------------------------------------


def test_pip_installs_pinned_wheel(sample: tuple[FakeUpstream, dict[str, list[Artifact]]], venv_python: Path) -> None:
    up, _ = sample
    up.clear_requests()
    pip_install(venv_python, up.url, "--no-deps", "demo-pkg==1.0")
    assert installed_version(venv_python, "demo_pkg") == "1.0"
    assert [(r.path, r.status) for r in up.requests] == [
        ("/simple/demo-pkg/", 200),
        (f"/files/demo-pkg/{WHEEL_10}.metadata", 200),  # pip uses PEP 658 metadata
        (f"/files/demo-pkg/{WHEEL_10}", 200),
    ]
    assert up.requests[0].headers["Accept"].startswith(JSON)


def test_pip_skips_yanked_and_incompatible_python(
    sample: tuple[FakeUpstream, dict[str, list[Artifact]]], venv_python: Path
) -> None:
    up, _ = sample
    up.clear_requests()
    pip_install(venv_python, up.url, "--no-deps", "demo-pkg")
    assert installed_version(venv_python, "demo_pkg") == "1.0"
    assert up.count("demo_pkg-1.1") == 0 and up.count("demo_pkg-2.0") == 0
    # PEP 592: an exact pin still gets a yanked release.
    proc = pip_install(venv_python, up.url, "--no-deps", "demo-pkg==1.1")
    assert installed_version(venv_python, "demo_pkg") == "1.1"
    assert "broken build" in proc.stdout + proc.stderr


def test_uv_installs_with_dependencies(
    sample: tuple[FakeUpstream, dict[str, list[Artifact]]], venv_python: Path
) -> None:
    up, _ = sample
    up.clear_requests()
    run(
        [
            UV,
            "pip",
            "install",
            "--python",
            venv_python,
            "--index-url",
            up.url,
            "--no-cache",
            "--reinstall",
            "other-lib",
        ]
    )
    assert installed_version(venv_python, "other_lib") == "0.2"
    assert installed_version(venv_python, "demo_pkg") == "1.0"  # not yanked 1.1, not >=3.99 2.0
    assert sorted(downloads(up)) == [f"/files/demo-pkg/{WHEEL_10}", "/files/other-lib/other_lib-0.2-py3-none-any.whl"]
    assert up.count("demo_pkg-1.1") == up.count("demo_pkg-2.0") == 0
    assert up.count(".whl.metadata", status=200) >= 1  # uv resolves from PEP 658 metadata
    assert up.requests[0].headers["Accept"].startswith(JSON)


def _local_setuptools_wheel() -> Path | None:
    """A setuptools wheel already on this machine, to serve as the sdist's build backend."""
    for pattern in ("/opt/pypi/files/setuptools-*.whl", "/opt/pypi-more/files/setuptools-*.whl"):
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return found[-1]
    return None


def test_pip_builds_and_installs_sdist(venv_python: Path) -> None:
    setuptools_wheel = _local_setuptools_wheel()
    if setuptools_wheel is None:
        pytest.skip("no local setuptools wheel to serve as build backend")
    with FakeUpstream() as up:
        up.add("setuptools", Artifact.from_path(setuptools_wheel))
        up.add("sdist-only", build_sdist("sdist-only", "0.3", requires_python=">=3.8"))
        pip_install(venv_python, up.url, "--no-deps", "sdist-only")
        assert installed_version(venv_python, "sdist_only") == "0.3"
        assert sorted(downloads(up)) == [
            "/files/sdist-only/sdist_only-0.3.tar.gz",  # built from source, not a wheel
            f"/files/setuptools/{setuptools_wheel.name}",  # the isolated build env's backend
        ]
