"""Review mode end to end: sync into ``incoming``, nothing unreviewed installs, ``approve`` lets it in."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from gitmirror.model.manifest import manifest_path
from gitmirror.storage.repo import MetadataRepo

from conftest import Mirror, isolated_env
from fakeupstream import build_sdist, build_wheel

DEMO = manifest_path("demo-pkg")
REVIEW = "projects:\n  - demo-pkg\n  - other_lib\nreview:\n  enabled: true\n  cooldown: 7d\n"


def days_ago(days: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)


def files_on(mirror: Mirror, branch: str, path: str = DEMO) -> dict[str, dict]:
    lines = mirror.git("show", f"{branch}:{path}").splitlines()[1:]
    return {entry["filename"]: entry for entry in map(json.loads, lines)}


def baseline(mirror: Mirror, review: str = REVIEW) -> str:
    """Sync the sample without review, then switch review on; returns main's tip."""
    mirror.run("sync", check=True)
    mirror.configure(review)
    return mirror.git("rev-parse", "main").strip()


def test_review_mode_release_installs_only_after_approval(mirror: Mirror, sample, upstream, serve, make_venv) -> None:
    main_before = baseline(mirror)
    wheel = build_wheel("demo-pkg", "3.0", requires_python=">=3.8", requires_dist=["other-lib>=0.2"])
    upstream.add("demo-pkg", wheel, upload_time=days_ago(30))
    synced = mirror.run("sync", check=True)
    assert "review mode: committing to incoming" in synced.stderr
    assert mirror.git("rev-parse", "main").strip() == main_before
    assert wheel.filename in files_on(mirror, "incoming")
    assert (mirror.store / "blobs" / wheel.sha256[:2] / wheel.sha256[2:4] / wheel.sha256).is_file()

    server = serve()
    assert httpx.get(f"{server.url}/files/demo-pkg/{wheel.filename}").status_code == 404
    # Nor through a snapshot URL: the review branch, its commit by id or a tag on it is no served state.
    incoming = mirror.git("rev-parse", "incoming").strip()
    refused = mirror.run("tag", "on-review", "--rev", "incoming")
    assert refused.returncode == 2 and "is no state main has served" in refused.stderr
    mirror.git("tag", "on-review", "incoming")  # by hand: the server refuses it all the same
    for rev in ("incoming", incoming, incoming[:10], "on-review"):
        answer = httpx.get(f"{server.url}/snapshot/{rev}/simple/demo-pkg/")
        assert answer.status_code == 404 and "names no state main has served" in answer.text, rev
        assert wheel.filename not in answer.text
    assert httpx.get(f"{server.url}/snapshot/main/simple/demo-pkg/").status_code == 200
    assert httpx.get(f"{server.url}/snapshot/{main_before[:10]}/simple/demo-pkg/").status_code == 200
    venv = make_venv("review")
    refused = venv.pip_install(server.index_url, "demo-pkg==3.0")
    assert refused.returncode != 0 and "demo-pkg==3.0" in refused.stderr

    report = mirror.run("review", check=True).stdout
    assert "### 3.0 (previous 2.0)" in report and "added `other-lib>=0.2`" in report

    approved = mirror.run("approve", "demo-pkg==3.0", check=True)
    assert "approved 1 change in 1 project" in approved.stdout
    message = mirror.git("log", "-1", "--format=%an <%ae>%n%B", "main")
    assert message.startswith("Test Mirror <mirror@example.invalid>\napprove: 1 change in 1 project from incoming")
    assert f"demo-pkg: + {wheel.filename}" in message and "Approved-by: Test Mirror" in message

    installed = venv.pip_install(server.index_url, "demo-pkg==3.0")
    assert installed.returncode == 0, installed.stderr
    assert venv.run("import demo_pkg, other_lib; print(demo_pkg.__version__, other_lib.__version__)") == "3.0 0.2"
    assert "Nothing is pending" in mirror.run("review", check=True).stdout


