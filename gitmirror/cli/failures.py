"""The failures every command reports as one line and exit code 2 instead of a traceback.

One list, read by the command line's one error handler (``cli_common.friendly_errors``).
"""

from __future__ import annotations

import errno

from ..model.manifest import ManifestError
from ..model.names import UnsafeNameError
from ..model.signed_note import NoteError
from ..storage.repo import RepoError
from ..storage.s3client import S3Error
from ..storage.store import IntegrityError
from ..sync.config import ConfigError
from ..sync.selection import SelectionError

EXIT_USAGE = 2
KNOWN_FAILURES: tuple[type[Exception], ...] = (
    ConfigError,
    RepoError,
    UnsafeNameError,
    ManifestError,
    IntegrityError,
    SelectionError,
    S3Error,
    NoteError,
)


#: what a full, read-only or failing disk, or a store or repository this user may not write,
#: raises: the machine's failure, not gitmirror's; a traceback would bury the one line that matters
STORAGE_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EIO,
        errno.EMFILE,
        errno.ENFILE,
    }
)


def known_failure(exc: BaseException) -> BaseException | None:
    """The failure to report in one line, or None for what only a traceback explains (a bug).

    A failure inside the sync's dependency walk reaches the command wrapped in an exception group
    (``asyncio.TaskGroup``); it is known when everything in the group is.
    """
    if isinstance(exc, BaseExceptionGroup):
        found = [known_failure(inner) for inner in exc.exceptions]
        return found[0] if all(found) else None
    if isinstance(exc, KNOWN_FAILURES) or (isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS):
        return exc
    return None


def one_line(exc: BaseException) -> str | None:
    """``error_line`` of a known failure; None for what only a traceback explains."""
    failure = known_failure(exc)
    return None if failure is None else error_line(failure)


def error_line(failure: BaseException | str) -> str:
    if isinstance(failure, OSError) and failure.strerror:
        where = f": {failure.filename}" if failure.filename else ""
        failure = f"{failure.strerror}{where}"
    return f"gitmirror: error: {failure}"
