"""Legacy upstream files, warnings shown once per change, and review-mode reporting.

Old projects still list eggs, Windows installers and archives no installer takes from an index: a
sync skips them with one note per project and exits 0, so cron alerting and the warm path work. A
warning about the same state is shown when it appears or changes, not at every run. The review
report does not flag a dependency only an extra nobody asked for needs; ``status`` in review mode
names the review branch's last sync.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from gitmirror.model.page import RemoteProject, legacy_kind
from gitmirror.sync.closure import ProjectChoice
from gitmirror.sync.merge import ProjectOutcome, merge

from conftest import Mirror
from fakeupstream import Artifact, FakeUpstream, build_wheel

LEGACY = [
    "demo_pkg-0.5-py2.7.egg",
    "demo-pkg-0.5.win32.exe",
    "demo-pkg-0.5.win32-py2.7.msi",
    "demo-pkg-0.5.linux-x86_64.zip",  # a built distribution zipped: no sdist name
    "demo-pkg-0.3.tar.bz2",
]
ONLY_LEGACY = ["oldie-0.1-py2.4.egg", "oldie-0.1.win32.exe"]


def lines_with(text: str, output: str) -> list[str]:
    return [line for line in output.splitlines() if text in line]


def publish_legacy(upstream: FakeUpstream) -> None:
    for filename in LEGACY:
        upstream.add("demo-pkg", Artifact(filename, b"legacy bytes of " + filename.encode()))
    for filename in ONLY_LEGACY:
        upstream.add("oldie", Artifact(filename, b"legacy bytes of " + filename.encode()))


def test_legacy_kinds_are_told_apart_from_what_the_mirror_takes_and_from_unsafe_names() -> None:
    assert legacy_kind("Flask-0.6-py2.5.egg") == ".egg"
    assert legacy_kind("pkg-1.0.tar.xz") == ".tar.xz"
    assert legacy_kind("pkg-1.0.linux-x86_64.tar.gz") == ".tar.gz (name does not parse)"
    assert legacy_kind("pkg-1.0-beta-py2-none-any.whl") == ".whl (name does not parse)"
    assert legacy_kind("pkg-1.0.tar.gz") is None and legacy_kind("pkg-1.0-py3-none-any.whl") is None
    assert legacy_kind("pkg-1.0.zip") is None  # an sdist
    assert legacy_kind("../../evil-1.0.egg") is None  # refused as unsafe, not skipped
    assert legacy_kind("pkg-1.0.sh") is None


def test_merge_counts_legacy_files_as_skipped_not_as_errors() -> None:
    skipped = {f"Flask-0.{minor}-py2.{minor % 3 + 5}.egg": ".egg" for minor in range(10)}
    skipped |= {f"Flask-0.{minor}.win32.exe": ".exe" for minor in range(4)}
    remote = RemoteProject(name="flask", files=[], skipped=skipped, rejected=["x: belongs to project y, not flask"])
    _manifest, wanted, outcome = merge(None, remote, ProjectChoice("flask"), "2026-01-01T00:00:00Z")
    assert wanted == [] and outcome.errors == ["x: belongs to project y, not flask"]  # a real problem stays one
    assert outcome.skipped_note == "flask: skipped 14 legacy files (.egg 10, .exe 4)"
    assert ProjectOutcome("flask").skipped_note is None


def test_legacy_files_are_one_note_per_project_and_the_run_succeeds(
    mirror: Mirror, sample, upstream: FakeUpstream, serve, make_venv
) -> None:
    publish_legacy(upstream)
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n  - oldie\n")
    first = mirror.run("sync")
    assert first.returncode == 0, first.stderr
    assert "error" not in first.stderr and "errors" not in first.stdout
    notes = lines_with("legacy file", first.stderr)
    assert sorted(notes) == [
        "note: demo-pkg: skipped 5 legacy files (.egg 1, .exe 1, .msi 1, .tar.bz2 1, .zip (name does not parse) 1)",
        "note: oldie: skipped 2 legacy files (.egg 1, .exe 1)",
    ]
    recorded = [
        json.loads(line)["filename"]
        for line in mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl").splitlines()[1:]
    ]
    assert len(recorded) == 6 and not set(recorded) & set(LEGACY)  # the wheels and sdists only
    # a project upstream lists only legacy files for is recorded with what it has: nothing
    assert mirror.git("show", "main:projects/ol/di/oldie.jsonl").splitlines() == [
        '{"gitmirror-manifest":1,"name":"oldie"}'
    ]

    # the warm path now works: one request, and no warning said again
    mark = len(upstream.requests)
    warm = mirror.run("sync")
    assert warm.returncode == 0 and "unchanged since the last complete sync" in warm.stdout
    assert [(record.method, record.path) for record in upstream.requests[mark:]] == [("HEAD", "/simple/")]
    assert warm.stderr == ""
    # a full run finds the same state: nothing said again either, but --json carries everything
    full = mirror.run("sync", "--full")
    assert full.returncode == 0 and "legacy" not in full.stderr and "warning" not in full.stderr, full.stderr
    summary = json.loads(mirror.run("sync", "--json").stdout)
    assert summary["exit_code"] == 0 and summary["errors"] == []
    assert sorted(summary["skipped"]["demo-pkg"]) == sorted(LEGACY)
    assert summary["skipped"]["oldie"] == {"oldie-0.1-py2.4.egg": ".egg", "oldie-0.1.win32.exe": ".exe"}
    assert sorted(notes) == sorted(line for line in summary["warnings"] if "legacy" in line)

    # a new legacy file upstream changes the note: said once, then not again
    upstream.add("demo-pkg", Artifact("demo-pkg-0.6.win-amd64.exe", b"one more installer"))
    changed = mirror.run("sync")
    assert changed.returncode == 0, changed.stderr
    assert lines_with("legacy file", changed.stderr) == [
        "note: demo-pkg: skipped 6 legacy files (.exe 2, .egg 1, .msi 1, .tar.bz2 1, .zip (name does not parse) 1)"
    ]
    again = mirror.run("sync", "--full")
    assert again.returncode == 0 and "legacy" not in again.stderr

    assert mirror.run("verify").returncode == 0  # the policy holds, the empty manifest included
    server = serve()
    venv = make_venv()
    installed = venv.pip_install(server.index_url, "demo-pkg")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert venv.run("import demo_pkg; print(demo_pkg.__version__)") == "1.0"


def test_a_conflict_already_recorded_is_said_once(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    mirror.run("sync", check=True)
    wheel = sample["demo-pkg"][0].filename
    upstream.replace_file("demo-pkg", wheel, b"other bytes")
    new = mirror.run("sync")
    assert new.returncode == 3 and len(lines_with(f"CONFLICT demo-pkg: {wheel}", new.stderr)) == 1
    for args in (("--full",), ("--full",)):
        known = mirror.run("sync", *args)
        assert known.returncode == 0 and wheel not in known.stderr, known.stderr
    summary = json.loads(mirror.run("sync", "--json").stdout)
    assert [conflict["filename"] for conflict in summary["known_conflicts"]] == [wheel]
    assert summary["conflicts"] == [] and summary["exit_code"] == 0


def test_review_ignores_extras_nobody_asked_for_and_status_names_the_review_sync(
    mirror: Mirror, sample, upstream: FakeUpstream
) -> None:
    mirror.run("sync", check=True)
    main_tip = mirror.git("rev-parse", "main").strip()
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib[fast]\nreview:\n  enabled: true\n  cooldown: 7d\n")
    upstream.add("fresh-dep", build_wheel("fresh-dep", "1.0"))
    upstream.add("sphinx", build_wheel("sphinx", "7.0"))
    release = build_wheel(
        "other_lib",
        "0.3",
        requires_python=">=3.8",
        extras=["docs", "fast"],
        requires_dist=['sphinx; extra == "docs"', 'fresh-dep>=1; extra == "fast"', "demo-pkg>=1.0"],
    )
    upstream.add("other_lib", release, upload_time=datetime.now(UTC) - timedelta(days=30))
    synced = mirror.run("sync")
    assert synced.returncode == 0, synced.stderr
    assert "review mode: committing to incoming" in synced.stderr
    again = mirror.run("sync", "--full")  # nothing new: not even the review-mode notice is said again
    said = [line for line in again.stderr.splitlines() if not line.startswith("progress:")]  # progress lines aside
    assert again.returncode == 0 and said == [], again.stderr

    report = json.loads(mirror.run("review", "--format", "json", check=True).stdout)
    projects = {project["name"]: project for project in report["projects"]}
    assert "sphinx" not in projects  # the closure did not follow the extra nobody asked for
    (reviewed,) = projects["other-lib"]["releases"]
    assert set(reviewed["dependencies"]["added"]) == {'sphinx; extra == "docs"', 'fresh-dep>=1; extra == "fast"'}
    flags = [flag for flag in reviewed["flags"] if flag.startswith("new dependency")]
    assert flags == ["new dependency fresh-dep is not served by this mirror yet"]  # [fast] is asked for

    incoming_tip = mirror.git("rev-parse", "incoming").strip()
    status = json.loads(mirror.run("status", "--json", check=True).stdout)
    assert status["commit"] == main_tip and status["last_sync_commit"] == main_tip
    assert status["review_branch"] == "incoming" and status["review_commit"] == incoming_tip
    assert status["review_last_sync_commit"] == incoming_tip
    text = mirror.run("status", check=True).stdout
    assert f"review     incoming at {incoming_tip[:12]}, last sync {status['review_last_sync']}" in text
