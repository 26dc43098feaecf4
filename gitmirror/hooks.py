"""The git server's side of the promise: a pre-receive hook that refuses history rewrites.

git runs ``hooks/pre-receive`` in the bare repository with one ``<old> <new> <ref>`` line per
updated ref on stdin, before any ref moves; a non-zero exit rejects the whole push and git throws
the pushed objects away. The pushed objects sit in a quarantine directory that dulwich does not
know about, so it is added as an in-memory alternate object store. Only commits the push
introduces are judged, each against its parents, with the same ``policy`` as ``verify`` and
``sync``; the refs themselves are held to the namespace and date rules of ``refpolicy``
(docs/refs.md). Run it as ``python -m gitmirror.hooks pre-receive``; ``install`` writes the hook file.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import sys
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.errors import NotGitRepository
from dulwich.object_store import BaseObjectStore, DiskObjectStore
from dulwich.objects import Commit
from dulwich.repo import Repo

from .refpolicy import HEADS, MAINLINE, TAGS, date_problem, ref_problem
from .repo import RepoError, peel
from .verify import commit_violations, history, subject

ZERO = b"0" * 40
_OBJECT_ID = re.compile(r"[0-9a-f]{40}")
MAX_MESSAGES = 50
HOOK_MARKER = "gitmirror pre-receive hook"
HOOK_TEMPLATE = """#!/bin/sh
# {marker}: refuses pushes that break the mirror's immutability promise
# (force pushes, deleted branches or tags, commits whose manifest changes violate the policy).
# Installed by `gitmirror install-hook`; the rules live in gitmirror/policy.py.
python=${{GITMIRROR_PYTHON:-{python}}}
exec "$python" -m gitmirror.hooks pre-receive
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


def open_with_quarantine(git_dir: str | os.PathLike[str], env: Mapping[str, str]) -> Repo:
    """The repository as the hook must see it: existing objects plus the ones being pushed."""
    repo = Repo(str(git_dir))
    own = Path(repo.object_store.path).resolve()
    extra = [env.get("GIT_QUARANTINE_PATH", ""), env.get("GIT_OBJECT_DIRECTORY", "")]
    extra += env.get("GIT_ALTERNATE_OBJECT_DIRECTORIES", "").split(os.pathsep)
    seen = {own}
    for directory in extra:
        if not directory:
            continue
        path = Path(directory)
        path = (Path(git_dir) / path if not path.is_absolute() else path).resolve()
        if path not in seen and path.is_dir():
            seen.add(path)
            repo.object_store.alternates.append(DiskObjectStore(str(path)))
    return repo


def is_ancestor(store: BaseObjectStore, ancestor: bytes, descendant: bytes) -> bool:
    """Whether ``ancestor`` is reachable from ``descendant`` (breadth first, no timestamp tricks)."""
    return ancestor in reachable(store, [descendant], {ancestor})


def reachable(store: BaseObjectStore, starts: Iterable[bytes], wanted: set[bytes]) -> set[bytes]:
    """Which of ``wanted`` are reachable from ``starts``: breadth first, stopping once all are found
    (commit dates are the pusher's to choose, so no date-ordered shortcut)."""
    found: set[bytes] = set()
    queue = deque(starts)
    seen = set(queue)
    while queue and len(found) < len(wanted):
        sha = queue.popleft()
        if sha in wanted:
            found.add(sha)
        commit = store[sha] if sha in store else None  # noqa: SIM401 - object stores have no get()
        if isinstance(commit, Commit):
            for parent in commit.parents:
                if parent not in seen:
                    seen.add(parent)
                    queue.append(parent)
    return found


def mainline_problem(store: BaseObjectStore, old: bytes | None, new: bytes, now: float) -> str | None:
    """Why main may not move from ``old`` (None: main is created) to ``new``, or None.

    ``old`` must be on ``new``'s first-parent line, and every commit after it on that line is dated
    per ``refpolicy.date_problem``: ``/snapshot/<date>/`` walks that line, so otherwise a push could
    change which commit a past date names.
    """
    dating: str | None = None
    commit = store[new]
    while isinstance(commit, Commit) and commit.id != old:
        parent = store[commit.parents[0]] if commit.parents and commit.parents[0] in store else None
        parent = parent if isinstance(parent, Commit) else None
        problem = date_problem(commit.commit_time, parent.commit_time if parent else None, now)
        if problem is not None and dating is None:
            dating = f"commit {commit.id.decode()[:12]} ({subject(commit)}): {problem}"
        if parent is None and old is not None:
            return (
                f"the old tip {old.decode()[:12]} is not on the new tip's first-parent line "
                "(merge into main with main as the first parent, e.g. git merge --no-ff)"
            )
        commit = parent
    return dating


