"""Naming a past state of the mirror: commit ids, tags, branches and points in time.

The history of the metadata repository is the mirror's time machine: every commit is a complete,
installable index. This module turns what a user types (``3f2a9c1``, ``release-2026.1``,
``2026-01-31`` or ``2026-01-31T12:00:00Z``) into one commit, and says whether that name can ever
point elsewhere: a commit id cannot (its pages may be cached forever), a tag, a branch or a date
can (a tag may be deleted and re-created by hand, a date may precede a commit not yet fetched).
Which names may exist, and why dates on main never go back, is docs/refs.md.
"""

from __future__ import annotations

import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time
from typing import TypeVar
from weakref import WeakKeyDictionary

from dulwich.objects import Commit, Tag
from dulwich.refs import Ref, SymrefLoop, check_ref_format

from ..model.manifest import format_time
from .refpolicy import HEADS, TAGS, is_date_only, looks_like_commit_id, looks_like_date, name_problem, stamp
from .repo import MetadataRepo, RepoError

COMMIT = "commit"
TAG = "tag"
BRANCH = "branch"
DATE = "date"

T = TypeVar("T")


class RevisionError(RepoError):
    """A revision that names no commit (or several); the message is the line the user sees."""


@dataclass(frozen=True)
class Snapshot:
    """One resolved revision: the commit, how it was named, and whether the name is permanent."""

    rev: str
    commit: bytes
    kind: str

    @property
    def pinned(self) -> bool:
        """Addressed by commit id: what it names can never change, so responses cache forever."""
        return self.kind == COMMIT

    @property
    def short(self) -> str:
        return self.commit.decode()[:12]


def parse_moment(rev: str) -> datetime:
    """The instant a date revision means (UTC when no offset is given); RevisionError for any date
    ``datetime`` cannot hold (a month 13, a year 0 or 10000 once the offset is applied).

    A bare date means the end of that day in UTC: ``2026-01-31`` is the mirror as it stood once
    everything of the 31st had been recorded, which is what "the index of January 31" means.
    """
    try:
        if is_date_only(rev):
            return datetime.combine(datetime.fromisoformat(rev).date(), time.max, tzinfo=UTC)
        moment = datetime.fromisoformat(rev.replace(" ", "T"))
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError) as exc:
        raise RevisionError(
            f"invalid date {rev!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, years 1 to 9999 in UTC)"
        ) from exc


def resolve(repo: MetadataRepo, rev: str, branch: str = "main") -> Snapshot:
    """The commit ``rev`` names; raises RevisionError with a one-line explanation otherwise.

    Order: a full 40-digit id is a commit id and nothing else (no ref can shadow it); then branch,
    tag, ``HEAD``; then a date; then an abbreviated id. The hook and ``check_tag_name`` refuse
    branch and tag names that look like dates or commit ids (``refpolicy.name_problem``), so the
    names-first order only keeps the meaning of such refs made before that rule.
    """
    rev = rev.strip()
    if not rev:
        raise RevisionError("empty revision")
    if len(rev) == 40 and looks_like_commit_id(rev):
        return Snapshot(rev, _full_id(repo, rev.lower()), COMMIT)
    named = _by_name(repo, rev)
    if named is not None:
        return named
    if looks_like_date(rev):
        return Snapshot(rev, at_time(repo, parse_moment(rev), branch), DATE)
    if looks_like_commit_id(rev):
        return Snapshot(rev, _abbreviated(repo, rev.lower()), COMMIT)
    raise RevisionError(f"unknown revision {rev!r} (expected a commit id, tag, branch or ISO date)")


