"""Entry point of hooks installed before the stage layout (``python -m gitmirror.hooks pre-receive``)."""

import sys

from .audit.hooks import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
