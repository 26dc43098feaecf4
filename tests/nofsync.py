"""The processes tests start skip the disk flushes: Debian's libeatmydata preloaded into them.

gitmirror makes what it writes durable (``syncfs``, ``fsync``) before it names it. In a test that
is only waiting: for the disk, and through ``syncfs`` for whatever every parallel test (and every
other program on the machine) left dirty on the same file system. No test can observe durability
across a power cut (a killed process leaves the page cache intact), so the tests lose nothing: the
order of writes and flushes is asserted in-process by the tests that patch them. Without the
library the tests run unchanged, only slower; CI installs it (``.ci/run``).
"""

from __future__ import annotations

import ctypes.util
import os


def _preload() -> dict[str, str]:
    library = ctypes.util.find_library("eatmydata")
    if library is None:
        return {}
    already = os.environ.get("LD_PRELOAD", "")
    return {"LD_PRELOAD": f"{already} {library}".strip()}


#: what ``conftest.isolated_env`` adds to every environment it makes: found once per test process
ENVIRONMENT = _preload()
