"""``gitmirror check-lock``: every file a PEP 751 lockfile pins, found in one state of the mirror.

Installers do not read checkpoints; this is the check a CI job runs before ``pip install`` from the
mirror: the lockfile's sha256 of each wheel and sdist is in a manifest of the commit a verified
checkpoint names, and not taken down there, so what installs is what the mirror signed for.
"""

from __future__ import annotations

from pathlib import Path

from ..storage.repo import MetadataRepo
from ..sync.roots import Roots, read_lockfile


def locked_files(lockfile: Path) -> Roots:
    """The wheels and sdists ``lockfile`` pins by sha256 (``pins``), and one warning per package not
    from an index (vcs, directory, archive: nothing the mirror can vouch for)."""
    roots = Roots()
    read_lockfile(lockfile, roots)
    return roots


def unlisted_pins(repo: MetadataRepo, commit: bytes, roots: Roots) -> tuple[list[str], int]:
    """(one line per pinned file the state at ``commit`` does not serve, how many files are pinned)."""
    missing: list[str] = []
    total = 0
    for project, pins in sorted(roots.pins.items()):
        manifest = repo.manifest(commit, project)
        by_hash = {entry.sha256: entry for entry in manifest.files.values()} if manifest else {}
        for pin in pins:
            total += 1
            entry = by_hash.get(pin.sha256)
            label = f"{project}: {pin.filename or '?'} (sha256 {pin.sha256[:16]}...)"
            if entry is None:
                missing.append(f"{label}: not in the mirror's state {commit.decode()[:12]}")
            elif not entry.served:
                missing.append(f"{label}: taken down ({entry.tombstone.reason if entry.tombstone else ''})")
    return missing, total