def _by_name(repo: MetadataRepo, rev: str) -> Snapshot | None:
    """A branch, a tag, ``HEAD`` or a full ref name (``refs/heads/main``); None when no ref has the name."""
    try:
        name = rev.encode()
    except UnicodeEncodeError:
        return None
    if not check_ref_format(Ref(HEADS + name)):
        return None  # ".." or a control character: never a ref, and never a path to open
    candidates = [(HEADS + name, BRANCH), (TAGS + name, TAG)]
    if name == b"HEAD" or (name.startswith(b"refs/") and check_ref_format(Ref(name))):
        candidates.append((name, TAG if name.startswith(TAGS) else BRANCH))
    for ref, kind in candidates:
        try:
            sha = repo.git.refs[Ref(ref)]
        except (KeyError, ValueError, OSError, SymrefLoop):
            continue
        commit = repo.peel(sha)
        if commit is None:
            raise RevisionError(f"{rev} does not name a commit")
        return Snapshot(rev, commit, kind)
    return None


def at_time(repo: MetadataRepo, moment: datetime, branch: str = "main") -> bytes:
    """The last commit on ``branch`` (first-parent line) committed at or before ``moment``: walking
    back from the tip, the first one dated at or before it (read from ``FirstParentLine``).

    Committer dates on main never go back (the hook refuses it, ``verify`` reports it), so that
    commit is also the latest one dated at or before ``moment``.
    """
    tip = repo.tip(branch)
    if tip is None:
        raise RevisionError(f"branch {branch} has no commits yet")
    found, first = first_parent_line(repo, branch).at(tip, moment.timestamp())
    if found is None:
        raise RevisionError(
            f"no commit on {branch} at or before {format_time(moment)} (the first is from {stamp(first)})"
        )
    return found


def _full_id(repo: MetadataRepo, sha: str) -> bytes:
    if not repo.has_object(sha.encode()):
        raise RevisionError(f"unknown commit {sha}")
    commit = repo.peel(sha.encode())
    if commit is None:
        raise RevisionError(f"{sha} does not name a commit")
    return commit


def _abbreviated(repo: MetadataRepo, prefix: str) -> bytes:
    matches = commit_index(repo).matches(prefix)
    if not matches:
        raise RevisionError(f"unknown revision {prefix!r}")
    if len(matches) > 1:
        raise RevisionError(f"revision {prefix!r} is ambiguous ({len(matches)} commits); give more digits")
    return matches[0]


class CommitIndex:
    """The sorted ids of every commit reachable from a branch or a tag: abbreviated ids resolve
    by bisection, so a lookup, hit or miss, walks no history.

    Built by one walk on first use, then extended when the tips move by walking only the commits
    not indexed yet (an indexed parent ends the walk). It never shrinks: branches only move forward
    and neither branches nor tags are deleted (docs/refs.md), so an abbreviation that named a commit
    can become ambiguous but never name another one. Thread-safe: the server resolves off its loop.
    """

    def __init__(self, repo: MetadataRepo) -> None:
        self.repo = repo
        self.walks = 0  # how many times history was walked (tests hold it to "only when tips move")
        self._lock = threading.Lock()
        self._ids: list[bytes] = []
        self._known: set[bytes] = set()
        self._tips: frozenset[bytes] = frozenset()
        self._peeled: dict[bytes, bytes | None] = {}  # ref value -> commit (tag objects never change)

    def matches(self, prefix: str) -> list[bytes]:
        """Indexed commit ids starting with ``prefix`` (lowercase hex)."""
        key = prefix.encode()
        with self._lock:
            self._refresh()
            ids = self._ids
            found, at = [], bisect_left(ids, key)
            while at < len(ids) and ids[at].startswith(key):
                found.append(ids[at])
                at += 1
            return found

    def _refresh(self) -> None:
        tips = frozenset(sha for sha in map(self._peel, self._ref_values()) if sha is not None)
        if tips == self._tips:
            return
        new = [sha for sha in tips if sha not in self._known]
        if new:
            self.walks += 1
            known = self._known
            added = {commit.id for commit in self.repo.walk(new, exclude=self._tips)} - known
            known.update(added)
            self._ids = sorted([*self._ids, *added])
        self._tips = tips

    def _ref_values(self) -> list[bytes]:
        return [*self.repo.refs(HEADS).values(), *self.repo.refs(TAGS).values()]

    def _peel(self, sha: bytes) -> bytes | None:
        """``repo.peel``, remembered: a ref value names the same commit forever."""
        if sha not in self._peeled:
            if len(self._peeled) >= 65536:
                self._peeled.clear()
            self._peeled[sha] = self.repo.peel(sha)
        return self._peeled[sha]