def judge(repo: Repo, updates: list[RefUpdate], now: float | None = None) -> Decision:
    """Accept or reject a push; every reason for rejecting is one message for the pusher.

    The rules (docs/refs.md): only branches and tags, named per ``refpolicy.name_problem``; none
    deleted, tags never moved, branches only fast-forwarded; main's first-parent line keeps its old
    tip and its dates never go back; once main exists, nothing unrelated to it comes in (a new
    branch contains main's tip, a new tag names a commit of a branch, no new root commit); and
    every new commit keeps the immutability policy.
    """
    now = time.time() if now is None else now
    decision = Decision()
    store = repo.object_store
    branches = {ref: commit.id for ref, commit in _peeled_refs(repo, HEADS).items()}
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
        if update.new not in store:
            decision.reject(f"{where}: pushed object {update.new.decode()} is missing")
            continue
        target = peel(store, update.new)
        if target is None:
            decision.reject(f"{where}: must point at a commit")
            continue
        tips.append(target.id)
        is_tag = update.ref.startswith(TAGS)
        old: bytes | None = None
        if update.old == ZERO:
            if is_tag:
                new_tags[update.ref] = target.id
                continue
            if main_before is not None and not is_ancestor(store, main_before, target.id):
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
            old_commit = peel(store, update.old)
            if old_commit is None or not is_ancestor(store, old_commit.id, target.id):
                decision.reject(f"{where}: non-fast-forward update (force push or rewritten history) refused")
                continue
            old = old_commit.id
        branches[update.ref] = target.id
        if update.ref == MAINLINE:
            problem = mainline_problem(store, old, target.id, now)
            if problem is not None:
                decision.reject(f"{where}: {problem}")
    if main_before is not None and new_tags:
        found = reachable(store, branches.values(), set(new_tags.values()))
        for ref, commit_id in new_tags.items():
            if commit_id not in found:
                decision.reject(
                    f"{ref.decode()}: a new tag must name a commit of main or another branch "
                    "(an unrelated history is refused)"
                )
                unrelated = True
    existing = [commit.id for commit in _peeled_refs(repo, b"refs/").values()]
    for commit in history(store, tips, exclude=existing):
        if main_before is not None and not commit.parents and not unrelated:
            decision.reject(
                f"commit {commit.id.decode()[:12]} ({subject(commit)}): a new root commit "
                "(an unrelated history) is refused once main exists"
            )
        violations = commit_violations(store, commit)
        if violations:
            decision.reject(f"commit {commit.id.decode()[:12]} ({subject(commit)}) breaks the immutability policy:")
            for violation in violations:
                decision.messages.append(f"{violation}")
    return decision


def _peeled_refs(repo: Repo, base: bytes) -> dict[bytes, Commit]:
    """The refs under ``base`` (full names) that name a commit, peeled."""
    found = {}
    for name, sha in repo.refs.as_dict(base).items():
        commit = peel(repo.object_store, sha)
        if commit is not None:
            found[base + name] = commit
    return found


def pre_receive(stdin: Iterable[str], env: Mapping[str, str], out=sys.stderr) -> int:
    """The hook's entry point: 0 accepts the push, 1 rejects it (messages go to the pusher)."""
    git_dir = env.get("GIT_DIR", ".")
    try:
        repo = open_with_quarantine(git_dir, env)
    except NotGitRepository:
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
        repo = Repo(str(bare_repo))
    except NotGitRepository as exc:
        raise RepoError(f"{bare_repo} is not a git repository") from exc
    try:
        if not repo.bare:
            raise RepoError(f"{bare_repo} is not a bare repository (pushes go to bare repositories)")
        hook = Path(repo.controldir()) / "hooks" / "pre-receive"
        if hook.exists() and HOOK_MARKER not in hook.read_text(errors="replace") and not force:
            raise RepoError(f"{hook} exists and is not gitmirror's; use --force to replace it")
        hook.parent.mkdir(parents=True, exist_ok=True)
        hook.write_text(render_hook(python))
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        config = repo.get_config()
        config.set((b"receive",), b"denyNonFastForwards", True)
        config.set((b"receive",), b"denyDeletes", True)
        config.set((b"core",), b"fsync", b"committed")
        config.set((b"receive",), b"fsckObjects", True)
        config.set((b"transfer",), b"fsckObjects", True)
        config.write_to_path()
    finally:
        repo.close()
    return hook


def main(argv: list[str]) -> int:
    if argv != ["pre-receive"]:
        print("usage: python -m gitmirror.hooks pre-receive", file=sys.stderr)
        return 2
    return pre_receive(sys.stdin, os.environ)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
