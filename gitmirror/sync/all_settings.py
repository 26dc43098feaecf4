"""``projects: all`` in ``mirror.yaml``: every project upstream lists, synced in resumable batches.

Settings only (``gitmirror.sync.full_index`` runs them): a cold sync of a whole index takes days,
so it commits every ``batch_projects`` projects, or sooner when a batch would take longer than
``batch_minutes``; a crash or a stop loses at most one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ALL = "all"


@dataclass(frozen=True)
class FullIndex:
    batch_projects: int = 1000
    batch_minutes: float = 10.0


def parse_full_index(data: dict[str, Any], where: str) -> FullIndex | None:
    """``FullIndex`` when ``projects`` is ``all``, else None; a bad value is one ``ConfigError`` line."""
    from .config import ConfigError

    projects = data.get("projects", [])
    if not isinstance(projects, str):
        for key in ("batch_projects", "batch_minutes"):
            if key in data:
                raise ConfigError(f"{where}{key} applies to `projects: all` only")
        return None
    if projects != ALL:
        raise ConfigError(f"{where}projects must be a list of project names or requirements, or 'all'")
    batch_projects = data.get("batch_projects", FullIndex.batch_projects)
    batch_minutes = float(data.get("batch_minutes", FullIndex.batch_minutes))
    if batch_projects < 1:
        raise ConfigError(f"{where}batch_projects must be a positive integer")
    if not 0 < batch_minutes < float("inf"):
        raise ConfigError(f"{where}batch_minutes must be a positive number of minutes")
    return FullIndex(batch_projects=batch_projects, batch_minutes=batch_minutes)
