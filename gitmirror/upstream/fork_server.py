"""The download processes' fork server, started before the sync imports what the workers run.

The fork server is a new interpreter that imports ``gitmirror.upstream.workers`` and httpcore before the first
worker can fork. ``gitmirror sync`` starts it as soon as it knows it will run, so that start
overlaps the sync's own (dulwich, the config, the repository); this module imports nothing of
the workers, so starting it costs the sync nothing.
"""

from __future__ import annotations

#: what the fork server imports once for every worker (pypi_simple: every worker parses pages)
PRELOAD = ["gitmirror.upstream.workers", "httpcore", "pypi_simple"]


def start_early() -> None:
    """Start the fork server now, for a sync that is about to run and will want workers.

    Nothing waits here: the fork server's socket exists at once and answers the first worker's
    request when its imports are done.
    """
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
