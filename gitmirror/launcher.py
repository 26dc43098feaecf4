"""The ``gitmirror`` executable: a warm ``sync`` is answered before the command line machinery loads.

Most runs of a mirror are cron's ``gitmirror sync`` finding nothing new; ``gitmirror.unchanged``
proves that with one request, so importing typer, rich, httpx and dulwich first would be most of
the run. Everything else goes to ``gitmirror.cli`` untouched.
"""

from __future__ import annotations

import sys


def main() -> None:
    code = None
    if sys.argv[1:2] == ["sync"]:  # the check's imports (http.client among them) are for sync alone
        from .unchanged import warm_sync

        try:
            code = warm_sync(sys.argv[1:])
        except Exception:  # a shortcut, never a failure of its own: the full command runs and reports
            code = None
    if code is not None:
        sys.exit(code)
    if sys.argv[1:2] == ["sync"]:
        _prestart_workers()
    from .cli import main as cli_main

    cli_main()


def _prestart_workers() -> None:
    """The download processes' fork server, started beside the rest of the sync's start-up."""
    try:
        from .workers import prestart

        prestart()
    except Exception:  # noqa: BLE001 - a head start only: the sync starts it itself and reports failures
        pass
