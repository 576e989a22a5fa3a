"""Progress on stderr for long runs: ``xenmig: verifying guest.xl: 1.2 GiB of 4.0 GiB (30%)``.

Shown only when stderr is a terminal, never on a pipe or with ``-q`` (the caller decides
that through :func:`progress_for`), and only once a run has lasted :data:`DELAY` seconds, so
that short runs print nothing. The line is rewritten in place and erased at the end, so that
whatever the command prints next starts on a clean line.

:class:`Progress` is a :class:`~xenmig_core.engine.Consumer` (add it to a walk with
``MultiConsumer``) and has :meth:`Progress.tick` for callers that are not walks (a converter's
output writes).
"""

from __future__ import annotations

import os
import sys
import time

from xenmig_core.engine import Consumer
from xenmig_core.source import ByteSource

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any, TextIO

#: seconds before the first progress line
DELAY = 1.0
#: seconds between updates
INTERVAL = 0.5
GIB = 1 << 30
MIB = 1 << 20


def size_text(size: int) -> str:
    """``512 MiB`` below a gibibyte, ``1.5 GiB`` from there."""
    return f"{size / GIB:.1f} GiB" if size >= GIB else f"{size // MIB} MiB"


class Progress(Consumer):
    """Reports how far *source* has been read, against *total* bytes when known."""

    def __init__(self, source: ByteSource, verb: str, err: TextIO, total: int | None) -> None:
        self.source = source
        self.verb = verb
        self.err = err
        self.total = total
        self.started = time.monotonic()
        self.last = 0.0
        self.width = 0

    def tick(self) -> None:
        """Rewrite the progress line if it is time to."""
        now = time.monotonic()
        if now - self.started < DELAY or now - self.last < INTERVAL:
            return
        self.last = now
        done = self.source.offset - self.source.start
        text = f"xenmig: {self.verb} {self.source.name}: {size_text(done)}"
        if self.total:
            text += f" of {size_text(self.total)} ({100 * done // self.total}%)"
        elif self.source.compression:
            text += f" ({self.source.compression}-decompressed)"
        self.width = max(self.width, len(text))
        self.err.write("\r" + text.ljust(self.width))
        self.err.flush()

    def on_record_end(self, record: Any) -> None:
        self.tick()

    def finish(self) -> None:
        """Erase the progress line (when one was shown)."""
        if self.width:
            self.err.write("\r" + " " * self.width + "\r")
            self.err.flush()
            self.width = 0


def progress_for(source: ByteSource, verb: str, *, enabled: bool = True,
                 err: TextIO | None = None) -> Progress | None:
    """A Progress for *source* when *enabled* and *err* (default stderr) is a terminal."""
    err = err if err is not None else sys.stderr
    try:
        if not enabled or err is None or not err.isatty():
            return None
    except (ValueError, AttributeError):
        return None
    total = None
    if source.compression is None and os.path.isfile(source.name):
        try:
            total = os.path.getsize(source.name) - source.start
        except OSError:
            total = None
    return Progress(source, verb, err, total)
