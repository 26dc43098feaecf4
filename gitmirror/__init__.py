"""gitmirror: an immutable, git-backed mirror of a Python package index."""

__version__ = "0.1.0"
