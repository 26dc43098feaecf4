"""The pull-through proxy end to end: real pip and uv, a real server process, the loopback upstream.

A project nobody listed installs through ``gitmirror serve`` with ``proxy:``; what was served is
recorded in git like synced content (``verify`` passes), later installs need no upstream file
request and still work with upstream gone.
"""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gitmirror.audit.hooks import install

from conftest import Mirror, RunningServer, isolated_env, start_server, stop_server
from fakeupstream import FakeUpstream, build_wheel


def get(url: str, **options: object) -> httpx.Response:
    """``httpx.get`` with a deadline a loaded machine meets (a first request starts the download processes)."""
    return httpx.get(url, **{"timeout": 30, **options})  # type: ignore[arg-type]


JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}


def proxy_mirror(mirror: Mirror, settings: str = "  commit_interval: 1\n", extra: str = "") -> None:
    """The ``mirror`` fixture without projects, in proxy mode, initialised."""
    mirror.configure(f"proxy:\n{settings}{extra}")
    mirror.run("init", check=True)


def recorded(mirror: Mirror, project: str) -> str:
    """The manifest of ``project`` on main ('' when it is not recorded)."""
    name = project.replace("_", "-")
    path = f"projects/{name[:2]}/{name[2:4]}/{name}.jsonl"
    if not (mirror.repo / "refs" / "heads" / "main").exists():
        return ""
    listing = mirror.git("ls-tree", "-r", "--name-only", "main")
    return mirror.git("show", f"main:{path}") if path in listing.split() else ""


def file_requests(upstream: FakeUpstream) -> int:
    """Requests for release files (PEP 658 files not counted)."""
    return upstream.count("/files/", method="GET") - upstream.count(".metadata", method="GET")


def stale_page(url: str, within: float = 15.0) -> httpx.Response:
    """The page at ``url`` once it is marked stale (its background refresh failed)."""
    deadline = time.monotonic() + within
    while True:
        page = get(url, headers=JSON, timeout=30)
        if "x-gitmirror-stale" in page.headers or time.monotonic() > deadline:
            return page
        time.sleep(0.1)


