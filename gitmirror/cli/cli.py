"""The ``gitmirror`` command line: one typer application for every command.

Commands stay thin: they load the configuration, call one module, and turn the known failure
kinds into a one-line error and exit code 2 instead of a traceback (``cli_common.friendly_errors``,
applied here to every command). Each command imports what it uses when it runs, so a command pays
only for its own machinery.
"""

from __future__ import annotations

import sys

import typer

from . import cli_audit, cli_hosted, cli_review, cli_serve, cli_sign, cli_sync
from .cli_common import friendly_errors

app = typer.Typer(
    help="An immutable, git-backed mirror of a Python package index.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: in the order ``gitmirror --help`` lists them; typer names each after its function (``install-hook``)
COMMANDS = (
    cli_sync.init,
    cli_sync.sync,
    cli_serve.serve,
    cli_review.review,
    cli_review.approve,
    cli_sync.plan,
    cli_audit.install_hook,
    cli_audit.verify,
    cli_review.yank,
    cli_review.deprecate,
    cli_review.takedown,
    cli_serve.tag,
    cli_serve.render,
    cli_serve.hydrate,
    cli_serve.export_store,
    cli_audit.status,
    cli_sign.check_lock,
    cli_sign.checkpoint_key,
)
for command in COMMANDS:
    app.command()(friendly_errors(command))
app.add_typer(cli_sign.witness_app, name="witness")
app.add_typer(cli_hosted.token_app, name="token")


def main() -> None:
    """The ``gitmirror`` executable (``[project.scripts]``) and ``python -m gitmirror``."""
    sys.exit(app())


if __name__ == "__main__":
    main()
