"""Writing an export: bytes, page copies straight from the input file, holes.

:class:`Output` wraps what ``xenmig convert`` hands a converter. When that has a file
descriptor, everything is written to the descriptor directly: page contents move from the
input file in the kernel (no copy through Python): into a regular file by ``splice``
through a 1 MiB pipe, or ``os.copy_file_range`` where a reflink could serve (see
:mod:`xenmig_core.filecopy`); else ``os.sendfile`` (a pipe output), else read-and-write in
1 MiB pieces.
A regular-file output is written at explicit offsets, so an export can leave holes (a
sparse raw image). Byte counts are reported back with the wrapper's ``count`` when it has
one. Write failures are one-line :class:`~xenmig_core.errors.SourceError`s (exit 2).
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Any

from xenmig_core.errors import SourceError
from xenmig_core.filecopy import FileCopy

COPY_PIECE = 1 << 30
BUFFER = 1 << 20
_ZEROS = bytes(BUFFER)


class Output:
    """An export's output. ``pos`` is where the next byte goes."""

    def __init__(self, out: Any, name: str = "output") -> None:
        self.out = out
        self.name = name
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError, ValueError):
            self.fd = out.fileno()
        self.seekable = False
        self.pos = 0
        if self.fd is not None:
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.fstat(self.fd).st_mode):
                    self.pos = os.lseek(self.fd, 0, os.SEEK_CUR)
                    self.seekable = True
        self.start = self.pos
        self._copier = FileCopy(self.fd, name, through_pipe=True) \
            if self.fd is not None else None
        self._count = getattr(out, "count", None)

    def _error(self, exc: OSError) -> SourceError:
        return SourceError(f"{self.name}: write error: {exc.strerror or exc}")

    def _counted(self, n: int) -> None:
        self.pos += n
        if self._count is not None:
            self._count(n)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Write *data* at ``pos``."""
        view = memoryview(data)
        if self.fd is None:
            self.out.write(view)
            self.pos += len(view)
            return
        while view:
            try:
                if self.seekable:
                    done = os.pwrite(self.fd, view, self.pos)
                else:
                    done = os.write(self.fd, view)
            except BrokenPipeError:
                raise
            except OSError as exc:
                raise self._error(exc) from None
            view = view[done:]
            self._counted(done)

    def skip_to(self, position: int) -> None:
        """Move ``pos`` forward to *position*: a hole in a regular file, zeros otherwise."""
        gap = position - self.pos
        if gap <= 0:
            return
        if self.seekable:
            self.pos = position
            return
        while gap:
            step = min(gap, BUFFER)
            self.write(_ZEROS[:step])
            gap -= step

    def finish(self) -> None:
        """Give a regular-file output its final size (a trailing hole counts)."""
        if self.seekable and self.fd is not None:
            try:
                if os.fstat(self.fd).st_size < self.pos:
                    os.ftruncate(self.fd, self.pos)
                os.lseek(self.fd, self.pos, os.SEEK_SET)
            except OSError as exc:
                raise self._error(exc) from None

    def close(self) -> None:
        """Release what the copies hold (a pipe); the output itself stays open."""
        if self._copier is not None:
            self._copier.close()

    def copy(self, src_fd: int, offset: int, length: int) -> None:
        """Copy *length* bytes at *offset* of the input file *src_fd* to ``pos``."""
        while length > 0:
            done = self._copy_once(src_fd, offset, min(length, COPY_PIECE))
            if done <= 0:
                raise SourceError(f"input: {length} bytes expected at offset {offset:#x}, "
                                  "the file ended")
            offset += done
            length -= done

    def _copy_once(self, src_fd: int, offset: int, length: int) -> int:
        """Copy up to *length* bytes with the best means that works; returns how many."""
        if self._copier is None:
            data = os.pread(src_fd, min(length, BUFFER), offset)
            self.write(data)
            return len(data)
        done = self._copier.once(src_fd, offset, length, self.pos if self.seekable else None)
        self._counted(done)
        return done
