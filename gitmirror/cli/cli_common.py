"""What every ``gitmirror`` command shares: the common options, one way to report a known failure,
and opening the configured mirror.

Nothing here imports the mirror's machinery (dulwich, the configuration parser, the store) at
module level: the commands import what they use, so a warm ``gitmirror sync`` loads none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

if TYPE_CHECKING:
    from ..storage.repo import MetadataRepo
    from ..sync.config import Config

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Path of mirror.yaml (default: ./mirror.yaml, else built-in defaults)."),
]
RevOption = Annotated[
    str | None,
    typer.Option("--rev", help="Commit id (full or abbreviated), tag, branch or ISO date (default: tip of main)."),
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why (required): users and auditors read it.")]

F = TypeVar("F", bound=Callable[..., object])


def fail(message: str) -> typer.Exit:
    """Print ``message`` as the one error line of bad input; raise the returned exit (code 2)."""
    from .failures import EXIT_USAGE, error_line

    typer.echo(error_line(message), err=True)
    return typer.Exit(EXIT_USAGE)


def friendly_errors(command: F) -> F:
    """Known failures (``failures.one_line``) become one line on stderr and exit code 2; nothing
    else is swallowed: a bug keeps its traceback."""

    @wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise  # the command's own ending, with its exit code
        except Exception as exc:
            from .failures import EXIT_USAGE, one_line

            line = one_line(exc)
            if line is None:
                raise
            typer.echo(line, err=True)
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


def load_config(path: Path | None) -> Config:
    from ..sync import config

    return config.load(path)


def open_repo(cfg: Config, create: bool = False) -> MetadataRepo:
    from ..storage.repo import MetadataRepo

    repo = MetadataRepo.init(cfg.repo, cfg.branch) if create else MetadataRepo(cfg.repo)
    if cfg.signing.configured:
        from .cli_sign import apply_signing

        apply_signing(repo, cfg.signing)
    return repo


def snapshot_of(repo: MetadataRepo, rev: str | None, cfg: Config) -> bytes:
    """The commit a --rev names, or the branch tip; one clear error when there is none."""
    from ..storage.snapshot import RevisionError, resolve

    if rev is not None:
        return resolve(repo, rev, cfg.branch).commit
    tip = repo.tip(cfg.branch)
    if tip is None:
        raise RevisionError(f"branch {cfg.branch} has no commits yet (run `gitmirror sync`)")
    return tip