class FirstParentLine:
    """A branch's first-parent line as commit times and ids, root first, so a date resolves without
    reading a commit: by bisection while the dates never go back (as the hook keeps them on main),
    by a scan of the times otherwise (a history written before that rule).

    Extended when the tip moves by walking back only to the tip already read; a tip whose line no
    longer holds the old one (a branch rewritten around the hook) is read again whole. Thread-safe.
    """

    def __init__(self, repo: MetadataRepo) -> None:
        self.repo = repo
        self.walks = 0
        self._lock = threading.Lock()
        self._ids: list[bytes] = []
        self._times: list[int] = []
        self._members: set[bytes] = set()
        self._ordered = True  # every time >= the one before it

    def holds(self, tip: bytes, commit: bytes) -> bool:
        """Whether ``commit`` is on the first-parent line of ``tip``: a state the branch once stood at."""
        with self._lock:
            self._extend(tip)
            return commit in self._members

    def length(self, tip: bytes) -> int:
        """How many commits the first-parent line of ``tip`` holds, root and tip included."""
        with self._lock:
            self._extend(tip)
            return len(self._ids)

    def at(self, tip: bytes, limit: float) -> tuple[bytes | None, int]:
        """(the commit for ``limit`` or None when every commit is later, the root's commit time)."""
        with self._lock:
            self._extend(tip)
            times = self._times
            if self._ordered:
                index = bisect_right(times, limit) - 1
            else:
                index = next((i for i in range(len(times) - 1, -1, -1) if times[i] <= limit), -1)
            return (self._ids[index] if index >= 0 else None), times[0]

    def _extend(self, tip: bytes) -> None:
        if self._ids and self._ids[-1] == tip:
            return
        self.walks += 1
        known = self._ids[-1] if self._ids else None
        new = list(self.repo.first_parents(tip, stop=known))
        if not new or not new[-1].parents or new[-1].parents[0] != known:  # down to the root: the whole line
            self._ids, self._times, self._members, self._ordered = [], [], set(), True
        for commit in reversed(new):
            self._ordered = self._ordered and (not self._times or commit.commit_time >= self._times[-1])
            self._ids.append(commit.id)
            self._members.add(commit.id)
            self._times.append(commit.commit_time)


_INDEXES: WeakKeyDictionary[MetadataRepo, dict[str, CommitIndex]] = WeakKeyDictionary()
_LINES: WeakKeyDictionary[MetadataRepo, dict[str, FirstParentLine]] = WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def _shared(
    registry: WeakKeyDictionary[MetadataRepo, dict[str, T]], repo: MetadataRepo, key: str, make: Callable[[], T]
) -> T:
    """The one ``key`` index of ``repo``, made on first use: every resolver of a repository shares it."""
    with _REGISTRY_LOCK:
        indexes = registry.setdefault(repo, {})
        if key not in indexes:
            indexes[key] = make()
        return indexes[key]


def first_parent_line(repo: MetadataRepo, branch: str) -> FirstParentLine:
    """The one first-parent line of ``branch`` in ``repo``, shared like ``commit_index``."""
    return _shared(_LINES, repo, branch, lambda: FirstParentLine(repo))


def commit_index(repo: MetadataRepo) -> CommitIndex:
    """The one commit index of ``repo`` (the server, ``resolve`` and ``MetadataRepo.resolve`` share it)."""
    return _shared(_INDEXES, repo, "", lambda: CommitIndex(repo))


