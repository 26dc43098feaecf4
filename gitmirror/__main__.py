"""``python -m gitmirror``: the same as the ``gitmirror`` command (tests and hooks use it)."""

from .cli.cli import main

if __name__ == "__main__":  # not in a process multiprocessing starts, which imports the main module again
    main()
