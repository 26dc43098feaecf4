"""``gitmirror review``, ``approve``, ``yank``, ``deprecate`` and ``takedown``: the maintainer's
decisions about what the mirror serves, each recorded as a commit."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from .cli_common import ConfigOption, ReasonOption, fail, load_config, open_repo

if TYPE_CHECKING:
    from ..review.marks import MarkResult


def review(
    revisions: Annotated[
        str | None, typer.Argument(metavar="[BASE..HEAD]", help="What to review (default: main..<review branch>).")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
    config: ConfigOption = None,
) -> None:
    """Report what approving would let in: new releases, dependency changes, marks, conflicts and flags."""
    from ..review.review import build, parse_range
    from ..review.review_report import to_markdown
    from ..sync.store_config import open_store

    if output_format not in ("markdown", "json"):
        raise fail(f"--format must be markdown or json, got {output_format!r}")
    cfg = load_config(config)
    base, head = parse_range(revisions, cfg)
    report = build(open_repo(cfg), open_store(cfg), cfg, base, head)
    typer.echo(report.to_json() if output_format == "json" else to_markdown(report), nl=False)


def approve(
    targets: Annotated[list[str] | None, typer.Argument(metavar="[PROJECT[==VERSION]]...")] = None,
    approve_all: Annotated[bool, typer.Option("--all", help="Approve everything pending.")] = False,
    policy: Annotated[
        bool, typer.Option("--policy", help="Approve what review.cooldown and review.auto_approve allow.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Move approved changes from the review branch onto main (one commit, authored by you)."""
    from ..review.approve import ApproveError
    from ..review.approve import approve as run_approve
    from ..sync.store_config import open_store

    cfg = load_config(config)
    try:
        result = run_approve(
            open_repo(cfg), open_store(cfg), cfg, targets or [], everything=approve_all, by_policy=policy
        )
    except ApproveError as exc:
        raise fail(str(exc)) from None
    typer.echo(result.summary())


def echo_decision(result: MarkResult) -> None:
    """One line for a yank/deprecate/takedown: what happened and the commit that records it."""
    typer.echo(result.message + (f"; commit {result.commit.decode()[:12]}" if result.commit else ""))


def yank(
    project: Annotated[str, typer.Argument(help="Project name.")],
    version: Annotated[str, typer.Argument(help="Version whose files to yank.")],
    reason: ReasonOption,
    undo: Annotated[bool, typer.Option("--undo", help="Un-yank instead.")] = False,
    config: ConfigOption = None,
) -> None:
    """Yank every file of a version (PEP 592): installers skip it unless it is pinned exactly."""
    from ..review.marks import yank as run_yank

    cfg = load_config(config)
    result = run_yank(open_repo(cfg), project, version, reason, undo=undo, branch=cfg.branch)
    echo_decision(result)


def deprecate(
    project: Annotated[str, typer.Argument(help="Project name.")],
    reason: ReasonOption,
    status: Annotated[
        str, typer.Option("--status", help="archived, deprecated, quarantined, or active to restore.")
    ] = "deprecated",
    config: ConfigOption = None,
) -> None:
    """Set a project's PEP 792 status, shown on its pages (HTML meta tag and JSON project-status)."""
    from ..review.marks import set_status

    cfg = load_config(config)
    result = set_status(open_repo(cfg), project, status, reason, branch=cfg.branch)
    echo_decision(result)


def takedown(
    filename: Annotated[str, typer.Argument(help="Distribution filename to take down.")],
    reason: ReasonOption,
    project: Annotated[str | None, typer.Option("--project", help="Project holding the file.")] = None,
    config: ConfigOption = None,
) -> None:
    """Tombstone a file: kept in the manifest with reason and date, removed from store and index (410 Gone)."""
    from ..review.marks import takedown as run_takedown
    from ..sync.store_config import open_store

    cfg = load_config(config)
    result = run_takedown(open_repo(cfg), open_store(cfg), filename, reason, project=project, branch=cfg.branch)
    echo_decision(result)
