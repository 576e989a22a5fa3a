"""Running xenmig as a child and measuring that child's own peak RSS (issue 14's guarantee).

:func:`run_xenmig` starts xenmig through :data:`LAUNCHER` with a file argument or feeding a
pipe (from bytes, or from a file copied a MiB at a time, so the test process never holds a
large stream), and returns its exit code, peak RSS, stderr and the end of its stdout.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

#: The guarantee: no input makes xenmig's peak RSS exceed this.
RSS_LIMIT = 64 << 20
#: How much of the child's stdout is given back (its end).
STDOUT_KEPT = 1 << 20

#: Runs xenmig as its own child and writes that child's peak RSS (KiB) to argv[1]. Linux
#: records the address space a process had before exec in its peak RSS (a child forked
#: from the test process would report the test process's peak): this small launcher is
#: what xenmig is forked from.
LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "xenmig_core", *sys.argv[2:]])
_pid, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_xenmig(args: list[str], stdin: bytes | Path | None = None,
               with_stdout: bool = False) -> tuple:
    """Run xenmig with *args*, feeding *stdin* (bytes, or a file's contents) through a pipe
    when given. Returns (exit code, its own peak RSS in bytes, stderr), plus the last
    :data:`STDOUT_KEPT` bytes of its stdout as text when *with_stdout*."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as folder:
        rss_file = Path(folder) / "rss"
        child = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(rss_file), *args],
                                 stdin=subprocess.PIPE if stdin is not None else None,
                                 stdout=out, stderr=err)
        feeder = None
        if stdin is not None:
            assert child.stdin is not None
            pipe = child.stdin

            def feed() -> None:
                try:
                    if isinstance(stdin, Path):
                        with open(stdin, "rb") as source:
                            shutil.copyfileobj(source, pipe, 1 << 20)
                    else:
                        pipe.write(stdin)
                    pipe.close()
                except OSError:   # the child refused early: fine
                    pass
            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
        code = child.wait()
        if feeder is not None:
            feeder.join(5)
        err.seek(0)
        result = (code, int(rss_file.read_text()) * 1024, err.read().decode(errors="replace"))
        if not with_stdout:
            return result
        size = out.seek(0, 2)
        out.seek(max(0, size - STDOUT_KEPT))
        return (*result, out.read().decode(errors="replace"))
