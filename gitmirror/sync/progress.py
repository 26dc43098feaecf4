"""Progress of a sync: rich bars on a terminal, plain log lines elsewhere, silence on request.

A mirror sync may run for hours interactively or every few minutes from cron; the first wants
bars with rates and an ETA, the second wants greppable lines (or nothing but a JSON summary).
Counters are kept either way, so the summary can report bytes and requests whatever is shown.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO


class Progress:
    """Counts everything; shows nothing (``--quiet`` and ``--json``). Subclasses add display."""

    #: whether ``note`` shows anything: a warning only counts as shown when it was (``Syncer._warn``)
    shows_notes = False

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.projects_total = 0
        self.projects_done = 0
        self.files_total = 0
        self.files_done = 0
        self.bytes_total = 0
        self.bytes_done = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()

    # -- events from sync ------------------------------------------------------------------------

    def project_found(self, name: str) -> None:
        with self._lock:
            self.projects_total += 1
        self._refresh()

    def project_done(self, name: str, added: int = 0, errors: int = 0) -> None:
        with self._lock:
            self.projects_done += 1
        if added or errors:
            detail = f"{added} new file{'s' * (added != 1)}" + (f", {errors} errors" if errors else "")
            self.note(f"{name}: {detail}")
        self._refresh()

    def files_queued(self, count: int, size: int) -> None:
        with self._lock:
            self.files_total += count
            self.bytes_total += size
        self._refresh()

    def file_done(self) -> None:
        with self._lock:
            self.files_done += 1
        self._refresh()

    def advance(self, size: int) -> None:
        with self._lock:
            self.bytes_done += size
        self._refresh(bytes_only=True)

    # -- output ------------------------------------------------------------------------------------

    def log(self, line: str) -> None:
        """Errors and conflicts: always shown, whatever the mode."""
        print(line, file=self.stream, flush=True)

    def note(self, line: str) -> None:
        """Per-project news: shown in plain and rich modes only."""

    def _refresh(self, bytes_only: bool = False) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class PlainProgress(Progress):
    """One line per changed project and a status line every few seconds: made for logs."""

    shows_notes = True

    def __init__(self, stream: TextIO | None = None, interval: float = 5.0) -> None:
        super().__init__(stream)
        self.interval = interval
        self._last = time.monotonic()

    def note(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def _refresh(self, bytes_only: bool = False) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        print(
            f"progress: {self.projects_done}/{self.projects_total} projects, {self.files_done}/{self.files_total} "
            f"files, {_size(self.bytes_done)}/{_size(self.bytes_total)}",
            file=self.stream,
            flush=True,
        )


class RichProgress(Progress):
    """Bars for projects, files and bytes (with rate and ETA), drawn on stderr by rich."""

    shows_notes = True

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.progress import Progress as Bars

        self.console = Console(file=self.stream)
        self.bars = Bars(
            TextColumn("{task.description:>8}"),
            BarColumn(),
            MofNCompleteColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._projects = self.bars.add_task("projects", total=0)
        self._files = self.bars.add_task("files", total=0)
        self._bytes = self.bars.add_task("bytes", total=0)
        self.bars.start()

    def log(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)

    def note(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, style="dim")

    def _refresh(self, bytes_only: bool = False) -> None:
        self.bars.update(self._bytes, completed=self.bytes_done, total=self.bytes_total)
        if not bytes_only:
            self.bars.update(self._projects, completed=self.projects_done, total=self.projects_total)
            self.bars.update(self._files, completed=self.files_done, total=self.files_total)

    def close(self) -> None:
        self._refresh()
        self.bars.stop()


def make_progress(quiet: bool = False, as_json: bool = False, stream: TextIO | None = None) -> Progress:
    """Silent for ``--quiet``/``--json``, bars on a terminal, plain lines otherwise."""
    stream = stream or sys.stderr
    if quiet or as_json:
        return Progress(stream)
    if stream.isatty():
        return RichProgress(stream)
    return PlainProgress(stream)


def eta(done: int, total: int, elapsed: float, noun: str) -> str:
    """``<done> of <total> <noun> (<share> %), <time> left``, the time left at the rate so far."""
    share = f"{done} of {total} {noun} ({100 * done / total if total else 100:.1f} %)"
    if not done or done >= total:
        return share
    left = int(elapsed * (total - done) / done)
    hours, minutes = divmod(max(left, 60) // 60, 60)
    return share + (f", {hours} h {minutes} min left" if hours else f", {minutes} min left")


def _size(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} GB"


def summary_json(
    result: Any, progress: Progress, pages: Any = None, warnings: list[str] | None = None
) -> dict[str, Any]:
    """The ``sync --json`` document: what changed, what it cost, what failed, and every warning and
    skipped legacy file of the run, including those a terminal is not shown again."""
    return {
        "projects": len(result.outcomes),
        "changed": sum(1 for outcome in result.outcomes if outcome.added or outcome.changes),
        "files_added": result.files_added,
        "bytes_downloaded": progress.bytes_done,
        "pages_fetched": getattr(pages, "fetched", None),
        "pages_not_modified": getattr(pages, "not_modified", None),
        "conflicts": [conflict.to_json() | {"project": conflict.project} for conflict in result.conflicts],
        "known_conflicts": [
            conflict.to_json() | {"project": conflict.project}
            for outcome in result.outcomes
            for conflict in outcome.known_conflicts
        ],
        "errors": result.errors,
        "warnings": list(warnings or []),
        "skipped": {
            outcome.name: dict(sorted(outcome.skipped.items())) for outcome in result.outcomes if outcome.skipped
        },
        "commit": result.commit.decode() if result.commit else None,
        "exit_code": result.exit_code,
        "seconds": round(progress.seconds, 3),
    }
