"""The takedown index: every sha256 the mirror took down, so the same bytes never come back.

``takedowns/<aa>.jsonl`` in the metadata repository (``aa``: the digest's first two hex digits)
holds one compact JSON line per taken-down digest, keys in the order ``sha256``, ``project``,
``filename``, ``reason``, ``time``: the file whose takedown listed it first. It is an append-only
audit log (``policy.AUDIT_LOG_DIRS``). Sharded by digest so that every question ("is this digest
taken down?") reads one small file, never a walk of the whole index. This module owns the format;
``policy`` owns the rule that uses it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .names import UnsafeNameError, check_sha256

TAKEDOWNS_DIR = "takedowns"
if TYPE_CHECKING:
    from ..storage.repo import MetadataRepo

_KEYS = ("sha256", "project", "filename", "reason", "time")
_SHARD = re.compile(rf"^{TAKEDOWNS_DIR}/[0-9a-f]{{2}}\.jsonl$")

#: how a reader gets a repository path's bytes at one commit (None: absent)
ReadPath = Callable[[str], bytes | None]


@dataclass(frozen=True)
class TakedownRecord:
    sha256: str
    project: str
    filename: str
    reason: str
    time: str

    def line(self) -> bytes:
        """The record as one line of its shard, newline included."""
        data = {key: getattr(self, key) for key in _KEYS}
        return (json.dumps(data, separators=(",", ":"), ensure_ascii=True) + "\n").encode()


def shard_path(sha256: str) -> str:
    """The shard that lists ``sha256`` (a lowercase hex digest)."""
    return f"{TAKEDOWNS_DIR}/{sha256[:2]}.jsonl"


def is_shard_path(path: str) -> bool:
    return bool(_SHARD.match(path))


def parse_line(line: bytes | str) -> TakedownRecord:
    """One line of a shard; ValueError when it is not a well-formed record."""
    data = json.loads(line)
    if not isinstance(data, dict) or list(data) != list(_KEYS) or not all(isinstance(v, str) for v in data.values()):
        raise ValueError(f"a takedown record has exactly the string keys {', '.join(_KEYS)}")
    try:
        check_sha256(data["sha256"])
    except UnsafeNameError as exc:
        raise ValueError(str(exc)) from None
    if not data["reason"].strip():
        raise ValueError("a takedown record needs a reason")
    return TakedownRecord(**data)


def parse(data: bytes | None) -> dict[str, TakedownRecord]:
    """A shard's records by digest (the first line wins); lines that do not parse are skipped
    (the policy refuses them when they are pushed, so a reader need not fail on them)."""
    records: dict[str, TakedownRecord] = {}
    for line in (data or b"").splitlines():
        try:
            record = parse_line(line)
        except ValueError:
            continue
        records.setdefault(record.sha256, record)
    return records


def append(existing: bytes | None, record: TakedownRecord) -> bytes:
    """The shard with ``record`` added, or unchanged when its digest is already listed."""
    existing = existing or b""
    if record.sha256 in parse(existing):
        return existing
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    return existing + record.line()


def line_problems(path: str, old: bytes | None, new: bytes) -> list[str]:
    """What is wrong with the lines a commit adds to ``path`` (shape, and the shard they sit in)."""
    if not is_shard_path(path):
        return [f"not a takedown shard path ({TAKEDOWNS_DIR}/<first two hex digits of the sha256>.jsonl)"]
    known = set((old or b"").splitlines())
    problems = []
    for line in new.splitlines():
        if line in known:
            continue
        try:
            record = parse_line(line)
        except ValueError as exc:
            problems.append(f"malformed takedown record: {exc}")
            continue
        if shard_path(record.sha256) != path:
            problems.append(f"sha256 {record.sha256} belongs in {shard_path(record.sha256)}")
    return problems


def listed(read: ReadPath, digests: Iterable[str]) -> dict[str, TakedownRecord]:
    """The records of those ``digests`` that are taken down, reading each shard involved once."""
    lookup = Lookup([read])
    return {digest: record for digest in digests if (record := lookup.record(digest)) is not None}


class Lookup:
    """Cached answers for one or more commits: a sync asks about many digests, each shard is read once."""

    def __init__(self, reads: Iterable[ReadPath]) -> None:
        self._reads = list(reads)
        self._shards: dict[str, dict[str, TakedownRecord]] = {}

    def record(self, sha256: str) -> TakedownRecord | None:
        path = shard_path(sha256)
        if path not in self._shards:
            merged: dict[str, TakedownRecord] = {}
            for read in self._reads:
                for digest, record in parse(read(path)).items():
                    merged.setdefault(digest, record)
            self._shards[path] = merged
        return self._shards[path].get(sha256)


def repo_reader(repo: MetadataRepo, commit: bytes | None) -> ReadPath:
    """How ``Lookup`` and ``listed`` read the index of one commit of ``repo``."""
    return lambda path: repo.read_path(commit, path)


def takedown_reason(repo: MetadataRepo, commit: bytes | None, sha256: str) -> str | None:
    """Why ``sha256`` was taken down as of ``commit`` (None: it was not); reads that digest's shard only."""
    record = parse(repo.read_path(commit, shard_path(sha256))).get(sha256)
    return record.reason if record else None
