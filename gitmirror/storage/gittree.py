"""Reading git trees the way git does, and refusing every tree git could read differently.

Every reader of the metadata repository (``render``, ``incoming``, ``verify``, the pre-receive
hook...) asks ``MetadataRepo``, which lists every tree through ``read_tree``: one parser, one set
of rules, so no path can name other bytes in gitmirror than in ``git show``. dulwich keeps a tree
as a dict (the last of duplicate names wins, order is ignored, modes are parsed to ints), while
git scans the raw entries in order; both agree only on the trees this module accepts.

Refused, in every tree of the repository (git's own ``fsck`` flags most of them):

- names that are empty, ``.``, ``..``, contain ``/``, are not UTF-8 or hold a control character;
- names git treats as ``.git`` or ``.gitmodules`` (any case, NTFS trailing dots and spaces and
  short names such as ``git~1``, HFS ignorable code points): the mirror has no submodules;
- a name twice in one tree (a file and a directory of one name too), entries out of git's order;
- modes other than ``40000``, ``100644``, ``100755``, ``120000``, ``160000`` written exactly so
  (a zero-padded ``040000`` gives one content two tree ids);
- gitlinks (``160000``) anywhere: a metadata repository has no submodules, and the commit a
  gitlink names is not in it;
- symlinks (``120000``) under ``projects/``, ``conflicts/`` and ``marks/``: manifests and audit
  logs are regular files, or ``git show`` prints a link target where gitmirror reads a manifest;
- an entry whose object is missing or of another type than its mode says.

A listing keeps git's reading of a malformed tree (first of duplicate names, flagged entries left
out), so a check can go on and report everything; a reader refuses any tree with a problem.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from dulwich.diff_tree import CHANGE_ADD, CHANGE_DELETE, CHANGE_MODIFY, TreeChange
from dulwich.errors import ObjectFormatException
from dulwich.object_store import BaseObjectStore
from dulwich.objects import (
    S_IFGITLINK,
    Blob,
    ObjectID,
    RawObjectID,
    Tree,
    TreeEntry,
    key_entry,
    parse_tree,
    sha_to_hex,
)

from ..model.policy import AUDIT_LOG_DIRS

TREE, REGULAR, EXECUTABLE, SYMLINK = 0o040000, 0o100644, 0o100755, 0o120000
FILE_MODES = (REGULAR, EXECUTABLE)
VALID_MODES = (TREE, REGULAR, EXECUTABLE, SYMLINK, S_IFGITLINK)
#: top-level folders holding only regular files: the manifests and the audit logs
PLAIN_FILE_DIRS = ("projects", *AUDIT_LOG_DIRS)
_SHA_LEN = 20
_NTFS_DOTGIT = re.compile(rb"(?:\.git|git~1)[. ]*(?:\Z|[\\:])", re.IGNORECASE)
_NTFS_DOTGITMODULES = re.compile(rb"(?:\.gitmodules|gitmod~[1-4]|gi7eba~[1-9])[. ]*(?:\Z|[\\:])", re.IGNORECASE)
_HFS_IGNORABLE = re.compile("[\u200c-\u200f\u202a-\u202e\u206a-\u206f\ufeff]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PLAIN_NAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._-]*")
_PLAIN_MODES = (TREE, REGULAR, EXECUTABLE)
_NULL_HEX = b"0" * 40


@dataclass(frozen=True)
class Problem:
    """One malformed entry: its repository path (as text) and the rule it breaks."""

    path: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}: {self.rule}"


class TreeError(ValueError):
    """A tree that git could read differently; the message is the first problem, on one line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"malformed tree: {problems[0]}{more}")


