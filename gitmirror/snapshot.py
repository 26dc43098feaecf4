"""Naming a past state of the mirror: commit ids, tags, branches and points in time.

The history of the metadata repository is the mirror's time machine: every commit is a complete,
installable index. This module turns what a user types (``3f2a9c1``, ``release-2026.1``,
``2026-01-31`` or ``2026-01-31T12:00:00Z``) into one commit, and says whether that name can ever
point elsewhere: a commit id cannot (its pages may be cached forever), a tag, a branch or a date
can (a tag may be deleted and re-created by hand, a date may precede a commit not yet fetched).
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, time

from dulwich.objects import Commit, Tag
from dulwich.refs import check_ref_format

from .manifest import format_time
from .repo import MetadataRepo, RepoError

COMMIT = "commit"
TAG = "tag"
BRANCH = "branch"
DATE = "date"

_HEX = re.compile(r"^[0-9a-f]{4,40}$")
_DATE_ONLY = re.compile(r"^\d{4}-\d\d-\d\d$")
_DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d{1,6})?)?(Z|[+-]\d\d:?\d\d)?$")


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


def looks_like_date(rev: str) -> bool:
    return bool(_DATE_ONLY.match(rev) or _DATE_TIME.match(rev))


def parse_moment(rev: str) -> datetime:
    """The instant a date revision means (UTC when no offset is given).

    A bare date means the end of that day in UTC: ``2026-01-31`` is the mirror as it stood once
    everything of the 31st had been recorded, which is what "the index of January 31" means.
    """
    try:
        if _DATE_ONLY.match(rev):
            day = datetime.fromisoformat(rev).date()
            return datetime.combine(day, time.max, tzinfo=UTC)
        moment = datetime.fromisoformat(rev.replace(" ", "T"))
    except ValueError as exc:
        raise RevisionError(f"invalid date {rev!r} (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)") from exc
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def resolve(repo: MetadataRepo, rev: str, branch: str = "main") -> Snapshot:
    """The commit ``rev`` names; raises RevisionError with a one-line explanation otherwise.

    Order: branch, tag, date, commit id. Tags are refused when they look like dates or commit ids
    (see ``check_tag_name``), so in practice every form means one thing.
    """
    rev = rev.strip()
    if not rev:
        raise RevisionError("empty revision")
    refs = repo.git.refs
    if f"refs/heads/{rev}".encode() in refs:
        return Snapshot(rev, _peel(repo, refs[f"refs/heads/{rev}".encode()], rev), BRANCH)
    if f"refs/tags/{rev}".encode() in refs:
        return Snapshot(rev, _peel(repo, refs[f"refs/tags/{rev}".encode()], rev), TAG)
    if looks_like_date(rev):
        return Snapshot(rev, at_time(repo, parse_moment(rev), branch), DATE)
    if rev == "HEAD" and b"HEAD" in refs:
        return Snapshot(rev, _peel(repo, refs[b"HEAD"], rev), BRANCH)
    if _HEX.match(rev.lower()):
        return Snapshot(rev, _commit_by_id(repo, rev.lower()), COMMIT)
    raise RevisionError(f"unknown revision {rev!r} (expected a commit id, tag, branch or ISO date)")


def at_time(repo: MetadataRepo, moment: datetime, branch: str = "main") -> bytes:
    """The last commit on ``branch`` (first-parent line) committed at or before ``moment``."""
    tip = repo.tip(branch)
    if tip is None:
        raise RevisionError(f"branch {branch} has no commits yet")
    limit = moment.timestamp()
    commit_id: bytes | None = tip
    oldest: Commit | None = None
    while commit_id is not None:
        commit = repo.commit(commit_id)
        if commit.commit_time <= limit:
            return commit.id
        oldest = commit
        commit_id = commit.parents[0] if commit.parents else None
    first = format_time(datetime.fromtimestamp(oldest.commit_time, UTC)) if oldest else "?"
    raise RevisionError(f"no commit on {branch} at or before {format_time(moment)} (the first is from {first})")


def _commit_by_id(repo: MetadataRepo, prefix: str) -> bytes:
    """A commit from its full or abbreviated id.

    Abbreviations are matched against commits reachable from a ref (a few thousand, not the
    millions of blobs and trees a full object scan would touch).
    """
    store = repo.git.object_store
    if len(prefix) == 40:
        if prefix.encode() not in store:
            raise RevisionError(f"unknown commit {prefix}")
        return _peel(repo, prefix.encode(), prefix)
    tips = [_peel_quietly(repo, sha) for _, sha in repo.git.refs.as_dict().items()]
    include = [sha for sha in tips if sha is not None]
    matches: set[bytes] = set()
    if include:
        walker = repo.git.get_walker(include=include)
        matches = {entry.commit.id for entry in walker if entry.commit.id.decode().startswith(prefix)}
    if not matches:
        raise RevisionError(f"unknown revision {prefix!r}")
    if len(matches) > 1:
        raise RevisionError(f"revision {prefix!r} is ambiguous ({len(matches)} commits); give more digits")
    return matches.pop()


def _peel(repo: MetadataRepo, sha: bytes, rev: str) -> bytes:
    found = _peel_quietly(repo, sha)
    if found is None:
        raise RevisionError(f"{rev} does not name a commit")
    return found


def _peel_quietly(repo: MetadataRepo, sha: bytes) -> bytes | None:
    try:
        obj = repo.git[sha]
        while isinstance(obj, Tag):
            obj = repo.git[obj.object[1]]
    except KeyError:
        return None
    return obj.id if isinstance(obj, Commit) else None


def check_tag_name(name: str) -> str:
    """Tag names must be valid git refs and must not be mistaken for dates or commit ids.

    A slash is refused too: the name is one path segment of ``/snapshot/<rev>/simple/``.
    """
    if not name or "/" in name or not check_ref_format(f"refs/tags/{name}".encode()):
        raise RevisionError(f"invalid tag name {name!r} (one git ref component, no '/')")
    if looks_like_date(name) or _HEX.match(name.lower()) or name == "HEAD":
        raise RevisionError(f"tag name {name!r} would be read as a date or commit id; choose another")
    return name


def create_tag(repo: MetadataRepo, name: str, commit: bytes, message: str | None = None) -> bytes:
    """An annotated tag naming a snapshot; an existing tag is never moved (that would rewrite history)."""
    check_tag_name(name)
    ref = f"refs/tags/{name}".encode()
    if ref in repo.git.refs:
        existing = _peel_quietly(repo, repo.git.refs[ref])
        where = existing.decode()[:12] if existing else "?"
        raise RevisionError(f"tag {name} already exists (at {where}); tags are never moved")
    tag = Tag()
    tag.name = name.encode()
    tag.object = (Commit, commit)
    tag.tagger = repo.identity()
    tag.tag_time = int(datetime.now(UTC).timestamp())
    tag.tag_timezone = 0
    tag.message = ((message or f"gitmirror snapshot {name}") + "\n").encode()
    repo.write_durably([tag])
    if not repo.git.refs.add_if_new(ref, tag.id):
        raise RevisionError(f"tag {name} was created concurrently; not moved")
    return tag.id


def list_tags(repo: MetadataRepo) -> list[tuple[str, bytes]]:
    """(name, commit) of every tag naming a commit, sorted by name."""
    tags = []
    for ref, sha in sorted(repo.git.refs.as_dict(b"refs/tags").items()):
        commit = _peel_quietly(repo, sha)
        if commit is not None:
            tags.append((ref.decode(), commit))
    return tags


class Resolver:
    """Revision resolution for the server, remembering what cannot change.

    Commit ids are remembered forever (bounded); dates are remembered per branch tip (a new
    commit can change what a recent date means); tags and branches are read each time.
    """

    def __init__(self, repo: MetadataRepo, branch: str = "main", size: int = 4096) -> None:
        self.repo = repo
        self.branch = branch
        self.size = size
        self._known: OrderedDict[tuple[bytes | None, str], Snapshot] = OrderedDict()

    def __call__(self, rev: str) -> Snapshot:
        refs = self.repo.git.refs
        if f"refs/heads/{rev}".encode() in refs or f"refs/tags/{rev}".encode() in refs:
            return resolve(self.repo, rev, self.branch)
        key = (self.repo.tip(self.branch) if looks_like_date(rev) else None, rev)
        found = self._known.get(key)
        if found is None:
            found = resolve(self.repo, rev, self.branch)
            if found.kind in (COMMIT, DATE):
                self._known[key] = found
                if len(self._known) > self.size:
                    self._known.popitem(last=False)
        else:
            self._known.move_to_end(key)
        return found

