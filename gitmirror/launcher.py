"""The ``gitmirror`` executable: a plain ``sync`` runs without the command line machinery.

Most runs of a mirror are cron's ``gitmirror sync`` finding nothing new; ``gitmirror.unchanged``
proves that with one request, so importing typer, rich, httpx and dulwich first would be most of
the run. A plain ``sync`` that has work to do skips typer too (``gitmirror.sync_command``).
Everything else goes to ``gitmirror.cli`` untouched.
"""

from __future__ import annotations

import gc
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path


def main() -> None:
    if sys.argv[1:2] != ["sync"]:
        from .cli import main as cli_main

        cli_main()
        return
    from .unchanged import sync_arguments, warm_sync  # the check's imports are for sync alone

    plain = sync_arguments(sys.argv[1:])  # ``sync [--config PATH] [--quiet]``, else None
    if plain is not None:
        try:
            code = warm_sync(*plain)
        except Exception:  # a shortcut, never a failure of its own: the full command runs and reports
            code = None
        if code is not None:
            sys.exit(code)
    _prestart_workers(plain[0] if plain is not None else None, plain is not None)
    try:
        if plain is not None:
            from .sync_command import main as sync_main

            sys.exit(sync_main(*plain))
        from .cli import main as cli_main

        cli_main()
    finally:
        # The exit's last garbage collection would walk every object the sync made (pages,
        # manifests, the dependency walk) only for the process to end: 0.1-0.17 s of a cold sync.
        # Frozen, they are left to the exit; nothing of the sync's output waits on a collection.
        gc.freeze()


def _prestart_workers(config_path: Path | None, plain: bool) -> None:
    """The download processes' fork server, started beside the rest of the sync's start-up; with
    pypi_simple when the last plain sync of this configuration read HTML pages
    (``unchanged.remember_page_format``)."""
    try:
        from .fork_server import start_early
        from .unchanged import pages_were_html

        start_early(html=plain and pages_were_html(config_path))
    except Exception:  # noqa: BLE001 - a head start only: the sync starts it itself and reports failures
        pass
