"""The local state beside the store (``gitmirror.sync.state``): one SQLite file for the pages, the warnings
shown and the parsed core metadata, its format in the file, and one rule for a file that cannot
serve: one warning line, never read, moved aside by a run that writes, never a failure of the run."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitmirror.model.page import RemoteFile, RemoteProject
from gitmirror.storage.metadata import CoreMetadata, parse
from gitmirror.sync.state import FILE_NAME, FORMAT, METADATA_FILE, WHEEL, LocalState

SHA = "ab" * 32
TIP = b"1" * 40
UPSTREAM = "http://127.0.0.1:1/simple/"
PARSED = parse(
    b"Metadata-Version: 2.1\nName: lib\nVersion: 2.0\nRequires-Dist: deep>=1\n"
    b"Requires-Dist: extra-dep; extra == 'fancy'\nProvides-Extra: fancy\nRequires-Python: >=3.9\n"
)


def page(name: str, etag: str = '"e1"') -> RemoteProject:
    wheel = RemoteFile(
        filename=f"{name}-1.0-py3-none-any.whl", url=f"{UPSTREAM}{name}.whl", version="1.0", sha256=SHA, size=3,
        requires_python=">=3.9", upload_time=None, yanked=False, core_metadata=None, metadata_url=None,
    )  # fmt: skip
    return RemoteProject(name=name, files=[wheel], etag=etag, last_serial="7", skipped={"x.egg": "egg"})


class Run:
    """One run's LocalState and the warning lines it said."""

    def __init__(self, root: Path, writable: bool = True, branch: str = "main") -> None:
        self.lines: list[str] = []
        self.state = LocalState(root, branch, UPSTREAM, writable=writable, warn=self.lines.append)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.close()


def populate(root: Path, names: list[str] | None = None) -> Path:
    with Run(root) as run:
        run.state.load(None)
        run.state.learn(WHEEL, SHA, PARSED)
        fresh = {name: page(name) for name in names or ["demo"]}
        assert run.state.save(TIP, fresh, {"warning: once"}) and run.lines == []
    return run.state.path


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in directory.iterdir() if path.is_file()}


def test_one_file_with_one_table_per_kind_of_record(tmp_path: Path) -> None:
    path = populate(tmp_path)
    assert path == tmp_path / "state" / FILE_NAME and sorted(p.name for p in path.parent.iterdir()) == [FILE_NAME]
    with contextlib.closing(sqlite3.connect(path)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"scopes", "pages", "shown", "metadata"}
        assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT


def test_pages_serve_only_the_tip_they_were_recorded_for_and_shown_warnings_any_tip(tmp_path: Path) -> None:
    populate(tmp_path)
    with Run(tmp_path) as run:
        assert run.state.load(TIP)
        assert run.state.cached("demo") == ('"e1"', page("demo"))  # every field as it was fetched
        assert run.state.cached("other") is None
        assert run.state.shown_warnings() == {"warning: once"}
    with Run(tmp_path) as run:
        assert not run.state.load(b"2" * 40)  # the branch moved: the pages are not trusted
        assert run.state.cached("demo") is None
        assert run.state.shown_warnings() == {"warning: once"}
        assert run.state.save(b"2" * 40, {"new": page("new")}, None)  # None keeps what was shown
    with Run(tmp_path) as run:
        assert run.state.load(b"2" * 40) and run.state.cached("demo") is None and run.state.cached("new")
        assert run.state.shown_warnings() == {"warning: once"}
    with Run(tmp_path, branch="review") as run:  # another branch keeps its own pages and warnings
        assert not run.state.load(b"2" * 40) and run.state.shown_warnings() == set()


def test_what_a_run_learns_is_read_by_the_next(tmp_path: Path) -> None:
    with Run(tmp_path) as first:
        assert first.state.metadata(WHEEL, SHA) is None
        first.state.learn(WHEEL, SHA, PARSED)
        assert first.state.metadata(WHEEL, SHA) == PARSED  # within the run, before any save
        first.state.save(None, {})
    with Run(tmp_path, writable=False, branch="other") as second:  # metadata is the store's, any branch
        found = second.state.metadata(WHEEL, SHA)
        assert isinstance(found, CoreMetadata) and found == PARSED
        assert found.requires_dist == ("deep>=1", "extra-dep; extra == 'fancy'")
        assert second.state.metadata(METADATA_FILE, SHA) is None  # a PEP 658 blob's entry is another key


def test_an_entry_that_does_not_read_as_metadata_is_a_miss(tmp_path: Path) -> None:
    path = populate(tmp_path)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE metadata SET fields = ? WHERE sha256 = ?", ('{"name": "lib", "requires_dist": [1]}', SHA))
        db.execute("INSERT INTO metadata VALUES (?, ?, ?)", (WHEEL, "cd" * 32, '{"unknown": "field"}'))
    with Run(tmp_path) as run:
        assert run.state.metadata(WHEEL, SHA) is None and run.state.metadata(WHEEL, "cd" * 32) is None
        assert run.lines == []


