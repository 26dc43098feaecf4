"""``python -m gitmirror``: the same as the ``gitmirror`` command (tests and hooks use it)."""

from .cli import main

main()
