"""gitmirror: an immutable, git-backed mirror of a Python package index."""

import sys

__version__ = "0.1.0"

# httpx imports its own command-line client whenever click and rich are installed (typer brings
# both): 0.1-0.17 s of every command that talks to upstream, for a program gitmirror never runs.
# Recorded as absent before httpx is first imported, httpx takes its documented fallback (a stub
# ``httpx.main``); nothing else changes.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
