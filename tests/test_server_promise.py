"""What the server promises under hostile names and later decisions (issue 24, items 7, 10, 11, 13).

Snapshot revisions are resolved off the event loop, so a storm of misses does not stall other
requests; every unresolvable revision or non-normalized file URL is one line, never a 500; a
quarantined project (PEP 792) offers no files anywhere; a file taken down after a snapshot answers
410 with the reason through that snapshot; HTML pages declare their charset so non-ASCII reasons
read right, and PEP 691's ``latest`` media types are honoured.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from dulwich.objects import Commit
from dulwich.repo import Repo
from pypi_simple import ProjectPage
from starlette.testclient import TestClient

from gitmirror.serve import revisions
from gitmirror.serve.server import create_app
from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.snapshot import RevisionError, Snapshot
from gitmirror.sync.config import load

from conftest import Mirror, RunningServer
from presynced import sample_site

JSON = "application/vnd.pypi.simple.v1+json"
HTML = "application/vnd.pypi.simple.v1+html"
LATEST_JSON = "application/vnd.pypi.simple.latest+json"
LATEST_HTML = "application/vnd.pypi.simple.latest+html"
WHEEL = "demo_pkg-1.0-py3-none-any.whl"
YANK_REASON = "défaut de compilation ✗ (ビルド)"
STATUS_REASON = "logiciel malveillant signalé — ne pas installer"


@pytest.fixture
def synced(mirror: Mirror, sample) -> Mirror:
    mirror.run("sync", check=True)
    return mirror


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mirror, RunningServer]]:
    """``synced`` and its server, shared by the tests that only read them (``presynced.sample_site``)."""
    with sample_site(tmp_path_factory.mktemp("promise") / "site") as (mirror, server, _sample):
        yield mirror, server


def raw_get(server: RunningServer, path: str) -> tuple[int, dict[str, str], bytes]:
    """Send ``path`` byte for byte (no client-side normalization of dots or escapes)."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def one_line(body: bytes) -> bool:
    text = body.decode()
    return bool(text.strip()) and "\n" not in text.strip() and "Traceback" not in text


def grow_history(repo_path: Path, count: int) -> list[str]:
    """Add ``count`` commits of the same tree on top of main (one pack): a long history, quickly."""
    repo = Repo(str(repo_path))
    try:
        parent = repo.refs[b"refs/heads/main"]
        tree = repo[parent].tree
        base = repo[parent].commit_time
        commits = []
        for number in range(count):
            commit = Commit()
            commit.tree, commit.parents = tree, [parent]
            commit.author = commit.committer = b"Test Mirror <mirror@example.invalid>"
            commit.author_time = commit.commit_time = base
            commit.author_timezone = commit.commit_timezone = 0
            commit.message = f"history {number}\n".encode()
            commits.append(commit)
            parent = commit.id
        repo.object_store.add_objects([(commit, None) for commit in commits])
        repo.refs[b"refs/heads/main"] = parent
        return [commit.id.decode() for commit in commits]
    finally:
        repo.close()


