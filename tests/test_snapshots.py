"""The time machine: every past commit is an installable index at /snapshot/<rev>/simple/."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from gitmirror.storage.repo import MetadataRepo
from gitmirror.storage.snapshot import BRANCH, COMMIT, DATE, TAG, RevisionError, check_tag_name, resolve

from conftest import Mirror
from fakeupstream import FakeUpstream, build_wheel

JSON = "application/vnd.pypi.simple.v1+json"
NEW_WHEEL = "demo_pkg-1.5-py3-none-any.whl"
OLD_WHEEL = "demo_pkg-1.0-py3-none-any.whl"


@dataclass
class History:
    first: str
    second: str
    first_time: int


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_history(mirror: Mirror, upstream: FakeUpstream) -> History:
    """Sync; then upstream adds releases and yanks 1.0; sync again (one second later at least)."""
    mirror.run("sync", check=True)
    first = mirror.git("rev-parse", "main").strip()
    first_time = int(mirror.git("log", "-1", "--format=%ct", first).strip())
    while int(time.time()) <= first_time:  # commit times have one-second resolution
        time.sleep(0.05)
    upstream.add("demo-pkg", build_wheel("demo-pkg", "1.5", requires_python=">=3.8"))
    upstream.add("other_lib", build_wheel("other_lib", "0.3", requires_python=">=3.8", requires_dist=["demo-pkg>=1.5"]))
    upstream.yank("demo-pkg", OLD_WHEEL, "security issue")
    upstream.yank("demo-pkg", "demo_pkg-1.0.tar.gz", "security issue")
    mirror.run("sync", check=True)
    second = mirror.git("rev-parse", "main").strip()
    assert second != first
    return History(first=first, second=second, first_time=first_time)


@pytest.fixture
def history(mirror: Mirror, sample, upstream: FakeUpstream) -> History:
    return make_history(mirror, upstream)


def files_of(page: dict) -> dict[str, dict]:
    return {item["filename"]: item for item in page["files"]}


def test_pip_installs_old_versions_from_a_snapshot_by_commit_and_by_date(
    mirror: Mirror, history: History, serve, make_venv
) -> None:
    server = serve()
    venv = make_venv("snap")
    by_commit = f"{server.url}/snapshot/{history.first}/simple/"
    installed = venv.pip_install(by_commit, "other-lib")
    assert installed.returncode == 0, installed.stderr
    assert venv.run("import other_lib, demo_pkg; print(other_lib.__version__, demo_pkg.__version__)") == "0.2 1.0"

    by_date = f"{server.url}/snapshot/{iso(history.first_time)}/simple/"
    again = venv.pip_install(by_date, "--force-reinstall", "--no-deps", "demo-pkg")
    assert again.returncode == 0, again.stderr
    assert venv.run("import demo_pkg; print(demo_pkg.__version__)") == "1.0"

    # The tip has moved on: 1.0 is yanked there and 1.5 exists.
    upgraded = venv.pip_install(server.index_url, "--upgrade", "other-lib")
    assert upgraded.returncode == 0, upgraded.stderr
    assert venv.run("import other_lib, demo_pkg; print(other_lib.__version__, demo_pkg.__version__)") == "0.3 1.5"


def test_snapshot_pages_show_exactly_that_state(mirror: Mirror, history: History, serve) -> None:
    server = serve()
    old = httpx.get(f"{server.url}/snapshot/{history.first[:8]}/simple/demo-pkg/", headers={"Accept": JSON}).json()
    new = httpx.get(f"{server.url}/simple/demo-pkg/", headers={"Accept": JSON}).json()
    assert NEW_WHEEL not in files_of(old) and NEW_WHEEL in files_of(new)
    assert files_of(old)[OLD_WHEEL]["yanked"] is False  # yanked later: not yet yanked then
    assert files_of(new)[OLD_WHEEL]["yanked"] == "security issue"
    assert "1.5" not in old["versions"]
    html = httpx.get(f"{server.url}/snapshot/{history.first}/simple/demo-pkg/").text
    assert OLD_WHEEL in html and NEW_WHEEL not in html and "data-yanked" in html  # 1.1 was yanked already
    assert f"{OLD_WHEEL}#sha256=" in html and 'data-yanked="security issue"' not in html

    # Blobs are shared, but a snapshot serves only the files it had.
    wheel = httpx.get(f"{server.url}/snapshot/{history.first}/files/demo-pkg/{OLD_WHEEL}")
    assert wheel.status_code == 200 and wheel.content == httpx.get(f"{server.url}/files/demo-pkg/{OLD_WHEEL}").content
    assert httpx.get(f"{server.url}/snapshot/{history.first}/files/demo-pkg/{NEW_WHEEL}").status_code == 404
    assert httpx.get(f"{server.url}/snapshot/{history.second}/files/demo-pkg/{NEW_WHEEL}").status_code == 200

    # Non-normalized names redirect within the snapshot.
    moved = httpx.get(f"{server.url}/snapshot/{history.first}/simple/Other_Lib/")
    assert moved.status_code == 301
    assert moved.headers["location"].endswith(f"/snapshot/{history.first}/simple/other-lib/")


def test_commit_pinned_snapshots_cache_forever_others_do_not(mirror: Mirror, history: History, serve) -> None:
    mirror.run("tag", "release-1", "--rev", history.first, check=True)
    server = serve()
    pinned = httpx.get(f"{server.url}/snapshot/{history.first}/simple/demo-pkg/")
    assert pinned.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = pinned.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")  # strong
    revalidated = httpx.get(f"{server.url}/snapshot/{history.first}/simple/demo-pkg/", headers={"If-None-Match": etag})
    assert revalidated.status_code == 304
    short = httpx.get(f"{server.url}/snapshot/{history.first[:10]}/simple/")
    assert "immutable" in short.headers["cache-control"]
    for rev in ("release-1", iso(history.first_time), "main"):
        response = httpx.get(f"{server.url}/snapshot/{rev}/simple/demo-pkg/")
        assert response.status_code == 200, rev
        assert "immutable" not in response.headers["cache-control"], rev
        assert response.text == pinned.text or rev == "main"
    assert "1.5" in httpx.get(f"{server.url}/snapshot/main/simple/demo-pkg/").text

    unknown = httpx.get(f"{server.url}/snapshot/no-such-tag/simple/")
    assert unknown.status_code == 404 and "unknown revision" in unknown.text
    too_early = httpx.get(f"{server.url}/snapshot/2001-01-01/simple/")
    assert too_early.status_code == 404 and "no commit on main at or before 2001-01-01T23:59:59" in too_early.text


def test_tag_names_a_snapshot_and_never_moves(mirror: Mirror, history: History) -> None:
    made = mirror.run("tag", "product-2026.1", "--rev", history.first[:7], "-m", "shipped with product 2026.1")
    assert made.returncode == 0, made.stderr
    assert mirror.git("rev-parse", "product-2026.1^{commit}").strip() == history.first
    assert "shipped with product 2026.1" in mirror.git("tag", "-n1", "-l", "product-2026.1")

    again = mirror.run("tag", "product-2026.1")
    assert again.returncode == 2
    assert again.stderr.strip() == (
        f"gitmirror: error: tag product-2026.1 already exists (at {history.first[:12]}); tags are never moved"
    )
    assert mirror.git("rev-parse", "product-2026.1^{commit}").strip() == history.first
    for bad in ("2026-01-31", "deadbeef", "a/b", "x..y"):
        refused = mirror.run("tag", bad)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, bad
    listed = mirror.run("tag", check=True).stdout
    assert listed == f"product-2026.1\t{history.first}\n"
    unknown = mirror.run("tag", "x1", "--rev", "nope")
    assert unknown.returncode == 2 and "unknown revision 'nope'" in unknown.stderr
    assert mirror.run("tag", "latest", check=True).stdout.startswith(f"tagged {history.second[:12]} as latest")


def test_resolve_every_form(mirror: Mirror, history: History) -> None:
    mirror.run("tag", "v1", "--rev", history.first, check=True)
    repo = MetadataRepo(mirror.repo)
    first, second = history.first.encode(), history.second.encode()
    assert resolve(repo, history.first) == resolve(repo, history.first)
    assert resolve(repo, history.first).kind == COMMIT and resolve(repo, history.first).commit == first
    assert resolve(repo, history.second[:6]).commit == second
    assert resolve(repo, history.second[:6].upper()).commit == second
    assert (resolve(repo, "v1").kind, resolve(repo, "v1").commit) == (TAG, first)
    assert (resolve(repo, "main").kind, resolve(repo, "main").commit) == (BRANCH, second)
    at_first = resolve(repo, iso(history.first_time))
    assert (at_first.kind, at_first.commit, at_first.pinned) == (DATE, first, False)
    assert resolve(repo, iso(history.first_time).replace("Z", "")).commit == first  # naive means UTC
    later = datetime.fromtimestamp(history.first_time, UTC) + timedelta(hours=2)
    assert resolve(repo, later.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+02:00")).commit == first
    assert resolve(repo, datetime.now(UTC).date().isoformat()).commit == second  # a day means its end
    assert resolve(repo, (datetime.now(UTC) + timedelta(days=1)).isoformat()).commit == second
    with pytest.raises(RevisionError, match="unknown revision"):
        resolve(repo, "0000000")
    with pytest.raises(RevisionError, match="no commit on main at or before"):
        resolve(repo, iso(history.first_time - 1))
    with pytest.raises(RevisionError, match="invalid date"):
        resolve(repo, "2026-02-31")
    with pytest.raises(RevisionError):
        check_tag_name("2026-01-31T00:00")
    repo.close()
