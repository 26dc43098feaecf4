"""The git server's side of the promise: a pre-receive hook that refuses history rewrites.

git runs ``hooks/pre-receive`` in the bare repository with one ``<old> <new> <ref>`` line per
updated ref on stdin, before any ref moves; a non-zero exit rejects the whole push and git throws
the pushed objects away. The pushed objects sit in a quarantine directory that dulwich does not
know about, so it is added as an in-memory alternate object store. Only commits the push
introduces are judged, each against its parents, with the same ``policy`` as ``verify`` and
``sync``. Run it as ``python -m gitmirror.hooks pre-receive``; ``install`` writes the hook file.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dulwich.errors import NotGitRepository
from dulwich.object_store import BaseObjectStore, DiskObjectStore
from dulwich.objects import Commit, Tag
from dulwich.repo import Repo

from .repo import RepoError
from .verify import commit_violations, history, subject

ZERO = b"0" * 40
PROTECTED_PREFIXES = (b"refs/heads/", b"refs/tags/")
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
    updates = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
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


def _peel(store: BaseObjectStore, sha: bytes) -> Commit | None:
    obj = store[sha]
    while isinstance(obj, Tag):
        obj = store[obj.object[1]]
    return obj if isinstance(obj, Commit) else None


def is_ancestor(store: BaseObjectStore, ancestor: bytes, descendant: bytes) -> bool:
    """Whether ``ancestor`` is reachable from ``descendant`` (breadth first, no timestamp tricks)."""
    queue, seen = deque([descendant]), {descendant}
    while queue:
        sha = queue.popleft()
        if sha == ancestor:
            return True
        commit = store[sha]
        if isinstance(commit, Commit):
            for parent in commit.parents:
                if parent not in seen:
                    seen.add(parent)
                    queue.append(parent)
    return False


def judge(repo: Repo, updates: list[RefUpdate]) -> Decision:
    """Accept or reject a push; every reason for rejecting is one message for the pusher."""
    decision = Decision()
    store = repo.object_store
    tips: list[bytes] = []
    for update in updates:
        protected = update.ref.startswith(PROTECTED_PREFIXES)
        if update.new == ZERO:
            if protected:
                decision.reject(f"{update.name}: deleting a protected branch or tag is not allowed")
            continue
        try:
            target = _peel(store, update.new)
        except KeyError:
            decision.reject(f"{update.name}: pushed object {update.new.decode()} is missing")
            continue
        if target is None:
            decision.reject(f"{update.name}: must point at a commit")
            continue
        tips.append(target.id)
        if update.old == ZERO:
            continue
        if update.ref.startswith(b"refs/tags/"):
            decision.reject(f"{update.name}: tags are immutable and cannot be moved")
            continue
        old_commit = _peel(store, update.old)
        if old_commit is None or not is_ancestor(store, old_commit.id, target.id):
            decision.reject(f"{update.name}: non-fast-forward update (force push or rewritten history) refused")
    existing = []
    for value in repo.refs.as_dict().values():
        try:
            commit = _peel(store, value)
        except KeyError:
            continue
        if commit is not None:
            existing.append(commit.id)
    for commit in history(store, tips, exclude=existing):
        violations = commit_violations(store, commit)
        if violations:
            decision.reject(f"commit {commit.id.decode()[:12]} ({subject(commit)}) breaks the immutability policy:")
            for violation in violations:
                decision.messages.append(f"{violation}")
    return decision


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
