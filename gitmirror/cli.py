"""The ``gitmirror`` command line.

Commands stay thin: they load the configuration, call one module, and turn the known failure
kinds into a one-line error and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from . import config as config_module
from .config import Config
from .failures import EXIT_USAGE, error_line, one_line
from .repo import MetadataRepo
from .store import BlobStore
from .sync_command import run as run_sync
from .sync_command import select

app = typer.Typer(
    help="An immutable, git-backed mirror of a Python package index.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Path of mirror.yaml (default: ./mirror.yaml, else built-in defaults)."),
]
F = TypeVar("F", bound=Callable[..., object])

if TYPE_CHECKING:
    from .marks import MarkResult


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(error_line(message), err=True)
    return typer.Exit(code)


def friendly_errors(command: F) -> F:
    """Known failures become one line on stderr and exit code 2; nothing else is swallowed."""

    @wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except Exception as exc:
            line = one_line(exc)
            if line is None:
                raise
            typer.echo(line, err=True)
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


def echo_decision(result: MarkResult) -> None:
    """One line for a yank/deprecate/takedown: what happened and the commit that records it."""
    typer.echo(result.message + (f"; commit {result.commit.decode()[:12]}" if result.commit else ""))


def load_config(path: Path | None) -> Config:
    return config_module.load(path)


def open_repo(cfg: Config, create: bool = False) -> MetadataRepo:
    return MetadataRepo.init(cfg.repo, cfg.branch) if create else MetadataRepo(cfg.repo)


@app.command()
@friendly_errors
def init(config: ConfigOption = None) -> None:
    """Create the metadata repository (branch main) and the blob store; safe to run again."""
    cfg = load_config(config)
    MetadataRepo.init(cfg.repo, cfg.branch)
    BlobStore(cfg.store).init()
    typer.echo(f"repository {cfg.repo}, store {cfg.store}: ready")


@app.command()
@friendly_errors
def sync(
    projects: Annotated[list[str] | None, typer.Argument(help="Projects to sync (default: all configured).")] = None,
    config: ConfigOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress and no summary; errors only.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout instead.")] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Ask for every page even when upstream's serial says nothing changed.")
    ] = False,
) -> None:
    """Fetch new releases from upstream into the store and commit their manifests (one commit per run).

    When upstream's serial, the configuration, the refs and the store are as the last complete run
    left them, a plain ``sync`` is answered from that run's record with one request; ``--full``
    always does the whole run.

    Exit codes: 0 done, 1 some projects or files failed, 3 upstream conflicts were recorded.
    """
    code = run_sync(config, projects or [], quiet=quiet, as_json=as_json)
    if code:
        raise typer.Exit(code)


@app.command()
@friendly_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    config: ConfigOption = None,
) -> None:
    """Serve the simple index (PEP 503/691) of the branch tip and the files of the store."""
    from .server import serve as run_server

    cfg = load_config(config)
    open_repo(cfg)  # fail early and clearly when there is nothing to serve
    typer.echo(f"serving {cfg.repo} at http://{host}:{port}/simple/", err=True)
    run_server(cfg.repo, cfg.store, host, port, cfg.branch)


@app.command()
@friendly_errors
def review(
    revisions: Annotated[
        str | None, typer.Argument(metavar="[BASE..HEAD]", help="What to review (default: main..<review branch>).")
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="markdown or json.")] = "markdown",
    config: ConfigOption = None,
) -> None:
    """Report what approving would let in: new releases, dependency changes, marks, conflicts and flags."""
    from .review import build, parse_range, to_markdown

    if output_format not in ("markdown", "json"):
        raise fail(f"--format must be markdown or json, got {output_format!r}")
    cfg = load_config(config)
    base, head = parse_range(revisions, cfg)
    report = build(open_repo(cfg), BlobStore(cfg.store), cfg, base, head)
    typer.echo(report.to_json() if output_format == "json" else to_markdown(report), nl=False)


@app.command()
@friendly_errors
def approve(
    targets: Annotated[list[str] | None, typer.Argument(metavar="[PROJECT[==VERSION]]...")] = None,
    approve_all: Annotated[bool, typer.Option("--all", help="Approve everything pending.")] = False,
    policy: Annotated[
        bool, typer.Option("--policy", help="Approve what review.cooldown and review.auto_approve allow.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Move approved changes from the review branch onto main (one commit, authored by you)."""
    from .approve import ApproveError
    from .approve import approve as run_approve

    cfg = load_config(config)
    try:
        result = run_approve(
            open_repo(cfg), BlobStore(cfg.store), cfg, targets or [], everything=approve_all, by_policy=policy
        )
    except ApproveError as exc:
        raise fail(str(exc)) from None
    typer.echo(result.summary())


