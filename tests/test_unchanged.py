"""The warm path (``gitmirror.sync.unchanged``): a sync that provably changes nothing costs one request.

Each test first runs a clean full sync, then changes one thing the record covers and checks that
the next ``gitmirror sync`` notices it (full run, right outcome) or, when nothing changed, that it
asked upstream exactly one ``HEAD /simple/`` and left everything as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from gitmirror.sync.unchanged import (
    GONE,
    blob_dir_stats,
    pointer_path,
    serial_of,
    upstream_serial,
)

import crashhook
from conftest import Mirror, isolated_env
from fakeupstream import FakeUpstream, build_wheel


def requests_since(upstream: FakeUpstream, mark: int) -> list[tuple[str, str]]:
    return [(record.method, record.path) for record in upstream.requests[mark:]]


def record_files(mirror: Mirror) -> list[Path]:
    return list((mirror.store / "state").glob("unchanged-*.json"))


def synced(mirror: Mirror, upstream: FakeUpstream) -> tuple[str, int]:
    """A clean full sync; returns the tip and the request-log position after it."""
    result = mirror.run("sync", check=True)
    assert "nothing changed upstream" not in result.stdout
    assert len(record_files(mirror)) == 1
    return mirror.git("rev-parse", "main").strip(), len(upstream.requests)


def assert_warm(mirror: Mirror, upstream: FakeUpstream, tip: str, mark: int) -> None:
    result = mirror.run("sync", check=True)
    assert "nothing to commit" in result.stdout and "unchanged since the last complete sync" in result.stdout
    assert "2 projects checked" in result.stdout
    assert requests_since(upstream, mark) == [("HEAD", "/simple/")]
    assert mirror.git("rev-parse", "main").strip() == tip


def assert_full(mirror: Mirror, upstream: FakeUpstream, mark: int, *args: str) -> str:
    result = mirror.run("sync", *args, check=True)
    assert "unchanged since the last complete sync" not in result.stdout
    paths = {path for _, path in requests_since(upstream, mark)}
    assert {"/simple/demo-pkg/", "/simple/other-lib/"} <= paths  # every selected page was asked for
    return result.stdout


def test_nothing_changed_costs_one_head_request(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    tip, mark = synced(mirror, upstream)
    record = json.loads(record_files(mirror)[0].read_text())
    assert record["serial"] == str(upstream.serial) and record["projects"] == 2
    assert record["config_file"] == str((mirror.root / "mirror.yaml").resolve())
    pointers = list((Path(isolated_env()["XDG_CACHE_HOME"]) / "gitmirror" / "warm").iterdir())
    assert str(record_files(mirror)[0].resolve()) in [pointer.read_text() for pointer in pointers]
    served = {
        entry["sha256"]
        for line in mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl").splitlines()[1:]
        if (entry := json.loads(line))
    }
    assert {digest[:4] for digest in served} <= {record["blob_dirs"][at : at + 4] for at in range(0, 400, 4)}
    assert "demo-pkg" in Path(f"{record_files(mirror)[0]}.names").read_text().split()
    assert_warm(mirror, upstream, tip, mark)
    assert_warm(mirror, upstream, tip, len(upstream.requests))  # and again: the record is kept
    quiet = mirror.run("sync", "--quiet", check=True)
    assert quiet.stdout == "" and quiet.stderr == ""
    # --json always runs in full (its counters describe a real run)
    mark = len(upstream.requests)
    summary = json.loads(mirror.run("sync", "--json", check=True).stdout)
    assert summary["pages_not_modified"] == 2 and summary["commit"] is None
    assert ("HEAD", "/simple/") in requests_since(upstream, mark)


def test_upstream_change_moves_the_serial_and_is_synced(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    tip, mark = synced(mirror, upstream)
    upstream.add("demo-pkg", build_wheel("demo-pkg", "3.0"))
    assert "1 files added" in assert_full(mirror, upstream, mark)
    assert "demo_pkg-3.0-py3-none-any.whl" in mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl")
    assert mirror.git("rev-parse", "main").strip() != tip
    tip, mark = mirror.git("rev-parse", "main").strip(), len(upstream.requests)
    assert_warm(mirror, upstream, tip, mark)  # the new run left a new record
    upstream.yank("demo-pkg", "demo_pkg-3.0-py3-none-any.whl", "broken")
    assert_full(mirror, upstream, len(upstream.requests))
    assert '"yanked":"broken"' in mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl")


def test_a_missing_blob_is_healed_by_a_full_run(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    tip, mark = synced(mirror, upstream)
    wheel = next(a for a in sample["demo-pkg"] if a.filename.endswith(".whl"))
    blob = mirror.store / "blobs" / wheel.sha256[:2] / wheel.sha256[2:4] / wheel.sha256
    os.chmod(blob, 0o644)
    blob.unlink()
    assert_full(mirror, upstream, mark)
    assert blob.read_bytes() == wheel.data
    assert mirror.git("rev-parse", "main").strip() == tip


def test_local_decisions_and_config_edits_take_the_full_path(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    _, mark = synced(mirror, upstream)
    mirror.run("yank", "demo-pkg", "1.0", "--reason", "local decision", check=True)  # the ref moves
    assert_full(mirror, upstream, mark)
    assert_warm(mirror, upstream, mirror.git("rev-parse", "main").strip(), len(upstream.requests))

    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\nconcurrency: 3\n")  # any setting counts
    assert_full(mirror, upstream, len(upstream.requests))

    requirements = mirror.root / "requirements.txt"
    requirements.write_text("demo-pkg\n")
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\nrequirements: [requirements.txt]\n")
    assert_full(mirror, upstream, len(upstream.requests))
    assert_warm(mirror, upstream, mirror.git("rev-parse", "main").strip(), len(upstream.requests))
    requirements.write_text("demo-pkg\nother-lib\n")  # an input file's bytes count too
    assert_full(mirror, upstream, len(upstream.requests))


def test_no_record_after_a_failed_run_or_a_partial_one(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    upstream.fault("/simple/other-lib/", "status", code=500, retry_after=0, times=-1)
    assert mirror.run("sync").returncode == 1
    assert record_files(mirror) == []
    upstream.clear_faults()
    _, mark = synced(mirror, upstream)
    mirror.run("sync", "demo-pkg", check=True)  # a run of part of the configuration forgets the record
    assert record_files(mirror) == []
    assert_full(mirror, upstream, len(upstream.requests))


def test_a_crashed_run_leaves_no_record(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    synced(mirror, upstream)
    upstream.add("demo-pkg", build_wheel("demo-pkg", "3.0"))
    crashed = mirror.run("sync", env=crashhook.variables(GITMIRROR_CRASH_AT="sync.downloads-done"))
    assert crashed.returncode != 0 and record_files(mirror) == []
    mark = len(upstream.requests)
    assert_full(mirror, upstream, mark)
    assert "demo_pkg-3.0-py3-none-any.whl" in mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl")


def test_without_a_serial_header_every_run_is_full(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    upstream.send_serial = False
    mirror.run("sync", check=True)
    assert record_files(mirror) == []
    assert_full(mirror, upstream, len(upstream.requests))


def test_every_spelling_of_a_plain_sync_takes_the_warm_path(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    """The warm check is the first step of the ``sync`` command, whatever the spelling of its options;
    projects, ``--json`` and ``--full`` ask for a real run."""
    tip, mark = synced(mirror, upstream)
    for args in (("--config", "mirror.yaml"), ("-c", "mirror.yaml"), ("--config=mirror.yaml",)):
        warm = mirror.run("sync", *args, check=True)
        assert "unchanged since the last complete sync" in warm.stdout
    for args in (("-q", "-c", "mirror.yaml"), ("--config", "mirror.yaml", "--quiet")):
        assert mirror.run("sync", *args, check=True).stdout == ""
    assert requests_since(upstream, mark) == [("HEAD", "/simple/")] * 5
    assert mirror.git("rev-parse", "main").strip() == tip
    assert_full(mirror, upstream, len(upstream.requests), "--full")
    assert_warm(mirror, upstream, tip, len(upstream.requests))  # a full run that changed nothing keeps it


def test_review_mode_watches_both_branches(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    """In review mode a sync commits to ``incoming`` after catching up with ``main``: both refs count."""
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\nreview:\n  enabled: true\n  cooldown: 1s\n")
    mirror.run("sync", check=True)
    upstream.add("demo-pkg", build_wheel("demo-pkg", "3.0"))
    mirror.run("sync", check=True)
    incoming = mirror.git("rev-parse", "incoming").strip()
    mark = len(upstream.requests)
    result = mirror.run("sync", check=True)
    assert "unchanged since the last complete sync" in result.stdout
    assert requests_since(upstream, mark) == [("HEAD", "/simple/")]
    assert mirror.git("rev-parse", "incoming").strip() == incoming
    mirror.run("approve", "--all", check=True)  # main moves: the next sync must catch incoming up
    assert_full(mirror, upstream, len(upstream.requests))
    assert "demo_pkg-3.0-py3-none-any.whl" in mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl")
    assert_warm(mirror, upstream, mirror.git("rev-parse", "main").strip(), len(upstream.requests))


def test_changes_to_other_projects_are_read_from_the_changelog(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    """A busy index moves its serial between most runs: its changelog says whether any of ours moved."""
    tip, mark = synced(mirror, upstream)
    upstream.add("unrelated", build_wheel("unrelated", "1.0"))
    upstream.add("Another.Project", build_wheel("another-project", "1.0"))
    before = json.loads(record_files(mirror)[0].read_text())["serial"]
    result = mirror.run("sync", check=True)
    assert "nothing to commit" in result.stdout
    assert f"upstream serial {before} -> {upstream.serial}: its changelog names none of these projects" in result.stdout
    assert requests_since(upstream, mark) == [("HEAD", "/simple/"), ("POST", "/pypi")]
    record = json.loads(record_files(mirror)[0].read_text())
    assert record["serial"] == str(upstream.serial)  # moved on: the next run asks from there
    assert_warm(mirror, upstream, tip, len(upstream.requests))

    upstream.add("other_lib", build_wheel("other_lib", "0.3"))  # one of ours: the full run
    assert "1 files added" in assert_full(mirror, upstream, len(upstream.requests))


def test_without_a_changelog_a_moved_serial_means_a_full_run(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    _, mark = synced(mirror, upstream)
    upstream.xmlrpc = False
    upstream.add("unrelated", build_wheel("unrelated", "1.0"))
    assert_full(mirror, upstream, mark)
    assert ("POST", "/pypi") in requests_since(upstream, mark)


def test_a_damaged_record_or_pointer_only_costs_a_full_run(
    mirror: Mirror, sample, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, mark = synced(mirror, upstream)
    record_files(mirror)[0].write_text('{"serial": "1", "blobs": [')  # cut short
    assert_full(mirror, upstream, mark)
    monkeypatch.setenv("XDG_CACHE_HOME", isolated_env()["XDG_CACHE_HOME"])
    pointer = pointer_path((mirror.root / "mirror.yaml").resolve())
    assert pointer.is_file()
    pointer.write_bytes(b"\xff\xfe not a path \x00")
    assert_full(mirror, upstream, len(upstream.requests))


def imported(stderr: str) -> set[str]:
    """Module names from ``PYTHONPROFILEIMPORTTIME`` lines (every process of the run)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_a_sync_imports_what_it_uses_and_says_failures_in_one_line(
    mirror: Mirror, sample, upstream: FakeUpstream
) -> None:
    """A sync imports no httpx (its transport is httpcore's pools); a bad configuration is one line
    and exit code 2, like every command's."""
    profiled = {"PYTHONPROFILEIMPORTTIME": "1"}
    plain = mirror.run("sync", "--config", "mirror.yaml", check=True, env=profiled)
    assert "2 projects checked, 2 changed" in plain.stdout
    assert "gitmirror.sync.sync" in imported(plain.stderr)
    assert "httpcore" in imported(plain.stderr) and "httpx" not in imported(plain.stderr)
    (mirror.root / "broken.yaml").write_text("upstream: [\n")
    for args in (("--config", "broken.yaml"), ("--json", "--config", "broken.yaml"), ("demo-pkg", "-c", "broken.yaml")):
        failed = mirror.run("sync", *args)
        assert failed.returncode == 2
        assert failed.stderr.strip() == "gitmirror: error: broken.yaml: not valid YAML at line 2"
        assert failed.stdout == ""


