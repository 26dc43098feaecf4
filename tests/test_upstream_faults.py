"""Upstream faults: every kind the fake upstream can inject, against the real ``gitmirror sync``.

For each fault: transient ones are retried (and succeed when the fault clears), permanent ones give
a clear per-project or per-file error, a summary and exit 1; nothing wrong is committed or stored,
no temporary file survives, and the other projects still sync.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from gitmirror.upstream.transport import retry_after

from conftest import GITMIRROR, Mirror, isolated_env
from fakeupstream import FakeUpstream

DEMO_PAGE = "/simple/demo-pkg/"
WHEEL = "demo_pkg-1.0-py3-none-any.whl"


def manifest_files(mirror: Mirror, project: str) -> set[str]:
    path = {"demo-pkg": "projects/de/mo/demo-pkg.jsonl", "other-lib": "projects/ot/he/other-lib.jsonl"}[project]
    listed = mirror.git("ls-tree", "-r", "--name-only", "main") if (mirror.repo / "refs/heads/main").exists() else ""
    if path not in listed.split():
        return set()
    return {json.loads(line)["filename"] for line in mirror.git("show", f"main:{path}").splitlines()[1:]}


def stored(mirror: Mirror) -> set[str]:
    return {path.name for path in (mirror.store / "blobs").glob("*/*/*")}


def assert_no_leftovers(mirror: Mirror) -> None:
    assert not list((mirror.store / "tmp").iterdir()), "a temporary file survived the run"


def assert_other_lib_synced(mirror: Mirror) -> None:
    assert manifest_files(mirror, "other-lib") == {"other_lib-0.1-py3-none-any.whl", "other_lib-0.2-py3-none-any.whl"}


def assert_file_not_mirrored(mirror: Mirror, upstream: FakeUpstream, filename: str) -> None:
    assert filename not in manifest_files(mirror, "demo-pkg")
    assert upstream.artifact("demo-pkg", filename).sha256 not in stored(mirror)
    assert_no_leftovers(mirror)


# -- transient faults that clear: retried, then the run succeeds ------------------------------


@pytest.mark.parametrize(
    ("match", "kind", "params"),
    [
        (DEMO_PAGE, "status", {"code": 429, "retry_after": 1}),
        (DEMO_PAGE, "status", {"code": 500}),
        (DEMO_PAGE, "status", {"code": 503, "retry_after": 0}),
        (WHEEL, "status", {"code": 503, "retry_after": 1}),
        (WHEEL, "truncate", {}),
        (WHEEL, "reset", {}),
        (DEMO_PAGE, "reset", {}),
        (WHEEL, "delay", {"seconds": 2.5}),
    ],
    ids=["page-429", "page-500", "page-503", "file-503", "file-truncate", "file-reset", "page-reset", "file-timeout"],
)
def test_transient_fault_is_retried_and_the_run_succeeds(
    mirror: Mirror, sample, upstream: FakeUpstream, match: str, kind: str, params: dict
) -> None:
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\ntimeout: 1\n")
    fault = upstream.fault(match, kind, times=1, **params)
    result = mirror.run("sync")
    assert result.returncode == 0, result.stderr
    assert fault.exhausted
    # the fault, then the retry (a delayed answer is logged when it is finally sent, after the retry)
    deadline = time.monotonic() + 10
    while upstream.count(match, method="GET") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.count(match, method="GET") >= 2
    assert len(manifest_files(mirror, "demo-pkg")) == 6
    assert_other_lib_synced(mirror)
    assert_no_leftovers(mirror)


# -- faults that persist: clear error, exit 1, nothing wrong kept, other projects fine ----------


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("status", {"code": 503, "retry_after": 0}, "HTTP 503 (after 2 attempts)"),
        ("truncate", {}, "after 2 attempts"),
        ("reset", {}, "after 2 attempts"),
        ("delay", {"seconds": 2.5}, "timed out (after 2 attempts)"),
        ("longer", {}, "rejected, body longer than the announced"),
        ("redirect_loop", {}, "too many redirects"),
    ],
    ids=["503", "truncate", "reset", "timeout", "longer", "redirect-loop"],
)
def test_persistent_file_fault_fails_that_file_only(
    mirror: Mirror, sample, upstream: FakeUpstream, kind: str, params: dict, message: str
) -> None:
    mirror.configure("projects:\n  - demo-pkg\n  - other_lib\ntimeout: 1\n")
    upstream.fault(WHEEL, kind, times=-1, **params)
    result = mirror.run("sync")
    assert result.returncode == 1, result.stderr
    assert f"{WHEEL}: " in result.stderr and message in result.stderr
    assert "errors" in result.stdout  # the summary counts them (the wheel and its .metadata URL)
    assert_file_not_mirrored(mirror, upstream, WHEEL)
    assert len(manifest_files(mirror, "demo-pkg")) == 5  # the rest of the project is mirrored
    assert_other_lib_synced(mirror)


def test_body_longer_than_content_length_is_cut_at_the_announced_length(
    mirror: Mirror, sample, upstream: FakeUpstream
) -> None:
    # The server appends bytes beyond Content-Length: HTTP framing ends the body, the hash proves it whole.
    upstream.fault(WHEEL, "longer", times=-1, match_content_length=False)
    result = mirror.run("sync")
    assert result.returncode == 0, result.stderr
    assert upstream.artifact("demo-pkg", WHEEL).sha256 in stored(mirror)


def test_hash_mismatch_is_not_retried_and_other_projects_sync(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    upstream.fault(WHEEL, "wrong_hash", times=-1)
    result = mirror.run("sync")
    assert result.returncode == 1
    assert f"{WHEEL}: rejected, sha256 mismatch" in result.stderr
    wheel_gets = [record for record in upstream.requests if record.path.endswith(f"/files/demo-pkg/{WHEEL}")]
    assert len(wheel_gets) == 1  # a lying page is not fixed by asking for the file again
    assert_file_not_mirrored(mirror, upstream, WHEEL)
    assert_other_lib_synced(mirror)


@pytest.mark.parametrize(
    ("kind", "params", "html", "message"),
    [
        ("status", {"code": 503, "retry_after": 0}, False, "HTTP 503 (after 2 attempts)"),
        ("invalid_page", {}, False, "invalid project page"),
        ("invalid_page", {"body": b'{"meta": {"api-version": "1.1"}, "files": "nope"}'}, False, "invalid project page"),
        ("invalid_page", {}, True, "invalid project page"),
        ("redirect_loop", {}, False, "too many redirects"),
    ],
    ids=["503", "bad-json", "wrong-shape-json", "bad-html", "redirect-loop"],
)
def test_persistent_page_fault_keeps_the_recorded_project_untouched(
    mirror: Mirror, sample, upstream: FakeUpstream, kind: str, params: dict, html: bool, message: str
) -> None:
    mirror.run("sync", check=True)
    before = mirror.git("rev-parse", "main").strip()
    recorded = mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl")
    upstream.html_only = html
    upstream.fault(DEMO_PAGE, kind, times=-1, **params)
    result = mirror.run("sync", "--full")  # upstream's serial did not move: only a full run reads the page
    assert result.returncode == 1, result.stdout + result.stderr
    assert "demo-pkg" in result.stderr and message in result.stderr
    assert "error" in result.stdout  # the summary line says so
    # Nothing was marked removed or changed because of a page that could not be read.
    assert mirror.git("show", "main:projects/de/mo/demo-pkg.jsonl") == recorded
    assert mirror.git("diff", "--name-only", before, "main").split() in ([], ["projects/ot/he/other-lib.jsonl"])
    assert_no_leftovers(mirror)


@pytest.mark.parametrize(
    ("kind", "html", "message"),
    [
        ("invalid_page", False, "invalid project page"),
        ("invalid_page", True, "invalid project page"),
        ("truncate", False, "after 2 attempts"),
        ("reset", False, "after 2 attempts"),
    ],
    ids=["bad-json", "bad-html", "truncated", "reset"],
)
def test_unreadable_page_on_first_sync_records_nothing_for_that_project(
    mirror: Mirror, sample, upstream: FakeUpstream, kind: str, html: bool, message: str
) -> None:
    # (A re-sync asks with If-None-Match and gets a bodiless 304, so body faults are tested on a first sync.)
    upstream.html_only = html
    upstream.fault(DEMO_PAGE, kind, times=-1)
    result = mirror.run("sync", "demo-pkg", "other_lib")
    assert result.returncode == 1
    assert "demo-pkg: " in result.stderr and message in result.stderr
    assert manifest_files(mirror, "demo-pkg") == set()
    assert stored(mirror) >= {a.sha256 for a in sample["other-lib"]}
    assert not any(a.sha256 in stored(mirror) for a in sample["demo-pkg"])


def test_huge_page_is_refused_with_bounded_memory(mirror: Mirror, sample, upstream: FakeUpstream) -> None:
    """400,000 entries (about 75 MB of JSON): refused at the page limit, memory stays near that limit."""
    upstream.fault(DEMO_PAGE, "huge_page", times=-1, entries=400_000)
    process = subprocess.Popen(
        [*GITMIRROR, "sync"],
        cwd=mirror.root,
        env=isolated_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # wait4 gives this one child's peak memory (RUSAGE_CHILDREN would mix in every earlier child).
    stdout, stderr = process.stdout.read(), process.stderr.read()  # type: ignore[union-attr]
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 1, stderr
    assert "demo-pkg: project page larger than" in stderr
    peak_mib = usage.ru_maxrss / 1024  # kilobytes on Linux
    assert peak_mib < 400, f"sync peaked at {peak_mib:.0f} MiB reading a huge page"
    assert manifest_files(mirror, "demo-pkg") == set()
    assert_other_lib_synced(mirror)
    assert "error" in stdout


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert retry_after("7") == 7.0
    assert retry_after(None) is None and retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 20 <= (retry_after(later) or 0) <= 31
    earlier = format_datetime(datetime.now(UTC) - timedelta(seconds=30), usegmt=True)
    assert retry_after(earlier) == 0.0
