"""Where a blob lives in the store: ``blobs/<aa>/<bb>/<sha256>`` (a public interface, see README).

One definition, as plain strings, for the store itself and for the warm-sync check, which stats
thousands of blobs before anything heavier than the standard library is imported.
"""

from __future__ import annotations

import os

BLOBS_DIR = "blobs"


def blob_path(blobs_dir: str, sha256: str) -> str:
    """The blob's path under ``blobs_dir``; ``sha256`` must already be checked (it becomes a path)."""
    return os.path.join(blobs_dir, sha256[:2], sha256[2:4], sha256)
