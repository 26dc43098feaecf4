"""``gitmirror init``, ``sync`` and ``plan``: making the mirror and filling it from upstream.

``sync`` first asks whether the last complete run still holds (``unchanged.warm_sync``): most runs
of a mirror are cron's, finding nothing new, so that check comes before the sync's machinery
(the configuration parser, dulwich, the download workers) is imported.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .cli_common import ConfigOption, load_config, open_repo

if TYPE_CHECKING:
    from ..sync.config import Config, Selection


def init(
    config: ConfigOption = None,
    signing_key: Annotated[
        Path | None, typer.Option("--signing-key", help="Sign every commit and tag with this Ed25519 SSH key.")
    ] = None,
) -> None:
    """Create the metadata repository (branch main) and the blob store; safe to run again."""
    from ..sync.store_config import describe, open_store
    from .cli_sign import apply_signing

    cfg = load_config(config)
    repo = open_repo(cfg, create=True)
    apply_signing(repo, cfg.signing, signing_key)
    open_store(cfg).init()
    typer.echo(f"repository {cfg.repo}, store {describe(cfg)}: ready")


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
    plain = not (projects or as_json or full)
    if plain:
        code = warm_sync(config, quiet)
        if code is not None:
            raise typer.Exit(code)
    start_workers()
    try:
        code = run(config, projects or [], quiet=quiet, as_json=as_json)
    finally:
        # The exit's last garbage collection would walk every object the sync made only for the
        # process to end; frozen, they are left to the exit.
        gc.freeze()
    if code:
        raise typer.Exit(code)


def warm_sync(config_path: Path | None, quiet: bool) -> int | None:
    """The exit code of a plain sync answered from the last complete run's record; None: run it."""
    from ..sync.unchanged import warm_sync as answer

    try:
        return answer(config_path, quiet)
    except Exception:  # noqa: BLE001 - a shortcut, never a failure of its own: the full run reports
        return None


def start_workers() -> None:
    """Start the download processes' fork server beside the rest of the sync's start-up."""
    try:
        from ..upstream.fork_server import start_early

        start_early()
    except Exception:  # noqa: BLE001 - a head start only: the sync starts it itself and reports failures
        pass


def select(cfg: Config, requested: Sequence[str]) -> list[Selection]:
    """Projects named on the command line (with the config's version limits), else the config's."""
    from ..sync.config import parse_selection

    if not requested:
        return list(cfg.projects)
    configured = {selection.name: selection for selection in cfg.projects}
    chosen = []
    for text in requested:
        selection = parse_selection(text, "command line")
        unconstrained = not selection.requirement.specifier
        chosen.append(configured.get(selection.name, selection) if unconstrained else selection)
    return chosen


def run(config_path: Path | None, projects: Sequence[str] = (), quiet: bool = False, as_json: bool = False) -> int:
    """Sync as the command does, without the warm check; returns its exit code (0 done, 1 failures,
    3 conflicts)."""
    from ..sync.incoming import sync_branch
    from ..sync.progress import make_progress, summary_json
    from ..sync.store_config import open_store
    from ..sync.sync import Syncer

    cfg = load_config(config_path)
    if cfg.full_index is not None and not projects:
        return run_all(cfg, quiet=quiet, as_json=as_json)
    selections = select(cfg, projects)
    nothing = not selections and (projects or not (cfg.requirements or cfg.lockfiles))
    if nothing and not (cfg.hosted.projects and not projects):
        print("nothing to mirror: list projects in mirror.yaml or on the command line", flush=True)
        return 0
    repo = open_repo(cfg, create=True)
    branch = sync_branch(repo, cfg.branch, cfg.review.branch if cfg.review.enabled else None)
    if nothing:  # only hosted projects: their PEP 708 data follows mirror.yaml
        from ..sync.hosted_headers import refresh

        commit = refresh(repo, branch, cfg.hosted)
        print(f"hosted projects' PEP 708 data {f'written; commit {commit.decode()[:12]}' if commit else 'unchanged'}")
        return 0
    progress = make_progress(quiet=quiet, as_json=as_json)
    syncer = Syncer(cfg, repo, open_store(cfg, syncing=True), log=progress.log, progress=progress)
    if branch != cfg.branch:
        syncer.notices.append(f"review mode: committing to {branch}; `gitmirror review` shows what waits")
    try:
        result = syncer.run(selections, branch=branch, with_files=not projects)
    finally:
        progress.close()
    if as_json:
        import json

        print(json.dumps(summary_json(result, progress, syncer.pages, syncer.warnings), indent=2), flush=True)
    elif not quiet:
        print(result.summary(), flush=True)
    return result.exit_code


def run_all(cfg: Config, quiet: bool, as_json: bool) -> int:
    """``projects: all``: every project upstream lists, one commit per batch (``sync.full_index``)."""
    import dataclasses
    import json
    import sys

    from ..model.page import UpstreamError
    from ..storage.store import BlobStore
    from ..sync.full_index import run_full_index
    from ..sync.incoming import sync_branch
    from ..sync.progress import make_progress
    from ..upstream.transport import FetchError, Transient

    repo = open_repo(cfg, create=True)
    branch = sync_branch(repo, cfg.branch, cfg.review.branch if cfg.review.enabled else None)
    progress = make_progress(quiet=quiet, as_json=as_json)
    try:
        result = run_full_index(cfg, repo, BlobStore(cfg.store), branch, progress, progress.log)
    except (UpstreamError, FetchError, Transient) as exc:
        print(f"gitmirror: cannot list upstream's projects: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        progress.close()
    if as_json:
        print(json.dumps(dataclasses.asdict(result), indent=2), flush=True)
    elif not quiet:
        print(result.summary(), flush=True)
    return result.exit_code


def plan(
    projects: Annotated[list[str] | None, typer.Argument(help="Projects to plan (default: all configured).")] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
) -> None:
    """Show what a sync would add (projects, files, bytes) without downloading any release file.

    Exit codes: 0 plan complete, 1 some projects could not be planned (listed).
    """
    import json

    from ..sync.plan import make_plan

    cfg = load_config(config)
    if cfg.full_index is not None and not projects:
        typer.echo("gitmirror: plan does not cover `projects: all` (it would read every page upstream lists)", err=True)
        raise typer.Exit(2)
    result = make_plan(cfg, select(cfg, projects or []), with_files=not projects)
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    else:
        for line in result.lines():
            typer.echo(line)
        typer.echo(result.summary())
    if result.errors:
        raise typer.Exit(1)
