"""Who wrote a commit, read from its message, and each writer's newest commit on a branch.

Every writer of this mirror starts its commit subject with its own word: ``sync:``, ``proxy:``,
``upload:`` (with an ``uploaded-by: <token name>`` line), ``yank:``/``unyank:``/``status:`` (marks),
``takedown:``, ``approve:`` (with ``Approved-by:``) and ``merge`` (the review branch kept on top of
the served one). The pages name the writer from that word; a commit pushed by hand says whatever
its author wrote, so this is what the message claims, not a proof (signed history is).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ..storage.repo import Commit, MetadataRepo

#: the writers the home page reports the newest commit of
ACTIVITY_KINDS = ("sync", "proxy", "upload")
#: commits walked back from a new tip for a writer not found yet
SEARCH_DEPTH = 10_000

_SUBJECT_KINDS = {
    "sync:": "sync",
    "proxy:": "proxy",
    "upload:": "upload",
    "yank:": "yank",
    "unyank:": "unyank",
    "status:": "status",
    "takedown:": "takedown",
    "approve:": "approval",
    "merge ": "merge",
}


@dataclass(frozen=True)
class Writer:
    """Who wrote a commit: ``kind`` (sync, proxy, upload, yank, unyank, status, takedown, approval,
    merge, other) and a line for people naming the token, approver or author where there is one."""

    kind: str
    label: str


def commit_kind(message: bytes | str) -> str:
    """The writer kind a commit message's subject names, ``other`` when none."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return next((kind for prefix, kind in _SUBJECT_KINDS.items() if text.startswith(prefix)), "other")


def writer_of(message: str, author: str) -> Writer:
    """The writer of a commit with ``message`` by ``author`` (``Name <email>``)."""
    kind = commit_kind(message)
    if kind == "sync":
        return Writer(kind, "sync from upstream")
    if kind == "proxy":
        return Writer(kind, "pull-through proxy")
    if kind == "upload":
        return Writer(kind, f"upload by token {_trailer(message, 'uploaded-by') or 'unknown'}")
    if kind in ("yank", "unyank", "status"):
        return Writer(kind, f"mark ({kind}) by {author}")
    if kind == "takedown":
        return Writer(kind, f"takedown by {author}")
    if kind == "approval":
        return Writer(kind, f"approval by {_trailer(message, 'Approved-by') or author}")
    if kind == "merge":
        return Writer(kind, "merge of the served branch into the review branch")
    return Writer(kind, f"other commit by {author}")


def _trailer(message: str, key: str) -> str | None:
    """The value of the first ``key: value`` line of the body's last paragraph, where git reads
    trailers: lines above it may quote upstream text (a yank reason) that spells a trailer too."""
    body = message.partition("\n")[2].strip("\n")
    for line in body.rsplit("\n\n", 1)[-1].splitlines():
        name, colon, value = line.partition(":")
        if colon and name.strip() == key:
            return value.strip() or None
    return None


class WriterActivity:
    """The newest commit of each writer in ``ACTIVITY_KINDS`` on a branch's first-parent line.

    Shared by the web threads. When the tip moves forward only the commits since the tip already
    read are walked (branches only move forward, docs/refs.md); a writer found there replaces the
    one known, the others stay. A first walk, or one whose old tip is not reached, looks back at most
    ``SEARCH_DEPTH`` commits and stops once every writer is found.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._known: dict[str, tuple[bytes | None, dict[str, Commit]]] = {}

    def newest(self, repo: MetadataRepo, branch: str) -> dict[str, Commit]:
        """Writer kind -> its newest commit on ``branch`` (kinds never seen are absent)."""
        tip = repo.tip(branch)
        with self._lock:
            old_tip, old_found = self._known.get(branch, (None, {}))
        if tip == old_tip:
            return old_found
        found: dict[str, Commit] = {}
        reached_old = False
        for depth, commit in enumerate(repo.first_parents(tip)):
            if old_tip is not None and commit.id == old_tip:
                reached_old = True
                break
            kind = commit_kind(commit.message)
            if kind in ACTIVITY_KINDS and kind not in found:
                found[kind] = commit
            if len(found) == len(ACTIVITY_KINDS) or depth >= SEARCH_DEPTH:
                break
        if reached_old:
            found = {**old_found, **found}
        with self._lock:
            self._known[branch] = (tip, found)
        return found
