"""``projects: all``: every project upstream lists, in batches that each end in a commit.

The first (cold) sync lists the index root and syncs every project not committed yet, a batch at
a time (``batch_projects``, fewer when a batch would outlast ``batch_minutes``): a crash or a stop
loses at most one batch, and the next run resumes where the last commit left off. It keeps the
serial upstream announced before it started; once every project is in, later runs sync only what
upstream's changelog names after that serial (``unchanged.changed_projects``), or, from an index
without a changelog, re-read the root and ask for every page again (conditionally: unchanged
pages answer 304). ``exclude``, ``versions``, ``environments``, ``sdists`` and ``max_file_size``
apply as to any project; dependencies need no walk (everything is selected).

The progress file (``<store>/state/full-index-<key>.json``) says where the cold sync started and
whether it is complete; it describes the repository's state and is written after each commit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.requirements import Requirement

from ..model.hosts import needs_credentials
from ..model.names import UnsafeNameError, normalize
from ..model.page import UpstreamError
from ..storage.repo import MetadataRepo
from ..storage.store import BlobStore
from . import unchanged
from .config import Config, Selection
from .merge import EXIT_CONFLICTS, EXIT_ERRORS, EXIT_OK, SyncResult
from .progress import Progress, eta
from .selection import rules_from

Log = Callable[[str], None]
ROOT_PAGE_LIMIT = 1 << 30
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@dataclass
class FullIndexResult:
    batches: int = 0
    projects: int = 0
    files_added: int = 0
    exit_code: int = EXIT_OK
    complete: bool = False
    mode: str = "cold"  # cold (resumable), changelog, or root (no changelog upstream)

    def summary(self) -> str:
        state = "complete" if self.complete else "incomplete (the next run resumes)"
        return (
            f"projects: all ({self.mode}): {self.projects} projects synced in {self.batches} batches, "
            f"{self.files_added} files added; full index {state}"
        )


def progress_path(config: Config, branch: str) -> Path:
    return Path(config.store) / unchanged.STATE_DIR / f"full-index-{unchanged.state_key(branch, config.upstream)}.json"


def _load(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save(path: Path, data: Mapping[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, sort_keys=True) + "\n")
    os.replace(temporary, path)


def root_names(config: Config) -> list[str]:
    """The normalized names upstream's index root lists (PEP 691 JSON, else PEP 503 HTML), sorted."""
    from pypi_simple import IndexPage

    from ..model.hosts import HostPolicy
    from ..upstream.transport import Transport

    transport = Transport(HostPolicy(config.upstream, config.allowed_hosts), config.timeout, config.limits)
    try:
        answer = transport.get_page(config.upstream, {"Accept": f"{JSON_TYPE}, text/html;q=0.1"}, ROOT_PAGE_LIMIT)
    finally:
        transport.close()
    if answer.status != 200:
        hint = needs_credentials(answer.status)
        raise UpstreamError(f"the index root {config.upstream} answered HTTP {answer.status}{hint}")
    if answer.headers.get("content-type", "").startswith(JSON_TYPE):
        page = IndexPage.from_json_data(json.loads(answer.body))
    else:
        page = IndexPage.from_html(answer.body, from_encoding=answer.charset)
    names = set()
    for listed in page.projects:
        try:
            names.add(normalize(listed))
        except UnsafeNameError:
            continue  # a name the mirror could never store: nothing to sync
    return sorted(names)


def batches(names: list[str], size: int, minutes: float, started: Callable[[], float]) -> Iterator[list[str]]:
    """``names`` in batches of at most ``size``; after each, the next is cut to what the measured rate
    finishes in ``minutes`` (at least one project)."""
    at = 0
    allowed = size
    while at < len(names):
        begun = started()
        batch = names[at : at + allowed]
        yield batch
        at += len(batch)
        seconds = max(started() - begun, 1e-3)
        allowed = max(1, min(size, int(len(batch) * minutes * 60 / seconds)))


def run_full_index(
    config: Config, repo: MetadataRepo, store: BlobStore, branch: str, progress: Progress, log: Log
) -> FullIndexResult:
    """Sync every project upstream lists (see the module's docstring); one commit per batch."""
    from .sync import Syncer

    assert config.full_index is not None
    settings = config.full_index
    path = progress_path(config, branch)
    state = _load(path)
    serial = unchanged.upstream_serial(config.upstream, config.timeout)
    result = FullIndexResult()
    rules = rules_from(config)
    since = state.get("serial")
    changed = None
    if state.get("complete") and isinstance(since, str) and serial is not None:
        changed = unchanged.changed_projects(config.upstream, config.timeout, since, serial)
    if changed is not None:
        result.mode = "changelog"
        todo = sorted(name for name in changed if not rules.project_excluded(name))
        next_state = {"serial": serial, "complete": True}
    else:
        names = [name for name in root_names(config) if not rules.project_excluded(name)]
        if state.get("complete"):
            result.mode, todo = "root", names
            next_state = {"serial": serial, "complete": True}
        else:  # cold, or resumed: what the last commit holds is done
            committed = set(repo.projects(repo.tip(branch)))  # one walk, not one lookup per name
            todo = [name for name in names if name not in committed]
            started_at = since if isinstance(since, str) and "serial" in state else serial
            next_state = {"serial": started_at, "complete": True}
            _save(path, {"serial": started_at, "complete": False})
            if len(todo) < len(names):
                log(f"resuming: {len(names) - len(todo)} of {len(names)} projects are committed")
    batch_config = replace(config, dependencies=False, requirements=(), lockfiles=(), full_index=None)
    began, done = time.monotonic(), 0
    for batch in batches(todo, settings.batch_projects, settings.batch_minutes, time.monotonic):
        syncer = Syncer(batch_config, repo, store, log=log, progress=progress)  # its caches end with the batch
        outcome: SyncResult = syncer.run([_selection(name) for name in batch], branch=branch, with_files=False)
        sys.audit("gitmirror.crashpoint", "full-index.batch-committed")
        result.batches += 1
        result.projects += len(batch)
        result.files_added += outcome.files_added
        result.exit_code = _worse(result.exit_code, outcome.exit_code)
        done += len(batch)
        log(f"batch {result.batches}: {eta(done, len(todo), time.monotonic() - began, 'projects')}")
    result.complete = result.exit_code in (EXIT_OK, EXIT_CONFLICTS)
    if result.complete:
        _save(path, next_state)
    return result


def _selection(name: str) -> Selection:
    return Selection(name=name, requirement=Requirement(name))


def _worse(one: int, other: int) -> int:
    order = (EXIT_OK, EXIT_CONFLICTS, EXIT_ERRORS)
    return max(one, other, key=lambda code: order.index(code) if code in order else len(order))
