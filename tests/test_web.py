"""The web pages, /health and /metrics, over a real synced mirror whose upstream is hostile.

Upstream (and a mirror operator's reasons) supply yank reasons, status reasons, summaries and commit
messages: each test page carries markup and script in them and proves none of it reaches the page
as markup. Pages are asked in-process (Starlette's TestClient over ``create_app``); ``/health``,
``/metrics`` and the access log also over real HTTP from ``gitmirror serve``.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient
from test_upload import serving_an_upload

from gitmirror.hosted.tokens import TokenStore
from gitmirror.model.manifest import manifest_path
from gitmirror.model.text import printable
from gitmirror.serve import web
from gitmirror.serve.logs import ACCESS
from gitmirror.serve.metrics import StoreSize, measure_store
from gitmirror.serve.names_index import NameIndex, search_key
from gitmirror.serve.server import create_app
from gitmirror.serve.web import ENVIRONMENT
from gitmirror.serve.web_data import recent_changes
from gitmirror.serve.web_provenance import Publisher, publishers
from gitmirror.serve.web_writers import Writer, WriterActivity, writer_of
from gitmirror.storage.repo import Commit, MetadataRepo
from gitmirror.storage.store import BlobStore
from gitmirror.sync.config import ConfigError, from_mapping, load

from conftest import GITMIRROR, Mirror, free_port, isolated_env, stop_server, wait_until_answering
from fakeupstream import FakeUpstream, build_sdist, build_wheel, make_sample_index

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"


def publish_hostile(upstream: FakeUpstream) -> None:
    """A project whose upstream puts markup in its summary, a dependency marker and a yank reason."""
    wheel = build_wheel("hostile-pkg", "6.6", summary=HOSTILE, requires_dist=['demo-pkg; extra == "x"'])
    upstream.add("hostile-pkg", wheel, yanked=HOSTILE)
    fine = build_wheel("hostile-pkg", "7.0", summary="fine")
    upstream.add("hostile-pkg", fine)
    upstream.set_provenance("hostile-pkg", fine.filename, HOSTILE_PROVENANCE)


HOSTILE_PROVENANCE = json.dumps(
    {
        "version": 1,
        "attestation_bundles": [
            {"publisher": {"kind": "GitHub", "repository": "acme/" + HOSTILE, "workflow": "release.yml"}},
            {"publisher": {"kind": HOSTILE, "claims": {"note": "claimed", "nested": {"a": 1}}}},
            {"publisher": ["not", "an", "object"]},
            "not a bundle",
        ],
    }
).encode()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    """A mirror synced from the sample index plus ``hostile-pkg``, then marked by its operator:
    deprecated and a takedown, both with hostile reasons, and one tag."""
    with FakeUpstream() as upstream:
        make_sample_index(upstream)
        publish_hostile(upstream)
        root = tmp_path_factory.mktemp("web") / "site"
        root.mkdir()
        mirror = Mirror(root=root, upstream=upstream)
        mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n  - hostile-pkg\n")
        mirror.run("sync", check=True)
        mirror.run("tag", "before-marks", check=True)
        mirror.run("deprecate", "hostile-pkg", "--reason", HOSTILE, check=True)
        sdist = build_sdist("demo-pkg", "1.0").filename
        mirror.run("takedown", sdist, "--project", "demo-pkg", "--reason", "legal " + HOSTILE, check=True)
        yield mirror


@pytest.fixture(scope="module")
def client(site: Mirror) -> TestClient:
    return TestClient(create_app(load(site.root / "mirror.yaml")))


class Markup(HTMLParser):
    """The elements and attributes of a page, as a browser's parser sees them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)

    @property
    def words(self) -> str:
        """The page's text with white space collapsed, as a reader sees it."""
        return " ".join(" ".join(self.text).split())

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def assert_inert(html: str) -> Markup:
    """No script, no event handler, no image from upstream: every hostile string is text."""
    page = Markup(html)
    assert [tag for tag, _ in page.tags if tag in ("script", "img", "iframe")] == []
    assert not [attrs for _, attrs in page.tags if any(name.startswith("on") for name in attrs)]
    names = [tag for tag, _ in page.tags]
    assert names.count("h1") == names.count("main") == 1 and ("html", {"lang": "en"}) in page.tags  # its outline
    return page


def test_home_says_what_the_mirror_is(client: TestClient, site: Mirror) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"] == "text/html; charset=utf-8"
    page = assert_inert(response.text)
    text = page.words
    assert site.upstream.url in text
    assert "3" in re.search(r"Projects\s*(\d+)", text).group(1)  # type: ignore[union-attr]
    assert "mirror: syncs land on main" in text
    tip = site.git("log", "-1", "--format=%H %s", "main").split(" ", 1)
    assert f"Branch tip {tip[0][:12]} " in text and f"UTC: {tip[1].strip()}" in text
    assert re.search(r"Store (being measured|\d+ files, [\d.]+ [kM]?B)", text)
    assert re.search(r"Last sync commit\s*[0-9a-f]{12} \d{4}-\d\d-\d\d .*sync: 3 projects", text)
    assert "takedown" in text and "deprecate" in text or "status: hostile-pkg" in text  # recent changes
    assert ("a", {"href": "/project/hostile-pkg/"}) in page.tags
    assert ("input", {"id": "q", "name": "q", "type": "search", "value": "", "autocomplete": "off"}) in page.tags
    assert ("label", {"for": "q"}) in page.tags
    assert "pip install --index-url http://testserver/simple/" in text


def contrast(one: str, other: str) -> float:
    """WCAG 2's contrast ratio of two ``#rrggbb`` colours."""

    def luminance(colour: str) -> float:
        channels = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
        r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_stylesheet_colours_meet_wcag_aa_contrast(client: TestClient) -> None:
    """Text 4.5:1 on every background it is set on; the focus ring 3:1 (a user interface component)."""
    css = client.get("/static/web.css").text
    colour = dict(re.findall(r"--([a-z]+): (#[0-9a-f]{6});", css))
    assert re.findall(r"var\(--([a-z]+)\)", css) and set(re.findall(r"var\(--([a-z]+)\)", css)) <= set(colour)
    rules = re.sub(r":root \{[^}]*\}", "", css)
    assert not re.findall(r"#[0-9a-fA-F]{3,6}\b", rules)  # every colour a rule uses is one of the named ones
    text_on = {"paper": ["ink", "muted", "accent", "warn"], "tint": ["ink", "muted", "accent"], "notice": ["ink"]}
    text_on["accent"] = ["paper"]  # the search button
    for background, inks in text_on.items():
        for ink in inks:
            assert contrast(colour[ink], colour[background]) >= 4.5, (ink, background)
    for background in ("paper", "tint", "notice"):
        assert contrast(colour["focus"], colour[background]) >= 3, background
        assert contrast(colour["muted"], colour[background]) >= 3  # the search field's border


