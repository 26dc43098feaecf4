"""Which refs may exist and what their names may look like: the rules a name must obey to mean one thing.

Every name in ``/snapshot/<rev>/`` is read as a branch, a tag, a date or a commit id; a ref named like
a date or a commit id would shadow that reading. These pure functions are shared by the pre-receive
hook (``hooks.judge``), ``gitmirror tag`` (``snapshot.check_tag_name``) and the resolver, so the rule
a push is held to is the rule the mirror resolves by. docs/refs.md states the policy.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from dulwich.refs import Ref, check_ref_format

HEADS = b"refs/heads/"
TAGS = b"refs/tags/"
#: the branch served at ``/simple/`` and the one ``/snapshot/<date>/`` walks (first-parent line)
MAINLINE = b"refs/heads/main"
#: how far ahead of the receiving host's clock a commit on main may be dated (clocks drift)
MAX_CLOCK_SKEW = 5 * 60

_HEX = re.compile(r"[0-9a-fA-F]{4,40}")
_DATE_ONLY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:?[0-9]{2})?"
)


def looks_like_commit_id(name: str) -> bool:
    """4 to 40 hex digits, either case: what the resolver reads as a (possibly abbreviated) commit id."""
    return _HEX.fullmatch(name) is not None


def is_date_only(name: str) -> bool:
    """``YYYY-MM-DD`` (digits only; whether the day exists is for ``datetime`` to say)."""
    return _DATE_ONLY.fullmatch(name) is not None


def looks_like_date(name: str) -> bool:
    """An ISO 8601 date or date-time: what the resolver reads as a point in time."""
    return is_date_only(name) or _DATE_TIME.fullmatch(name) is not None


def name_problem(name: str) -> str | None:
    """Why ``name`` may not name a branch or a tag, or None when it may.

    One git ref component (it is one path segment of ``/snapshot/<rev>/``), valid for git, not
    ``HEAD``, and never readable as a commit id or a date.
    """
    if not name or "/" in name or "\x7f" in name or not check_ref_format(Ref(b"refs/heads/" + name.encode())):
        return "not a valid name (one git ref component, no '/')"
    if name == "HEAD":
        return "HEAD is reserved"
    if looks_like_commit_id(name):
        return "looks like a commit id (4-40 hex digits) and would shadow one"
    if looks_like_date(name):
        return "looks like a date and would shadow /snapshot/<date>/"
    return None


def ref_problem(ref: bytes) -> str | None:
    """Why a push may not create or move ``ref``, or None: only ``refs/heads/<name>`` and
    ``refs/tags/<name>`` may be pushed (``refs/replace/`` would make git readers see other objects,
    other namespaces are nothing the mirror serves)."""
    for prefix in (HEADS, TAGS):
        if ref.startswith(prefix):
            try:
                name = ref[len(prefix) :].decode("utf-8")
            except UnicodeDecodeError:
                return "not a valid name (not UTF-8)"
            return name_problem(name)
    return "only refs/heads/<name> and refs/tags/<name> may be pushed"


def date_problem(commit_time: int, parent_time: int | None, now: float) -> str | None:
    """Why a commit on main's first-parent line is dated wrongly, or None.

    Committer times never go backwards along the line (``/snapshot/<date>/`` takes the first commit
    at or before the date, walking first parents from the tip, so a backdated commit would change
    what a past date names) and are at most ``MAX_CLOCK_SKEW`` ahead of ``now`` (a commit dated in
    the far future would make every later commit wait for that date).
    """
    if parent_time is not None and commit_time < parent_time:
        return (
            f"committer date {stamp(commit_time)} is earlier than its first parent's ({stamp(parent_time)}); "
            "dates on main never go back"
        )
    if commit_time > now + MAX_CLOCK_SKEW:
        return f"committer date {stamp(commit_time)} is in the future (more than {MAX_CLOCK_SKEW} s ahead)"
    return None


def stamp(timestamp: int) -> str:
    """A commit time as ISO 8601 UTC; one git can record but ``datetime`` cannot hold stays a number."""
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(timestamp)
