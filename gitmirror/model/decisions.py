"""The mirror's decision log, ``marks/<project>.jsonl``: where it lives and what it decides now.

``gitmirror yank``, ``deprecate`` and ``takedown`` append to it (``marks``); ``sync`` replays it so
that a decision of this mirror wins over upstream's state. Pure: it reads the log's bytes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .manifest import PROJECT_STATUSES

MARKS_DIR = "marks"


@dataclass(frozen=True)
class LocalDecisions:
    """The mirror's own yanks and status, which win over upstream's state during sync."""

    yanked: dict[str, bool | str] = field(default_factory=dict)
    status: tuple[str, str | None] | None = None


def marks_path(project: str) -> str:
    return f"{MARKS_DIR}/{project}.jsonl"


def local_decisions(data: bytes | None) -> LocalDecisions:
    """Replay a project's decision log (its bytes, None when absent); the latest decision about a
    file or the status wins."""
    yanked: dict[str, bool | str] = {}
    status: tuple[str, str | None] | None = None
    for line in (data or b"").decode("utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        action = record.get("action")
        if action in ("yank", "unyank"):
            value: bool | str = (record.get("reason") or True) if action == "yank" else False
            for filename in record.get("files", []):
                yanked[filename] = value
        elif action == "status" and record.get("status") in PROJECT_STATUSES:
            status = (record["status"], None if record["status"] == "active" else record.get("reason"))
    return LocalDecisions(yanked=yanked, status=status)
