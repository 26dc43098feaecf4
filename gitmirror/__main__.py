"""``python -m gitmirror``: the same as the ``gitmirror`` command (tests and hooks use it)."""

from .cli.cli import main

main()
