"""The one immutability rule, as a pure function: every allowed transition passes, every other fails."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gitmirror.model.manifest import FileEntry, ProjectManifest, Tombstone, manifest_path
from gitmirror.model.policy import check, check_change

PATH = manifest_path("demo-pkg")
WHEEL = FileEntry(
    filename="demo_pkg-1.0-py3-none-any.whl",
    version="1.0",
    sha256="a" * 64,
    size=100,
    requires_python=">=3.8",
    upload_time="2026-01-01T00:00:00Z",
    core_metadata="b" * 64,
    first_seen="2026-01-02T00:00:00Z",
)
SDIST = FileEntry(
    filename="demo_pkg-1.0.tar.gz", version="1.0", sha256="c" * 64, size=50, first_seen="2026-01-02T00:00:00Z"
)
BASE = ProjectManifest(name="demo-pkg").with_file(WHEEL).with_file(SDIST)


def changed(**fields: object) -> ProjectManifest:
    return BASE.with_file(replace(WHEEL, **fields))


ALLOWED = {
    "new project": (None, BASE),
    "new file": (BASE, BASE.with_file(replace(SDIST, filename="demo_pkg-1.1.tar.gz", version="1.1"))),
    "yank with reason": (BASE, changed(yanked="broken")),
    "yank without reason": (BASE, changed(yanked=True)),
    "unyank": (changed(yanked="broken"), BASE),
    "status": (BASE, replace(BASE, status="quarantined", status_reason="malware")),
    "status back to active": (replace(BASE, status="archived"), BASE),
    "upstream-removed file": (BASE, changed(upstream_removed="2026-02-01T00:00:00Z")),
    "upstream-removed project": (BASE, replace(BASE, upstream_removed="2026-02-01T00:00:00Z")),
    "back upstream": (changed(upstream_removed="2026-02-01T00:00:00Z"), BASE),
    "tombstone": (BASE, changed(tombstone=Tombstone("malware", "2026-02-01T00:00:00Z"))),
    "backfill core metadata": (
        BASE.with_file(replace(SDIST, core_metadata=None)),
        BASE.with_file(replace(SDIST, core_metadata="d" * 64)),
    ),
    "no change": (BASE, BASE),
}

VIOLATIONS = {
    "sha256": (changed(sha256="e" * 64), f"sha256 of {WHEEL.filename} changed from {'a' * 64} to {'e' * 64}"),
    "size": (changed(size=101), f"size of {WHEEL.filename} changed from 100 to 101"),
    "version": (changed(version="1.0.post1"), f"version of {WHEEL.filename} changed"),
    "requires-python": (changed(requires_python=">=3.12"), "requires-python of"),
    "first-seen": (changed(first_seen="2027-01-01T00:00:00Z"), "first-seen of"),
    "core-metadata rewritten": (changed(core_metadata="f" * 64), "core-metadata of"),
    "upload-time rewritten": (changed(upload_time="2027-01-01T00:00:00Z"), "upload-time of"),
    "removed entry": (ProjectManifest(name="demo-pkg").with_file(SDIST), f"entry for {WHEEL.filename} removed"),
    "tombstone without reason": (changed(tombstone=Tombstone("  ", "2026-02-01T00:00:00Z")), "has no reason"),
    "removed project": (None, "project demo-pkg removed"),
}


@pytest.mark.parametrize("name", ALLOWED)
def test_allowed_transitions(name: str) -> None:
    old, new = ALLOWED[name]
    assert check(old, new, PATH) == []
    assert check_change(PATH, old.dumps() if old else None, new.dumps()) == []


@pytest.mark.parametrize("name", VIOLATIONS)
def test_violations_are_named(name: str) -> None:
    new, expected = VIOLATIONS[name]
    violations = check(BASE, new, PATH)
    assert len(violations) == 1 and expected in str(violations[0])
    assert str(violations[0]).startswith(f"{PATH}: ")
    assert check_change(PATH, BASE.dumps(), new.dumps() if new else None) == violations


def test_tombstones_are_final() -> None:
    stone = changed(tombstone=Tombstone("malware", "2026-02-01T00:00:00Z"))
    assert "was un-tombstoned" in str(check(stone, BASE, PATH)[0])
    rewritten = changed(tombstone=Tombstone("something else", "2026-02-01T00:00:00Z"))
    assert "tombstone of" in str(check(stone, rewritten, PATH)[0])


def test_paths_and_raw_bytes() -> None:
    assert "not a manifest path" in str(check_change("projects/de/mo/other.jsonl", None, BASE.dumps())[0])
    assert "path says otherwise" in str(check_change(manifest_path("other"), None, BASE.dumps())[0])
    assert "malformed manifest" in str(check_change(PATH, BASE.dumps(), b'{"gitmirror-manifest":1}\nnope\n')[0])
    assert check_change("README.md", b"a", None) == []  # not served state


def test_audit_logs_only_grow() -> None:
    path = "conflicts/demo-pkg.jsonl"
    assert check_change(path, None, b"a\n") == []
    assert check_change(path, b"a\n", b"a\nb\n") == []
    assert check_change(path, b"a\nc\n", b"a\nb\nc\n") == []  # a merge may interleave
    assert "audit log rewritten" in str(check_change(path, b"a\nb\n", b"a\n")[0])
    assert "audit log rewritten" in str(check_change("marks/demo-pkg.jsonl", b"a\n", b"x\n")[0])
    assert "audit log removed" in str(check_change(path, b"a\n", None)[0])


mutable = st.fixed_dictionaries(
    {
        "yanked": st.one_of(st.booleans(), st.text(min_size=1, max_size=20)),
        "upstream_removed": st.one_of(st.none(), st.just("2026-03-01T00:00:00Z")),
    }
)
frozen = st.sampled_from([("sha256", "9" * 64), ("size", 7), ("version", "9.9"), ("first_seen", "")])


@given(mutable, frozen)
def test_mutable_fields_never_violate_and_frozen_ones_always_do(marks: dict, rewrite: tuple[str, object]) -> None:
    marked = changed(**marks)
    assert check(BASE, marked, PATH) == []
    field, value = rewrite
    assert check(marked, BASE.with_file(replace(marked.files[WHEEL.filename], **{field: value})), PATH)
