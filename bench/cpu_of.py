"""Run a command; write its wall seconds and the CPU seconds of it and every process it started.

``python bench/cpu_of.py OUTPUT COMMAND...`` writes ``WALL CPU`` to ``OUTPUT`` and exits with the
command's status. The CPU is all descendants' user + system time, those that outlive their parent
included (a sync's download processes leave after it): this process is a child subreaper
(``PR_SET_CHILD_SUBREAPER``) and waits until none is left. Unlike the machine's busy CPU, other
work on a shared machine does not count in it. Linux only.
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36


def main() -> int:
    output, command = sys.argv[1], sys.argv[2:]
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"cpu_of: prctl failed: {os.strerror(ctypes.get_errno())}")
    start = time.perf_counter()
    process = subprocess.Popen(command)
    status = process.wait()
    wall = time.perf_counter() - start
    while True:  # the orphans, reparented here
        try:
            os.wait()
        except ChildProcessError:
            break
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(output, "w") as handle:
        handle.write(f"{wall} {usage.ru_utime + usage.ru_stime}\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