def timed_get(url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = httpx.get(url, timeout=120)
    return response, time.monotonic() - started


# -- item 7: revisions and names --------------------------------------------------------------------


def test_abbreviated_id_misses_do_not_stall_other_requests(synced: Mirror, serve) -> None:
    commits = set(grow_history(synced.repo, 20_000))
    server = serve()
    root = f"{server.url}/simple/"

    def miss() -> str:
        while True:
            prefix = secrets.token_hex(4)[:7]
            if not any(commit.startswith(prefix) for commit in commits):
                return prefix

    baseline = min(timed_get(root)[1] for _ in range(3))
    alone, one_miss = timed_get(f"{server.url}/snapshot/{miss()}/simple/")
    assert alone.status_code == 404 and "unknown revision" in alone.text
    with ThreadPoolExecutor(8) as pool:
        misses = [pool.submit(timed_get, f"{server.url}/snapshot/{miss()}/simple/") for _ in range(8)]
        time.sleep(0.2)  # the misses are being resolved
        page, during = timed_get(root)
        answers = [future.result()[0] for future in misses]
    assert page.status_code == 200 and page.text == httpx.get(root).text
    assert all(answer.status_code == 404 and one_line(answer.content) for answer in answers)
    # On the event loop, the eight misses ahead of it would hold the page for about 8 x one_miss.
    assert during < max(2.0, 20 * baseline, 2 * one_miss), (during, baseline, one_miss)
    print(f"page alone {baseline:.3f} s, one miss {one_miss:.3f} s, page during eight misses {during:.3f} s")


def test_the_same_miss_again_is_answered_from_memory(site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A miss is remembered per tip, briefly: asking again costs no worker thread and no resolution."""
    resolved: list[str] = []
    real = revisions.Resolver.__call__

    def counting(self: revisions.Resolver, rev: str) -> Snapshot:
        resolved.append(rev)
        return real(self, rev)

    monkeypatch.setattr(revisions.Resolver, "__call__", counting)
    repo = MetadataRepo(site[0].repo)
    resolver = revisions.BoundedResolver(repo, lambda: repo.tip())

    async def ask_three_times() -> list[str]:
        lines = []
        for _ in range(3):
            with pytest.raises(RevisionError) as refused:
                await resolver("fffffff")
            lines.append(str(refused.value))
        return lines

    lines = asyncio.run(ask_three_times())
    assert resolved == ["fffffff"] and len(set(lines)) == 1 and "fffffff" in lines[0]


UNRESOLVABLE = [
    "0001-01-01",
    "9999-12-31T23:59:59-14:00",
    "0001-01-01T00:00:00+14:00",
    "2026-13-45",
    "2026-02-31",
    "2026-01-01T25:61",
    "0000000",
    "deadbeefdeadbeefdeadbeefdeadbeefdeadbeef",
    "no-such-tag",
    "..",
    ".lock",
    "main.lock",
    "HEAD%00",
    "%00",
    "a%0Ab",
    "x" * 5000,
    "%C3%A9t%C3%A9",
    "refs%2Fheads%2Fmain",
]


def test_unresolvable_revisions_answer_404_in_one_line(site) -> None:
    _mirror, server = site
    for rev in UNRESOLVABLE:
        for tail in ("simple/", "simple/demo-pkg/", f"files/demo-pkg/{WHEEL}"):
            status, _headers, body = raw_get(server, f"/snapshot/{rev}/{tail}")
            assert status == 404, (rev, tail, status, body[:300])
            assert one_line(body) and len(body) < 400, body[:300]


def test_files_under_non_normalized_names_redirect_or_answer_404(site) -> None:
    mirror, server = site
    commit = mirror.git("rev-parse", "main").strip()
    for path, target in (
        (f"/files/Demo_Pkg/{WHEEL}", f"/files/demo-pkg/{WHEEL}"),
        (f"/files/demo.pkg/{WHEEL}.metadata", f"/files/demo-pkg/{WHEEL}.metadata"),
        (f"/snapshot/{commit}/files/DEMO-pkg/{WHEEL}", f"/snapshot/{commit}/files/demo-pkg/{WHEEL}"),
        (f"/snapshot/{commit[:8]}/files/Demo__Pkg/{WHEEL}", f"/snapshot/{commit[:8]}/files/demo-pkg/{WHEEL}"),
    ):
        status, headers, _body = raw_get(server, path)
        assert (status, headers["location"]) == (301, target), path
        expected = httpx.get(server.url + target)
        assert expected.status_code == 200 and expected.content
        assert httpx.get(server.url + path, follow_redirects=True).content == expected.content
    for path in (
        f"/files/..%2Fdemo-pkg/{WHEEL}",
        f"/files/demo-pkg%00/{WHEEL}",
        f"/files/-demo-pkg/{WHEEL}",
        f"/files/{'d' * 5000}/{WHEEL}",
        f"/files/Demo_Pkg/..%2F{WHEEL}",
        f"/files/Demo_Pkg/{WHEEL}%00",
        "/files/Demo_Pkg/demo_pkg-1.0.txt",
        f"/snapshot/{commit}/files/No_Such/{WHEEL}",
    ):
        status, headers, body = raw_get(server, path)
        assert status in (301, 400, 404), (path, status)
        if status == 301:  # a valid name that is not normalized: the normalized URL then answers 404
            assert raw_get(server, headers["location"])[0] == 404
        else:
            assert one_line(body), path


# -- item 10: quarantined projects (PEP 792) -----------------------------------------------------------


def test_a_quarantine_reason_from_upstream_is_one_line_of_the_410(synced: Mirror) -> None:
    """Upstream writes the reason; a 410 is still one line of text, the reason escaped onto it."""
    synced.upstream.set_status("demo-pkg", "quarantined", "malware\n\nsee below\x1b[2J")
    synced.run("sync")  # fails: a quarantined project offers no release to resolve; its status is recorded
    client = TestClient(create_app(load(synced.root / "mirror.yaml")))
    for name in (WHEEL, WHEEL + ".metadata"):
        gone = client.get(f"/files/demo-pkg/{name}")
        assert gone.status_code == 410 and one_line(gone.content), gone.text
        assert "its files are not offered: malware\\x0A\\x0Asee below\\x1B[2J" in gone.text


def test_quarantine_offers_no_files_anywhere_and_archived_stays_installable(
    synced: Mirror, serve, make_venv, tmp_path: Path
) -> None:
    before = synced.git("rev-parse", "main").strip()
    synced.run("deprecate", "demo-pkg", "--status", "quarantined", "--reason", STATUS_REASON, check=True)
    synced.run("deprecate", "other-lib", "--status", "archived", "--reason", "plus maintenu", check=True)
    quarantined_at = synced.git("rev-parse", "main").strip()
    server = serve()
    for base in (f"{server.url}/simple/", f"{server.url}/snapshot/{quarantined_at[:10]}/simple/"):
        data = httpx.get(base + "demo-pkg/", headers={"Accept": JSON}).json()
        assert data["files"] == [] and data["versions"] == []
        assert data["project-status"] == {"status": "quarantined", "reason": STATUS_REASON}
        html = httpx.get(base + "demo-pkg/", headers={"Accept": HTML})
        assert "<a " not in html.text and '<meta name="pypi:project-status" content="quarantined">' in html.text
        assert f'<meta name="pypi:project-status-reason" content="{STATUS_REASON}">' in html.text
        assert len(httpx.get(base + "other-lib/", headers={"Accept": JSON}).json()["files"]) == 2
    # Files answer 410 with the reason at the tip and through every snapshot, even one from before.
    for prefix in ("", f"/snapshot/{before}", f"/snapshot/{quarantined_at}"):
        for name in (WHEEL, WHEEL + ".metadata", "demo_pkg-1.0.tar.gz"):
            gone = httpx.get(f"{server.url}{prefix}/files/demo-pkg/{name}")
            assert gone.status_code == 410 and STATUS_REASON in gone.text and one_line(gone.content), (prefix, name)
    # The direct tip path answers what the route answers.
    tip = httpx.get(f"{server.url}/simple/demo-pkg/", headers={"Accept": JSON})
    routed = httpx.get(f"{server.url}/snapshot/{quarantined_at}/simple/demo-pkg/", headers={"Accept": JSON})
    assert tip.content == routed.content and tip.headers["etag"] == routed.headers["etag"]

    venv = make_venv("quarantine")
    refused = venv.pip_install(server.index_url, "demo-pkg")
    assert refused.returncode != 0 and "No matching distribution found for demo-pkg" in refused.stderr
    installed = venv.pip_install(server.index_url, "--no-deps", "other-lib")
    assert installed.returncode == 0, installed.stderr

    out = tmp_path / "site"
    synced.run("render", "--out", str(out), check=True)
    static = json.loads((out / "simple" / "demo-pkg" / "index.json").read_text(encoding="utf-8"))
    assert static["files"] == [] and static["project-status"]["reason"] == STATUS_REASON
    assert not any((out / "files" / "demo-pkg").iterdir())
    assert (out / "files" / "other-lib").is_dir() and any((out / "files" / "other-lib").iterdir())
    page = (out / "simple" / "demo-pkg" / "index.html").read_bytes()
    assert b'<meta charset="utf-8">' in page and STATUS_REASON.encode() in page


def test_quarantine_mirrored_from_upstream_withholds_files(synced: Mirror, upstream, serve) -> None:
    upstream.set_status("demo-pkg", "quarantined", "malware found upstream")
    synced.run("sync")  # exits 1: upstream offers no release of demo-pkg any more, which the sync reports
    header = json.loads(synced.git("show", "main:projects/de/mo/demo-pkg.jsonl").splitlines()[0])
    assert header["project-status"] == {"status": "quarantined", "reason": "malware found upstream"}
    server = serve()
    data = httpx.get(f"{server.url}/simple/demo-pkg/", headers={"Accept": JSON}).json()
    assert data["files"] == [] and data["project-status"]["status"] == "quarantined"
    gone = httpx.get(f"{server.url}/files/demo-pkg/{WHEEL}")
    assert gone.status_code == 410 and "malware found upstream" in gone.text


# -- item 11: taken down after a snapshot ---------------------------------------------------------------


def test_a_file_taken_down_later_answers_410_through_every_snapshot(synced: Mirror, serve) -> None:
    before = synced.git("rev-parse", "main").strip()
    when = int(synced.git("log", "-1", "--format=%ct", before).strip())
    synced.run("tag", "shipped", "--rev", before, check=True)
    while int(time.time()) <= when:  # commit times have one-second resolution
        time.sleep(0.05)
    reason = "contient un logiciel malveillant (CVE-0000-0000) — retiré"
    synced.run("takedown", WHEEL, "--reason", reason, check=True)
    server = serve()
    at_date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    for rev in (before, before[:9], "shipped", at_date):
        listed = httpx.get(f"{server.url}/snapshot/{rev}/simple/demo-pkg/", headers={"Accept": JSON}).json()
        assert WHEEL in {item["filename"] for item in listed["files"]}, rev  # that commit's page, unchanged
        for name in (WHEEL, WHEEL + ".metadata"):
            gone = httpx.get(f"{server.url}/snapshot/{rev}/files/demo-pkg/{name}")
            assert gone.status_code == 410, (rev, name, gone.status_code, gone.text)
            assert reason in gone.text and one_line(gone.content)
    still = httpx.get(f"{server.url}/snapshot/shipped/files/demo-pkg/demo_pkg-1.0.tar.gz")
    assert still.status_code == 200 and still.content


def test_a_missing_blob_is_one_line_never_a_500(synced: Mirror, serve) -> None:
    server = serve()
    sdist = "demo_pkg-2.0.tar.gz"
    digest = next(
        json.loads(line)["sha256"]
        for line in synced.git("show", "main:projects/de/mo/demo-pkg.jsonl").splitlines()
        if json.loads(line).get("filename") == sdist
    )
    blob = synced.store / "blobs" / digest[:2] / digest[2:4] / digest
    blob.chmod(0o644)
    blob.unlink()
    for prefix in ("", "/snapshot/main"):
        status, _headers, body = raw_get(server, f"{prefix}/files/demo-pkg/{sdist}")
        assert status == 404 and one_line(body) and b"not in this store" in body


# -- item 13: charset and PEP 691 media types ------------------------------------------------------------


def test_pages_declare_utf8_and_non_ascii_reasons_round_trip(synced: Mirror, serve) -> None:
    synced.run("yank", "demo-pkg", "1.0", "--reason", YANK_REASON, check=True)
    synced.run("deprecate", "demo-pkg", "--reason", STATUS_REASON, check=True)
    server = serve()
    commit = synced.git("rev-parse", "main").strip()
    for base in (f"{server.url}/simple/", f"{server.url}/snapshot/{commit}/simple/"):
        url = base + "demo-pkg/"
        for accept, media_type in ((None, "text/html"), ("text/html", "text/html"), (HTML, HTML)):
            response = httpx.get(url, headers={"Accept": accept} if accept else {})
            assert response.headers["content-type"] == f"{media_type}; charset=utf-8"
            assert response.content.startswith(b'<!DOCTYPE html>\n<html>\n  <head>\n    <meta charset="utf-8">\n')
            assert f'data-yanked="{YANK_REASON}"'.encode() in response.content  # UTF-8 bytes, not escapes
            page = ProjectPage.from_html("demo-pkg", response.content, base_url=url)  # the meta tag tells the charset
            assert {p.filename: p.yanked_reason for p in page.packages}[WHEEL] == YANK_REASON
            assert page.status is not None and page.status_reason == STATUS_REASON
        root = httpx.get(base)
        assert root.headers["content-type"] == "text/html; charset=utf-8" and b'<meta charset="utf-8">' in root.content
        data = httpx.get(url, headers={"Accept": JSON})
        assert data.headers["content-type"] == JSON  # JSON is UTF-8 by definition (and ASCII-escaped here)
        files = {item["filename"]: item for item in data.json()["files"]}
        assert files[WHEEL]["yanked"] == YANK_REASON
        assert data.json()["project-status"] == {"status": "deprecated", "reason": STATUS_REASON}
    gone_reason = "retiré : ☣"
    synced.run("takedown", "demo_pkg-2.0.tar.gz", "--reason", gone_reason, check=True)
    gone = httpx.get(f"{server.url}/files/demo-pkg/demo_pkg-2.0.tar.gz")
    assert gone.status_code == 410 and gone.headers["content-type"] == "text/plain; charset=utf-8"
    assert gone_reason in gone.text


LATEST_CASES = [
    (LATEST_JSON, JSON),
    (LATEST_HTML, HTML),
    (f"{LATEST_JSON}, {LATEST_HTML};q=0.5", JSON),
    (f"{LATEST_JSON};q=0.2, {LATEST_HTML};q=0.9", HTML),
    (f"{LATEST_HTML}, {JSON};q=0.1", HTML),
    (f"{LATEST_JSON};q=0, text/html;q=0.5", "text/html"),
    ("Application/VND.pypi.simple.LATEST+json", JSON),
]


def test_pep_691_latest_media_types(site) -> None:
    _mirror, server = site
    for accept, expected in LATEST_CASES:
        for path in ("/simple/", "/simple/demo-pkg/"):
            response = httpx.get(server.url + path, headers={"Accept": accept})
            assert response.status_code == 200
            assert response.headers["content-type"].split(";")[0] == expected, (path, accept)
            if expected == JSON:
                assert response.json()["meta"]["api-version"] == "1.4"
    refused = httpx.get(f"{server.url}/simple/demo-pkg/", headers={"Accept": f"{LATEST_JSON};q=0"})
    assert refused.status_code == 406


def test_static_render_pages_declare_utf8(synced: Mirror, tmp_path: Path) -> None:
    synced.run("yank", "demo-pkg", "1.0", "--reason", YANK_REASON, check=True)
    out = tmp_path / "site"
    synced.run("render", "--out", str(out), check=True)
    for page in (out / "simple" / "index.html", out / "simple" / "demo-pkg" / "index.html"):
        assert b'<meta charset="utf-8">' in page.read_bytes()
    assert YANK_REASON.encode() in (out / "simple" / "demo-pkg" / "index.html").read_bytes()