@dataclass
class Listing:
    """A tree as git reads it: name -> (mode, hex id), and what is wrong with it (empty: nothing)."""

    entries: dict[bytes, tuple[int, ObjectID]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    #: names of the malformed entries left out of ``entries``
    dropped: set[bytes] = field(default_factory=set)

    def checked(self) -> dict[bytes, tuple[int, ObjectID]]:
        """The entries, or ``TreeError`` when the tree is malformed."""
        if self.problems:
            raise TreeError(self.problems)
        return self.entries


def show(name: bytes) -> str:
    """A name as one printable line: undecodable bytes and control characters escaped."""
    text = name.decode("utf-8", errors="backslashreplace")
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def join(path: str, name: bytes) -> str:
    return f"{path}/{show(name)}" if path else show(name)


def _here(path: str) -> str:
    return path or "(root tree)"


def name_problem(name: bytes) -> str | None:
    """Why git (or the mirror) would not read ``name`` as one plain path component, or None."""
    if not name:
        return "empty entry name"
    if name in (b".", b".."):
        return f"entry named {name.decode()!r}"
    if b"/" in name:
        return "entry name contains '/'"
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return "entry name is not UTF-8"
    if _CONTROL.search(text):
        return "entry name contains a control character"
    hfs = _HFS_IGNORABLE.sub("", text).lower()
    if _NTFS_DOTGIT.match(name) or hfs == ".git":
        return "entry name is a spelling of .git"
    if _NTFS_DOTGITMODULES.match(name) or hfs == ".gitmodules":
        return "entry name is a spelling of .gitmodules (the mirror has no submodules)"
    return None


def mode_problem(path: str, mode: int) -> str | None:
    """The mirror's one rule on modes, for an entry at ``path`` (zero-padding is ``parse``'s)."""
    if mode not in VALID_MODES:
        return f"unknown mode {mode:o}"
    if mode == S_IFGITLINK:
        return "gitlink (submodule) entries are refused: the repository has no submodules"
    if mode == SYMLINK and path.split("/", 1)[0] in PLAIN_FILE_DIRS:
        return "symlink refused: manifests and audit logs must be regular files"
    return None


def _raw_entries(raw: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(mode text, name, binary id) in stored order; dulwich's ``parse_tree`` drops the mode text."""
    pos = 0
    while pos < len(raw):
        space = raw.find(b" ", pos)
        nul = raw.find(b"\0", space + 1) if space >= 0 else -1
        if nul < 0 or nul + 1 + _SHA_LEN > len(raw):
            raise ValueError("truncated tree entry")
        yield raw[pos:space], raw[space + 1 : nul], raw[nul + 1 : nul + 1 + _SHA_LEN]
        pos = nul + 1 + _SHA_LEN


def parse(raw: bytes, path: str = "") -> Listing:
    """Check one tree's raw bytes (the tree at ``path``) entry by entry, as git's fsck does."""
    plain = _plain(raw)
    if plain is not None:
        return plain
    listing = Listing()
    previous: tuple[bytes, tuple[int, ObjectID]] | None = None
    try:
        for mode_text, name, binary in _raw_entries(raw):
            where = join(path, name)
            problem = name_problem(name)
            try:
                mode = int(mode_text, 8) if mode_text.isdigit() else -1
            except ValueError:
                mode = -1
            if problem is None and mode_text != b"%o" % max(mode, 0):
                problem = f"zero-padded mode {show(mode_text)}" if mode > 0 else f"malformed mode {show(mode_text)}"
            problem = problem or mode_problem(where, mode)
            entry = (name, (mode, sha_to_hex(RawObjectID(binary))))
            if problem is None and (name in listing.entries or name in listing.dropped):
                problem = "duplicate entry name (git and dulwich would read different ones)"
            if problem is None and previous is not None and key_entry(previous) > key_entry(entry):
                problem = "entry out of git's canonical order (git would not find it)"
            if problem is None and binary == bytes(_SHA_LEN):
                problem = "entry points at the null object id"
            if problem:
                listing.problems.append(Problem(where, problem))
                listing.dropped.add(name)
            else:
                listing.entries[name] = entry[1]
            previous = entry
    except ValueError as exc:
        listing.problems.append(Problem(_here(path), f"unparseable tree: {exc}"))
    return listing


def _plain(raw: bytes) -> Listing | None:
    """The listing of a tree that breaks no rule of ``parse`` by construction, or None to let
    ``parse`` judge it entry by entry.

    Plain means: the bytes are exactly the canonical serialization of what dulwich's C parser reads
    (so no zero-padded or malformed mode, nothing truncated), every name is ASCII letters, digits,
    ``.``, ``_`` or ``-`` starting with a letter or digit (none can spell ``.git`` or a control
    character), names strictly in git's order, modes directories or regular files, no null id.
    Every manifest tree is plain, and shard directories hold tens of thousands of entries.
    """
    try:
        entries = list(parse_tree(raw, _SHA_LEN))
    except (ValueError, ObjectFormatException):
        return None
    previous = b""
    for name, mode, hexsha in entries:
        key = name + b"/" if mode == TREE else name
        if key <= previous or mode not in _PLAIN_MODES or not _PLAIN_NAME.fullmatch(name) or hexsha == _NULL_HEX:
            return None
        previous = key
    canonical = b"".join(b"%o %s\0%s" % (mode, name, binascii.unhexlify(hexsha)) for name, mode, hexsha in entries)
    listing = Listing({name: (mode, ObjectID(hexsha)) for name, mode, hexsha in entries})
    if canonical != raw or len(listing.entries) != len(entries):  # a file and a directory of one name
        return None
    return listing


def read_tree(store: BaseObjectStore, sha: bytes, path: str = "") -> Listing:
    """The one way to list a tree: object ``sha`` must exist and be a tree, then ``parse``."""
    try:
        type_num, raw = store.get_raw(ObjectID(sha))
    except KeyError:
        return Listing(problems=[Problem(_here(path), f"tree {sha.decode()} is missing")])
    if type_num != Tree.type_num:
        return Listing(problems=[Problem(_here(path), f"mode says tree, object {sha.decode()} is not one")])
    return parse(raw, path)


def read_blob(store: BaseObjectStore, sha: bytes, path: str) -> bytes:
    """A file entry's bytes; ``TreeError`` when the object is missing or not a blob."""
    try:
        type_num, raw = store.get_raw(ObjectID(sha))
    except KeyError:
        raise TreeError([Problem(path, f"blob {sha.decode()} is missing")]) from None
    if type_num != Blob.type_num:
        raise TreeError([Problem(path, f"mode says file, object {sha.decode()} is not a blob")])
    return raw


def changes(
    store: BaseObjectStore,
    old: bytes | None,
    new: bytes | None,
    report: Callable[[Problem], None] | None = None,
    path: str = "",
) -> Iterator[TreeChange]:
    """What changed from tree ``old`` to tree ``new``, file by file, like dulwich's ``tree_changes``.

    Subtrees with equal ids are skipped. Every tree of ``new`` that is walked goes through
    ``read_tree``: its problems go to ``report`` (default: raise ``TreeError``) and its malformed
    entries are left out (or kept as in ``old``). ``old`` is read as git reads it: its problems were
    reported when it was new.
    """
    before = read_tree(store, old, path).entries if old else {}
    after: dict[bytes, tuple[int, ObjectID]] = {}
    if new:
        listing = read_tree(store, new, path)
        if report is None:
            after = listing.checked()
        else:
            for problem in listing.problems:
                report(problem)
            # A malformed entry counts as unchanged: it is reported once, not again as a deletion.
            kept = {name: before[name] for name in listing.dropped if name in before and name not in listing.entries}
            after = {**listing.entries, **kept}
    for name in sorted(before.keys() | after.keys()):
        was, now = before.get(name), after.get(name)
        if was == now:
            continue
        where = join(path, name)
        old_tree = was[1] if was and was[0] == TREE else None
        new_tree = now[1] if now and now[0] == TREE else None
        old_file = TreeEntry(where.encode(), *was) if was and not old_tree else None
        new_file = TreeEntry(where.encode(), *now) if now and not new_tree else None
        if old_tree or new_tree:
            yield from changes(store, old_tree, new_tree, report, where)
        if old_file and new_file:
            yield TreeChange(CHANGE_MODIFY, old_file, new_file)
        elif old_file:
            yield TreeChange(CHANGE_DELETE, old_file, None)
        elif new_file:
            yield TreeChange(CHANGE_ADD, None, new_file)
