"""Approving what waits on the review branch: the chosen changes become one commit on ``main``.

``main``'s new state is built per project from ``main``'s own manifest plus the approved changes
of the review branch, never by resetting ``main`` to that branch, so anything committed on ``main``
meanwhile (a yank, a tombstone) survives. The result is judged by ``policy.check``, the same rule
the hook enforces; a violation stops the approval and writes nothing. The commit's author is the
approver's git identity and its message lists every approved change, so ``git log main`` is the
record of who let what in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Set
from dataclasses import dataclass, field
from datetime import UTC, datetime

from packaging.requirements import InvalidRequirement, Requirement

from ..model.manifest import format_time, manifest_path
from ..model.names import UnsafeNameError, normalize
from ..model.policy import CONFLICTS_DIR, check, takedown_candidates, takedown_check
from ..model.takedowns import Lookup, append, listed, repo_reader, shard_path
from ..storage.blobs import Blobs
from ..storage.repo import MetadataRepo
from ..sync.config import Config
from ..sync.incoming import (
    Change,
    ProjectPending,
    apply,
    catch_up,
    merged_conflicts,
    pending,
    uploaded_at,
)
from .review import build, format_duration, needing_reviewer

# Marks that only warn or restrict: they bring no new code, so the policy lets them through.
_RESTRICTING = {
    "yank",
    "upstream-removed",
    "back-upstream",
    "backfill",
    "tombstone",
    "project-upstream-removed",
    "project-back-upstream",
    "conflict",
}


class ApproveError(ValueError):
    """A request that cannot be approved as asked; nothing was written."""


@dataclass(frozen=True)
class Approval:
    change: Change
    why: str


@dataclass
class ApproveResult:
    approved: list[Approval] = field(default_factory=list)
    held: list[Approval] = field(default_factory=list)
    commit: bytes | None = None
    complete: bool = False  # nothing left pending: recorded as a merge of the review branch

    def summary(self) -> str:
        lines = [f"held {a.change.project}: {a.change.describe()} ({a.why})" for a in self.held]
        if self.commit is None:
            lines.append(f"nothing approved; {len(self.held)} changes held")
        else:
            projects = len({a.change.project for a in self.approved})
            text = f"approved {_count(len(self.approved), 'change')} in {_count(projects, 'project')}"
            text += f", {len(self.held)} held" if self.held else ""
            lines.append(f"{text}; commit {self.commit.decode()[:12]}")
        return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def select_named(items: list[ProjectPending], targets: list[str]) -> list[Approval]:
    """``PROJECT`` approves everything pending for it; ``PROJECT==1.5`` (any specifier) those versions."""
    by_name = {item.name: item for item in items}
    chosen: dict[Change, Approval] = {}
    for text in targets:
        try:
            requirement = Requirement(text)
            name = normalize(requirement.name)
        except (InvalidRequirement, UnsafeNameError) as exc:
            raise ApproveError(f"invalid approval {text!r}: expected PROJECT or PROJECT==VERSION") from exc
        item = by_name.get(name)
        if item is None:
            raise ApproveError(f"nothing pending for {name}")
        if requirement.specifier:
            matching = [
                change
                for change in item.changes
                if change.version is not None and requirement.specifier.contains(change.version, prereleases=True)
            ]
        else:
            matching = list(item.changes)
        if not matching:
            versions = ", ".join(item.new_versions) or "none"
            raise ApproveError(f"nothing pending for {text} (pending versions: {versions})")
        for change in matching:
            chosen.setdefault(change, Approval(change, f"approved as {text}"))
    return list(chosen.values())


def select_policy(
    items: list[ProjectPending], cfg: Config, now: datetime, flagged: Set[tuple[str, str]] = frozenset()
) -> tuple[list[Approval], list[Approval]]:
    """What the review policy approves without a human: old enough releases, trusted projects, marks.

    A release the review report flags (new author or home page, wheels gone, size jump) waits for a
    human whatever its age: those are the signs of a taken-over project the cooldown cannot catch.
    """
    cooldown = cfg.review.cooldown
    approved: list[Approval] = []
    held: list[Approval] = []
    for item in items:
        youngest: dict[str, datetime | None] = {}
        for change in item.changes:
            if change.kind == "new-file" and change.entry is not None and change.version is not None:
                moment = uploaded_at(change.entry)
                previous = youngest.get(change.version, moment)
                youngest[change.version] = None if moment is None or previous is None else max(moment, previous)
        for change in item.changes:
            if change.kind == "rewrite":
                held.append(Approval(change, "rewrites a recorded file: refused by the immutability policy"))
            elif item.name in cfg.review.auto_approve:
                approved.append(Approval(change, "auto_approve"))
            elif change.kind == "new-file" and (item.name, change.version) in flagged:
                held.append(Approval(change, f"release {change.version} is flagged in the review report"))
            elif change.kind == "new-file":
                moment = youngest.get(change.version or "")
                if moment is not None and now - moment >= cooldown:
                    approved.append(Approval(change, f"older than cooldown {format_duration(cooldown)}"))
                else:
                    when = f"eligible {format_time(moment + cooldown)}" if moment else "upload time unknown"
                    held.append(Approval(change, f"release {change.version} within cooldown, {when}"))
            elif change.kind == "conflict":
                approved.append(Approval(change, "record only"))
            elif change.kind in _RESTRICTING or (change.kind == "status" and change.after[0] != "active"):
                approved.append(Approval(change, "restricting mark"))
            else:
                held.append(Approval(change, "loosens a mark: needs a reviewer"))
    return approved, held


def approve(
    repo: MetadataRepo,
    store: Blobs,
    cfg: Config,
    targets: list[str],
    everything: bool = False,
    by_policy: bool = False,
    now: datetime | None = None,
) -> ApproveResult:
    modes = sum([bool(targets), everything, by_policy])
    if modes != 1:
        raise ApproveError("name what to approve: PROJECT[==VERSION]..., --all or --policy (exactly one)")
    main, incoming = cfg.branch, cfg.review.branch
    with repo.writer_lock():
        main_tip, incoming_tip = repo.tip(main), repo.tip(incoming)
        if incoming_tip is None:
            raise ApproveError(f"there is no branch {incoming}: enable review in mirror.yaml and run sync")
        items = pending(repo, main_tip, incoming_tip)
        result = ApproveResult()
        if everything:
            result.approved = [Approval(change, "--all") for item in items for change in item.changes]
        elif by_policy:
            moment = now or datetime.now(UTC)
            flagged = needing_reviewer(build(repo, store, cfg, main, incoming, moment))
            result.approved, result.held = select_policy(items, cfg, moment, flagged)
            result.approved, taken_down = _without_taken_down(repo, main_tip, result.approved)
            result.held += taken_down
        else:
            result.approved = select_named(items, targets)
        if not result.approved:
            return result
        total = sum(len(item.changes) for item in items)
        result.complete = len(result.approved) == total
        changes = _new_state(repo, main_tip, items, result.approved)
        _check_takedowns(repo, main_tip, incoming_tip, items, changes)
        message = _message(repo, cfg, incoming, incoming_tip, result, by_policy)
        merged = (incoming_tip,) if result.complete else ()
        result.commit = repo.write_commit(changes, message, branch=main, parent=main_tip, merged=merged)
        catch_up(repo, main, incoming)
    return result


def _new_state(
    repo: MetadataRepo, main_tip: bytes | None, items: list[ProjectPending], approvals: list[Approval]
) -> dict[str, bytes | None]:
    """Main's manifests with the approved changes replayed; refuses anything the policy forbids."""
    by_project: dict[str, list[Change]] = defaultdict(list)
    for approval in approvals:
        by_project[approval.change.project].append(approval.change)
    changes: dict[str, bytes | None] = {}
    for item in items:
        chosen = by_project.get(item.name)
        if not chosen:
            continue
        manifest_changes = [change for change in chosen if change.kind != "conflict"]
        if manifest_changes:
            path = manifest_path(item.name)
            after = apply(item.main, item.name, manifest_changes)
            violations = check(item.main, after, path)
            if violations:
                raise ApproveError(f"refused by the immutability policy: {violations[0]}")
            changes[path] = after.dumps()
        records = [change.after for change in chosen if change.kind == "conflict"]
        if records:
            changes[f"{CONFLICTS_DIR}/{item.name}.jsonl"] = merged_conflicts(repo, main_tip, item.name, records)
    return changes


