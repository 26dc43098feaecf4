"""``gitmirror verify``: prove that a repository's history and store keep the immutability promise.

Anyone holding a clone can run it. Every commit is diffed against its parents only (unchanged
subtrees are skipped), every tree it brings in is checked by ``gittree`` (the trees git could read
differently are refused), and only the changed paths go through ``policy.check_change``, so the
cost grows with the size of the history, not with history times repository size. The pre-receive
hook uses the same per-commit check on the commits of a push.
"""

from __future__ import annotations

import contextlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..model.manifest import ProjectManifest, blobs_needed_by, project_of_path
from ..model.policy import (
    Entries,
    UnrecordedTombstone,
    Violation,
    check_change,
    takedown_candidates,
    takedown_check,
)
from ..model.takedowns import Lookup, listed, repo_reader
from ..storage.blobs import Blobs
from ..storage.gittree import FILE_MODES, Problem
from ..storage.metadata import blob_problem
from ..storage.refpolicy import date_problem
from ..storage.repo import Commit, MalformedTreeError, MetadataRepo

MAX_LISTED = 20
TAKEDOWN_BATCH = 1000  # manifest changes judged against the takedown index at once


def _text(path: bytes) -> str:
    return path.decode("utf-8", errors="replace")


def commit_violations(repo: MetadataRepo, commit: Commit) -> list[Violation]:
    """What a commit breaks relative to each of its parents (a root commit: relative to nothing).

    A merge must keep every parent's promises, so it is judged against each parent in turn. Every
    tree the commit brings in is read through ``gittree``: each malformed entry is one violation.
    """
    found: dict[Violation, None] = {}
    judged: list[Judged] = []  # the takedown rule's entries of each manifest change, not its bytes

    def refuse(problem: Problem) -> None:
        found[Violation(problem.path, problem.rule)] = None

    parents: list[bytes | None] = list(commit.parents) or [None]
    for parent in parents:
        for change in repo.changes(parent, commit.id, refuse):
            old, new = change.old, change.new
            path = _text((new or old).path)  # type: ignore[union-attr]
            try:
                new_bytes = repo.blob(new.sha, path) if new and new.mode in FILE_MODES else None
            except MalformedTreeError as exc:
                found.update(dict.fromkeys(Violation(p.path, p.rule) for p in exc.problems))
                continue
            old_bytes = _old_bytes(repo, old.mode, old.sha, _text(old.path)) if old else None
            found.update(dict.fromkeys(check_change(path, old_bytes, new_bytes)))
            if project_of_path(path) is not None:
                served, stones = takedown_candidates(old_bytes, new_bytes)
                if served or stones:
                    judged.append((path, served, stones))
                if len(judged) >= TAKEDOWN_BATCH:  # judged in batches: a first commit brings every file
                    found.update(dict.fromkeys(takedown_violations(repo, commit, judged)))
                    judged.clear()
    found.update(dict.fromkeys(takedown_violations(repo, commit, judged)))
    return list(found)


#: one manifest change as the takedown rule sees it: (path, new served entries, new tombstones)
Judged = tuple[str, Entries, Entries]


def takedown_violations(repo: MetadataRepo, commit: Commit, judged: list[Judged]) -> list[Violation]:
    """The takedown rule over a commit's manifest changes (``takedown_candidates`` of each, against
    one parent): reads only the takedown shards of the digests those changes bring in."""
    digests = [digest for _path, served, stones in judged for _name, digest in served + stones]
    if not digests:
        return []

    def read(path: str) -> bytes | None:
        try:
            return repo.read_path(commit.id, path)
        except MalformedTreeError:
            return None  # a malformed tree is reported on its own

    records = listed(read, digests)
    found: list[Violation] = []
    for path, served, stones in judged:
        found += takedown_check(path, served, stones, records)
    return found


def _old_bytes(repo: MetadataRepo, mode: int, sha: bytes, path: str) -> bytes | None:
    """A parent's file bytes; an earlier non-file or unreadable entry counts as absent (reported then)."""
    if mode not in FILE_MODES:
        return None
    try:
        return repo.blob(sha, path)
    except MalformedTreeError:
        return None


def subject(commit: Commit) -> str:
    return commit.message.decode("utf-8", errors="replace").strip().split("\n", 1)[0][:72]