def test_search_finds_by_prefix_then_substring_and_escapes_the_query(client: TestClient) -> None:
    response = client.get("/search/", params={"q": "Demo_PKG"})
    assert re.findall(r'href="/project/([^"]+)/"', response.text) == ["demo-pkg"]
    names = re.findall(r'<li><a href="/project/([^"]+)/"', client.get("/search/", params={"q": "pkg"}).text)
    assert names == ["demo-pkg", "hostile-pkg"]
    names = re.findall(r'<li><a href="/project/([^"]+)/"', client.get("/search/", params={"q": "o"}).text)
    assert names == ["other-lib", "demo-pkg", "hostile-pkg"]  # starting with it, then containing it
    hostile = client.get("/search/", params={"q": HOSTILE})
    assert hostile.status_code == 200 and HOSTILE not in hostile.text and ESCAPED in hostile.text
    assert_inert(hostile.text)
    assert "No project name contains" in hostile.text


def test_projects_are_browsed_a_to_z_a_page_at_a_time(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def listed(url: str, params: dict[str, str] | None = None) -> tuple[list[str], str]:
        html = client.get(url, params=params).text
        assert_inert(html)
        return re.findall(r'<li><a href="/project/([^"]+)/"', html), html

    assert listed("/search/")[0] == ["demo-pkg", "hostile-pkg", "other-lib"]
    monkeypatch.setattr("gitmirror.serve.web.SEARCH_LIMIT", 2)
    first, html = listed("/search/?q=")
    assert first == ["demo-pkg", "hostile-pkg"] and '<a rel="next" href="/search/?after=hostile-pkg">' in html
    rest, html = listed("/search/?after=hostile-pkg")
    assert rest == ["other-lib"] and 'rel="next"' not in html
    assert "No more projects." in listed("/search/?after=~")[1]  # sorts after every name
    hostile, html = listed("/search/", params={"after": HOSTILE})  # a value is only a place in the order
    assert hostile == ["demo-pkg", "hostile-pkg"] and HOSTILE not in html


def test_name_index_is_fast_on_half_a_million_names() -> None:
    names = sorted(f"{word}-{number}" for number in range(125_000) for word in ("alpha", "beta", "gamma", "zeta"))
    index = NameIndex(names)
    started = time.perf_counter()
    found, more = index.search(search_key("TA-1249") or "", limit=100)
    assert time.perf_counter() - started < 0.5  # a miss scans the joined names in C: milliseconds
    assert found[:2] == ["beta-1249", "beta-12490"] and more
    assert index.search("nothing-like-this", 100) == ([], False)
    assert index.search("gamma-124999", 100) == (["gamma-124999"], False)
    assert index.after("zeta-99998", 2) == (["zeta-99999"], False) and index.after("", 1) == (["alpha-0"], True)
    assert index.after("gamma-124998", 2) == (["gamma-124999", "gamma-125"], True)  # in string order
    assert search_key("<b>") is None and search_key("Foo.Bar_baz") == "foo-bar-baz"


def test_search_follows_each_new_tip_and_recent_changes_read_a_bounded_diff(tmp_path: Path) -> None:
    repo = MetadataRepo.init(tmp_path / "repo")
    first = {manifest_path(name): b"{}\n" for name in ("alpha", "beta", "alphabet", "gamma", "delta")}
    repo.write_commit(first, "sync: 5 projects\n", parent=repo.tip())
    client = TestClient(create_app(from_mapping({"repo": str(repo.path), "store": str(tmp_path / "store")})))

    def found(query: str) -> list[str]:
        return re.findall(r'<li><a href="/project/([^"]+)/"', client.get("/search/", params={"q": query}).text)

    assert found("alpha") == ["alpha", "alphabet"] and found("ta") == ["beta", "delta"]
    changes = {manifest_path("alpha"): None, manifest_path("alpha-two"): b"{}\n", manifest_path("beta"): b"[]\n"}
    tip = repo.write_commit(changes, "sync: 3 projects\n", parent=repo.tip())
    assert found("alpha") == ["alpha-two", "alphabet"] and found("ta") == ["beta", "delta"]  # the new tip's names
    assert found("gamma") == ["gamma"]
    lines = recent_changes(repo, tip, paths_read=3)
    assert (lines[0].projects, lines[0].more_projects) == (["alpha", "alpha-two", "beta"], 0)
    assert len(lines[1].projects) == 3 and lines[1].more_projects is None  # five changed: not all read
    assert recent_changes(repo, tip)[1].projects == ["alpha", "alphabet", "beta", "delta", "gamma"]


def test_project_page_shows_every_fact_and_no_markup(client: TestClient, site: Mirror) -> None:
    response = client.get("/project/hostile-pkg/")
    assert response.status_code == 200
    html = response.text
    assert HOSTILE not in html and html.count(ESCAPED) >= 3  # status reason, yank reason, summary
    page = assert_inert(html)
    text = page.words
    assert "deprecated" in text and "yanked" in text
    assert text.index("7.0") < text.index("6.6")  # newest first
    assert 'demo-pkg; extra == "x"' in text  # Requires-Dist from the PEP 658 file in the store
    assert "pip install --index-url http://testserver/simple/ hostile-pkg" in text
    assert "uv add --default-index http://testserver/simple/ hostile-pkg" in text
    assert re.search(r"<code class=\"digest\">[0-9a-f]{64}</code>", html)
    demo = client.get("/project/Demo_Pkg/", follow_redirects=False)
    assert demo.status_code == 301 and demo.headers["location"] == "/project/demo-pkg/"
    demo_text = assert_inert(client.get("/project/demo-pkg/").text).words
    assert "taken down" in demo_text and "tombstone" in demo_text and "broken build" in demo_text
    assert ">=3.99" in demo_text and "1.0 MB" not in demo_text  # Requires-Python; sizes for people


def test_a_release_of_huge_core_metadata_shows_a_bounded_list(tmp_path: Path, synced_repo: Path) -> None:
    """Upstream's PEP 658 file may hold 100,000 ``Requires-Dist`` lines and a summary of a megabyte:
    the page (and what the server keeps of it) shows the first requirements and the count."""
    repo_path, store_path = tmp_path / "repo", tmp_path / "store"
    shutil.copytree(synced_repo, repo_path)
    shutil.copytree(synced_repo.parent / "store", store_path)
    head = b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 2.0\nSummary: " + b"s" * 1_000_000 + b"\n"
    digest = BlobStore(store_path).put_bytes(head + b"".join(b"Requires-Dist: dep%d\n" % i for i in range(100_000)))
    repo = MetadataRepo(repo_path)
    tip = repo.tip("main")
    manifest = repo.manifest(tip, "demo-pkg")
    assert tip is not None and manifest is not None
    entry = next(entry for entry in manifest.files.values() if entry.version == "2.0")
    changed = manifest.with_file(replace(entry, core_metadata=digest)).dumps()
    repo.write_commit({manifest_path("demo-pkg"): changed}, "huge metadata", parent=tip)
    repo.close()
    client = TestClient(create_app(from_mapping({"repo": str(repo_path), "store": str(store_path)})))
    page = client.get("/project/demo-pkg/")
    assert page.status_code == 200 and len(page.content) < 100_000
    text = assert_inert(page.text).words
    assert "100000 dependencies" in text and "dep0 dep1" in text and "and 99800 more" in text


def test_missing_and_unsafe_projects_are_404_without_reflection(client: TestClient) -> None:
    assert client.get("/project/nope/").status_code == 404
    unsafe = client.get("/project/%3Cscript%3E/")
    assert unsafe.status_code == 404 and "<script>" not in unsafe.text
    assert client.get("/project/nope/history/").status_code == 404


def test_history_lists_each_change_with_its_commit(client: TestClient, site: Mirror) -> None:
    html = client.get("/project/hostile-pkg/history/").text
    assert HOSTILE not in html and ESCAPED in html
    text = assert_inert(html).words
    commits = site.git("log", "--format=%H", "main").split()
    assert commits[1][:12] in text and commits[-1][:12] in text  # the deprecation and the sync
    assert "project status: deprecated" in text and "first seen: hostile_pkg-6.6-py3-none-any.whl" in text
    assert "decided by" in text
    demo = assert_inert(client.get("/project/demo-pkg/history/").text).words
    assert "taken down: demo_pkg-1.0.tar.gz" in demo and "legal" in demo


def test_history_comes_a_page_at_a_time_and_a_commits_events_so_far(
    client: TestClient, site: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web, "HISTORY_PAGE", 1)
    monkeypatch.setattr(web, "HISTORY_EVENTS", 1)
    newest, oldest = site.git("log", "--format=%H", "main", "--", "projects/de/mo/demo-pkg.jsonl").split()
    first = assert_inert(client.get("/project/demo-pkg/history/").text)
    assert newest[:12] in first.words and oldest[:12] not in first.words
    assert ("a", {"rel": "next", "href": "?page=2"}) in first.tags
    second = assert_inert(client.get("/project/demo-pkg/history/?page=2").text)
    assert oldest[:12] in second.words and newest[:12] not in second.words
    assert ("a", {"rel": "prev", "href": "?page=1"}) in second.tags
    assert not any(attrs.get("rel") == "next" for _, attrs in second.tags)
    assert re.search(rf"and \d+ more \( git show {oldest[:12]} \)", second.words)  # the sync's files
    for beyond in ("3", "0", "-1", "x", "9" * 30):
        assert client.get(f"/project/demo-pkg/history/?page={beyond}").status_code == 404, beyond


def test_history_read_before_a_new_commit_gains_it_on_top(mirror: Mirror, sample: dict) -> None:
    mirror.run("sync", check=True)
    client = TestClient(create_app(load(mirror.root / "mirror.yaml")))
    first = assert_inert(client.get("/project/other-lib/history/").text).words
    assert "first seen: other_lib-0.2-py3-none-any.whl" in first and "yanked" not in first
    mirror.run("yank", "other-lib", "0.1", "--reason", "superseded", check=True)
    again = assert_inert(client.get("/project/other-lib/history/").text).words
    yank_commit = mirror.git("rev-parse", "main").strip()
    assert again.index(yank_commit[:12]) < again.index("yanked: other_lib-0.1-py3-none-any.whl: superseded")
    assert again.index("superseded") < again.index("first seen: other_lib-0.2-py3-none-any.whl")
    assert again.count("first seen: other_lib-0.1-py3-none-any.whl") == 1


def test_upstream_removals_conflicts_and_unyanks_reach_the_project_page_and_history(
    mirror: Mirror, sample: dict
) -> None:
    mirror.run("sync", check=True)
    removed, replaced, yanked = (
        sample["other-lib"][0].filename,
        sample["demo-pkg"][0].filename,
        sample["other-lib"][1].filename,
    )
    mirror.upstream.remove_file("other_lib", removed)
    mirror.upstream.replace_file("demo-pkg", replaced, b"other bytes under the same name")
    mirror.upstream.yank("other_lib", yanked, "broken")
    assert mirror.run("sync").returncode == 3  # a conflict is reported, the original bytes kept
    mirror.upstream.unyank("other_lib", yanked)
    mirror.run("sync", check=True)
    client = TestClient(create_app(load(mirror.root / "mirror.yaml")))
    project = assert_inert(client.get("/project/other-lib/").text).words
    assert re.search(
        rf"{re.escape(removed)} [\d.]+ k?B \d{{4}}-\d\d-\d\dT\S+ >=3.8 served removed upstream \d{{4}}-", project
    )
    history = assert_inert(client.get("/project/other-lib/history/").text).words
    unyank, yank = history.index(f"un-yanked: {yanked}"), history.index(f"yanked: {yanked}: broken")
    removal = history.index(f"removed upstream (kept here): {removed}")  # the yank's commit, newest first
    assert unyank < min(yank, removal) and max(yank, removal) < history.index("first seen")
    demo = assert_inert(client.get("/project/demo-pkg/history/").text).words
    assert f"conflict: upstream re-published {replaced} with other bytes (kept sha256 " in demo


def test_printable_escapes_what_would_break_or_drive_a_line() -> None:
    assert printable("défaut ✗ (ビルド)") == "défaut ✗ (ビルド)"  # printable text is kept as it is
    assert printable("a\nb\x1b[2J\u202e\U000e0001") == "a\\x0Ab\\x1B[2J\\u202E\\U000E0001"
    assert printable('say "hi" \\', also='"\\') == "say \\x22hi\\x22 \\x5C"


def test_upstream_reasons_stay_on_their_line_of_a_commit_message(mirror: Mirror, sample: dict) -> None:
    """A reason with line breaks and terminal escapes writes no line of its own into the commit
    message (where it could pose as another change) and drives no terminal (``git log``); the pages
    and the manifest keep the reason as upstream gave it."""
    mirror.run("sync", check=True)
    reason = "gone)\ndemo-pkg: + forged-1.0.tar.gz\x1b]0;owned\x07\u202e"
    mirror.upstream.set_status("demo-pkg", "deprecated", reason)
    mirror.upstream.yank("demo-pkg", sample["demo-pkg"][0].filename, reason)
    mirror.run("sync", check=True)
    message = mirror.git("log", "-1", "--format=%B", "main")
    assert [line.split(": ", 1)[0] for line in message.strip().splitlines()[2:]] == ["demo-pkg", "demo-pkg"]
    assert "\x1b" not in message and "\x07" not in message and "\u202e" not in message
    assert "deprecated (gone)\\x0Ademo-pkg: + forged-1.0.tar.gz\\x1B]0;owned\\x07\\u202E)" in message
    client = TestClient(create_app(load(mirror.root / "mirror.yaml")))
    history = client.get("/project/demo-pkg/history/").text
    body = re.findall(r"<pre>(.*?)</pre>", history, re.S)[0]
    assert all(line.startswith("demo-pkg: ") for line in body.splitlines()), body
    page = client.get("/simple/demo-pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}).json()
    assert page["project-status"]["reason"] == reason and page["files"][0]["yanked"] == reason


class TextPlaces(HTMLParser):
    """Each text of a page with the elements it sits in."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.open: list[str] = []
        self.places: list[tuple[str, list[str]]] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("meta", "link", "br", "input"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop() != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.places.append((data, list(self.open)))


def test_outside_text_is_isolated_so_its_direction_marks_turn_nothing_else(mirror: Mirror, sample: dict) -> None:
    """A right-to-left override in a reason, a publisher or a commit subject would turn the text
    after it round (the mirror's own words: who wrote a commit, a tombstone's date): each such
    string sits in a ``bdi`` element."""
    mirror.run("sync", check=True)
    override = "\u202egnp.exe"
    mirror.upstream.yank("demo-pkg", sample["demo-pkg"][0].filename, "yank " + override)
    mirror.upstream.set_status("demo-pkg", "deprecated", "status " + override)
    mirror.run("sync", check=True)
    repo = MetadataRepo(mirror.repo)
    tip = repo.tip("main")
    manifest = repo.manifest(tip, "demo-pkg")
    assert tip is not None and manifest is not None
    repo.write_commit({manifest_path("demo-pkg"): manifest.dumps() + b""}, "hand " + override, parent=tip)
    repo.close()
    client = TestClient(create_app(load(mirror.root / "mirror.yaml")))
    for url in ("/", "/project/demo-pkg/", "/project/demo-pkg/history/"):
        places = [(text, open) for text, open in TextPlaces(client.get(url).text).places if "\u202e" in text]
        assert places and all("bdi" in open for _, open in places), (url, places)


def test_snapshots_list_tags_and_diff_against_the_tip(client: TestClient, site: Mirror) -> None:
    site.run("tag", HOSTILE_TAG, check=True)  # a ref name may hold markup: the operator's, or a pushed tag
    html = client.get("/snapshots/").text
    assert HOSTILE_TAG not in html and "&lt;b&gt;x&#34;onmouseover=alert(1)" in html
    assert HOSTILE_TAG in assert_inert(html).words  # text on the page, not markup
    assert 'href="/snapshots/%3Cb%3Ex%22onmouseover%3Dalert%281%29/diff/"' in html
    hostile = client.get("/snapshots/%3Cb%3Ex%22onmouseover%3Dalert%281%29/diff/")
    assert hostile.status_code == 200 and HOSTILE_TAG not in hostile.text and "No project changed since" in hostile.text
    assert 'href="/snapshot/before-marks/simple/"' in html and 'href="/snapshots/before-marks/diff/"' in html
    assert re.search(r"before-marks \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC [0-9a-f]{12} ", assert_inert(html).words)
    diff = client.get("/snapshots/before-marks/diff/").text
    assert re.findall(r'href="/project/([^"]+)/history/"', diff) == ["demo-pkg", "hostile-pkg"]
    assert client.get("/snapshot/before-marks/simple/").status_code == 200
    missing = client.get("/snapshots/%3Cb%3Enope/diff/")
    assert missing.status_code == 404 and "<b>" not in missing.text


def test_snapshot_diffs_name_only_states_the_branch_served(tmp_path: Path, synced_repo: Path) -> None:
    """A branch or commit main never stood at (a review branch, a pushed side branch) is no snapshot:
    its diff page is 404 like ``/snapshot/<rev>/``, and names none of what it holds."""
    repo_path, store = tmp_path / "repo", tmp_path / "store"
    shutil.copytree(synced_repo, repo_path)
    shutil.copytree(synced_repo.parent / "store", store)
    repo = MetadataRepo(repo_path)
    tip = repo.tip("main")
    assert tip is not None and repo.move_ref(b"refs/heads/side", None, tip)
    side = repo.write_commit({manifest_path("secret-pkg"): b"{}\n"}, "not served", branch="side", parent=tip)
    repo.close()
    client = TestClient(create_app(from_mapping({"repo": str(repo_path), "store": str(store)})))
    assert client.get("/snapshots/main/diff/").status_code == 200
    for rev in ("side", side.decode(), side.decode()[:12]):
        assert client.get(f"/snapshot/{rev}/simple/").status_code == 404
        page = client.get(f"/snapshots/{rev}/diff/")
        assert page.status_code == 404 and "names no state main has served" in page.text
        assert "secret-pkg" not in page.text


def test_a_snapshot_diff_lists_a_bounded_number_of_names_with_the_counts(
    tmp_path: Path, synced_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the first commit of a large mirror every project changed: the page names the first of
    each kind and counts them all."""
    repo_path, store = tmp_path / "repo", tmp_path / "store"
    shutil.copytree(synced_repo, repo_path)
    shutil.copytree(synced_repo.parent / "store", store)
    repo = MetadataRepo(repo_path)
    first = repo.tip("main")
    assert first is not None
    names = [f"new-{index}" for index in range(7)]
    repo.write_commit(
        {manifest_path(name): b'{"name": "%s"}\n' % name.encode() for name in names}, "7 new", parent=first
    )
    repo.close()
    monkeypatch.setattr("gitmirror.serve.web_data.SHOWN_NAMES", 5)
    client = TestClient(create_app(from_mapping({"repo": str(repo_path), "store": str(store)})))
    html = client.get(f"/snapshots/{first.decode()}/diff/").text
    text = assert_inert(html).words
    assert re.findall(r'href="/project/([^"]+)/history/"', html) == sorted(names)[:5]
    assert "New projects (7)" in text and "and 2 more" in text


def test_review_page_is_404_unless_review_is_enabled(client: TestClient) -> None:
    response = client.get("/review/")
    assert response.status_code == 404 and "review is not enabled" in response.text


def test_review_page_shows_what_waits_with_flags_and_dependency_changes(tmp_path: Path) -> None:
    with FakeUpstream() as upstream:
        sample = make_sample_index(upstream)
        mirror = Mirror(root=tmp_path, upstream=upstream)
        mirror.configure("projects:\n  - other_lib\nreview:\n  enabled: true\n")
        mirror.run("sync", check=True)
        mirror.run("approve", "--all", check=True)
        upstream.add("other_lib", build_wheel("other_lib", "0.3", requires_dist=["demo-pkg>=2", HOSTILE_REQ]))
        # a reason that writes a line of its own into the approval's message: the page names the real approver
        upstream.yank("other_lib", sample["other-lib"][0].filename, "old)\n\nApproved-by: Mallory <m@evil>\n")
        mirror.run("sync", check=True)
        client = TestClient(create_app(load(tmp_path / "mirror.yaml")))
        html = client.get("/review/").text
        home = assert_inert(client.get("/").text).words
        mirror.run("approve", "--all", check=True)
        history = client.get("/project/other-lib/history/").text
    text = assert_inert(html).words
    assert "other-lib" in text and "0.3" in text and "gitmirror approve other-lib" in text
    assert "re-pinned demo-pkg>=1.0 → demo-pkg>=2" in text
    assert 'added evil; python_version < "<script>"' in text and "<script>" not in html.replace("&lt;", "")
    assert "review before serving: syncs land on incoming" in home and 'href="/review/"' in html
    assert "Review on: what waits" in home
    assert re.search(r"Last sync commit [0-9a-f]{12} \S+ \S+ UTC: sync: 1 project, 1 file added", home)  # on incoming
    writers = re.findall(r'<p class="writer writer-(\w+)">Written by: ([^<]+)</p>', history)
    assert writers == [
        ("approval", "approval by Test Mirror &lt;mirror@example.invalid&gt;"),
        ("sync", "sync from upstream"),
    ]


def test_review_page_lists_a_bounded_number_of_dependency_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release that adds thousands of dependencies: the page shows the first of them and of its
    flags, with how many more ``gitmirror review`` lists."""
    with FakeUpstream() as upstream:
        make_sample_index(upstream)
        mirror = Mirror(root=tmp_path, upstream=upstream)
        mirror.configure("projects:\n  - other_lib\nreview:\n  enabled: true\n")
        mirror.run("sync", check=True)
        mirror.run("approve", "--all", check=True)
        upstream.add("other_lib", build_wheel("other_lib", "0.3", requires_dist=[f"dep{i}" for i in range(8)]))
        mirror.run("sync")  # the new dependencies are not upstream: errors, and the release waits for review
    monkeypatch.setitem(ENVIRONMENT.globals, "shown", 5)
    client = TestClient(create_app(load(tmp_path / "mirror.yaml")))
    text = assert_inert(client.get("/review/").text).words
    assert "added dep4" in text and "added dep5" not in text and "and 3 more (gitmirror review lists every one)" in text
    assert "new dependency dep3 is not served" in text and "new dependency dep4" not in text  # after the age flag
    assert "(1 projects, 9 flags," in text and "and 4 more (gitmirror review lists every one)" in text


HOSTILE_TAG = '<b>x"onmouseover=alert(1)'
HOSTILE_REQ = 'evil; python_version < "<script>"'


def test_health_readiness_follows_the_repository_and_the_store(tmp_path: Path, synced_repo: Path) -> None:
    repo, store = tmp_path / "repo", tmp_path / "store"
    shutil.copytree(synced_repo, repo)
    shutil.copytree(synced_repo.parent / "store", store)
    client = TestClient(create_app(from_mapping({"repo": str(repo), "store": str(store)})))
    assert client.get("/health").text == "ok\n"
    assert client.get("/health/ready").text == "ready\n" and client.get("/health?ready=1").status_code == 200
    (repo / "objects").rename(repo / "objects.away")  # the branch names a commit the server cannot read
    missing = client.get("/health/ready")
    assert missing.status_code == 503 and re.fullmatch(
        r"not ready: branch main cannot be read: its tip [0-9a-f]{12} is not in the repository\n", missing.text
    )
    (repo / "objects.away").rename(repo / "objects")
    assert client.get("/health/ready").text == "ready\n"
    shutil.rmtree(store)
    for url in ("/health/ready", "/health?ready=1"):
        response = client.get(url)
        assert response.status_code == 503 and response.text == f"not ready: blob store {store} is not reachable\n"
    assert client.get("/health").status_code == 200  # alive all the same
    shutil.rmtree(repo)
    assert "metadata repository" in client.get("/health/ready").text


def test_a_private_index_answers_health_without_paths_and_keeps_look_alike_paths_private(
    tmp_path: Path, synced_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo, store = tmp_path / "repo", tmp_path / "store"
    shutil.copytree(synced_repo, repo)
    settings = {"repo": str(repo), "store": str(store), "hosted": {"projects": ["acme-*"], "read_auth": True}}
    client = TestClient(create_app(from_mapping(settings)))
    with caplog.at_level(logging.WARNING, logger="gitmirror.serve"):
        answer = client.get("/health/ready")  # the store was never copied: not ready
    assert answer.status_code == 503 and str(tmp_path) not in answer.text
    assert answer.text == "not ready: the repository or the store cannot be read (the server's log says why)\n"
    assert str(store) in caplog.text  # the operator still learns which
    assert client.get("/health").status_code == 200
    for spelled_alike in ("/healthy", "/health-check", "/legacyx"):
        assert client.get(spelled_alike).status_code == 401, spelled_alike


def test_serve_settings_are_checked_in_mirror_yaml() -> None:
    settings = from_mapping({"serve": {"host": "0.0.0.0", "port": 9000, "workers": 2, "log_level": "WARNING"}}).serve
    assert (settings.host, settings.port, settings.workers, settings.log_level, settings.access_log) == (
        "0.0.0.0",
        9000,
        2,
        "warning",
        False,
    )
    for bad, message in (
        ({"prot": 1}, "unknown key 'serve.prot'"),
        ({"port": 70000}, "serve.port must be a port number"),
        ({"workers": 0}, "serve.workers must be a positive integer"),
        ({"log_level": "loud"}, "serve.log_level must be one of"),
        ({"access_log": "yes"}, "serve.access_log must be true or false"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            from_mapping({"serve": bad})


def test_serve_listens_and_logs_as_mirror_yaml_says(mirror: Mirror, sample: dict, tmp_path: Path) -> None:
    """No flags: host, port, workers and log level come from ``serve:``; two workers answer one port."""
    port = free_port()
    mirror.configure(
        f"projects:\n  - demo-pkg\nserve:\n  host: 127.0.0.1\n  port: {port}\n  workers: 2\n  log_level: warning\n"
    )
    mirror.run("sync", check=True)
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "errors.log").open("wb") as stderr:
        process = subprocess.Popen([*GITMIRROR, "serve"], cwd=mirror.root, env=isolated_env(), stderr=stderr)
        try:
            wait_until_answering(url + "/health", process, "gitmirror serve")
            assert httpx.get(url + "/health/ready").text == "ready\n"
            assert "demo-pkg" in httpx.get(url + "/project/demo-pkg/").text
            assert httpx.get(url + "/simple/demo-pkg/").status_code == 200
            assert len(workers(process.pid)) == 2  # spawned by uvicorn's supervisor
        finally:
            process.terminate()
            process.wait(timeout=10)
    lines = (tmp_path / "errors.log").read_text().splitlines()
    assert lines[0].startswith(f"serving mirror/repo at {url}/")
    assert not [line for line in lines[1:] if json.loads(line)["level"] == "info"]  # log_level: warning


def workers(pid: int) -> list[int]:
    """The worker processes ``pid`` spawned (from /proc; multiprocessing's resource tracker is not one)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            spawned = re.search(rf"^PPid:\s+{pid}$", status.read_text(), re.M)
            command = (status.parent / "cmdline").read_bytes()
        except OSError:
            continue  # it ended meanwhile
        if spawned and b"spawn_main" in command:
            found.append(int(status.parent.name))
    return found


def test_serve_refuses_bad_settings_in_one_line(mirror: Mirror) -> None:
    for flags, message in (
        (("--log-level", "loud"), "--log-level must be one of critical, error, warning, info, debug, got 'loud'"),
        (("--port", "70000"), "--port must be a port number from 1 to 65535, got 70000"),
        (("--port", "-1"), "--port must be a port number from 1 to 65535, got -1"),
        (("--port", "0"), "--port must be a port number from 1 to 65535, got 0"),
        (("--workers", "0"), "--workers must be a positive integer, got 0"),
    ):
        bad_flag = mirror.run("serve", *flags)
        assert bad_flag.returncode == 2
        assert bad_flag.stderr.strip().splitlines() == [f"gitmirror: error: {message}"]
    mirror.configure("serve:\n  port: 0\n")
    bad_file = mirror.run("serve")
    assert bad_file.returncode == 2 and bad_file.stderr.strip().splitlines() == [
        "gitmirror: error: mirror.yaml: serve.port must be a port number from 1 to 65535, got 0"
    ]


def test_refused_reads_of_a_private_index_are_counted_and_logged(
    tmp_path: Path, synced_repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``read_auth`` the 401s and 403s of strangers reach ``/metrics`` and the access log like
    every other answer: an operator sees who knocks."""
    repo, store = tmp_path / "repo", tmp_path / "store"
    shutil.copytree(synced_repo, repo)
    shutil.copytree(synced_repo.parent / "store", store)
    token = TokenStore(repo).create("reader")
    config = from_mapping({"repo": str(repo), "store": str(store), "hosted": {"read_auth": True}})
    client = TestClient(create_app(config))
    ACCESS.propagate = True  # to pytest's capture; the server writes it to stdout
    try:
        with caplog.at_level(logging.INFO, logger=ACCESS.name):
            assert client.get("/simple/", headers={"user-agent": "knock"}).status_code == 401
            assert client.get("/simple/", auth=("__token__", "gitmirror-wrong")).status_code == 403
    finally:
        ACCESS.propagate = False
    assert re.search(r'"GET /simple/ HTTP/1.1" 401 \d+ "-" "knock"', caplog.text), caplog.text
    assert '"GET /simple/ HTTP/1.1" 403 ' in caplog.text
    scraped = client.get("/metrics", auth=("__token__", token)).text
    assert re.search(r'gitmirror_http_requests_total\{[^}]*status="401"[^}]*\} 1\.0', scraped), scraped
    assert re.search(r'gitmirror_http_requests_total\{[^}]*status="403"[^}]*\} 1\.0', scraped)


def test_store_size_is_measured_in_the_background(store: BlobStore) -> None:
    store.put_bytes(b"one blob")
    store.put_bytes(b"another, longer blob")
    assert measure_store(store.blobs_dir) == (2, 28)
    size = StoreSize(store, ttl=60)
    deadline = time.monotonic() + 10
    while size.current() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert size.current() == (2, 28)
    store.put_bytes(b"a third")
    assert size.current() == (2, 28)  # kept for ``ttl`` seconds: a scrape never walks the store


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed by prometheus_client's own parser: (sample name, labels) -> value."""
    text = httpx.get(url + "/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


COMBINED = re.compile(
    r'127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "(?P<method>GET|HEAD) (?P<target>\S+) HTTP/1\.1" '
    r'(?P<status>\d{3}) (?P<bytes>\d+|-) "-" "([^"]*)"'
)


def test_metrics_and_access_log_over_real_http(mirror: Mirror, sample: dict, tmp_path: Path) -> None:
    mirror.configure("projects:\n  - demo-pkg\nserve:\n  log_level: warning\n  port: 1\n")
    mirror.run("sync", check=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (tmp_path / "access.log").open("wb") as stdout, (tmp_path / "errors.log").open("wb") as stderr:
        process = subprocess.Popen(
            [*GITMIRROR, "serve", "--port", str(port), "--access-log"],
            cwd=mirror.root,
            env=isolated_env(),
            stdout=stdout,
            stderr=stderr,
        )
        try:
            wait_until_answering(url + "/health", process, "gitmirror serve")
            before = scrape(url)
            for _ in range(3):
                assert httpx.get(url + "/simple/demo-pkg/").status_code == 200
            assert httpx.get(url + "/simple/nope/").status_code == 404
            assert httpx.get(url + "/no/such/page", headers={"user-agent": 'evil "agent"'}).status_code == 404
            assert httpx.head(url + "/simple/demo-pkg/").status_code == 200
            after = scrape(url)
            deadline = time.monotonic() + 30
            while ("gitmirror_store_blobs", ()) not in after and time.monotonic() < deadline:
                time.sleep(0.05)  # the first scrape started the store's measurement in the background
                after = scrape(url)
            (mirror.repo / "objects").rename(mirror.repo / "objects.away")
            broken = httpx.get(url + "/")
            assert broken.status_code == 500 and broken.text == "Internal Server Error"
            assert httpx.get(url + "/health/ready").status_code == 503
            (mirror.repo / "objects.away").rename(mirror.repo / "objects")
        finally:
            process.terminate()
            process.wait(timeout=10)
    route = ("route", "/simple/{project}/")

    def grew(name: str, *labels: tuple[str, str]) -> float:
        key = (name, tuple(sorted(labels)))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("gitmirror_http_requests_total", ("method", "GET"), route, ("status", "200")) == 3
    assert grew("gitmirror_http_requests_total", ("method", "GET"), route, ("status", "404")) == 1
    assert grew("gitmirror_http_requests_total", ("method", "HEAD"), route, ("status", "200")) == 1
    assert grew("gitmirror_http_requests_total", ("method", "GET"), ("route", "unmatched"), ("status", "404")) == 1
    assert grew("gitmirror_http_request_duration_seconds_count", route) == 5
    assert after[("gitmirror_last_sync_commit_timestamp_seconds", ())] > time.time() - 600
    assert after[("gitmirror_last_sync_clean", ())] == 1
    assert not [key for key in after if key[0] == "gitmirror_proxy_upstream_errors_total"]  # none counted yet
    blobs = [path for path in (mirror.store / "blobs").rglob("*") if path.is_file()]
    assert after[("gitmirror_store_blobs", ())] == len(blobs) > 0
    assert after[("gitmirror_store_bytes", ())] == sum(path.stat().st_size for path in blobs)
    lines = (tmp_path / "access.log").read_text().splitlines()
    parsed = [COMBINED.fullmatch(line) for line in lines]
    assert all(parsed), lines
    requests = [(match["method"], match["target"], match["status"], match["bytes"]) for match in parsed if match]
    page = next(size for method, target, _, size in requests if (method, target) == ("GET", "/simple/demo-pkg/"))
    assert requests.count(("GET", "/simple/demo-pkg/", "200", page)) == 3 and int(page) > 0
    assert ("HEAD", "/simple/demo-pkg/", "200", "-") in requests  # no body goes out for a HEAD
    assert {("GET", "/", "500"), ("GET", "/health/ready", "503")} <= {request[:3] for request in requests}
    served = sum(int(size) for _, target, _, size in requests if target.startswith("/simple/") and size != "-")
    assert grew("gitmirror_http_response_bytes_total", route) == served  # the bytes the access log counts
    agent = next(line for line in lines if "/no/such/page" in line)
    assert agent.endswith('" 404 9 "-" "evil \\x22agent\\x22"')  # quotes in a client's header cannot end the field
    errors = (tmp_path / "errors.log").read_text().splitlines()
    assert errors[0].startswith(f"serving mirror/repo at http://127.0.0.1:{port}/")  # the flag beat serve.port
    records = [json.loads(line) for line in errors[1:]]
    assert all(record["level"] and record["time"] and record["logger"] for record in records)
    failure = next(record for record in records if record["level"] == "error")  # the 500: one record, traceback inside
    assert failure["logger"] == "uvicorn.error" and failure["error"].startswith("Traceback (most recent call last):")
    assert failure["error"].rstrip().splitlines()[-1].startswith("KeyError")


def test_project_page_shows_provenance_and_its_publishers_as_text(client: TestClient) -> None:
    html = client.get("/project/hostile-pkg/").text
    assert HOSTILE not in html
    page = assert_inert(html)
    link = "/files/hostile-pkg/hostile_pkg-7.0-py3-none-any.whl.provenance"
    assert ("a", {"href": link}) in page.tags
    assert client.get(link).content == HOSTILE_PROVENANCE  # the link answers the recorded object
    text = page.words
    assert f"published by GitHub (repository acme/{HOSTILE}, workflow release.yml)" in text
    assert f"{HOSTILE} (note claimed)" in text  # claims of a ``claims`` object; nested values skipped
    assert text.count("provenance (PEP 740)") == 1  # the 6.6 wheel has none


def test_publishers_are_read_from_any_content_without_failing() -> None:
    bundle = {"publisher": {"kind": "GitLab", "claims": {"project": "a/b", "flag": True, "n": 3}}}
    data = json.dumps({"version": 1, "attestation_bundles": [bundle, bundle]}).encode()
    assert publishers(data) == [Publisher("GitLab", [("project", "a/b"), ("n", "3")])]  # once; bools skipped
    for malformed in (b"", b"<html>", b"[1]", b'{"attestation_bundles": 3}', b"\xff\xfe", b"[" * 100_000):
        assert publishers(malformed) == []
    assert publishers(b'{"attestation_bundles": [{"publisher": {"kind": ""}}]}') == []


def test_commit_writers_are_named_from_their_messages() -> None:
    upload = "upload: acme-lib 1.0\n\nacme-lib: + acme_lib-1.0-py3-none-any.whl\nuploaded-by: ci\n"
    assert writer_of(upload, "gitmirror <m@x>") == Writer("upload", "upload by token ci")
    approve = "approve: 1 change in 1 project from incoming\n\nx: + y  [z]\n\nApproved-by: Ann <a@x>\n"
    assert writer_of(approve, "bot <b@x>") == Writer("approval", "approval by Ann <a@x>")
    assert writer_of("sync: 1 project, 2 files added\n", "a").kind == "sync"
    assert writer_of("proxy: 1 project, 1 file added\n", "a").label == "pull-through proxy"
    assert writer_of("yank: demo 1.0\n\nreason: r\n", "Op <o@x>").label == "mark (yank) by Op <o@x>"
    assert writer_of("takedown: demo f.whl\n", "Op <o@x>").label == "takedown by Op <o@x>"
    assert writer_of("fix by hand\n\nuploaded-by: x\n", "Me <m@x>") == Writer("other", "other commit by Me <m@x>")


def test_home_and_history_show_each_writer_and_hosted_projects(
    mirror: Mirror, sample: dict, serve, tmp_path: Path
) -> None:
    """Sync, an upload over HTTP, the pull-through proxy and a yank write one mirror; the pages say who wrote what."""
    config = 'projects:\n  - demo-pkg\nproxy:\n  commit_interval: 600\nhosted:\n  - "acme-*"\n'
    server, _token = serving_an_upload(mirror, serve, config, "ci-bot")
    assert httpx.get(server.index_url + "other-lib/").status_code == 200  # fetched and recorded by the proxy
    stop_server(server)  # the proxy's batch is committed on the way out
    mirror.run("yank", "demo-pkg", "1.0", "--reason", HOSTILE, check=True)
    client = TestClient(create_app(load(mirror.root / "mirror.yaml")))
    home = assert_inert(client.get("/").text).words
    assert re.search(r"Last sync commit [0-9a-f]{12} \S+ \S+ UTC: sync: 1 project.* \(sync from upstream\)", home)
    assert re.search(r"Last proxy commit [0-9a-f]{12} \S+ \S+ UTC: proxy: 1 project.* \(pull-through proxy\)", home)
    assert re.search(
        r"Last upload commit [0-9a-f]{12} \S+ \S+ UTC: upload: acme-lib 1.0 \(upload by token ci-bot\)", home
    )
    assert (
        "Pull-through proxy on: any project is fetched on first request and recorded (a page counts as current for 5m)"
        in home
    )
    assert "Hosted projects on: acme-* , uploaded to http://testserver/legacy/" in home
    assert "Review off" in home

    def writers(name: str) -> list[str]:
        html = client.get(f"/project/{name}/history/").text
        assert HOSTILE not in html
        assert_inert(html)
        return re.findall(r'<p class="writer writer-(\w+)">Written by: ([^<]*)</p>', html)

    assert writers("acme-lib") == [("upload", "upload by token ci-bot")]
    assert writers("other-lib") == [("proxy", "pull-through proxy")]
    assert [kind for kind, _ in writers("demo-pkg")] == ["yank", "sync"]
    hosted = assert_inert(client.get("/project/acme-lib/").text).words
    assert "Hosted here: its files are uploaded to this mirror, never taken from upstream ( hosted: acme-* )" in hosted
    assert 'twine upload --repository-url http://testserver/legacy/ -u __token__ -p "$TOKEN" dist/*' in hosted
    mirrored = client.get("/project/demo-pkg/").text
    assert "Hosted here" not in mirrored and "twine upload" not in mirrored


def test_writer_activity_walks_only_the_new_commits_when_the_tip_moves(tmp_path: Path) -> None:
    repo = MetadataRepo.init(tmp_path / "repo")
    sync = repo.write_commit({"a": b"1\n"}, "sync: 1 project, 1 file added\n", parent=repo.tip())
    upload = repo.write_commit({"a": b"2\n"}, "upload: acme 1.0\n\nuploaded-by: ci\n", parent=repo.tip())
    activity = WriterActivity()
    found = activity.newest(repo, "main")
    assert {kind: commit.id for kind, commit in found.items()} == {"sync": sync, "upload": upload}
    proxy = repo.write_commit({"a": b"3\n"}, "proxy: 1 project, 1 file added\n", parent=repo.tip())
    repo.write_commit({"a": b"4\n"}, "yank: acme 1.0\n", parent=repo.tip())
    walked: list[bytes] = []
    first_parents = repo.first_parents

    def counting(tip: bytes | None, stop: bytes | None = None) -> Iterator[Commit]:
        for commit in first_parents(tip, stop):
            walked.append(commit.id)
            yield commit

    repo.first_parents = counting  # type: ignore[method-assign]
    found = activity.newest(repo, "main")
    assert {kind: commit.id for kind, commit in found.items()} == {"sync": sync, "upload": upload, "proxy": proxy}
    assert len(walked) == 3  # the yank, the proxy commit, and the old tip that ends the walk
    assert activity.newest(repo, "main") is found and len(walked) == 3  # same tip: no walk at all