@app.command()
@friendly_errors
def plan(
    projects: Annotated[list[str] | None, typer.Argument(help="Projects to plan (default: all configured).")] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show what a sync would add (projects, files, bytes) without downloading any release file.

    Exit codes: 0 plan complete, 1 some projects could not be planned (listed).
    """
    import json

    from .plan import make_plan

    cfg = load_config(config)
    result = make_plan(cfg, select(cfg, projects or []), with_files=not projects)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        for line in result.lines():
            typer.echo(line)
        typer.echo(result.summary())
    if result.errors:
        raise typer.Exit(1)


ReasonOption = Annotated[str, typer.Option("--reason", help="Why (required): users and auditors read it.")]


@app.command("install-hook")
@friendly_errors
def install_hook(
    bare_repo: Annotated[
        Path | None, typer.Argument(help="Bare repository that receives pushes (default: the configured repo).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a pre-receive hook that is not gitmirror's.")] = False,
    config: ConfigOption = None,
) -> None:
    """Install the pre-receive hook that refuses force pushes, deletions and policy violations."""
    from .hooks import install

    target = bare_repo if bare_repo is not None else load_config(config).repo
    hook = install(target, sys.executable, force=force)
    typer.echo(f"installed {hook} (runs {sys.executable}); receive.denyNonFastForwards and denyDeletes set")


@app.command()
@friendly_errors
def verify(
    rev: Annotated[str | None, typer.Option("--rev", help="Branch, tag or commit to verify (default: main).")] = None,
    repo_path: Annotated[
        Path | None, typer.Option("--repo", help="Repository to verify instead of the configured one (a clone).")
    ] = None,
    history_only: Annotated[
        bool, typer.Option("--history-only", help="Check the git history only, not the blob store.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Check every commit of the history against the policy and every served blob against its sha256.

    Exit codes: 0 everything holds, 1 problems found (the first ones are listed).
    """
    from .verify import verify as run_verify

    cfg = load_config(config)
    repo = MetadataRepo(repo_path) if repo_path is not None else open_repo(cfg)
    report = run_verify(repo, None if history_only else BlobStore(cfg.store), rev or cfg.branch)
    for line in report.listing():
        typer.echo(line)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def yank(
    project: Annotated[str, typer.Argument(help="Project name.")],
    version: Annotated[str, typer.Argument(help="Version whose files to yank.")],
    reason: ReasonOption,
    undo: Annotated[bool, typer.Option("--undo", help="Un-yank instead.")] = False,
    config: ConfigOption = None,
) -> None:
    """Yank every file of a version (PEP 592): installers skip it unless it is pinned exactly."""
    from .marks import yank as run_yank

    cfg = load_config(config)
    result = run_yank(open_repo(cfg), project, version, reason, undo=undo, branch=cfg.branch)
    echo_decision(result)


@app.command()
@friendly_errors
def deprecate(
    project: Annotated[str, typer.Argument(help="Project name.")],
    reason: ReasonOption,
    status: Annotated[
        str, typer.Option("--status", help="archived, deprecated, quarantined, or active to restore.")
    ] = "deprecated",
    config: ConfigOption = None,
) -> None:
    """Set a project's PEP 792 status, shown on its pages (HTML meta tag and JSON project-status)."""
    from .marks import set_status

    cfg = load_config(config)
    result = set_status(open_repo(cfg), project, status, reason, branch=cfg.branch)
    echo_decision(result)


@app.command()
@friendly_errors
def takedown(
    filename: Annotated[str, typer.Argument(help="Distribution filename to take down.")],
    reason: ReasonOption,
    project: Annotated[str | None, typer.Option("--project", help="Project holding the file.")] = None,
    config: ConfigOption = None,
) -> None:
    """Tombstone a file: kept in the manifest with reason and date, removed from store and index (410 Gone)."""
    from .marks import takedown as run_takedown

    cfg = load_config(config)
    result = run_takedown(open_repo(cfg), BlobStore(cfg.store), filename, reason, project=project, branch=cfg.branch)
    echo_decision(result)


RevOption = Annotated[
    str | None,
    typer.Option("--rev", help="Commit id (full or abbreviated), tag, branch or ISO date (default: tip of main)."),
]


def snapshot_of(repo: MetadataRepo, rev: str | None, cfg: Config) -> bytes:
    """The commit a --rev names, or the branch tip; one clear error when there is none."""
    from .snapshot import RevisionError, resolve

    if rev is not None:
        return resolve(repo, rev, cfg.branch).commit
    tip = repo.tip(cfg.branch)
    if tip is None:
        raise RevisionError(f"branch {cfg.branch} has no commits yet (run `gitmirror sync`)")
    return tip


@app.command()
@friendly_errors
def tag(
    name: Annotated[str | None, typer.Argument(help="Tag to create (omit to list the tags).")] = None,
    rev: RevOption = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Tag message.")] = None,
    config: ConfigOption = None,
) -> None:
    """Name a snapshot (e.g. per release of your product); served at /snapshot/<name>/simple/. Tags never move."""
    from .snapshot import create_tag, list_tags

    cfg = load_config(config)
    repo = open_repo(cfg)
    if name is None:
        for tag_name, commit in list_tags(repo):
            typer.echo(f"{tag_name}\t{commit.decode()}")
        return
    commit = snapshot_of(repo, rev, cfg)
    with repo.writer_lock(wait=True):
        create_tag(repo, name, commit, message, cfg.branch)
    typer.echo(f"tagged {commit.decode()[:12]} as {name}")


@app.command()
@friendly_errors
def render(
    out: Annotated[Path | None, typer.Option("--out", help="Directory to write the static site into.")] = None,
    rev: RevOption = None,
    base_url: Annotated[
        str | None, typer.Option("--base-url", help="Where files/ is served, if not beside simple/ (URL or /path).")
    ] = None,
    branch: Annotated[str | None, typer.Option("--branch", help="Also commit the pages to this git branch.")] = None,
    files: Annotated[
        str, typer.Option("--files", help="How files/ reaches the store: symlink, hardlink, copy or none.")
    ] = "symlink",
    full: Annotated[bool, typer.Option("--full", help="Re-render every project, not only the changed ones.")] = False,
    config: ConfigOption = None,
) -> None:
    """Write the static index of one state (HTML + PEP 691 JSON) for any web server; incremental and deterministic.

    Exit codes: 0 done, 1 pages written but some blobs are missing from the store (listed).
    """
    from .render import render_branch, render_site

    if out is None and branch is None:
        raise fail("give --out DIR, --branch NAME, or both")
    cfg = load_config(config)
    repo = open_repo(cfg)
    commit = snapshot_of(repo, rev, cfg)
    missing: list[str] = []
    if out is not None:
        result = render_site(repo, BlobStore(cfg.store), commit, out, base_url, files, full)
        missing = result.missing
        for label in missing:
            typer.echo(f"missing blob: {label}", err=True)
        typer.echo(f"{out}: {result.summary()}")
    if branch is not None:
        made, branch_result = render_branch(repo, commit, branch, base_url, protected=(cfg.branch,))
        where = f"commit {made.decode()[:12]}" if made else "already up to date"
        typer.echo(f"branch {branch}: {len(branch_result.rendered)} projects re-rendered, {where}")
    if missing:
        raise typer.Exit(1)


@app.command()
@friendly_errors
def hydrate(
    source: Annotated[
        str, typer.Option("--from", help="A gitmirror server URL, or a directory / disk holding a store.")
    ],
    rev: RevOption = None,
    config: ConfigOption = None,
) -> None:
    """Fetch the blobs the manifests reference and the local store lacks, each verified by sha256.

    Exit codes: 0 the store is complete, 1 some blobs were missing at the source or refused (listed).
    """
    from .hydrate import hydrate as run_hydrate
    from .hydrate import open_source

    cfg = load_config(config)
    repo = open_repo(cfg)
    commit = snapshot_of(repo, rev, cfg)
    opened = open_source(source, cfg.concurrency, cfg.limits, cfg.allowed_hosts)
    result = run_hydrate(repo, BlobStore(cfg.store), commit, opened,
                         log=lambda line: typer.echo(line, err=True))
    typer.echo(result.summary())
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command("export-store")
@friendly_errors
def export_store(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the blobs into (store layout).")],
    rev: RevOption = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Leave out blobs that this earlier snapshot already needed.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write the blobs one snapshot needs to a directory (sneakernet); `hydrate --from DIR` reads it."""
    from .hydrate import export_store as run_export

    cfg = load_config(config)
    repo = open_repo(cfg)
    commit = snapshot_of(repo, rev, cfg)
    earlier = snapshot_of(repo, since, cfg) if since is not None else None
    result = run_export(repo, BlobStore(cfg.store), commit, out, since=earlier,
                        log=lambda line: typer.echo(line, err=True))
    typer.echo(f"{out}: {result.summary()}")
    if result.exit_code:
        raise typer.Exit(result.exit_code)


@app.command()
@friendly_errors
def status(
    rev: RevOption = None,
    verify_blobs: Annotated[
        bool, typer.Option("--verify", help="Re-hash every blob instead of checking it exists.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """What is in the mirror: tip, last sync, projects, files, bytes, blobs missing from the store."""
    import json

    from .status import collect

    cfg = load_config(config)
    repo = open_repo(cfg)
    commit = snapshot_of(repo, rev, cfg) if rev is not None else repo.tip(cfg.branch)
    review = cfg.review.branch if cfg.review.enabled else None
    report = collect(repo, BlobStore(cfg.store), commit, cfg.branch, verify=verify_blobs, review_branch=review)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
