"""``gitmirror serve``, ``tag``, ``render``, ``hydrate`` and ``export-store``: serving the mirror,
naming its states, and carrying them to other machines."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .cli_common import ConfigOption, RevOption, fail, load_config, open_repo, snapshot_of

if TYPE_CHECKING:
    from ..sync.config import Config


def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (serve.host, else 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (serve.port, else 8080).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (serve.workers, else 1).")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="critical, error, warning, info or debug (serve.log_level, else info).")
    ] = None,
    access_log: Annotated[
        bool | None, typer.Option("--access-log/--no-access-log", help="One line per request on stdout.")
    ] = None,
    follow: Annotated[
        str | None, typer.Option("--follow", help="Fast-forward the branch to this git remote's (docs/s3.md).")
    ] = None,
    follow_interval: Annotated[float, typer.Option("--follow-interval", help="Seconds between fetches.")] = 30.0,
    config: ConfigOption = None,
) -> None:
    """Serve the simple index (PEP 503/691) of the branch tip, the files of the store, web pages,
    /health and /metrics; flags override `serve:` in mirror.yaml."""
    from ..serve.server import serve as run_server
    from ..sync.serve_settings import LOG_LEVELS

    cfg = load_config(config)
    if log_level is not None and log_level.lower() not in LOG_LEVELS:
        raise fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    if port is not None and not 0 < port < 65536:
        raise fail(f"--port must be a port number from 1 to 65535, got {port}")
    if workers is not None and workers < 1:
        raise fail(f"--workers must be a positive integer, got {workers}")
    open_repo(cfg)  # fail early and clearly when there is nothing to serve
    if cfg.signing.witnesses is not None:
        from .cli_sign import allowed_signers

        allowed_signers(cfg.signing.witnesses, cfg, "signing.witnesses")  # one line, before the workers read it
    if follow is not None:
        start_following(cfg, follow, follow_interval)
    where = f"http://{host or cfg.serve.host}:{port or cfg.serve.port}/"
    typer.echo(f"serving {cfg.repo} at {where} (simple index at {where}simple/)", err=True)
    run_server(cfg, host, port, workers, log_level and log_level.lower(), access_log)


def start_following(cfg: Config, remote: str, interval: float) -> None:
    """The follower of ``serve --follow``, its branch guarded by the pre-receive hook (installed if missing)."""
    from ..audit.hooks import install
    from ..hosted.routes import FOLLOWS_VARIABLE
    from ..serve.follow import Follower

    if interval <= 0:
        raise fail("--follow-interval must be a positive number of seconds")
    install(cfg.repo, sys.executable)
    os.environ[FOLLOWS_VARIABLE] = remote  # the app's workers refuse uploads: only the remote's branch moves this one
    Follower(cfg.repo, remote, cfg.branch, interval, log=lambda line: typer.echo(line, err=True)).start()


def tag(
    name: Annotated[str | None, typer.Argument(help="Tag to create (omit to list the tags).")] = None,
    rev: RevOption = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Tag message.")] = None,
    config: ConfigOption = None,
) -> None:
    """Name a snapshot (e.g. per release of your product); served at /snapshot/<name>/simple/. Tags never move."""
    from ..storage.snapshot import create_tag, list_tags

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
    from ..serve.render import render_branch, render_site
    from ..sync.store_config import open_store

    if out is None and branch is None:
        raise fail("give --out DIR, --branch NAME, or both")
    cfg = load_config(config)
    repo = open_repo(cfg)
    commit = snapshot_of(repo, rev, cfg)
    missing: list[str] = []
    if out is not None:
        result = render_site(repo, open_store(cfg), commit, out, base_url, files, full)
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
    from ..serve.hydrate import hydrate as run_hydrate
    from ..serve.hydrate_sources import open_source
    from ..sync.store_config import open_store

    cfg = load_config(config)
    repo = open_repo(cfg)
    commit = snapshot_of(repo, rev, cfg)
    result = run_hydrate(
        repo,
        open_store(cfg),
        commit,
        open_source(source, cfg.concurrency, cfg.limits, cfg.allowed_hosts, cfg.s3),
        log=lambda line: typer.echo(line, err=True),
    )
    typer.echo(result.summary())
    if result.exit_code:
        raise typer.Exit(result.exit_code)


def export_store(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the blobs into (store layout).")],
    rev: RevOption = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Leave out blobs that this earlier snapshot already needed.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write the blobs one snapshot needs to a directory (sneakernet); `hydrate --from DIR` reads it."""
    from ..serve.hydrate import export_store as run_export
    from ..sync.store_config import open_store

    cfg = load_config(config)
    repo = open_repo(cfg)
    commit = snapshot_of(repo, rev, cfg)
    earlier = snapshot_of(repo, since, cfg) if since is not None else None
    result = run_export(repo, open_store(cfg), commit, out, since=earlier, log=lambda line: typer.echo(line, err=True))
    typer.echo(f"{out}: {result.summary()}")
    if result.exit_code:
        raise typer.Exit(result.exit_code)