def check_tag_name(name: str) -> str:
    """The rule every branch and tag name obeys (``refpolicy.name_problem``, also the hook's): one
    path segment of ``/snapshot/<rev>/simple/``, never readable as a date or a commit id."""
    problem = name_problem(name)
    if problem is not None:
        raise RevisionError(f"invalid tag name {name!r}: {problem}")
    return name


def create_tag(repo: MetadataRepo, name: str, commit: bytes, message: str | None = None, branch: str = "main") -> bytes:
    """An annotated tag naming a snapshot; an existing tag is never moved (that would rewrite history).

    Only a state ``branch`` once stood at can be named: ``/snapshot/<tag>/`` serves nothing else.
    """
    check_tag_name(name)
    tip = repo.tip(branch)
    if tip is None or not first_parent_line(repo, branch).holds(tip, commit):
        raise RevisionError(f"{commit.decode()[:12]} is no state {branch} has served; tags name those only")
    ref = f"refs/tags/{name}".encode()
    existing = repo.refs(TAGS).get(ref)
    if existing is not None:
        peeled = repo.peel(existing)
        where = peeled.decode()[:12] if peeled else "?"
        raise RevisionError(f"tag {name} already exists (at {where}); tags are never moved")
    tag = Tag()
    tag.name = name.encode()
    tag.object = (Commit, commit)
    tag.tagger = repo.identity()
    tag.tag_time = int(datetime.now(UTC).timestamp())
    tag.tag_timezone = 0
    tag.message = ((message or f"gitmirror snapshot {name}") + "\n").encode()
    repo.write_durably([tag])
    if not repo.move_ref(ref, None, tag.id):
        raise RevisionError(f"tag {name} was created concurrently; not moved")
    return tag.id


def list_tags(repo: MetadataRepo) -> list[tuple[str, bytes]]:
    """(name, commit) of every tag naming a commit, sorted by name."""
    return [(ref[len(TAGS) :].decode(), commit) for ref, commit in sorted(repo.peeled_refs(TAGS).items())]


class Resolver:
    """Revision resolution for the server, remembering what cannot change.

    Only states the served branch once stood at are served: commits on its first-parent line (the
    hook keeps an old tip on that line). A review branch, a commit only it holds or a tag naming one
    is refused, so ``/snapshot/`` never offers what review has not let through.

    Commit ids are remembered (bounded); dates are remembered per branch tip (a new commit can
    change what a recent date means, and finding an old date walks the first-parent line); tags
    and branches are read each time. Thread-safe.
    """

    def __init__(self, repo: MetadataRepo, branch: str = "main", size: int = 4096) -> None:
        self.repo = repo
        self.branch = branch
        self.size = size
        self._lock = threading.Lock()
        self._known: OrderedDict[tuple[bytes | None, str], Snapshot] = OrderedDict()

    def __call__(self, rev: str) -> Snapshot:
        rev = rev.strip()
        is_date = looks_like_date(rev)
        if not (is_date or looks_like_commit_id(rev)) or (len(rev) != 40 and _by_name(self.repo, rev)):
            return self._served(resolve(self.repo, rev, self.branch))  # a name: read each time
        key = (self.repo.tip(self.branch) if is_date else None, rev if is_date else rev.lower())
        with self._lock:
            found = self._known.get(key)
            if found is not None:
                self._known.move_to_end(key)
                return found
        found = self._served(resolve(self.repo, rev, self.branch))
        with self._lock:
            self._known[key] = found
            if len(self._known) > self.size:
                self._known.popitem(last=False)
        return found

    def _served(self, found: Snapshot) -> Snapshot:
        tip = self.repo.tip(self.branch)
        if tip is None or not first_parent_line(self.repo, self.branch).holds(tip, found.commit):
            raise RevisionError(f"{found.rev!r} names no state {self.branch} has served")
        return found
