"""Whether a branch may have moved since its tip was read, told by one ``fstat`` per request.

git and dulwich move a loose ref by renaming a new file over it, so the ref file as it was when
the tip was read, held open, loses its link (``st_nlink`` drops) the moment the branch moves; an
in-place write changes its mtime or size. A held descriptor needs no path lookup, the costly part
of a ``stat`` on every request. While the ref is packed (``git pack-refs``) or not created yet,
the loose path and ``packed-refs`` are stat'ed by name instead (a loose ref wins over the packed).
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path


class RefWatch:
    """The ref file of one branch: ``hold`` it before reading the tip, then compare ``stamp``s."""

    def __init__(self, repo_path: Path, branch: str) -> None:
        self._loose = str(repo_path / "refs" / "heads" / branch)
        self._packed = str(repo_path / "packed-refs")
        self._held: int | None = None
        self._closer: weakref.finalize | None = None  # closes the held descriptor, at most once

    def stamp(self) -> object:
        """A value that differs from ``hold``'s whenever the branch may have moved since."""
        if self._held is not None:
            try:
                status = os.fstat(self._held)
            except OSError:  # closed by a ``hold`` in another thread: read again
                return object()
            return status.st_nlink, status.st_mtime_ns, status.st_size
        return None, _stat_key(self._loose), _stat_key(self._packed)

    def hold(self) -> object:
        """Hold the ref file as it is now and return its stamp; call it before reading the tip, so a
        move after the read shows in the next ``stamp``."""
        if self._closer is not None:
            self._closer()
        self._held = self._closer = None
        try:
            held = os.open(self._loose, os.O_RDONLY)
        except OSError:  # packed or not created yet: by name
            return self.stamp()
        self._held, self._closer = held, weakref.finalize(self, os.close, held)
        stamp = self.stamp()
        if isinstance(stamp, tuple) and stamp[0] == 0:  # moved between open and fstat: by name this once
            self._closer()
            self._held = self._closer = None
            return self.stamp()
        return stamp


def _stat_key(path: str) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size
