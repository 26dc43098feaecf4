"""A serving machine that follows the mirror's metadata remote: ``gitmirror serve --follow REMOTE``.

Several ``serve`` instances on different hosts share one bucket (``store: s3://...``) and each
follows the one repository the sync pushes to. Every ``interval`` seconds a follower fetches the
remote's branch and moves its own branch there by pushing the fetched commit into its own
repository: the push goes through git's receive-pack, so the pre-receive hook judges it with the
policy every push meets (no rewrite, no deletion, no manifest change the policy refuses) and git
refuses anything that is not a fast-forward. A refused update leaves the branch where it was and
is reported in one line; the follower keeps serving what it had. The blobs a commit names are in
the bucket before the sync commits, so a follower never serves a file whose blob is not there yet.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

Log = Callable[[str], None]


class Follower:
    """Fast-forwards ``branch`` of the bare repository ``repo`` to ``remote``'s, policy permitting."""

    def __init__(self, repo: Path, remote: str, branch: str, interval: float, log: Log) -> None:
        self.repo = repo
        self.remote = remote
        self.branch = branch
        self.interval = interval
        self.log = log
        self._stop = threading.Event()
        self._last: str | None = None  # the last line reported: a refusal is said once, not every interval
        self._thread: threading.Thread | None = None

    def step(self) -> str | None:
        """Fetch once and move the branch; returns what happened in one line (None: nothing new)."""
        ref = f"refs/heads/{self.branch}"
        fetched = self._git("fetch", "--quiet", "--no-tags", self.remote, ref)
        if fetched.returncode != 0:
            return f"follow: cannot fetch {self.branch} from {self.remote}: {_last_line(fetched.stderr)}"
        new = self._git("rev-parse", "--verify", "--quiet", "FETCH_HEAD^{commit}").stdout.strip()
        old = self._git("rev-parse", "--verify", "--quiet", ref).stdout.strip()
        if not new or new == old:
            return None
        pushed = self._git("push", "--quiet", str(self.repo.resolve()), f"{new}:{ref}")
        if pushed.returncode != 0:
            return f"follow: refused {self.branch} {new[:12]} from {self.remote}: {_refusal(pushed.stderr)}"
        return f"follow: {self.branch} at {new[:12]}"

    def start(self) -> None:
        """Follow in a daemon thread until ``stop``; the first step runs now, before serving starts."""
        self._report(self.step())
        self._thread = threading.Thread(target=self._run, name="gitmirror-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._report(self.step())
            except OSError as exc:  # git missing or the repository gone: say so, keep serving
                self._report(f"follow: {exc}")

    def _report(self, line: str | None) -> None:
        if line is not None and line != self._last:
            self.log(line)
        self._last = line if line is not None else self._last

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "--git-dir", str(self.repo), *args], capture_output=True, text=True, timeout=max(60, self.interval)
        )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"


def _refusal(text: str) -> str:
    """The hook's or git's reason, without git's ``remote:`` prefixes and its closing error line."""
    lines = [line.removeprefix("remote:").strip() for line in text.splitlines()]
    reasons = [line for line in lines if line and not line.startswith(("error:", "To ", "!"))]
    return "; ".join(reasons[:3]) if reasons else _last_line(text)