def test_policy_holds_yesterdays_release_and_approves_last_months(mirror: Mirror, sample, upstream) -> None:
    baseline(mirror, REVIEW + "  auto_approve: [other-lib]\n")
    people = {"author": "Fake Upstream", "home_page": "http://127.0.0.1/demo-pkg"}  # unchanged: no flags
    old = build_wheel("demo-pkg", "2.5", requires_python=">=3.8", **people)
    fresh = build_wheel("demo-pkg", "3.0", requires_python=">=3.8", **people)
    trusted = build_wheel("other_lib", "0.3", requires_python=">=3.8")
    upstream.add("demo-pkg", old, upload_time=days_ago(30))
    upstream.add("demo-pkg", fresh, upload_time=days_ago(1))
    upstream.add("other_lib", trusted, upload_time=days_ago(1))
    upstream.yank("demo-pkg", "demo_pkg-1.0-py3-none-any.whl", "security hole")
    mirror.run("sync", check=True)

    result = mirror.run("approve", "--policy", check=True)
    assert f"held demo-pkg: + {fresh.filename} (release 3.0 within cooldown, eligible" in result.stdout
    assert "approved 3 changes in 2 projects, 1 held" in result.stdout
    on_main = files_on(mirror, "main")
    assert old.filename in on_main and fresh.filename not in on_main
    assert on_main["demo_pkg-1.0-py3-none-any.whl"]["yanked"] == "security hole"  # restricting marks pass
    assert trusted.filename in files_on(mirror, "main", manifest_path("other-lib"))  # auto_approve: fresh is fine
    message = mirror.git("log", "-1", "--format=%B", "main")
    assert "Approval-policy: cooldown 7d; auto_approve other-lib" in message and "Still-pending: 1" in message

    # Once the cooldown has passed the same command lets it in; running it again approves nothing.
    mirror.configure(REVIEW.replace("7d", "12h"))
    assert "approved 1 change" in mirror.run("approve", "--policy", check=True).stdout
    assert fresh.filename in files_on(mirror, "main")
    assert "nothing approved; 0 changes held" in mirror.run("approve", "--policy", check=True).stdout


def test_approve_keeps_what_main_did_meanwhile(mirror: Mirror, sample, upstream) -> None:
    baseline(mirror)
    new = build_wheel("demo-pkg", "3.0", requires_python=">=3.8")
    upstream.add("demo-pkg", new, upload_time=days_ago(30))
    mirror.run("sync", check=True)

    # An operator yanks 1.0 on main while incoming waits (what a `yank` command would commit).
    repo = MetadataRepo(mirror.repo)
    tip = repo.tip("main")
    manifest = repo.manifest(tip, "demo-pkg")
    entry = manifest.files["demo_pkg-1.0.tar.gz"]
    repo.write_commit(
        {DEMO: manifest.with_file(replace(entry, yanked="local decision")).dumps()},
        "yank demo_pkg-1.0.tar.gz",
        parent=tip,
    )
    repo.close()

    report = json.loads(mirror.run("review", "--format", "json", check=True).stdout)
    (project,) = report["projects"]
    assert [release["version"] for release in project["releases"]] == ["3.0"]
    assert project["changes"] == []  # the yank on main is not offered back as an "unyank"

    before = [mirror.git("rev-parse", branch).strip() for branch in ("main", "incoming")]
    mirror.run("approve", "--all", check=True)
    on_main = files_on(mirror, "main")
    assert on_main["demo_pkg-1.0.tar.gz"]["yanked"] == "local decision" and new.filename in on_main
    assert mirror.git("log", "-1", "--format=%P", "main").split() == before
    # Everything was approved: main records the merge, incoming fast-forwards onto it, nothing waits.
    assert mirror.git("rev-parse", "incoming").strip() == mirror.git("rev-parse", "main").strip()
    assert "Nothing is pending" in mirror.run("review", check=True).stdout

    # The next sync starts from main's state: nothing is downloaded again. Upstream still serves
    # 1.0 unyanked, so incoming records that; it waits for a reviewer and the policy holds it.
    downloads = upstream.count(new.filename)
    assert "0 files added" in mirror.run("sync", check=True).stdout
    assert upstream.count(new.filename) == downloads
    report = json.loads(mirror.run("review", "--format", "json", check=True).stdout)
    assert report["projects"][0]["changes"] == ["unyank demo_pkg-1.0.tar.gz"]
    held = mirror.run("approve", "--policy", check=True).stdout
    assert "held demo-pkg: unyank demo_pkg-1.0.tar.gz (loosens a mark: needs a reviewer)" in held
    assert files_on(mirror, "main")["demo_pkg-1.0.tar.gz"]["yanked"] == "local decision"


