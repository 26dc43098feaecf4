"""Signed history: every commit of a branch (and every tag naming one) signed by an allowed key.

``gitmirror verify --keys FILE`` checks the whole history against an allowed_signers file; the
pre-receive hook, when the repository asks for it (``gitmirror.requireSignedMain``), checks every
commit a push brings to main, and every annotated tag it creates, against the repository's
``gpg.ssh.allowedSignersFile``. Both use ``ssh_signatures.AllowedSigners.check``: the same verdict
``git verify-commit`` gives with that file, without a process per commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..model.ssh_signatures import AllowedSigners, AllowedSignersError
from ..storage.refpolicy import TAGS
from ..storage.repo import MetadataRepo
from ..storage.signing import signed_payload

MAX_LISTED = 20


def load_allowed_signers(path: Path) -> AllowedSigners:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AllowedSignersError(f"cannot read allowed signers file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise AllowedSignersError(f"{path}: not UTF-8 text") from None
    return AllowedSigners.parse(text, str(path))


@dataclass
class SignatureReport:
    commits: int = 0
    tags: int = 0
    signers: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        shown = self.problems[:MAX_LISTED]
        more = len(self.problems) - len(shown)
        return shown + ([f"... and {more} more"] if more > 0 else [])

    def summary(self) -> str:
        if not self.ok:
            return f"signatures: {len(self.problems)} problem(s) in {self.commits} commits and {self.tags} tags"
        who = ", ".join(f"{name} ({count})" for name, count in sorted(self.signers.items()))
        return f"signatures: {self.commits} commits and {self.tags} tags signed by allowed keys: {who or 'none'}"


def verify_signatures(
    repo: MetadataRepo, tip: bytes, allowed: AllowedSigners, signed_from: bytes | None = None
) -> SignatureReport:
    """Every commit reachable from ``tip`` and every annotated tag naming one of them, each signed by
    an allowed key; with ``signed_from``, only that commit and those after it (a mirror that turned
    signing on later keeps its unsigned past)."""
    report = SignatureReport()
    seen: set[bytes] = set()
    before = repo.commit(signed_from).parents if signed_from is not None else []
    for commit in repo.walk([tip], exclude=before):
        seen.add(commit.id)
        report.commits += 1
        _judge(report, allowed, f"commit {commit.id.decode()[:12]}", signed_payload(commit))
    for ref, target in sorted(repo.refs(TAGS).items()):
        signed = repo.signature_of(target) if target not in seen and repo.peel(target) in seen else None
        if signed is not None:  # an annotated tag of this history (a lightweight one is its commit)
            report.tags += 1
            _judge(report, allowed, f"tag {ref[len(TAGS) :].decode()}", signed)
    return report


def push_signature_problem(repo: MetadataRepo, new: bytes, existing: list[bytes]) -> str | None:
    """Why a push moving main to ``new`` is refused for its signatures, or None.

    Only asked when the repository requires signed pushes to main: every commit the push brings
    (reachable from ``new``, not from a ref the repository already had) must be signed by a key of
    its ``gpg.ssh.allowedSignersFile``.
    """
    allowed, problem = _required_signers(repo)
    if allowed is None:
        return problem
    for commit in repo.walk([new], exclude=existing):
        payload, signature, when = signed_payload(commit)
        verdict = allowed.check(payload, signature, when)
        if not verdict.ok:
            problem = f"commit {commit.id.decode()[:12]}: {verdict.problem}"
            return f"{problem}; pushes to main must be signed by an allowed key"
    return None


def tag_signature_problem(repo: MetadataRepo, tag: bytes) -> str | None:
    """Why a pushed annotated tag ``tag`` (its object id) is refused for its signature, or None.

    When pushes to main must be signed, so must every annotated tag a push creates: a tag is a name
    that means one thing forever, so who gave it must be as certain as who wrote main. A
    lightweight tag carries no signature; it names a commit the other rules already judge.
    """
    allowed, problem = _required_signers(repo)
    if allowed is None:
        return problem
    signed = repo.signature_of(tag)
    if signed is None or repo.peel(tag) == tag:  # a commit itself: a lightweight tag
        return None
    verdict = allowed.check(*signed)
    if verdict.ok:
        return None
    return f"{verdict.problem}; tags must be signed by an allowed key (as pushes to main must)"


def _required_signers(repo: MetadataRepo) -> tuple[AllowedSigners | None, str | None]:
    """(the keys pushes must be signed by, None) when the repository requires signed pushes;
    (None, why none can be) when it requires them but names no readable file; (None, None) otherwise."""
    policy = repo.signing_policy()
    if not policy.require_signed_main:
        return None, None
    if policy.allowed_signers is None:
        return None, "signed pushes to main are required but no gpg.ssh.allowedSignersFile is set"
    try:
        return load_allowed_signers(policy.allowed_signers), None
    except AllowedSignersError as exc:
        return None, f"signed pushes to main are required but {exc}"


def _judge(
    report: SignatureReport, allowed: AllowedSigners, what: str, signed: tuple[bytes, bytes | None, int]
) -> None:
    verdict = allowed.check(*signed)
    if verdict.principal is None:
        report.problems.append(f"{what}: {verdict.problem}")
    else:
        report.signers[verdict.principal] = report.signers.get(verdict.principal, 0) + 1