@pytest.mark.parametrize(
    ("status", "headers", "serial"),
    [
        (200, {"X-PyPI-Last-Serial": "42", "Content-Type": "text/html"}, "42"),
        (200, {"x-pypi-last-serial": " 7 "}, "7"),  # names are case-insensitive
        (200, {"Content-Type": "text/html"}, None),
        (301, {"X-PyPI-Last-Serial": "42", "Location": "/elsewhere/"}, None),  # not followed
        (200, {"X-PyPI-Last-Serial": "42; drop table"}, None),
    ],
)
def test_the_serial_is_read_from_a_plain_200_answer_only(status: int, headers: dict, serial: str | None) -> None:
    assert serial_of(status, httpx.Headers(headers)) == serial


def test_the_warm_check_is_one_head_request(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    """Through the transport every request uses; nothing else is asked and nothing moves."""
    tip, mark = synced(mirror, upstream)
    warm = mirror.run("sync", check=True)
    assert "unchanged since the last complete sync" in warm.stdout
    assert requests_since(upstream, mark) == [("HEAD", "/simple/")]
    assert mirror.git("rev-parse", "main").strip() == tip


def test_the_warm_check_sends_nothing_it_cannot_send_as_one_request(upstream: FakeUpstream) -> None:
    """An odd upstream URL is one well-formed request (its odd characters escaped) or none, never two."""
    assert upstream_serial(upstream.url, 5) == str(upstream.serial)
    mark = len(upstream.requests)
    for odd in ("sim ple/", "simple/\r\nX-Injected: 1", "simple/\x00"):
        assert upstream_serial(upstream.url.replace("simple/", odd), 5) is None
    sent = upstream.requests[mark:]
    assert len(sent) <= 3 and all(record.method == "HEAD" and " " not in record.path for record in sent)
    assert not any("x-injected" in {name.lower() for name in record.headers} for record in sent)


def test_the_store_directories_are_stated_in_order_and_a_lost_blob_shows(tmp_path: Path) -> None:
    """One state per directory asked, in order: a blob removed or a directory gone changes its own entry only."""
    prefixes = [f"{number * 997 % 0x10000:04x}" for number in range(200)]
    for prefix in prefixes:
        leaf = tmp_path / "blobs" / prefix[:2] / prefix[2:]
        leaf.mkdir(parents=True, exist_ok=True)
        (leaf / (prefix + "0" * 60)).write_bytes(b"")
        os.utime(leaf, ns=(10**18, 10**18))  # a removal within the same clock tick still shows
    dirs = "".join(sorted(prefixes))
    before = blob_dir_stats(str(tmp_path), dirs)
    expected = []
    for at in range(0, len(dirs), 4):
        status = os.stat(tmp_path / "blobs" / dirs[at : at + 2] / dirs[at + 2 : at + 4])
        expected.append(b"%d %d\n" % (status.st_ino, status.st_mtime_ns))
    assert before == expected
    lost, gone = dirs[400:404], dirs[404:408]
    (tmp_path / "blobs" / lost[:2] / lost[2:] / (lost + "0" * 60)).unlink()
    (tmp_path / "blobs" / gone[:2] / gone[2:] / (gone + "0" * 60)).unlink()
    (tmp_path / "blobs" / gone[:2] / gone[2:]).rmdir()
    after = blob_dir_stats(str(tmp_path), dirs)
    assert after is not None and after[102:] == before[102:] and after[:100] == before[:100]
    assert after[100] != before[100] and after[101] == GONE
    assert blob_dir_stats(str(tmp_path / "nothing"), dirs) is None
