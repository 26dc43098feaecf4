"""Project and file names: normalization and the safety gate every name passes.

Names arrive from upstream pages, from ``mirror.yaml`` and from pushed manifests. They end up in
git paths, store paths and URLs, so a name is accepted only if it is *exactly* what the packaging
specifications allow. Rejecting early is what keeps ``../`` or a NUL byte from ever reaching a path.
Every pattern is matched whole (``fullmatch``), ASCII only: ``$`` would also take a final newline.
"""

from __future__ import annotations

import re

from packaging.utils import canonicalize_name

# PEP 508 project names: ASCII letters and digits, with ``.``, ``-`` or ``_`` inside.
_PROJECT_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
# Distribution filenames: the characters wheel and sdist names may contain (``+`` for local
# versions, ``!`` for epochs), never a path separator, and not starting with a dot.
_FILENAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+!-]*")
_FILE_SUFFIXES = (".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz", ".egg", ".exe", ".msi", ".rpm", ".tar")
MAX_NAME_LENGTH = 200
#: anchored with ``\A``/``\Z`` so that ``match`` and ``search`` are as strict as ``fullmatch``
SHA256_HEX = re.compile(r"\A[0-9a-f]{64}\Z")


class UnsafeNameError(ValueError):
    """A name that must never be turned into a path or URL."""


def normalize(name: str) -> str:
    """The PEP 503 normalized form of a project name, after checking it is a valid name."""
    if len(name) > MAX_NAME_LENGTH or not _PROJECT_NAME.fullmatch(name):
        raise UnsafeNameError(f"invalid project name {name!r}")
    return canonicalize_name(name)


def is_normalized(name: str) -> bool:
    """True when ``name`` is already the PEP 503 form (the only form used in paths)."""
    try:
        return normalize(name) == name
    except UnsafeNameError:
        return False


def check_filename(filename: str) -> str:
    """Return ``filename`` if it is a plain distribution file name, else raise."""
    if (
        len(filename) > MAX_NAME_LENGTH
        or not _FILENAME.fullmatch(filename)
        or ".." in filename
        or not filename.lower().endswith(_FILE_SUFFIXES)
    ):
        raise UnsafeNameError(f"invalid distribution filename {filename!r}")
    return filename


def check_sha256(digest: str) -> str:
    """Return a lowercase hex sha256 digest, or raise: digests become store paths."""
    if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
        raise UnsafeNameError(f"invalid sha256 digest {digest!r}")
    return digest


def shard(normalized: str) -> str:
    """The crates.io-style directory of a project: short names grouped, long ones by prefix.

    Keeps every directory of the metadata repository small (git trees are rewritten whole on
    every change, so a flat directory of 500,000 entries would make each commit slow).
    """
    if len(normalized) <= 2:
        return str(len(normalized))
    if len(normalized) == 3:
        return f"3/{normalized[0]}"
    return f"{normalized[:2]}/{normalized[2:4]}"