@dataclass
class Report:
    rev: str
    commit: bytes | None = None
    commits: int = 0
    projects: int = 0
    files: int = 0
    blobs_checked: int = 0
    bytes_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.commit is None:
            return f"{self.rev}: no commits yet, nothing to verify"
        text = (
            f"{self.rev} at {self.commit.decode()[:12]}: {self.commits} commits checked against the policy, "
            f"{self.projects} projects, {self.files} files"
        )
        if self.blobs_checked:
            text += f", {self.blobs_checked} blobs re-hashed ({self.bytes_checked / 1e6:.1f} MB)"
        if self.ok:
            return text + ": OK"
        return text + f": {len(self.problems)} PROBLEMS"

    def listing(self, limit: int = MAX_LISTED) -> list[str]:
        lines = self.problems[:limit]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more")
        return lines


def verify(repo: MetadataRepo, store: Blobs | None, rev: str = "main", workers: int = 4) -> Report:
    """Check every commit reachable from ``rev``, then the store against the manifests at ``rev``.

    ``store=None`` checks the history only (a clone without the blob store).
    """
    report = Report(rev=rev)
    if repo.tip(rev) is None and not repo.refs():
        return report  # a fresh repository: nothing recorded, nothing promised yet
    tip = repo.resolve(rev)
    report.commit = tip
    at_tip = Lookup([repo_reader(repo, tip)])
    for commit in repo.walk([tip], parents_first=True):
        report.commits += 1
        for violation in commit_violations(repo, commit):
            hint = ""
            if isinstance(violation, UnrecordedTombstone):
                if at_tip.record(violation.sha256) is not None:
                    continue  # a takedown older than the index, recorded there since (docs/takedowns.md)
                hint = "; running `gitmirror takedown` on that file again records it"
            report.problems.append(f"commit {commit.id.decode()[:12]} ({subject(commit)}): {violation}{hint}")
    report.problems += dating_problems(repo, tip, time.time())
    try:
        if store is None:  # counted by lines (one per file after the header): the history checked them
            for name, blob_id in repo.manifest_blobs(tip):
                report.projects += 1
                report.files += repo.blob(blob_id, name).count(b"\n") - 1
            return report
        manifests = list(repo.manifests(tip))
    except MalformedTreeError as exc:  # reported in the history above too; nothing at the tip to check
        report.problems.append(f"{rev}: {exc}")
        return report
    report.projects = len(manifests)
    report.files = sum(len(manifest.files) for manifest in manifests)
    _check_store(manifests, store, report, workers)
    return report


def dating_problems(repo: MetadataRepo, tip: bytes, now: float) -> list[str]:
    """Each commit of main's first-parent line, from ``tip`` down (when ``tip`` is on that line),
    dated against ``refpolicy.date_problem``: ``/snapshot/<date>/`` walks that line and relies on
    dates that never go back, and a history written around the hook may break that."""
    line = list(repo.first_parents(repo.tip()))
    ids: list[bytes] = [commit.id for commit in line]
    problems = []
    for index in range(ids.index(tip) if tip in ids else len(line), len(line)):
        commit, parent = line[index], line[index + 1] if index + 1 < len(line) else None
        problem = date_problem(commit.commit_time, parent.commit_time if parent else None, now)
        if problem is not None:
            problems.append(f"commit {commit.id.decode()[:12]} ({subject(commit)}): main: {problem}")
    return problems


def _check_store(manifests: list[ProjectManifest], store: Blobs, report: Report, workers: int) -> None:
    """Re-hash every blob a served file needs (a PEP 658 file kept in its wheel: the wheel's METADATA);
    taken-down blobs must be gone unless still needed."""
    wanted = blobs_needed_by(manifests)
    taken_down: dict[str, str] = {}
    for manifest in manifests:
        for entry in manifest.sorted_files():
            if not entry.served:
                taken_down.setdefault(entry.sha256, f"{manifest.name}/{entry.filename}")
    digests = sorted(wanted)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda digest: blob_problem(store, wanted[digest], rehash=True), digests))
    for digest, problem in zip(digests, results, strict=True):
        if problem is None:
            report.blobs_checked += 1
            with contextlib.suppress(FileNotFoundError):  # none for a PEP 658 file read out of its wheel
                report.bytes_checked += store.size(digest)
        else:
            report.problems.append(f"store: {wanted[digest].label} ({digest}): {problem}")
    for digest, label in sorted(taken_down.items(), key=lambda item: item[1]):
        if digest not in wanted and store.has(digest):
            report.problems.append(f"store: {label} was taken down but its blob is still stored (run takedown again)")
