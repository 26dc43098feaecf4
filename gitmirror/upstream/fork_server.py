"""The download processes' fork server, started before the sync imports what the workers run.

The fork server is a new interpreter that imports ``gitmirror.upstream.workers`` and httpcore before the first
worker can fork. ``gitmirror sync`` starts it as soon as it knows it will run, so that start
overlaps the sync's own (dulwich, the config, the repository); this module imports nothing of
the workers, so starting it costs the sync nothing.
"""

from __future__ import annotations

#: what the fork server imports once for every worker (PEP 691 pages are read with ``json``; a
#: worker imports pypi_simple when it meets an HTML page: ``page.parse_page``)
PRELOAD = ["gitmirror.upstream.workers", "httpcore"]


def start_early(html: bool = False) -> None:
    """Start the fork server now, for a sync that is about to run and will want workers.

    Nothing waits here: the fork server's socket exists at once and answers the first worker's
    request when its imports are done. ``html``: upstream answered the last run in HTML; the fork
    server imports pypi_simple too, once for all workers.
    """
    from multiprocessing import forkserver

    forkserver.set_forkserver_preload([*PRELOAD, "pypi_simple"] if html else PRELOAD)
    forkserver.ensure_running()