def test_partial_approval_leaves_the_rest_pending_and_syncs_never_repeat(mirror: Mirror, sample, upstream) -> None:
    baseline(mirror)
    wheel = build_wheel("demo-pkg", "3.0", requires_python=">=3.8")
    sdist = build_sdist("other_lib", "0.3", requires_python=">=3.8")
    upstream.add("demo-pkg", wheel, upload_time=days_ago(30))
    upstream.add("other_lib", sdist, upload_time=days_ago(30))
    mirror.run("sync", check=True)
    incoming = mirror.git("rev-parse", "incoming").strip()
    # the wheel once; its .metadata is written out of it (checked against the announced sha256)
    downloads = upstream.count(wheel.filename)
    assert downloads == 1
    assert "nothing to commit" in mirror.run("sync", check=True).stdout
    assert mirror.git("rev-parse", "incoming").strip() == incoming

    mirror.run("approve", "other-lib", check=True)
    assert sdist.filename in files_on(mirror, "main", manifest_path("other-lib"))
    assert wheel.filename not in files_on(mirror, "main")
    # incoming got main merged in, so it still holds the wheel and main is its ancestor
    assert (
        subprocess.run(
            ["git", "--git-dir", str(mirror.repo), "merge-base", "--is-ancestor", "main", "incoming"],
            env=isolated_env(),
        ).returncode
        == 0
    )
    report = json.loads(mirror.run("review", "--format", "json", check=True).stdout)
    assert [p["name"] for p in report["projects"]] == ["demo-pkg"]

    upstream.yank("demo-pkg", wheel.filename, "bad")
    mirror.run("sync", check=True)
    assert files_on(mirror, "incoming")[wheel.filename]["yanked"] == "bad"
    assert upstream.count(wheel.filename) == downloads


def test_reviewer_merges_incoming_with_plain_git(mirror: Mirror, sample, upstream, serve, tmp_path: Path) -> None:
    baseline(mirror)
    wheel = build_wheel("demo-pkg", "3.0", requires_python=">=3.8")
    upstream.add("demo-pkg", wheel, upload_time=days_ago(2))
    mirror.run("sync", check=True)

    clone = tmp_path / "reviewer"
    env = isolated_env(GIT_AUTHOR_NAME="Rita Reviewer", GIT_AUTHOR_EMAIL="rita@example.invalid")

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=clone, env=env, check=True, capture_output=True, text=True).stdout

    subprocess.run(["git", "clone", "-q", "-b", "main", str(mirror.repo), str(clone)], env=env, check=True)
    git("checkout", "-q", "-b", "review-3.0", "origin/incoming")
    git("checkout", "-q", "main")
    git("merge", "-q", "--no-ff", "-m", "Merge reviewed demo-pkg 3.0", "review-3.0")
    git("push", "-q", "origin", "main")

    assert wheel.filename in files_on(mirror, "main")
    assert "Nothing is pending" in mirror.run("review", check=True).stdout
    server = serve()
    page = httpx.get(f"{server.url}/simple/demo-pkg/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    assert wheel.filename in {item["filename"] for item in page.json()["files"]}
    assert "nothing to commit" in mirror.run("sync", check=True).stdout
    assert mirror.git("rev-parse", "incoming").strip() == mirror.git("rev-parse", "main").strip()


def test_first_sync_in_review_mode_serves_nothing_until_approved(mirror: Mirror, sample, serve) -> None:
    mirror.configure(REVIEW)
    mirror.run("sync", check=True)
    assert "main" not in mirror.git("branch", "--list", "main")
    server = serve()
    assert httpx.get(f"{server.url}/simple/demo-pkg/").status_code == 404
    report = json.loads(mirror.run("review", "--format", "json", check=True).stdout)
    assert report["new_projects"] == {"demo-pkg": ["other-lib 0.2"], "other-lib": []}
    mirror.run("approve", "other-lib==0.1", check=True)
    assert set(files_on(mirror, "main", manifest_path("other-lib"))) == {"other_lib-0.1-py3-none-any.whl"}
    assert httpx.get(f"{server.url}/simple/demo-pkg/").status_code == 404
    assert httpx.get(f"{server.url}/simple/other-lib/").status_code == 200


def test_bad_approvals_are_one_line_errors_and_write_nothing(mirror: Mirror, sample, upstream) -> None:
    mirror.run("sync", check=True)
    tip = mirror.git("rev-parse", "main").strip()
    no_branch = mirror.run("approve", "--all")
    assert no_branch.returncode == 2 and "there is no branch incoming" in no_branch.stderr
    baseline(mirror)
    upstream.add("demo-pkg", build_wheel("demo-pkg", "3.0"), upload_time=days_ago(30))
    mirror.run("sync", check=True)
    for args, expected in [
        ((), "exactly one"),
        (("--all", "demo-pkg"), "exactly one"),
        (("other-lib",), "nothing pending for other-lib"),
        (("demo-pkg==9.9",), "nothing pending for demo-pkg==9.9 (pending versions: 3.0)"),
        (("demo pkg",), "invalid approval 'demo pkg'"),
    ]:
        result = mirror.run("approve", *args)
        assert result.returncode == 2, args
        assert result.stderr.startswith("gitmirror: error: ") and expected in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert mirror.git("rev-parse", "main").strip() == tip
