"""``projects: all``: every project the loopback upstream lists, in batches that each commit, with the
filters applied; killed between batches, the next run resumes and ends where an uninterrupted run
does; once complete, a run follows upstream's changelog."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import crashhook
from conftest import GITMIRROR, Mirror
from fakeupstream import build_sdist, build_wheel

ALL = "projects: all\nbatch_projects: 2\nexclude:\n  - 'skip-*'\nsdists: false\n"


def _publish(upstream, count: int) -> None:
    for number in range(count):
        upstream.add(f"pkg-{number:02d}", build_wheel(f"pkg-{number:02d}", "1.0"))
        upstream.add(f"pkg-{number:02d}", build_sdist(f"pkg-{number:02d}", "1.0"))
    upstream.add("skip-me", build_wheel("skip-me", "1.0"))


def _state(mirror: Mirror) -> dict[str, list[str]]:
    """Each project's manifest as (filename, sha256) lines: what an uninterrupted run must match."""
    tree = {}
    for path in mirror.git("ls-tree", "-r", "--name-only", "main").split():
        records = [json.loads(line) for line in mirror.git("show", f"main:{path}").splitlines()[1:]]
        tree[path] = sorted(f"{record['filename']} {record['sha256']}" for record in records)
    return tree


def test_all_projects_in_batches_with_filters(mirror: Mirror, sample, upstream) -> None:
    _publish(upstream, 3)
    mirror.configure(ALL)
    result = mirror.run("sync", check=True)
    assert "projects: all (cold): 5 projects synced in 3 batches" in result.stdout
    assert "full index complete" in result.stdout
    state = _state(mirror)
    names = sorted(path.rsplit("/", 1)[-1][: -len(".jsonl")] for path in state)
    assert names == ["demo-pkg", "other-lib", "pkg-00", "pkg-01", "pkg-02"]  # skip-me excluded
    assert not any(".tar.gz" in line for lines in state.values() for line in lines)  # sdists: false
    subjects = mirror.git("log", "--format=%s", "main").splitlines()
    assert len(subjects) == 3 and all(subject.startswith("sync: ") for subject in subjects)

    # Complete: the next run asks the changelog, then for the one page it names.
    upstream.add("pkg-01", build_wheel("pkg-01", "2.0"))
    mark = len(upstream.requests)
    again = mirror.run("sync", check=True)
    assert "projects: all (changelog): 1 projects synced" in again.stdout
    pages = {record.path for record in upstream.requests[mark:] if record.path.startswith("/simple/")}
    assert pages == {"/simple/", "/simple/pkg-01/"}
    assert "pkg_01-2.0-py3-none-any.whl" in mirror.git("show", "main:projects/pk/g-/pkg-01.jsonl")
    assert mirror.run("verify").returncode == 0


def test_killed_between_batches_the_next_run_resumes(mirror: Mirror, sample, upstream, tmp_path: Path) -> None:
    _publish(upstream, 3)
    mirror.configure(ALL)
    killed = subprocess.run(
        [*GITMIRROR, "sync"],
        cwd=mirror.root,
        env=crashhook.environment(GITMIRROR_CRASH_AT="full-index.batch-committed#2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(mirror.git("log", "--format=%H", "main").split()) == 2  # two batches kept
    resumed = mirror.run("sync", check=True)
    assert "resuming: 4 of 5 projects are committed" in resumed.stderr + resumed.stdout
    assert "1 projects synced in 1 batches" in resumed.stdout and "full index complete" in resumed.stdout

    uninterrupted = Mirror(root=tmp_path / "other", upstream=upstream)
    uninterrupted.root.mkdir()
    uninterrupted.configure(ALL)
    uninterrupted.run("sync", check=True)
    assert _state(mirror) == _state(uninterrupted)
    assert mirror.run("verify").returncode == 0


def test_a_large_batch_commits_a_summarised_message(mirror: Mirror, upstream) -> None:
    _publish(upstream, 30)
    mirror.configure("projects: all\nbatch_projects: 100\n")
    mirror.run("sync", check=True)
    message = mirror.git("log", "-1", "--format=%B", "main").strip().splitlines()
    assert message[0] == "sync: 31 projects, 61 files added (31 new)"
    assert message[2].startswith("61 changes: 61 files added, 0 other changes, 0 conflicts; the first 50")
    assert message[-1] == "... and 11 more" and len(message) == 3 + 50 + 1


def test_projects_all_is_checked(mirror: Mirror) -> None:
    mirror.configure("projects: everything\n")
    bad = mirror.run("sync")
    assert bad.returncode == 2 and "projects must be a list of project names or requirements, or 'all'" in bad.stderr
    mirror.configure("projects: all\n")
    planned = mirror.run("plan")
    assert planned.returncode == 2 and "plan does not cover `projects: all`" in planned.stderr
    mirror.configure("projects: [demo-pkg]\nbatch_projects: 5\n")
    assert "batch_projects applies to `projects: all` only" in mirror.run("sync").stderr


def test_batches_are_cut_to_what_fits_in_the_minutes() -> None:
    from gitmirror.sync.full_index import batches

    clock = iter([0.0, 120.0, 120.0, 180.0, 180.0, 240.0, 240.0, 300.0] + [300.0] * 20)
    sizes = [len(batch) for batch in batches([str(n) for n in range(30)], 10, 1.0, lambda: next(clock))]
    # 10 projects took 120 s: 5 fit in a minute; 5 took 60 s: 5 again; then the rest
    assert sizes[:3] == [10, 5, 5] and sum(sizes) == 30


def test_eta_reads_as_a_share_and_the_time_left() -> None:
    from gitmirror.sync.progress import eta

    assert eta(3000, 40000, 600.0, "projects") == "3000 of 40000 projects (7.5 %), 2 h 3 min left"
    assert eta(0, 10, 1.0, "projects") == "0 of 10 projects (0.0 %)"
