"""``gitmirror token create|revoke|list``: the API tokens uploads (and private reads) need (docs/hosted.md)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Annotated, TypeVar

import typer

from .cli_common import ConfigOption, fail, friendly_errors, load_config

token_app = typer.Typer(help="API tokens for uploads (and reads, with hosted.read_auth).", no_args_is_help=True)
NameArgument = Annotated[str, typer.Argument(help="The token's name; commits of its uploads record it.")]
F = TypeVar("F", bound=Callable[..., object])


def _token_errors(command: F) -> F:
    """A ``TokenError`` is one line and exit code 2, like every known failure."""

    @wraps(command)
    def wrapper(*args: object, **kwargs: object) -> object:
        from ..hosted.tokens import TokenError

        try:
            return command(*args, **kwargs)
        except TokenError as exc:
            raise fail(str(exc)) from None

    return friendly_errors(wrapper)  # type: ignore[return-value]


@token_app.command("create")
@_token_errors
def create(name: NameArgument, config: ConfigOption = None) -> None:
    """Create a token and print it (last line): it is shown this once, only its salted hash is kept."""
    from ..hosted.tokens import TokenStore

    store = TokenStore(load_config(config).repo)
    token = store.create(name)
    typer.echo(f"created token {name}; use it as password with user __token__ (it is not shown again):")
    typer.echo(token)


@token_app.command("revoke")
@_token_errors
def revoke(name: NameArgument, config: ConfigOption = None) -> None:
    """Revoke a token: it is refused from now on, and its name is never given to another token."""
    from ..hosted.tokens import TokenStore

    record = TokenStore(load_config(config).repo).revoke(name)
    typer.echo(f"revoked token {name} ({record.revoked})")


@token_app.command("list")
@_token_errors
def list_tokens(config: ConfigOption = None) -> None:
    """The tokens by name: when created, and whether revoked."""
    from ..hosted.tokens import TokenStore

    store = TokenStore(load_config(config).repo)
    store.check_repository()  # a mistyped repo path lists no tokens silently otherwise
    for record in store.records().values():
        state = f"revoked {record.revoked}" if record.revoked else "active"
        typer.echo(f"{record.name}\tcreated {record.created}\t{state}")