def _without_taken_down(
    repo: MetadataRepo, main_tip: bytes | None, approvals: list[Approval]
) -> tuple[list[Approval], list[Approval]]:
    """The policy's approvals minus new files whose bytes ``main`` took down (held, with the reason)."""
    lookup = Lookup([repo_reader(repo, main_tip)])
    kept: list[Approval] = []
    held: list[Approval] = []
    for approval in approvals:
        entry = approval.change.entry
        record = lookup.record(entry.sha256) if entry is not None and entry.served else None
        if record is None:
            kept.append(approval)
        else:
            held.append(Approval(approval.change, f"sha256 taken down as {record.project}/{record.filename}"))
    return kept, held


def _check_takedowns(
    repo: MetadataRepo,
    main_tip: bytes | None,
    incoming_tip: bytes,
    items: list[ProjectPending],
    changes: dict[str, bytes | None],
) -> None:
    """The takedown rule on the approval commit (``policy.takedown_check``, as the hook judges it):
    a new served file with bytes ``main`` took down is refused; a tombstone the approval brings
    gets its digest's index line from the review branch, carried into ``changes``."""
    judged = []
    for item in items:
        path = manifest_path(item.name)
        if path in changes:
            before = item.main.dumps() if item.main else None
            judged.append((path, *takedown_candidates(before, changes[path])))
    served = [digest for _path, entries, _stones in judged for _name, digest in entries]
    stones = [digest for _path, _entries, entries in judged for _name, digest in entries]
    records = listed(repo_reader(repo, main_tip), served + stones)
    for digest, record in listed(repo_reader(repo, incoming_tip), [d for d in stones if d not in records]).items():
        path = shard_path(digest)
        changes[path] = append(changes.get(path) or repo.read_path(main_tip, path), record)
        records[digest] = record
    for path, entries, tombstoned in judged:
        violations = takedown_check(path, entries, tombstoned, records)
        if violations:
            raise ApproveError(f"refused by the takedown index: {violations[0]}")


def _message(
    repo: MetadataRepo, cfg: Config, incoming: str, incoming_tip: bytes, result: ApproveResult, by_policy: bool
) -> str:
    approver = repo.identity().decode()
    projects = len({approval.change.project for approval in result.approved})
    subject = f"approve: {_count(len(result.approved), 'change')} in {_count(projects, 'project')} from {incoming}"
    body = [f"{a.change.project}: {a.change.describe()}  [{a.why}]" for a in result.approved]
    trailers = [f"Approved-by: {approver}", f"Approved-from: {incoming} {incoming_tip.decode()}"]
    if by_policy:
        trusted = ", ".join(cfg.review.auto_approve) or "none"
        trailers.append(f"Approval-policy: cooldown {format_duration(cfg.review.cooldown)}; auto_approve {trusted}")
    if result.held:
        trailers.append(f"Still-pending: {len(result.held)}")
    return subject + "\n\n" + "\n".join(body) + "\n\n" + "\n".join(trailers) + "\n"
