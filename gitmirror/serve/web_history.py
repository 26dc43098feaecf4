"""A project's history for people, read from git: every change the branch served, with its commit.

The manifest, the conflict log and the mark log of one project change only in the commits
``MetadataRepo.path_changes`` finds on the branch's first-parent line; between two such commits the
manifest change is read as ``incoming.project_changes`` reads a review (new files, yanks, status,
upstream removals, takedowns), and the logs' added lines as conflicts and the mirror's decisions.
A commit's history never changes, so events are kept per tip and project (``HistoryCache``).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..model.decisions import marks_path
from ..model.manifest import ProjectManifest, loads, manifest_path
from ..model.policy import CONFLICTS_DIR
from ..storage.repo import Commit, MetadataRepo
from ..storage.snapshot import first_parent_line
from ..sync.incoming import Change, project_changes
from .web_writers import Writer, writer_of


@dataclass(frozen=True)
class Event:
    """One thing that happened to a project: ``kind`` (first-seen, yank, status, conflict, ...) and its line."""

    kind: str
    text: str
    filename: str | None = None
    reason: str | None = None


@dataclass
class HistoryEntry:
    """One commit that changed the project, newest first: who, when, why, and what."""

    commit: str
    time: str
    author: str
    subject: str
    body: str
    writer: Writer
    events: list[Event] = field(default_factory=list)


def project_history(repo: MetadataRepo, tip: bytes | None, name: str, since: bytes | None = None) -> list[HistoryEntry]:
    """Every commit of the branch that changed ``name``'s manifest, conflicts or marks, newest first;
    with ``since`` (a commit on ``tip``'s first-parent line) only the commits after it."""
    paths = (manifest_path(name), f"{CONFLICTS_DIR}/{name}.jsonl", marks_path(name))
    changes = list(repo.path_changes(tip, paths, since))
    oldest = repo.path_ids(repo.commit(since) if since is not None else None, paths)
    history = []
    for index, (commit, ids) in enumerate(changes):
        older = changes[index + 1][1] if index + 1 < len(changes) else oldest
        history.append(_entry(repo, commit, paths, older, ids))
    return history


def _entry(
    repo: MetadataRepo,
    commit: Commit,
    paths: tuple[str, str, str],
    older: tuple[bytes | None, ...],
    newer: tuple[bytes | None, ...],
) -> HistoryEntry:
    message = commit.message.decode("utf-8", "replace")
    subject, _, body = message.partition("\n")
    author = commit.author.decode("utf-8", "replace")
    entry = HistoryEntry(
        commit=commit.id.decode(),
        time=datetime.fromtimestamp(commit.commit_time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        author=author,
        subject=subject,
        body=body.strip(),
        writer=writer_of(message, author),
    )
    manifest_path_, conflicts_path, marks_path_ = paths
    if older[0] != newer[0]:
        before = _manifest(repo, older[0], manifest_path_)
        after = _manifest(repo, newer[0], manifest_path_)
        if after is not None:
            name = after.name
            entry.events += [manifest_event(change) for change in project_changes(name, before, before, after)]
    for record in _added_lines(repo, older[1], newer[1], conflicts_path):
        entry.events.append(conflict_event(record))
    for record in _added_lines(repo, older[2], newer[2], marks_path_):
        entry.events.append(decision_event(record))
    return entry


def _manifest(repo: MetadataRepo, blob: bytes | None, path: str) -> ProjectManifest | None:
    return None if blob is None else loads(repo.blob(blob, path), path)


def _added_lines(repo: MetadataRepo, old: bytes | None, new: bytes | None, path: str) -> list[dict[str, Any]]:
    """The records an append-only log gained (the policy lets it only grow)."""
    if old == new or new is None:
        return []
    before = repo.blob(old, path).splitlines() if old is not None else []
    records = []
    for line in repo.blob(new, path).splitlines()[len(before) :]:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def manifest_event(change: Change) -> Event:
    """A manifest change for people (``Change.describe`` is the terse form commit messages use)."""
    filename = change.filename
    if change.kind == "new-file":
        return Event("first-seen", f"first seen: {filename}", filename)
    if change.kind == "yank":
        reason = change.after if isinstance(change.after, str) else None
        return Event("yank", f"yanked: {filename}", filename, reason)
    if change.kind == "tombstone":
        return Event("takedown", f"taken down: {filename}", filename, change.after.reason)
    if change.kind == "status":
        status, reason = change.after
        return Event("status", f"project status: {status}", None, reason)
    if change.kind in PLAIN_WORDS:
        return Event(change.kind, f"{PLAIN_WORDS[change.kind]}: {filename}", filename)
    return Event(change.kind, change.describe(), filename)


PLAIN_WORDS = {
    "unyank": "un-yanked",
    "upstream-removed": "removed upstream (kept here)",
    "back-upstream": "back upstream",
}


def conflict_event(record: dict[str, Any]) -> Event:
    filename = str(record.get("filename"))
    text = (
        f"conflict: upstream re-published {filename} with other bytes "
        f"(kept sha256 {str(record.get('recorded-sha256'))[:16]}, upstream {str(record.get('upstream-sha256'))[:16]})"
    )
    return Event("conflict", text, filename)


def decision_event(record: dict[str, Any]) -> Event:
    """A line of the mirror's decision log: the action, who decided, and why."""
    action = str(record.get("action", "decision"))
    files = record.get("files")
    what = ", ".join(map(str, files)) if isinstance(files, list) else str(record.get("status", ""))
    reason = record.get("reason")
    text = f"decided by {record.get('by', 'unknown')}: {action} {what}".rstrip()
    return Event("decision", text, None, reason if isinstance(reason, str) else None)


class HistoryCache:
    """``project_history`` per project at the newest tip asked, bounded; shared by the web threads.

    When the tip moves forward only the commits since the tip already read are walked (a branch's
    old tips stay on its first-parent line, docs/refs.md); otherwise the history is read again whole.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[bytes | None, list[HistoryEntry]]] = OrderedDict()

    def get(self, repo: MetadataRepo, tip: bytes | None, name: str, branch: str) -> list[HistoryEntry]:
        with self._lock:
            known = self._kept.get(name)
            if known is not None:
                self._kept.move_to_end(name)
        if known is not None and known[0] == tip:
            return known[1]
        if known is not None and known[0] is not None and tip is not None:
            if first_parent_line(repo, branch).holds(tip, known[0]):
                history = project_history(repo, tip, name, since=known[0]) + known[1]
            else:
                history = project_history(repo, tip, name)
        else:
            history = project_history(repo, tip, name)
        with self._lock:
            self._kept[name] = (tip, history)
            if len(self._kept) > self.size:
                self._kept.popitem(last=False)
        return history
