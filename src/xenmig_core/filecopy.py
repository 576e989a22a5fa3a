"""Copying stretches of a regular input file to an output descriptor in the kernel.

Page contents that a conversion or a memory export passes on unchanged need not travel
through this process: ``copy_file_range`` copies them within the kernel (a reflink where
the filesystem can, across filesystems on older kernels), ``sendfile`` where that fails
(another filesystem, a pipe output), and a read and write through one buffer where neither
works. A :class:`FileCopy` remembers which means failed so that later copies go straight
to one that works.

A :class:`BackgroundCopy` does such copies in a second thread, in the order they were
queued, while the caller goes on (the kernel's copy does not hold the interpreter's lock):
a converter parses and writes the next record while the previous one's pages move.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from collections import deque
from collections.abc import Callable

from xenmig_core.errors import SourceError

#: ``copy_file_range`` cannot copy between these two files (not a failure of either).
NO_COPY_FILE_RANGE = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                                errno.EBADF, errno.EPERM})
#: ``sendfile`` cannot write to this output.
NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
#: Piece of a copy through this process (when the kernel cannot copy).
BUFFER = 1 << 20


class FileCopy:
    """Copies to the output descriptor *dst_fd* (named *name* in errors). With
    *keep_offset*, copies to a given position never move ``dst_fd``'s file offset (another
    thread writes through a descriptor sharing it): ``sendfile``, which can only write at
    the offset, is then not used for them."""

    def __init__(self, dst_fd: int, name: str = "output", *, keep_offset: bool = False
                 ) -> None:
        self.dst_fd = dst_fd
        self.name = name
        self.keep_offset = keep_offset
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
        if self._sendfile and not (self.keep_offset and dst_pos is not None):
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


#: Copies queued ahead of the one under way, at most (the caller waits beyond that): far
#: enough for a converter to finish its walk while the kernel still copies.
QUEUED = 1 << 16


class BackgroundCopy:
    """Copies to the regular file *dst_fd* (named *name* in errors) done in order by one
    worker thread: :meth:`submit` returns at once. The worker uses its own descriptors
    (duplicates, one per input file), so closing the caller's never pulls a file from under
    a copy; it writes only at the positions given and never moves the file offset.
    *after(end)*, if given, is called in the worker as each copy ends: the output's bytes
    before *end* are then final (the caller wrote those before it queued the copy).

    A failure (a write error, or a copy that comes up short: the input file shrank) stops
    the copies still queued and is raised, once, by the next :meth:`submit` or by
    :meth:`wait`. :meth:`close` must follow (it ends the worker)."""

    def __init__(self, dst_fd: int, name: str = "output",
                 after: Callable[[int], None] | None = None) -> None:
        self.name = name
        self._fd = os.dup(dst_fd)
        self._copier = FileCopy(self._fd, name, keep_offset=True)
        self._after = after
        self._sources: dict[tuple[int, int, int], int] = {}   # (fd, dev, inode) -> dup
        self._jobs: queue.Queue[tuple[int, int, int, int] | None] = queue.Queue(QUEUED)
        self._error: BaseException | None = None
        self._failed = False
        self._stopping = False
        self._positions: deque[int] = deque()      # of the copies queued or under way
        self._progress = threading.Condition()     # notified as each copy ends
        self._thread = threading.Thread(target=self._work, name="xenmig-copy", daemon=True)
        self._thread.start()

    def submit(self, src_fd: int, offset: int, length: int, dst_pos: int) -> None:
        """Queue a copy of *length* bytes at *offset* of the regular file *src_fd*, which
        the caller knows holds them, to *dst_pos* of the output (past what was queued)."""
        self._raise()
        try:
            info = os.fstat(src_fd)
            key = (src_fd, info.st_dev, info.st_ino)
            src = self._sources.get(key)
            if src is None:
                src = self._sources[key] = os.dup(src_fd)
        except OSError as exc:
            raise SourceError(f"input: cannot copy from it: {exc.strerror or exc}") from None
        self._positions.append(dst_pos)
        self._jobs.put((src, offset, length, dst_pos))

    def settled(self) -> int | None:
        """Where the oldest copy not done yet goes (what lies before it is in the file
        as far as the copies go), or None when none is pending."""
        try:
            return self._positions[0]
        except IndexError:
            return None

    def wait_below(self, end: int) -> None:
        """Return once no copy not done yet goes below *end* (the output's bytes before
        *end* are then as the copies make them; copies are queued in output order)."""
        with self._progress:
            while True:
                settled = self.settled()
                if settled is None or settled >= end:
                    return
                self._progress.wait()

    def wait(self) -> None:
        """Return once every queued copy is done; raise the failure of one that failed."""
        self._jobs.join()
        self._raise()

    def close(self) -> None:
        """Drop the copies not started yet, wait for the one under way, end the worker."""
        self._stopping = True
        self._jobs.put(None)
        self._thread.join()
        for fd in (self._fd, *self._sources.values()):
            os.close(fd)
        self._sources.clear()

    def _raise(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                src, offset, length, dst_pos = job
                try:
                    if not (self._failed or self._stopping):
                        self._copy(src, offset, length, dst_pos)
                        if self._after is not None:
                            self._after(dst_pos + length)
                except BaseException as exc:   # handed to the caller's thread
                    self._failed = True
                    self._error = exc
                finally:
                    with self._progress:
                        self._positions.popleft()
                        self._progress.notify_all()
            finally:
                self._jobs.task_done()

    def _copy(self, src: int, offset: int, length: int, dst_pos: int) -> None:
        done = self._copier.copy(src, offset, length, dst_pos)
        if done != length:
            raise SourceError(f"input: the file shrank while it was copied: {length} bytes "
                              f"expected at offset {offset:#x}, {done} found")