def test_a_file_of_another_format_is_rebuilt_by_a_writer_and_read_as_empty_by_a_reader(tmp_path: Path) -> None:
    path = populate(tmp_path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {FORMAT - 1}")  # as an older gitmirror would have left it
    before = snapshot(path.parent)
    with Run(tmp_path, writable=False) as reader:  # ``plan``: nothing misread, nothing written
        assert not reader.state.load(TIP) and reader.state.shown_warnings() == set()
        assert reader.state.metadata(WHEEL, SHA) is None and reader.lines == []
    assert snapshot(path.parent) == before
    with Run(tmp_path) as writer:  # an upgrade, not damage: rebuilt without a word
        assert not writer.state.load(TIP) and writer.state.metadata(WHEEL, SHA) is None
        assert writer.state.save(TIP, {}, set()) and writer.lines == []
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT
        assert db.execute("SELECT COUNT(*) FROM metadata").fetchone()[0] == 0


def test_the_files_of_earlier_versions_are_rebuilt_into_the_one(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    for name in ("sync-0123456789abcdef.sqlite3", "core-metadata.sqlite3"):
        with contextlib.closing(sqlite3.connect(directory / name)) as db, db:
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    (directory / "sync-0123456789abcdef.sqlite3-journal").write_bytes(b"")
    (directory / "unchanged-0123456789abcdef.json").write_text("{}")  # the warm-sync record is not ours
    populate(tmp_path)
    assert sorted(path.name for path in directory.iterdir()) == [FILE_NAME, "unchanged-0123456789abcdef.json"]


def damage_garbage(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def damage_truncated(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def damage_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()
    (path / "someone's file").write_text("kept")


@pytest.mark.parametrize("damage", [damage_garbage, damage_truncated, damage_directory])
def test_a_damaged_file_is_never_read_and_a_writer_moves_it_aside(tmp_path: Path, damage) -> None:
    path = populate(tmp_path, [f"project-{n}" for n in range(200)])  # pages beyond the first half
    damage(path)
    before = snapshot(path.parent)
    with Run(tmp_path, writable=False) as reader:
        reader.state.load(TIP)
        assert [reader.state.cached(f"project-{n}") for n in range(200)] == [None] * 200
        assert reader.state.metadata(WHEEL, SHA) is None
        assert reader.state.shown_warnings() == set()
        assert len(reader.lines) == 1 and "is damaged" in reader.lines[0] and "not read" in reader.lines[0]
    assert snapshot(path.parent) == before and os.path.lexists(path)  # a reader leaves it for the sync

    with Run(tmp_path) as writer:
        writer.state.load(TIP)
        assert [writer.state.cached(f"project-{n}") for n in range(200)] == [None] * 200
        assert writer.state.shown_warnings() == set()
        assert writer.state.save(TIP, {"demo": page("demo")}, {"warning: again"})
        [line] = writer.lines
        assert line.startswith(f"the local state {path} is damaged (") and "moved aside to" in line
    aside = path.with_name(FILE_NAME + ".damaged")
    assert aside.is_dir() if damage is damage_directory else aside.is_file()
    if damage is damage_directory:
        assert (aside / "someone's file").read_text() == "kept"  # what stood there is moved, not deleted
    with Run(tmp_path) as after:
        assert after.state.load(TIP) and after.state.cached("demo") and after.lines == []
        assert after.state.shown_warnings() == {"warning: again"}


@contextlib.contextmanager
def unwritable(*paths: Path) -> Iterator[None]:
    """Paths this process cannot write: mode bits, or for root (whom they do not stop) the immutable flag."""
    modes = {path: path.stat().st_mode for path in paths}
    root = os.geteuid() == 0
    try:
        for path in paths:
            if root:
                if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
                    pytest.skip("running as root where the immutable flag cannot be set")
            else:
                path.chmod(0o555 if path.is_dir() else 0o444)
        yield
    finally:
        for path in paths:
            if root:
                subprocess.run(["chattr", "-i", str(path)], capture_output=True)
            path.chmod(modes[path])


def test_a_read_only_file_is_read_and_not_saved_with_one_line(tmp_path: Path) -> None:
    path = populate(tmp_path)
    before = snapshot(path.parent)
    with unwritable(path, path.parent), Run(tmp_path) as run:
        assert run.state.load(TIP) and run.state.cached("demo")  # nothing wrong with reading it
        run.state.learn(METADATA_FILE, SHA, PARSED)
        assert not run.state.save(b"2" * 40, {"demo": page("demo", '"e2"')}, set())
        assert not run.state.save(b"2" * 40, {}, set())
        [line] = run.lines
        assert (
            line.startswith(f"the local state {path} was not saved (")
            and "the next sync asks for every page again" in line
        )
    assert snapshot(path.parent) == before


def test_a_damaged_file_that_cannot_be_moved_aside_is_one_line_and_no_failure(tmp_path: Path) -> None:
    path = populate(tmp_path)
    damage_garbage(path)
    with unwritable(path, path.parent), Run(tmp_path) as run:
        run.state.load(TIP)
        assert run.state.cached("demo") is None and run.state.shown_warnings() == set()
        assert not run.state.save(TIP, {"demo": page("demo")}, set())
        [line] = run.lines
        assert "is damaged" in line and "could not be moved aside" in line


def test_a_reader_without_a_file_creates_nothing(tmp_path: Path) -> None:
    with Run(tmp_path, writable=False) as run:
        assert not run.state.load(TIP) and run.state.metadata(WHEEL, SHA) is None and run.lines == []
    assert list(tmp_path.iterdir()) == []
