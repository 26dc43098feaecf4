"""The private SQLite caches beside the store (page state, parsed metadata): one rule for a damaged file.

Both are speed-ups only, rebuilt from upstream and the store when lost. A file that is no
database (a failing disk, a stray write) is therefore a cache lost, not a failure of the run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path


def write_or_start_again(path: Path, write: Callable[[], None], close: Callable[[], None]) -> None:
    """Run ``write`` on the cache at ``path``; where the file is no database, remove it and run
    ``write`` once more on a new one. What still fails (a full disk) raises."""
    for attempt in range(2):
        try:
            write()
            return
        except sqlite3.DatabaseError:
            close()
            if attempt:
                raise
            path.unlink(missing_ok=True)
