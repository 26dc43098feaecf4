"""The pure core of sync and review, in process: how upstream's page folds into a recorded
manifest (``gitmirror.sync.merge``) and the review's diff and rendering helpers."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from gitmirror.model.decisions import LocalDecisions
from gitmirror.model.manifest import ProjectManifest
from gitmirror.model.page import RemoteFile, RemoteProject
from gitmirror.model.policy import check
from gitmirror.review.review import dependency_changes, file_kind
from gitmirror.review.review_report import DependencyChanges, Report, format_duration, size_text, to_markdown
from gitmirror.sync.config import parse_selection
from gitmirror.sync.merge import (
    EXIT_CONFLICTS,
    EXIT_ERRORS,
    EXIT_OK,
    Conflict,
    ProjectOutcome,
    SyncResult,
    commit_message,
    merge,
    new_entry,
    recorded_conflicts,
    removed_upstream,
)

BEFORE = "2026-01-01T00:00:00Z"
NOW = "2026-02-01T00:00:00Z"
SDIST = "demo_pkg-1.0.tar.gz"
WHEEL = "demo_pkg-1.0-py3-none-any.whl"
EVERYTHING = parse_selection("demo-pkg")


def remote_file(filename: str, sha256: str, yanked: bool | str = False) -> RemoteFile:
    return RemoteFile(filename, f"http://127.0.0.1/{filename}", "1.0", sha256, 10, None, None, yanked, None, None)


def recorded(*files: RemoteFile) -> ProjectManifest:
    """What an earlier sync recorded of ``files``."""
    return ProjectManifest("demo-pkg").with_files(new_entry(f, BEFORE, False, 10) for f in files)


def page(*files: RemoteFile, status: str = "active") -> RemoteProject:
    return RemoteProject(name="demo-pkg", files=list(files), status=status)


def assert_allowed(old: ProjectManifest | None, new: ProjectManifest) -> None:
    """Every manifest ``merge`` returns passes the push policy the hook enforces."""
    assert check(old, new, "projects/demo-pkg.json") == []


def test_a_new_file_is_wanted_and_not_recorded_before_its_blob_is_stored() -> None:
    sdist = remote_file(SDIST, "a" * 64)
    manifest, wanted, outcome = merge(None, page(sdist), EVERYTHING, NOW)
    assert wanted == [sdist] and manifest.files == {}
    assert outcome.old is None and not outcome.conflicts and not outcome.errors
    entry = new_entry(sdist, NOW, has_metadata=False, size=12)
    assert (entry.first_seen, entry.size, entry.sha256, entry.core_metadata) == (NOW, 12, "a" * 64, None)


def test_a_selection_that_does_not_want_the_file_leaves_it() -> None:
    newer = RemoteFile("demo_pkg-2.0.tar.gz", "http://127.0.0.1/x", "2.0", "b" * 64, 1, None, None, False, None, None)
    _manifest, wanted, _outcome = merge(None, page(newer), parse_selection("demo-pkg<2"), NOW)
    assert wanted == []


def test_other_bytes_upstream_are_a_conflict_and_the_recorded_file_is_kept() -> None:
    old = recorded(remote_file(SDIST, "a" * 64))
    manifest, wanted, outcome = merge(old, page(remote_file(SDIST, "b" * 64)), EVERYTHING, NOW)
    assert wanted == [] and manifest == old and outcome.changes == []
    (conflict,) = outcome.conflicts
    assert (conflict.recorded_sha256, conflict.upstream_sha256, conflict.detected) == ("a" * 64, "b" * 64, NOW)
    assert conflict.text == f"demo-pkg: {SDIST} is {'b' * 64} upstream, the mirror keeps {'a' * 64}"
    assert recorded_conflicts(f'{{"filename":"{SDIST}","upstream-sha256":"{"b" * 64}"}}\n'.encode()) == {
        (SDIST, "b" * 64)
    }
    assert SyncResult([outcome]).exit_code == EXIT_CONFLICTS


def test_a_file_gone_upstream_is_kept_and_marked_once() -> None:
    sdist, wheel = remote_file(SDIST, "a" * 64), remote_file(WHEEL, "c" * 64)
    old = recorded(sdist, wheel)
    manifest, wanted, outcome = merge(old, page(sdist), EVERYTHING, NOW)
    assert wanted == [] and set(manifest.files) == {SDIST, WHEEL}
    assert manifest.files[WHEEL].upstream_removed == NOW and manifest.files[SDIST].upstream_removed is None
    assert outcome.changes == [f"{WHEEL} removed upstream (kept)"]
    assert_allowed(old, manifest)
    again, _wanted, outcome = merge(manifest, page(sdist), EVERYTHING, "2026-03-01T00:00:00Z")
    assert again == manifest and outcome.changes == []  # the first date stays
    back, _wanted, outcome = merge(manifest, page(sdist, wheel), EVERYTHING, "2026-03-01T00:00:00Z")
    assert back.files[WHEEL].upstream_removed is None and outcome.changes == [f"{WHEEL} back upstream"]


def test_a_whole_project_gone_upstream_keeps_every_file() -> None:
    old = recorded(remote_file(SDIST, "a" * 64))
    manifest, outcome = removed_upstream(old, NOW)
    assert manifest.upstream_removed == NOW and manifest.files[SDIST].upstream_removed == NOW
    assert outcome.changes == ["project removed upstream (kept)"]
    assert_allowed(old, manifest)
    assert removed_upstream(manifest, "2026-03-01T00:00:00Z")[0] == manifest
    returned, _wanted, outcome = merge(manifest, page(remote_file(SDIST, "a" * 64)), EVERYTHING, NOW)
    assert returned.upstream_removed is None and "back upstream" in outcome.changes


def test_upstream_yanks_and_unyanks_are_followed() -> None:
    old = recorded(remote_file(SDIST, "a" * 64))
    yanked, _wanted, outcome = merge(old, page(remote_file(SDIST, "a" * 64, "broken")), EVERYTHING, NOW)
    assert yanked.files[SDIST].yanked == "broken" and outcome.changes == [f"{SDIST} yanked (broken)"]
    assert_allowed(old, yanked)
    unyanked, _wanted, outcome = merge(yanked, page(remote_file(SDIST, "a" * 64)), EVERYTHING, NOW)
    assert unyanked.files[SDIST].yanked is False and outcome.changes == [f"{SDIST} unyanked"]


def test_a_local_yank_and_status_win_over_upstream() -> None:
    old = recorded(remote_file(SDIST, "a" * 64))
    local = LocalDecisions(yanked={SDIST: "ours"}, status=("archived", "kept for audits"))
    manifest, _wanted, outcome = merge(old, page(remote_file(SDIST, "a" * 64)), EVERYTHING, NOW, local)
    assert manifest.files[SDIST].yanked == "ours"
    assert (manifest.status, manifest.status_reason) == ("archived", "kept for audits")
    assert outcome.changes == ["status archived (kept for audits)", f"{SDIST} yanked (ours)"]
    steady, _wanted, outcome = merge(manifest, page(remote_file(SDIST, "a" * 64)), EVERYTHING, NOW, local)
    assert steady == manifest and outcome.changes == []


def test_upstream_status_and_metadata_backfill_are_recorded() -> None:
    old = recorded(remote_file(SDIST, "a" * 64))
    with_metadata = replace(remote_file(SDIST, "a" * 64), core_metadata="d" * 64, upload_time=BEFORE)
    manifest, _wanted, outcome = merge(old, page(with_metadata, status="deprecated"), EVERYTHING, NOW)
    assert manifest.status == "deprecated" and manifest.files[SDIST].core_metadata == "d" * 64
    assert outcome.changes == ["status deprecated", f"{SDIST} metadata backfilled"]


def test_legacy_files_and_rejected_entries_are_carried_into_the_outcome() -> None:
    remote = RemoteProject("demo-pkg", files=[], rejected=["bad entry"], skipped={"a.egg": ".egg", "b.exe": ".exe"})
    _manifest, _wanted, outcome = merge(None, remote, EVERYTHING, NOW)
    assert outcome.errors == ["bad entry"]
    assert outcome.skipped_note == "demo-pkg: skipped 2 legacy files (.egg 1, .exe 1)"
    assert SyncResult([outcome]).exit_code == EXIT_ERRORS


def test_the_commit_message_lists_every_change() -> None:
    added = ProjectOutcome(name="demo-pkg", added=[WHEEL, SDIST])
    changed = ProjectOutcome(name="other-lib", old=ProjectManifest("other-lib"), changes=["status deprecated"])
    quiet = ProjectOutcome(name="quiet", old=ProjectManifest("quiet"))
    message = commit_message([quiet, changed, added])
    assert message == (
        "sync: 2 projects, 2 files added (1 new)\n\n"
        f"demo-pkg: + {WHEEL}\ndemo-pkg: + {SDIST}\nother-lib: status deprecated\n"
    )
    result = SyncResult([added, changed, quiet])
    assert (
        result.exit_code == EXIT_OK
        and result.summary() == "3 projects checked, 2 changed, 2 files added; nothing to commit"
    )


def test_the_commit_message_of_a_large_sync_counts_and_shows_the_first_changes() -> None:
    outcomes = [
        ProjectOutcome(name=f"p{number:05d}", added=[f"p{number:05d}-{r}.tar.gz" for r in range(10)])
        for number in range(5_000)
    ]
    conflict = Conflict("p04999", "p04999-1.tar.gz", "a" * 64, 1, "b" * 64, 1, NOW)
    outcomes[-1].conflicts.append(conflict)
    message = commit_message(outcomes)
    lines = message.splitlines()
    assert lines[0] == "sync: 5000 projects, 50000 files added (5000 new)"
    assert lines[2].startswith("50001 changes: 50000 files added, 0 other changes, 1 conflict; the first 50")
    assert lines[3] == "p04999: CONFLICT p04999-1.tar.gz"  # conflicts first, whatever their name
    assert lines[4] == "p00000: + p00000-0.tar.gz" and lines[-1] == "... and 49951 more"
    assert len(lines) == 3 + 50 + 1


def test_dependency_changes_key_by_project_and_marker() -> None:
    changes = dependency_changes(
        ["requests>=2", "six; python_version < '3'", "idna"],
        ["Requests>=2.31", "six", "idna", "attrs"],
    )
    assert changes.added == ["six", "attrs"]
    assert changes.removed == ['six; python_version < "3"']  # another marker: another requirement
    assert changes.repinned == [("requests>=2", "Requests>=2.31")]  # same project by its normalized name
    assert not dependency_changes(["a>=1"], ["a>=1"]) and not DependencyChanges()


def test_review_helpers_name_files_sizes_and_durations() -> None:
    assert file_kind("demo_pkg-1.0-cp311-cp311-manylinux_2_17_x86_64.whl") == ("cp311", "manylinux_2_17_x86_64")
    assert file_kind(SDIST) == ("source", "any")
    assert [
        format_duration(timedelta(days=7)),
        format_duration(timedelta(hours=36)),
        format_duration(timedelta(seconds=5)),
    ] == [
        "7d",
        "36h",
        "5s",
    ]
    assert [size_text(2_500_000), size_text(1_500), size_text(800)] == ["2.5 MB", "1.5 kB", "800 B"]


def test_an_empty_report_renders_as_nothing_pending() -> None:
    report = Report("main", "incoming", None, "0" * 40, NOW, "7d", [], {})
    markdown = to_markdown(report)
    assert markdown.startswith("# gitmirror review: `main..incoming`\n")
    assert "0 projects with pending changes, 0 new releases, 0 new files, 0 flags (`empty..000000000000`" in markdown
    assert markdown.endswith("Nothing is pending: everything on the review branch is already served.\n")
    assert '"head-commit"' not in report.to_json() and '"head_commit": "' in report.to_json()
