"""The git server's side of the promise: a pre-receive hook that refuses history rewrites.

git runs ``hooks/pre-receive`` in the bare repository with one ``<old> <new> <ref>`` line per
updated ref on stdin, before any ref moves; a non-zero exit rejects the whole push and git throws
the pushed objects away. The pushed objects sit in a quarantine directory, which
``MetadataRepo.with_quarantine`` reads beside the repository's own objects. Only commits the push
introduces are judged, each against its parents, with the same ``policy`` as ``verify`` and
``sync``; the refs themselves are held to the namespace and date rules of ``refpolicy``
(docs/refs.md). Run it as ``python -m gitmirror.audit.hooks pre-receive``; ``install`` writes the hook file.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..storage.refpolicy import HEADS, MAINLINE, TAGS, date_problem, ref_problem
from ..storage.repo import MetadataRepo, RepoError
from .signatures import push_signature_problem, tag_signature_problem
from .verify import commit_violations, subject

ZERO = b"0" * 40
_OBJECT_ID = re.compile(r"[0-9a-f]{40}")
MAX_MESSAGES = 50
HOOK_MARKER = "gitmirror pre-receive hook"
HOOK_TEMPLATE = """#!/bin/sh
# {marker}: refuses pushes that break the mirror's immutability promise
# (force pushes, deleted branches or tags, commits whose manifest changes violate the policy).
# Installed by `gitmirror install-hook`; the rules live in gitmirror/model/policy.py.
python=${{GITMIRROR_PYTHON:-{python}}}
exec "$python" -m gitmirror.audit.hooks pre-receive
"""


def render_hook(python: str) -> str:
    """The hook script, running ``python`` unless GITMIRROR_PYTHON names another interpreter."""
    return HOOK_TEMPLATE.format(marker=HOOK_MARKER, python=shlex.quote(python))


@dataclass(frozen=True)
class RefUpdate:
    old: bytes
    new: bytes
    ref: bytes

    @property
    def name(self) -> str:
        return self.ref.decode("utf-8", errors="replace")


@dataclass
class Decision:
    messages: list[str] = field(default_factory=list)
    rejected: bool = False

    def reject(self, message: str) -> None:
        self.rejected = True
        self.messages.append(message)


def parse_updates(lines: Iterable[str]) -> list[RefUpdate]:
    """git's ``<old> <new> <ref>`` lines; anything else is a ValueError (the push is refused, not
    judged in part)."""
    updates = []
    for line in lines:
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or not all(_OBJECT_ID.fullmatch(part) for part in parts[:2]):
            raise ValueError(f"unreadable update line {line.strip()[:100]!r}")
        old, new, ref = (part.encode() for part in parts)
        updates.append(RefUpdate(old, new, ref))
    return updates


def mainline_problem(repo: MetadataRepo, old: bytes | None, new: bytes, now: float) -> str | None:
    """Why main may not move from ``old`` (None: main is created) to ``new``, or None.

    ``old`` must be on ``new``'s first-parent line, and every commit after it on that line is dated
    per ``refpolicy.date_problem``: ``/snapshot/<date>/`` walks that line, so otherwise a push could
    change which commit a past date names.
    """
    line = list(repo.first_parents(new, stop=old))
    if old is not None and line and not line[-1].parents:
        return (
            f"the old tip {old.decode()[:12]} is not on the new tip's first-parent line "
            "(merge into main with main as the first parent, e.g. git merge --no-ff)"
        )
    for index, commit in enumerate(line):
        parent = line[index + 1] if index + 1 < len(line) else None
        parent_time = parent.commit_time if parent else repo.commit(old).commit_time if old else None
        problem = date_problem(commit.commit_time, parent_time, now)
        if problem is not None:
            return f"commit {commit.id.decode()[:12]} ({subject(commit)}): {problem}"
    return None


def judge(repo: MetadataRepo, updates: list[RefUpdate], now: float | None = None) -> Decision:
    """Accept or reject a push; every reason for rejecting is one message for the pusher.

    The rules (docs/refs.md): only branches and tags, named per ``refpolicy.name_problem``; none
    deleted, tags never moved, branches only fast-forwarded; main's first-parent line keeps its old
    tip and its dates never go back; once main exists, nothing unrelated to it comes in (a new
    branch contains main's tip, a new tag names a commit of a branch, no new root commit); and
    every new commit keeps the immutability policy.
    """
    now = time.time() if now is None else now
    decision = Decision()
    branches = repo.peeled_refs(HEADS)
    main_before = branches.get(MAINLINE)
    new_tags: dict[bytes, bytes] = {}
    tips: list[bytes] = []
    unrelated = False  # already refused for bringing an unrelated history: its root needs no second line
    for update in updates:
        where = update.name
        problem = ref_problem(update.ref)
        if problem is not None:
            decision.reject(f"{where}: {problem}")
            continue
        if update.new == ZERO:
            decision.reject(f"{where}: deleting a protected branch or tag is not allowed")
            continue
        if not repo.has_object(update.new):
            decision.reject(f"{where}: pushed object {update.new.decode()} is missing")
            continue
        target = repo.peel(update.new)
        if target is None:
            decision.reject(f"{where}: must point at a commit")
            continue
        tips.append(target)
        is_tag = update.ref.startswith(TAGS)
        old: bytes | None = None
        if update.old == ZERO:
            if is_tag:
                new_tags[update.ref] = target
                problem = tag_signature_problem(repo, update.new)
                if problem is not None:
                    decision.reject(f"{where}: {problem}")
                continue
            if main_before is not None and not repo.is_ancestor(main_before, target):
                decision.reject(
                    f"{where}: a new branch must contain main's tip {main_before.decode()[:12]} "
                    "(an unrelated history is refused)"
                )
                unrelated = True
                continue
        elif is_tag:
            decision.reject(f"{where}: tags are immutable and cannot be moved")
            continue
        else:
            old = repo.peel(update.old)
            if old is None or not repo.is_ancestor(old, target):
                decision.reject(f"{where}: non-fast-forward update (force push or rewritten history) refused")
                continue
        branches[update.ref] = target
        if update.ref == MAINLINE:
            problem = mainline_problem(repo, old, target, now)
            problem = problem or push_signature_problem(repo, target, list(repo.peeled_refs().values()))
            if problem is not None:
                decision.reject(f"{where}: {problem}")
    if main_before is not None and new_tags:
        found = repo.reachable(branches.values(), set(new_tags.values()))
        for ref, commit_id in new_tags.items():
            if commit_id not in found:
                decision.reject(
                    f"{ref.decode()}: a new tag must name a commit of main or another branch "
                    "(an unrelated history is refused)"
                )
                unrelated = True
    existing = list(repo.peeled_refs().values())
    for commit in repo.walk(tips, exclude=existing, parents_first=True):
        if main_before is not None and not commit.parents and not unrelated:
            decision.reject(
                f"commit {commit.id.decode()[:12]} ({subject(commit)}): a new root commit "
                "(an unrelated history) is refused once main exists"
            )
        violations = commit_violations(repo, commit)
        if violations:
            decision.reject(f"commit {commit.id.decode()[:12]} ({subject(commit)}) breaks the immutability policy:")
            for violation in violations:
                decision.messages.append(f"{violation}")
    return decision


def pre_receive(stdin: Iterable[str], env: Mapping[str, str], out=sys.stderr) -> int:
    """The hook's entry point: 0 accepts the push, 1 rejects it (messages go to the pusher)."""
    git_dir = env.get("GIT_DIR", ".")
    try:
        repo = MetadataRepo.with_quarantine(git_dir, env)
    except RepoError:
        print(f"gitmirror: {git_dir} is not a git repository; push refused", file=out)
        return 1
    try:
        decision = judge(repo, parse_updates(stdin))
    except ValueError as exc:
        print(f"gitmirror: {exc}; push refused", file=out)
        return 1
    except Exception as exc:  # fail closed in one line: a traceback tells the pusher nothing
        reason = (str(exc).splitlines() or [""])[0]
        print(f"gitmirror: push refused: the hook could not judge it ({type(exc).__name__}: {reason})", file=out)
        return 1
    finally:
        repo.close()
    if not decision.rejected:
        return 0
    for message in decision.messages[:MAX_MESSAGES]:
        print(f"gitmirror: {message}", file=out)
    if len(decision.messages) > MAX_MESSAGES:
        print(f"gitmirror: ... and {len(decision.messages) - MAX_MESSAGES} more", file=out)
    print("gitmirror: push rejected: what the mirror once served, it serves forever", file=out)
    return 1


def install(bare_repo: Path, python: str = sys.executable, force: bool = False) -> Path:
    """Write ``hooks/pre-receive`` and forbid force pushes and ref deletions in git's own config.

    An existing hook that is not ours is kept unless ``force``: silently replacing someone's hook
    could switch off whatever it enforced.

    It also asks git to make what a push writes durable (``core.fsync = committed``, git 2.36 and
    later; older ones ignore it): by default git fsyncs neither loose objects, which a push of
    fewer than 100 objects is unpacked into, nor refs, so after a power loss an accepted push
    could name objects that never reached the disk. gitmirror's own commits flush once
    (``MetadataRepo.write_durably``); dulwich does not read this setting.

    And it turns on git's own object checks (``receive.fsckObjects``, ``transfer.fsckObjects``):
    git then refuses malformed trees before the hook runs; the hook refuses them too (``gittree``),
    so switching git's check off does not let them in.
    """
    try:
        repo = MetadataRepo(bare_repo)
    except RepoError as exc:
        raise RepoError(f"{bare_repo} is not a git repository") from exc
    try:
        if not repo.bare:
            raise RepoError(f"{bare_repo} is not a bare repository (pushes go to bare repositories)")
        hook = repo.path / "hooks" / "pre-receive"
        if hook.exists() and HOOK_MARKER not in hook.read_text(errors="replace") and not force:
            raise RepoError(f"{hook} exists and is not gitmirror's; use --force to replace it")
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text(render_hook(python))
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        repo.set_config(
            {
                ("receive", "denyNonFastForwards"): True,
                ("receive", "denyDeletes"): True,
                ("core", "fsync"): "committed",
                ("receive", "fsckObjects"): True,
                ("transfer", "fsckObjects"): True,
            }
        )
    finally:
        repo.close()
    return hook


def main(argv: list[str]) -> int:
    if argv != ["pre-receive"]:
        print("usage: python -m gitmirror.audit.hooks pre-receive", file=sys.stderr)
        return 2
    return pre_receive(sys.stdin, os.environ)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
