"""The ``gitmirror`` command line.

Commands stay thin: they load the configuration, call one module, and turn the known failure
kinds into a one-line error and a non-zero exit instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from . import config as config_module
from .config import Config, ConfigError, Selection, parse_selection
from .manifest import ManifestError
from .names import UnsafeNameError
from .repo import MetadataRepo, RepoError
from .store import BlobStore, IntegrityError

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
EXIT_USAGE = 2
F = TypeVar("F", bound=Callable[..., object])


def fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    typer.echo(f"gitmirror: error: {message}", err=True)
    return typer.Exit(code)


def friendly_errors(command: F) -> F:
    """Known failures become one line on stderr and exit code 2; nothing else is swallowed."""

    @wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except (ConfigError, RepoError, UnsafeNameError, ManifestError, IntegrityError) as exc:
            raise fail(str(exc)) from None

    return wrapper  # type: ignore[return-value]


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


def select(cfg: Config, requested: list[str]) -> list[Selection]:
    """Projects named on the command line (with the config's version limits), else the config's."""
    if not requested:
        return list(cfg.projects)
    configured = {selection.name: selection for selection in cfg.projects}
    chosen = []
    for text in requested:
        selection = parse_selection(text, "command line")
        unconstrained = not selection.requirement.specifier
        chosen.append(configured.get(selection.name, selection) if unconstrained else selection)
    return chosen


@app.command()
@friendly_errors
def sync(
    projects: Annotated[list[str] | None, typer.Argument(help="Projects to sync (default: all configured).")] = None,
    config: ConfigOption = None,
) -> None:
    """Fetch new releases from upstream into the store and commit their manifests (one commit per run).

    Exit codes: 0 done, 1 some projects or files failed, 3 upstream conflicts were recorded.
    """
    from .sync import Syncer

    cfg = load_config(config)
    selections = select(cfg, projects or [])
    if not selections:
        typer.echo("nothing to mirror: list projects in mirror.yaml or on the command line")
        return
    repo = open_repo(cfg, create=True)
    result = Syncer(cfg, repo, BlobStore(cfg.store), log=lambda line: typer.echo(line, err=True)).run(selections)
    typer.echo(result.summary())
    if result.exit_code:
        raise typer.Exit(result.exit_code)


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


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
