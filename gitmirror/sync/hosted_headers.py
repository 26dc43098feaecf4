"""What ``hosted:`` declares reaches the hosted projects already recorded.

A hosted project's PEP 708 data (``tracks``, ``alternate-locations``) lives in its manifest's
header (``model.hosted.with_pep708``), and a page says what its commit records; so an entry whose
data changed in ``mirror.yaml`` needs a commit. ``sync`` writes the header of every recorded hosted
project that differs, so pages follow the configuration without waiting for a project's next upload.
"""

from __future__ import annotations

from ..model.hosted import HostedSettings, with_pep708
from ..model.manifest import ProjectManifest, manifest_path
from ..model.names import UnsafeNameError, shard
from ..model.policy import check
from ..storage.repo import MetadataRepo
from .merge import ProjectOutcome, commit_message

PEP708_CHANGED = "PEP 708 tracks and alternate-locations set from hosted: in mirror.yaml"
_GLOB_CHARS = "*?["


def hosted_names(repo: MetadataRepo, commit: bytes | None, settings: HostedSettings) -> set[str]:
    """The projects recorded at ``commit`` that ``settings`` hosts.

    An exact name is looked up; a glob lists the shard its literal prefix names (every shard when
    the prefix is shorter than a shard's four characters), so ``acme-*`` reads one directory.
    """
    found: set[str] = set()
    for entry in settings.projects:
        if not entry.is_glob:
            try:
                if repo.read_path(commit, manifest_path(entry.pattern)) is not None:
                    found.add(entry.pattern)
            except UnsafeNameError:
                continue  # a name no manifest can have
            continue
        prefix = _literal_prefix(entry.pattern)
        within = shard(prefix) if len(prefix) >= 4 else None
        found.update(name for name, _ in repo.manifest_blobs(commit, within) if entry.matches(name))
    return {name for name in found if settings.entry(name) is not None}


def with_hosted_headers(
    repo: MetadataRepo, parent: bytes | None, settings: HostedSettings, outcomes: list[ProjectOutcome]
) -> list[ProjectOutcome]:
    """``outcomes`` (a run's) with the hosted projects' PEP 708 data as ``settings`` declares it: a
    run's own outcome of a hosted project (one that tracks upstream) is set right, and every other
    recorded hosted project whose header differs gets an outcome of its own. The run's commit checks
    each with the policy like every change."""
    if not settings.projects:
        return outcomes
    for outcome in outcomes:
        if outcome.new is not None and settings.is_hosted(outcome.name):
            _set_header(outcome, outcome.new, settings)
    own = {outcome.name for outcome in outcomes}
    added: list[ProjectOutcome] = []
    for name in sorted(hosted_names(repo, parent, settings) - own):
        old = repo.manifest(parent, name)
        if old is not None:
            outcome = ProjectOutcome(name=name, old=old)
            if _set_header(outcome, old, settings):
                added.append(outcome)
    return outcomes + added


def _set_header(outcome: ProjectOutcome, manifest: ProjectManifest, settings: HostedSettings) -> bool:
    updated = with_pep708(manifest, settings)
    if updated is manifest:
        return False
    outcome.new = updated
    outcome.changes.append(PEP708_CHANGED)
    return True


def _literal_prefix(pattern: str) -> str:
    end = next((index for index, char in enumerate(pattern) if char in _GLOB_CHARS), len(pattern))
    return pattern[:end]


def refresh(repo: MetadataRepo, branch: str, settings: HostedSettings) -> bytes | None:
    """Commit the PEP 708 headers ``settings`` declares on ``branch`` (a sync with nothing to mirror
    still owes the hosted projects theirs); returns the commit, or None when every header is right."""
    with repo.writer_lock():
        parent = repo.tip(branch)
        outcomes = with_hosted_headers(repo, parent, settings, [])
        changes: dict[str, bytes | None] = {}
        for outcome in outcomes:
            assert outcome.new is not None
            path = manifest_path(outcome.name)
            violations = check(outcome.old, outcome.new, path)
            if violations:  # a header change touches no file: never expected
                raise AssertionError("; ".join(map(str, violations)))
            changes[path] = outcome.new.dumps()
        if not changes:
            return None
        return repo.write_commit(changes, commit_message(outcomes), branch=branch, parent=parent)
