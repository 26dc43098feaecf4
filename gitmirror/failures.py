"""The failures every command reports as one line and exit code 2 instead of a traceback.

One list for the command line (``cli.friendly_errors``) and for the plain ``sync`` the launcher
runs without it (``sync_command.main``), so both say the same thing about the same failure.
"""

from __future__ import annotations

from .config import ConfigError
from .manifest import ManifestError
from .names import UnsafeNameError
from .repo import RepoError
from .selection import SelectionError
from .store import IntegrityError

EXIT_USAGE = 2
KNOWN_FAILURES: tuple[type[Exception], ...] = (
    ConfigError,
    RepoError,
    UnsafeNameError,
    ManifestError,
    IntegrityError,
    SelectionError,
)


def error_line(failure: BaseException | str) -> str:
    return f"gitmirror: error: {failure}"
