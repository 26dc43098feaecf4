"""``gitmirror review``: the report a reviewer pastes into a pull request (and its JSON twin)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from gitmirror.model.manifest import manifest_path
from gitmirror.review.review import dependency_changes, file_kind

from conftest import Mirror
from fakeupstream import build_sdist, build_wheel

REVIEW = "projects:\n  - demo-pkg\n  - other_lib\n  - fresh-dep\nreview:\n  enabled: true\n  cooldown: 7d\n"


def days_ago(days: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(days=days)


def suspicious_releases(mirror: Mirror, upstream) -> dict[str, object]:
    """Baseline on main, then upstream publishes everything a reviewer should notice."""
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n")
    mirror.run("sync", check=True)
    mirror.configure(REVIEW)
    big = build_wheel(
        "demo-pkg",
        "3.0",
        requires_python=">=3.8",
        requires_dist=["other-lib>=0.2", "fresh-dep>=1"],
        author="Someone Else",
        home_page="http://127.0.0.1/elsewhere",
        payload_size=300_000,
    )
    upstream.add("demo-pkg", big, upload_time=days_ago(1))
    sdist_only = build_sdist("other_lib", "0.3", requires_python=">=3.8", requires_dist=["demo-pkg>=2.0"])
    upstream.add("other_lib", sdist_only, upload_time=days_ago(20))
    upstream.add("fresh-dep", build_wheel("fresh-dep", "1.0"), upload_time=days_ago(40))
    upstream.yank("demo-pkg", "demo_pkg-2.0.tar.gz", "wrong python")
    upstream.set_status("other_lib", "deprecated", "use something else")
    upstream.replace_file("demo-pkg", "demo_pkg-1.0.tar.gz", b"other bytes")
    assert mirror.run("sync").returncode == 3  # the conflict is recorded, the rest synced
    return {"big": big, "sdist_only": sdist_only}


def test_report_lists_releases_dependencies_marks_and_flags(mirror: Mirror, sample, upstream) -> None:
    made = suspicious_releases(mirror, upstream)
    report = json.loads(mirror.run("review", "--format", "json", check=True).stdout)
    assert (report["base"], report["head"], report["cooldown"]) == ("main", "incoming", "7d")
    projects = {project["name"]: project for project in report["projects"]}
    assert list(projects) == ["demo-pkg", "fresh-dep", "other-lib"]
    assert report["new_projects"] == {"fresh-dep": ["demo-pkg 3.0"]}

    demo = projects["demo-pkg"]
    (release,) = demo["releases"]
    assert release["version"] == "3.0" and release["previous"] == "2.0"
    assert release["files"] == [
        {
            "filename": made["big"].filename,
            "size": made["big"].size,
            "python": "py3",
            "platform": "any",
            "upload_time": release["files"][0]["upload_time"],
            "yanked": False,
        }
    ]
    assert release["dependencies"] == {"added": ["other-lib>=0.2", "fresh-dep>=1"], "removed": [], "repinned": []}
    flags = "\n".join(release["flags"])
    assert "within the 7d cooldown" in flags
    assert "Author changed since 2.0: 'Fake Upstream' -> 'Someone Else'" in flags
    assert "Home-page changed since 2.0: 'http://127.0.0.1/demo-pkg' -> 'http://127.0.0.1/elsewhere'" in flags
    assert f"size jump: {made['big'].filename} is 30" in flags
    assert "new dependency fresh-dep is not served by this mirror yet" in flags
    assert demo["changes"] == ["yank demo_pkg-2.0.tar.gz (wrong python)"]
    assert [conflict["filename"] for conflict in demo["conflicts"]] == ["demo_pkg-1.0.tar.gz"]

    other = projects["other-lib"]
    (release,) = other["releases"]
    assert release["dependencies"]["repinned"] == [["demo-pkg>=1.0", "demo-pkg>=2.0"]]  # read from the sdist
    assert any("sdist only, while 0.2 shipped wheels" in flag for flag in release["flags"])
    assert not any("cooldown" in flag for flag in release["flags"])  # 20 days old
    assert other["changes"] == ["status deprecated (use something else)"]
    assert projects["fresh-dep"]["new_project"] is True


def test_markdown_report_is_pasteable(mirror: Mirror, sample, upstream) -> None:
    made = suspicious_releases(mirror, upstream)
    text = mirror.run("review", "main..incoming", check=True).stdout
    assert text.startswith("# gitmirror review: `main..incoming`\n")
    assert "3 projects with pending changes, 3 new releases, 3 new files" in text
    assert "## Flags" in text and "- **demo-pkg 3.0**: uploaded 1 days ago" not in text
    assert "- **demo-pkg 3.0**: uploaded 24 hours ago, within the 7d cooldown" in text
    assert "## New projects\n\n- `fresh-dep` (required by demo-pkg 3.0)" in text
    assert f"| `{made['big'].filename}` | 301.2 kB | py3 | any | " in text
    assert "Dependency changes since 2.0:\n- added `other-lib>=0.2`\n- added `fresh-dep>=1`" in text
    assert "- re-pinned `demo-pkg>=1.0` -> `demo-pkg>=2.0`" in text
    assert "### Conflicts" in text and "### Other changes\n\n- yank demo_pkg-2.0.tar.gz (wrong python)" in text
    assert "Approve: `gitmirror approve demo-pkg`" in text


def test_policy_leaves_flagged_releases_to_a_human(mirror: Mirror, sample, upstream) -> None:
    made = suspicious_releases(mirror, upstream)
    held = mirror.run("approve", "--policy", check=True).stdout
    assert f"held other-lib: + {made['sdist_only'].filename} (release 0.3 is flagged in the review report)" in held
    assert f"held demo-pkg: + {made['big'].filename} (release 3.0 is flagged" in held
    assert "approved 4 changes in 3 projects, 2 held" in held
    assert "fresh_dep-1.0-py3-none-any.whl" in mirror.git("show", f"main:{manifest_path('fresh-dep')}")
    remaining = json.loads(mirror.run("review", "--format", "json", check=True).stdout)
    assert [(p["name"], [r["version"] for r in p["releases"]]) for p in remaining["projects"]] == [
        ("demo-pkg", ["3.0"]),
        ("other-lib", ["0.3"]),
    ]


def test_review_of_any_range_and_after_approval(mirror: Mirror, sample, upstream) -> None:
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\n")
    mirror.run("sync", check=True)
    first = mirror.git("rev-parse", "main").strip()
    mirror.configure(REVIEW.replace("  - fresh-dep\n", ""))
    same_people = {"author": "Fake Upstream", "home_page": "http://127.0.0.1/demo-pkg"}
    wheel = build_wheel("demo-pkg", "3.0", requires_dist=["other-lib>=0.2"], **same_people)
    upstream.add("demo-pkg", wheel, upload_time=days_ago(9))
    mirror.run("sync", check=True)
    mirror.run("approve", "--all", check=True)
    assert "Nothing is pending" in mirror.run("review", check=True).stdout
    # History stays reviewable: what did main take in since the first sync?
    report = json.loads(mirror.run("review", f"{first[:10]}..main", "--format", "json", check=True).stdout)
    (project,) = report["projects"]
    assert project["releases"][0]["dependencies"]["added"] == ["other-lib>=0.2"]
    assert project["releases"][0]["flags"] == []  # 9 days old, dependency already served
    single = json.loads(mirror.run("review", "incoming", "--format", "json", check=True).stdout)
    assert single["base"] == "main" and single["projects"] == []


def test_review_errors_are_one_line(mirror: Mirror, sample) -> None:
    mirror.run("sync", check=True)
    for args, expected in [
        (("nope..incoming",), "unknown revision 'nope'"),
        (("main..",), "expected a range like main..incoming"),
        (("--format", "xml"), "--format must be markdown or json"),
    ]:
        result = mirror.run("review", *args)
        assert result.returncode == 2 and result.stderr.startswith("gitmirror: error: "), args
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1
    mirror.configure("review:\n  cooldown: soon\n")
    bad = mirror.run("review")
    assert bad.returncode == 2 and "review.cooldown must be a duration like 7d" in bad.stderr
    mirror.configure("review:\n  enabled: true\n  branch: main\n")
    assert "review.branch must be a git branch name other than main" in mirror.run("sync").stderr


def test_manifests_untouched_on_main_until_review(mirror: Mirror, sample, upstream) -> None:
    suspicious_releases(mirror, upstream)
    main_manifest = mirror.git("show", f"main:{manifest_path('demo-pkg')}")
    assert "demo_pkg-3.0" not in main_manifest and "wrong python" not in main_manifest
    assert "conflicts/demo-pkg.jsonl" not in mirror.git("ls-tree", "-r", "--name-only", "main")


def test_dependency_changes_match_by_project_and_marker() -> None:
    changes = dependency_changes(
        ["Requests>=2; python_version < '3.9'", "six", "idna<3"],
        ["requests>=2.31; python_version < '3.9'", "idna[all]<3", "attrs"],
    )
    assert changes.added == ["attrs"]
    assert changes.removed == ["six"]
    assert changes.repinned == [
        ('Requests>=2; python_version < "3.9"', 'requests>=2.31; python_version < "3.9"'),
        ("idna<3", "idna[all]<3"),
    ]
    assert file_kind("x-1.0-cp312-cp312-manylinux_2_17_x86_64.whl") == ("cp312", "manylinux_2_17_x86_64")
    assert file_kind("x-1.0.tar.gz") == ("source", "any")
