"""Opening a zip archive (a wheel, a ``.zip`` sdist) only when its central directory is of a bounded size.

zipfile reads the whole central directory and keeps a ``ZipInfo`` of several hundred bytes per
entry: a directory listing millions of entries, a few dozen bytes each and all naming the same
data, would turn a modest upload into gigabytes of memory. Its size is read from the end record
first, as zipfile itself reads it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import IO

#: the largest central directory opened: about 150,000 members, far beyond any real distribution
MAX_ZIP_DIRECTORY_BYTES = 8 << 20


class ZipTooLarge(zipfile.BadZipFile):
    """A zip archive whose central directory is over ``MAX_ZIP_DIRECTORY_BYTES``; the message is one line."""


def open_zip(source: str | Path | IO[bytes]) -> zipfile.ZipFile:
    """``source`` as a ``zipfile.ZipFile``, refused (``ZipTooLarge``) when its central directory is too large."""
    if isinstance(source, str | Path):
        with open(source, "rb") as handle:
            _check_directory_size(handle)
    else:
        _check_directory_size(source)
    return zipfile.ZipFile(source)


def _check_directory_size(handle: IO[bytes]) -> None:
    end = zipfile._EndRecData(handle)  # type: ignore[attr-defined]  # zipfile's own reader of the end record
    size = end[zipfile._ECD_SIZE] if end is not None else 0  # type: ignore[attr-defined]
    if size > MAX_ZIP_DIRECTORY_BYTES:
        raise ZipTooLarge(
            f"its central directory of {size} bytes is over {MAX_ZIP_DIRECTORY_BYTES} "
            "(far beyond any real distribution)"
        )
