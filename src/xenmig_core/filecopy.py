"""Copying stretches of a regular input file to an output descriptor in the kernel.

Page contents that a conversion or a memory export passes on unchanged need not travel
through this process: ``copy_file_range`` copies them within the kernel (a reflink where
the filesystem can, across filesystems on older kernels), ``sendfile`` where that fails
(another filesystem, a pipe output), and a read and write through one buffer where neither
works. A :class:`FileCopy` remembers which means failed so that later copies go straight
to one that works.
"""

from __future__ import annotations

import errno
import os
import stat

from xenmig_core.errors import SourceError

#: ``copy_file_range`` cannot copy between these two files (not a failure of either).
NO_COPY_FILE_RANGE = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                                errno.EBADF, errno.EPERM})
#: ``sendfile`` cannot write to this output.
NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
#: Piece of a copy through this process (when the kernel cannot copy).
BUFFER = 1 << 20


class FileCopy:
    """Copies to the output descriptor *dst_fd* (named *name* in errors)."""

    def __init__(self, dst_fd: int, name: str = "output") -> None:
        self.dst_fd = dst_fd
        self.name = name
        try:
            regular = stat.S_ISREG(os.fstat(dst_fd).st_mode)
        except OSError:
            regular = False
        self._copy_file_range = regular and hasattr(os, "copy_file_range")
        self._sendfile = hasattr(os, "sendfile")

    def _write_error(self, exc: OSError) -> SourceError:
        return SourceError(f"{self.name}: write error: {exc.strerror or exc}")

    def once(self, src_fd: int, offset: int, length: int, dst_pos: int | None) -> int:
        """Copy up to *length* bytes at *offset* of the regular file *src_fd* to ``dst_fd``
        at *dst_pos* (None: at its file position, which moves past them). Returns how many
        were copied, 0 when the input file ends at *offset*. ``BrokenPipeError`` passes
        through; other failures are one-line :class:`SourceError` s."""
        if self._copy_file_range:
            try:
                return os.copy_file_range(src_fd, self.dst_fd, length, offset, dst_pos)
            except OSError as exc:
                if exc.errno not in NO_COPY_FILE_RANGE:
                    raise self._write_error(exc) from None
                self._copy_file_range = False
        if self._sendfile:
            try:
                if dst_pos is not None:
                    os.lseek(self.dst_fd, dst_pos, os.SEEK_SET)
                return os.sendfile(self.dst_fd, src_fd, offset, length)
            except BrokenPipeError:
                raise
            except OSError as exc:
                if exc.errno not in NO_SENDFILE:
                    raise self._write_error(exc) from None
                self._sendfile = False
        try:
            data = os.pread(src_fd, min(length, BUFFER), offset)
        except OSError as exc:
            raise SourceError(f"input: read error at offset {offset:#x}: "
                              f"{exc.strerror or exc}") from None
        view = memoryview(data)
        try:
            while view:
                done = os.write(self.dst_fd, view) if dst_pos is None else \
                    os.pwrite(self.dst_fd, view, dst_pos + len(data) - len(view))
                view = view[done:]
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise self._write_error(exc) from None
        return len(data)

    def copy(self, src_fd: int, offset: int, length: int, dst_pos: int | None = None) -> int:
        """Copy *length* bytes as :meth:`once` does, piece after piece; returns how many
        were copied (fewer than *length* only when the input file ends first)."""
        done = 0
        while done < length:
            n = self.once(src_fd, offset + done, length - done,
                          None if dst_pos is None else dst_pos + done)
            if n <= 0:
                break
            done += n
        return done