def test_pip_and_uv_install_an_unlisted_project_then_from_the_record_alone(
    mirror: Mirror, sample, serve, make_venv
) -> None:
    proxy_mirror(mirror, "  ttl: 0\n  commit_interval: 1\n")
    server: RunningServer = serve()
    first = make_venv("pip")
    result = first.pip_install(server.index_url, "other-lib==0.2")
    assert result.returncode == 0, result.stderr
    assert first.run("import other_lib, demo_pkg; print(demo_pkg.__version__)") == "1.0"
    assert file_requests(mirror.upstream) == 2  # the two wheels, once each
    uv_venv = make_venv("uv")
    result = uv_venv.uv_install(server.index_url, "other-lib==0.2")
    assert result.returncode == 0, result.stderr + result.stdout
    assert file_requests(mirror.upstream) == 2  # uv got them from the store

    stop_server(server)  # a clean stop commits the batch
    assert "other_lib-0.2-py3-none-any.whl" in recorded(mirror, "other-lib")
    assert "demo_pkg-1.0-py3-none-any.whl" in recorded(mirror, "demo-pkg")
    verify = mirror.run("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "proxy: 2 projects" in mirror.git("log", "--format=%s", "main")

    mirror.upstream.stop()
    server = serve()
    page = get(server.index_url + "demo-pkg/", headers=JSON)  # the record, while its refresh fails
    assert page.status_code == 200
    assert [item["filename"] for item in page.json()["files"]] == ["demo_pkg-1.0-py3-none-any.whl"]
    page = stale_page(server.index_url + "demo-pkg/")
    assert page.headers["x-gitmirror-stale"].startswith("upstream unavailable")
    assert page.headers["warning"] == '110 gitmirror "Response is Stale"'
    assert [item["filename"] for item in page.json()["files"]] == ["demo_pkg-1.0-py3-none-any.whl"]
    offline = make_venv("offline")
    result = offline.pip_install(server.index_url, "other-lib==0.2")
    assert result.returncode == 0, result.stderr
    assert offline.run("import demo_pkg; print(demo_pkg.__version__)") == "1.0"
    missing = get(server.index_url + "never-seen/")
    assert missing.status_code == 502
    assert missing.text.startswith("upstream: never-seen")
    assert "/simple/never-seen/" not in get(server.index_url).text
    assert 'href="other-lib/"' in get(server.index_url).text


def test_a_replaced_file_is_a_conflict_and_the_original_bytes_stay(mirror: Mirror, sample, serve) -> None:
    proxy_mirror(mirror, "  ttl: 0\n  commit_interval: 1\n")
    server = serve()
    wheel = "demo_pkg-1.0-py3-none-any.whl"
    original = next(art for art in sample["demo-pkg"] if art.filename == wheel)
    assert get(server.index_url + "demo-pkg/").status_code == 200
    served = get(f"{server.url}/files/demo-pkg/{wheel}")
    assert served.content == original.data and served.headers["x-content-type-options"] == "nosniff"
    mirror.upstream.replace_file("demo-pkg", wheel, b"other bytes under the same name")
    page = get(server.index_url + "demo-pkg/", headers=JSON).json()
    listed = next(item for item in page["files"] if item["filename"] == wheel)
    assert listed["hashes"]["sha256"] == original.sha256
    assert get(f"{server.url}/files/demo-pkg/{wheel}").content == original.data
    stop_server(server)
    conflicts = mirror.git("show", "main:conflicts/demo-pkg.jsonl")
    assert wheel in conflicts and hashlib.sha256(b"other bytes under the same name").hexdigest() in conflicts
    assert original.sha256 in recorded(mirror, "demo-pkg")
    assert mirror.run("verify").returncode == 0


def test_fifty_clients_one_page_request_and_one_download_per_file(mirror: Mirror, sample, serve) -> None:
    proxy_mirror(mirror)
    wheel = "other_lib-0.2-py3-none-any.whl"
    mirror.upstream.fault("/simple/other-lib/", "delay", seconds=0.5)
    mirror.upstream.fault(wheel, "delay", seconds=0.5)
    server = serve()
    with ThreadPoolExecutor(50) as pool:
        pages = list(pool.map(lambda _: get(server.index_url + "other-lib/", timeout=30), range(50)))
        assert {page.status_code for page in pages} == {200}
        files = list(pool.map(lambda _: get(f"{server.url}/files/other-lib/{wheel}", timeout=30), range(50)))
    assert mirror.upstream.count("/simple/other-lib/") == 1
    assert mirror.upstream.count(f"/files/other-lib/{wheel}") == 1
    expected = next(art.data for art in sample["other-lib"] if art.filename == wheel)
    assert {response.status_code for response in files} == {200}
    assert {response.content for response in files} == {expected}


def test_kill_9_mid_download_leaves_store_and_repo_consistent(mirror: Mirror, upstream: FakeUpstream) -> None:
    proxy_mirror(mirror)
    big = build_wheel("big-pkg", "1.0", payload_size=3 << 20)
    upstream.add("big-pkg", big)
    upstream.fault(big.filename, "trickle", interval=0.5)
    server = start_server(mirror.root)
    assert get(server.index_url + "big-pkg/").status_code == 200
    path = f"/files/big-pkg/{big.filename}"

    def download() -> None:
        with pytest.raises(httpx.HTTPError):  # the server dies under it
            get(server.url + path, timeout=30)

    started = threading.Thread(target=download, daemon=True)
    started.start()
    deadline = time.monotonic() + 10
    while upstream.count(big.filename) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # bytes are on their way into the store's temporary file
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    verify = mirror.run("verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert not any(Path(mirror.store, "blobs").rglob(big.sha256))
    upstream.clear_faults()
    restarted = start_server(mirror.root)
    try:
        assert get(restarted.url + path, timeout=30).content == big.data
    finally:
        stop_server(restarted)
    assert big.filename in recorded(mirror, "big-pkg")
    assert mirror.run("verify").returncode == 0


@pytest.mark.parametrize(
    ("kind", "params"),
    [("wrong_hash", {"times": -1}), ("truncate", {"times": -1}), ("endless", {"times": -1})],
)
def test_a_hostile_upstream_never_poisons_the_record(
    mirror: Mirror, upstream: FakeUpstream, serve, kind: str, params: dict
) -> None:
    proxy_mirror(mirror, "  ttl: 0\n  commit_interval: 1\n")
    wheel = build_wheel("target", "1.0", payload_size=200_000)
    upstream.add("target", wheel)
    upstream.fault(wheel.filename, kind, **params)
    server = serve()
    assert get(server.index_url + "target/").status_code == 200
    url = f"{server.url}/files/target/{wheel.filename}"
    with pytest.raises(httpx.HTTPError):
        get(url, timeout=30).raise_for_status()
    upstream.clear_faults()
    assert get(server.index_url + "target/").status_code == 200
    good = get(url, timeout=30)
    assert good.content == wheel.data
    stop_server(server)
    manifest = recorded(mirror, "target")
    assert wheel.sha256 in manifest and manifest.count(wheel.filename) == 1
    blobs = [path.name for path in Path(mirror.store, "blobs").rglob("*") if path.is_file()]
    assert wheel.sha256 in blobs
    assert mirror.run("verify").returncode == 0


def test_sync_and_the_proxy_record_into_one_mirror(mirror: Mirror, sample, serve, tmp_path: Path) -> None:
    """The proxy's batch waits while a sync commits; then it lands on top of the sync, both kept,
    and render and verify read the proxy's commits as any other."""
    proxy_mirror(mirror, "  commit_interval: 600\n", extra="projects:\n  - demo-pkg\n")
    server = serve()
    wheel = "other_lib-0.1-py3-none-any.whl"
    assert get(server.index_url + "other-lib/").status_code == 200
    assert get(f"{server.url}/files/other-lib/{wheel}").status_code == 200
    assert recorded(mirror, "other-lib") == ""  # in the batch, served, not committed yet
    mirror.run("sync", "demo-pkg", check=True)
    assert "demo_pkg-2.0.tar.gz" in recorded(mirror, "demo-pkg")
    page = get(server.index_url + "other-lib/", headers=JSON).json()
    assert wheel in [item["filename"] for item in page["files"]]
    stop_server(server)  # the batch is flushed on top of the sync's commit
    assert wheel in recorded(mirror, "other-lib")
    assert "demo_pkg-2.0.tar.gz" in recorded(mirror, "demo-pkg")
    assert mirror.git("log", "-1", "--format=%s", "main").startswith("proxy: ")
    assert mirror.run("verify").returncode == 0
    site = tmp_path / "site-out"
    mirror.run("render", "--out", str(site), check=True)
    assert wheel in (site / "simple" / "other-lib" / "index.html").read_text()


def test_with_review_new_releases_wait_for_the_cooldown_or_an_approval(
    mirror: Mirror, sample, serve, make_venv
) -> None:
    """Review mode: the proxy records into the review branch; releases older than the cooldown reach
    ``main`` by review's policy at once, a fresh one is held until someone approves it."""
    fresh = build_wheel("other_lib", "0.3", requires_python=">=3.8")
    mirror.upstream.add("other_lib", fresh)  # uploaded now: within the cooldown
    proxy_mirror(mirror, extra="review:\n  enabled: true\n  cooldown: 7d\n")
    server = serve()
    page = get(server.index_url + "other-lib/", headers=JSON)
    assert page.status_code == 200, page.text
    assert page.json()["versions"] == ["0.1", "0.2"]
    venv = make_venv("review")
    result = venv.pip_install(server.index_url, "other-lib")
    assert result.returncode == 0, result.stderr
    assert venv.run("import importlib.metadata as m; print(m.version('other-lib'))") == "0.2"
    assert get(f"{server.url}/files/other-lib/{fresh.filename}").status_code == 404
    report = mirror.run("review", check=True).stdout
    assert "0.3" in report
    mirror.run("approve", "other-lib==0.3", check=True)
    page = get(server.index_url + "other-lib/", headers=JSON).json()
    assert page["versions"] == ["0.1", "0.2", "0.3"]
    assert get(f"{server.url}/files/other-lib/{fresh.filename}").content == fresh.data
    stop_server(server)
    assert mirror.run("verify").returncode == 0


def test_a_slow_upstream_gets_504_for_the_unrecorded_and_the_record_at_once_for_the_recorded(
    mirror: Mirror, sample, serve
) -> None:
    proxy_mirror(mirror, "  ttl: 0\n  commit_interval: 1\n", extra="timeout: 1\nretries: 0\n")
    server = serve()
    assert get(server.index_url + "demo-pkg/").status_code == 200
    mirror.upstream.fault("/simple/", "delay", times=-1, seconds=4)
    started = time.monotonic()
    page = get(server.index_url + "demo-pkg/", headers=JSON, timeout=30)
    assert page.status_code == 200 and time.monotonic() - started < 0.9  # not waiting for its 1 s timeout
    assert "x-gitmirror-stale" not in page.headers  # its refresh is in flight, nothing failed yet
    assert page.json()["name"] == "demo-pkg"
    page = stale_page(server.index_url + "demo-pkg/")  # once the background refresh timed out
    assert page.headers["x-gitmirror-stale"].startswith("upstream unavailable")
    assert "timed out" in page.headers["x-gitmirror-stale"]
    assert page.headers["warning"] == '110 gitmirror "Response is Stale"'
    unrecorded = get(server.index_url + "other-lib/", timeout=30)
    assert unrecorded.status_code == 504
    assert unrecorded.text.startswith("upstream: other-lib") and "timed out" in unrecorded.text
    errors = {
        metric.labels["reason"]: metric.value
        for family in text_string_to_metric_families(get(server.url + "/metrics").text)
        if family.name == "gitmirror_proxy_upstream_errors"
        for metric in family.samples
        if metric.name.endswith("_total")
    }
    assert errors["stale"] >= 1 and errors["timeout"] >= 2  # the background refreshes' and the 504's


def test_what_the_proxy_recorded_is_history_like_any_other(mirror: Mirror, sample, serve, tmp_path: Path) -> None:
    """The hook accepts a push of the proxy's commits, a clone hydrates from it and verifies, and
    a tag of its state is served as a snapshot."""
    proxy_mirror(mirror)
    server = serve()
    wheel = "other_lib-0.2-py3-none-any.whl"
    paths = ("/simple/other-lib/", f"/files/other-lib/{wheel}.metadata", f"/files/other-lib/{wheel}")
    answers = [get(server.url + path) for path in paths]  # one after the other, as an installer asks
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    stop_server(server)
    entry = next(json.loads(line) for line in recorded(mirror, "other-lib").splitlines() if wheel in line)
    assert entry["core-metadata"] == hashlib.sha256(answers[1].content).hexdigest()  # asked for first, recorded with it
    mirror.run("tag", "v1", check=True)

    pushed = tmp_path / "pushed.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(pushed)], env=isolated_env(), check=True)
    install(pushed, sys.executable)
    push = subprocess.run(
        ["git", "--git-dir", str(mirror.repo), "push", f"file://{pushed}", "main"],
        env=isolated_env(),
        capture_output=True,
        text=True,
    )
    assert push.returncode == 0, push.stderr
    tip = subprocess.run(
        ["git", "--git-dir", str(pushed), "rev-parse", "main"], env=isolated_env(), capture_output=True, text=True
    )
    assert tip.stdout == mirror.git("rev-parse", "main")

    clone = Mirror(root=tmp_path / "clone", upstream=mirror.upstream)
    clone.root.mkdir()
    subprocess.run(
        ["git", "clone", "-q", "--mirror", f"file://{mirror.repo}", str(clone.repo)], env=isolated_env(), check=True
    )
    clone.configure()
    server = serve()
    hydrated = clone.run("hydrate", "--from", server.index_url)
    assert hydrated.returncode == 0, hydrated.stderr
    assert clone.run("verify").returncode == 0
    snapshot = get(server.url + "/snapshot/v1/simple/other-lib/").text
    assert wheel in snapshot


def test_allow_deny_and_the_sync_filters_shape_what_is_offered(mirror: Mirror, sample, serve) -> None:
    proxy_mirror(mirror, '  allow: ["demo-*", "other-*"]\n  deny: ["other-*"]\n', extra="sdists: false\n")
    server = serve()
    denied = get(server.index_url + "other-lib/")
    assert (
        denied.status_code == 404
        and denied.text == "other-lib is not offered by this proxy (proxy allow/deny, exclude, hosted)"
    )
    assert get(server.index_url + "six/").status_code == 404  # not allowed
    assert mirror.upstream.count("/simple/") == 0
    page = get(server.index_url + "demo-pkg/", headers=JSON).json()
    assert {item["filename"] for item in page["files"]} == {
        "demo_pkg-1.0-py3-none-any.whl",
        "demo_pkg-1.1-py3-none-any.whl",
        "demo_pkg-2.0-py3-none-any.whl",
    }
    assert next(item for item in page["files"] if "1.1" in item["filename"])["yanked"] == "broken build"
    assert get(f"{server.url}/files/demo-pkg/demo_pkg-1.0.tar.gz").status_code == 404


def test_a_hosted_name_is_never_filled_from_upstream(mirror: Mirror, sample, serve) -> None:
    proxy_mirror(mirror, extra='hosted: ["demo-*"]\n')
    server = serve()
    refused = get(server.index_url + "demo-pkg/")
    assert (refused.status_code, refused.text) == (
        404,
        "demo-pkg is not offered by this proxy (proxy allow/deny, exclude, hosted)",
    )
    assert mirror.upstream.count("/simple/demo-pkg") == 0  # dependency confusion: upstream is never asked
    assert get(server.index_url + "other-lib/").status_code == 200  # other names still pass through


def test_files_an_upstream_announces_no_size_for_are_stored_before_their_page(mirror: Mirror, sample, serve) -> None:
    """A PEP 691 page must state each file's size: one upstream leaves out is stored (and recorded) first."""
    mirror.upstream.announce_sizes = False
    proxy_mirror(mirror)
    server = serve()
    page = get(server.index_url + "other-lib/", headers=JSON).json()
    sizes = {item["filename"]: item["size"] for item in page["files"]}
    assert sizes == {art.filename: len(art.data) for art in sample["other-lib"]}
    assert file_requests(mirror.upstream) == 2
    stop_server(server)
    assert all(filename in recorded(mirror, "other-lib") for filename in sizes)
    assert mirror.run("verify").returncode == 0


def descendants(pid: int) -> list[int]:
    """The processes ``pid`` started, and theirs (from ``/proc``)."""
    children = [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]
    return children + [grandchild for child in children for grandchild in descendants(child)]


def test_the_download_processes_start_with_the_server_not_with_its_first_request(mirror: Mirror, sample, serve) -> None:
    proxy_mirror(mirror)
    server = serve()  # it answered /simple/ while they were starting: startup does not wait for them
    assert mirror.upstream.count("/simple/", method="GET") == 0
    deadline = time.monotonic() + 20
    while len(descendants(server.process.pid)) < 2 and time.monotonic() < deadline:  # the fork server, a worker
        time.sleep(0.1)
    assert len(descendants(server.process.pid)) >= 2, "no download process started before any request"
    page = get(server.index_url + "demo-pkg/", headers=JSON, timeout=30)
    assert page.status_code == 200
    (wheel,) = [item for item in page.json()["files"] if item["filename"] == "demo_pkg-1.0-py3-none-any.whl"]
    download = get(str(httpx.URL(server.index_url + "demo-pkg/").join(wheel["url"])), timeout=30)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == wheel["hashes"]["sha256"]
    assert file_requests(mirror.upstream) == 1


def test_a_page_of_thousands_of_files_upstream_cannot_deliver_is_answered(mirror: Mirror, sample, serve) -> None:
    """3,000 unsized files that all fail: the page (an answer longer than any pipe buffer, read on
    uvloop) comes back without them, each failure logged (more than a pipe holds: the log is a file)."""
    mirror.upstream.fault("demo-pkg", "huge_page", times=-1, entries=3000)
    proxy_mirror(mirror)
    server = serve()
    page = get(server.index_url + "demo-pkg/", headers=JSON, timeout=120)
    assert page.status_code == 200 and page.json()["files"] == []
    assert len(server.stderr()) > 64 * 1024
    assert get(server.url + "/health").status_code == 200  # still answering
