"""Where a blob lives in the store: ``blobs/<aa>/<sha256>`` (a public interface, see README).

One definition, as plain strings, for the store itself and for the warm-sync check, which stats
thousands of blobs before anything heavier than the standard library is imported.

Stores made before 2026-12-01 put each blob two levels deep, ``blobs/<aa>/<bb>/<sha256>``, and keep
that layout: a store says which it has in ``blobs/LAYOUT``, and a ``blobs/`` without that file is
the old one. New stores get one level because every directory costs on a cold sync: two levels
put its blobs into about as many new directories as files (3,000 of 65,536 possible), each an inode
and a block to allocate and write back, where one level makes 256 at most (bench/RESULTS.md,
item 57). 256 directories hold a million blobs at about 4,000 entries each.
"""

from __future__ import annotations

import os

BLOBS_DIR = "blobs"
#: in ``blobs/``: the store's layout, as the path of a blob under ``blobs/``
LAYOUT_FILE = "LAYOUT"
ONE_LEVEL = "<aa>/<sha256>"
TWO_LEVELS = "<aa>/<bb>/<sha256>"
_DEPTHS = {ONE_LEVEL: 1, TWO_LEVELS: 2}


class UnknownLayout(ValueError):
    """A ``blobs/LAYOUT`` this version cannot read (a later one wrote it, or it is damaged)."""


def depth_of(blobs_dir: str) -> int:
    """How many directory levels hold the blobs of the store whose ``blobs/`` is ``blobs_dir``.

    A new store (no ``blobs/``, or an empty one) gets one, which its first blob records
    (``mark_layout``); an old store, whose ``blobs/`` holds directories and no ``LAYOUT``, has two.
    """
    try:
        with open(os.path.join(blobs_dir, LAYOUT_FILE), encoding="utf-8") as handle:
            text = handle.read(200).strip()
    except FileNotFoundError:
        try:
            with os.scandir(blobs_dir) as entries:
                return 1 if next(entries, None) is None else 2
        except (FileNotFoundError, NotADirectoryError):
            return 1
    if text not in _DEPTHS:
        raise UnknownLayout(f"{os.path.join(blobs_dir, LAYOUT_FILE)}: unknown blob store layout {text[:60]!r}")
    return _DEPTHS[text]


def mark_layout(blobs_dir: str, depth: int) -> None:
    """Record the store's layout before its first blob is named, atomically (a reader sees the
    file whole or not at all); nothing when it is recorded already."""
    target = os.path.join(blobs_dir, LAYOUT_FILE)
    if os.path.exists(target):
        return
    layout = ONE_LEVEL if depth == 1 else TWO_LEVELS
    temporary = f"{target}.{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(layout + "\n")
    os.replace(temporary, target)


def blob_path(blobs_dir: str, sha256: str, depth: int = 1) -> str:
    """The blob's path under ``blobs_dir``; ``sha256`` must already be checked (it becomes a path)."""
    if depth == 1:
        return os.path.join(blobs_dir, sha256[:2], sha256)
    return os.path.join(blobs_dir, sha256[:2], sha256[2:4], sha256)
