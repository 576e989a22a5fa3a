"""Copying stretches of a regular input file to an output descriptor in the kernel.

Page contents that a conversion or a memory export passes on unchanged need not travel
through this process: ``copy_file_range`` copies them within the kernel (a reflink where
the filesystem can, across filesystems on older kernels), ``sendfile`` where that fails
(another filesystem, a pipe output), and a read and write through one buffer where neither
works. A :class:`FileCopy` remembers which means failed so that later copies go straight
to one that works.

A :class:`BackgroundCopy` does such copies in a second thread, in the order they were
queued, while the caller goes on (the kernel's copy does not hold the interpreter's lock):
a converter parses and writes the next record while the previous one's pages move. Its
copies go through a pipe of its own with ``splice`` on Linux when a stretch sits at another
offset within a page in the output than in the input (as a conversion's do): no reflink can
serve those, and the kernel's own copy (``copy_file_range`` without a reflink) moves such
bytes through a small pipe, 16 pages per write; a 1 MiB pipe makes one write of 256 pages.
A :class:`SpaceAhead` reserves the output's disk space ahead of the copies.
"""

from __future__ import annotations

import errno
import os
import queue
import stat
import threading
from collections import deque
from collections.abc import Callable

from xenmig_core import linuxcalls
from xenmig_core.errors import SourceError

#: ``copy_file_range`` cannot copy between these two files (not a failure of either).
NO_COPY_FILE_RANGE = frozenset({errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                                errno.EBADF, errno.EPERM})
#: ``sendfile`` cannot write to this output.
NO_SENDFILE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})
#: ``splice`` cannot move bytes between this file and a pipe.
NO_SPLICE = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF})
#: Stretches at the same offset within blocks of this size in input and output may be
#: shared by a reflink (``copy_file_range``); others go through the pipe when there is one.
REFLINK_BLOCK = 4096
#: Piece of a copy through this process (when the kernel cannot copy).
BUFFER = 1 << 20
#: The pipe a copy through a pipe asks for (Linux's default limit for a user's pipe); a
#: smaller one gains nothing over ``copy_file_range``, which is then used instead.
PIPE_SIZE = 1 << 20


class FileCopy:
    """Copies to the output descriptor *dst_fd* (named *name* in errors). With
    *keep_offset*, copies to a given position never move ``dst_fd``'s file offset (another
    thread writes through a descriptor sharing it): ``sendfile``, which can only write at
    the offset, is then not used for them. With *through_pipe*, copies to a given position
    of a regular output that no reflink could serve go through a pipe of the copier's own
    (``splice``, see the module) where the system allows; :meth:`close` closes it."""

    def __init__(self, dst_fd: int, name: str = "output", *, keep_offset: bool = False,
                 through_pipe: bool = False) -> None:
        self.dst_fd = dst_fd
        self.name = name
        self.keep_offset = keep_offset
        try:
            regular = stat.S_ISREG(os.fstat(dst_fd).st_mode)
        except OSError:
            regular = False
        self._copy_file_range = regular and hasattr(os, "copy_file_range")
        self._sendfile = hasattr(os, "sendfile")
        #: with *through_pipe*: (read end, write end) of a PIPE_SIZE pipe for ``splice``
        #: into a regular output (of stretches no reflink can serve: see the module),
        #: made at the first such copy; None once it cannot serve
        self._pipe: tuple[int, int] | None = None
        self._splice = through_pipe and regular and hasattr(os, "splice")

    def close(self) -> None:
        """Close the pipe of copies through a pipe, if one was made."""
        self._splice = False
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            os.close(pipe[0])
            os.close(pipe[1])

    def _write_error(self, exc: OSError) -> SourceError:
        return SourceError(f"{self.name}: write error: {exc.strerror or exc}")

    def once(self, src_fd: int, offset: int, length: int, dst_pos: int | None) -> int:
        """Copy up to *length* bytes at *offset* of the regular file *src_fd* to ``dst_fd``
        at *dst_pos* (None: at its file position, which moves past them). Returns how many
        were copied, 0 when the input file ends at *offset*. ``BrokenPipeError`` passes
        through; other failures are one-line :class:`SourceError` s."""
        if self._splice and dst_pos is not None and (dst_pos - offset) % REFLINK_BLOCK:
            done = self._through_pipe(src_fd, offset, length, dst_pos)
            if done is not None:
                return done
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

    def _through_pipe(self, src_fd: int, offset: int, length: int, dst_pos: int
                      ) -> int | None:
        """:meth:`once` with ``splice`` through this copier's pipe; None when splice cannot
        serve (nothing was copied: the next means is tried, and this one not again)."""
        pipe = self._pipe or self._make_pipe()
        if pipe is None:
            return None
        out_of, into = pipe
        try:
            got = os.splice(src_fd, into, min(length, PIPE_SIZE), offset_src=offset)
        except OSError as exc:
            if exc.errno not in NO_SPLICE:
                raise SourceError(f"input: read error at offset {offset:#x}: "
                                  f"{exc.strerror or exc}") from None
            self.close()
            return None
        left = got
        try:
            while left:
                try:
                    left -= os.splice(out_of, self.dst_fd, left,
                                      offset_dst=dst_pos + got - left)
                except OSError as exc:
                    if exc.errno not in NO_SPLICE:
                        raise
                    self._splice = False       # this output takes no splice: empty the pipe
                    data = memoryview(os.read(out_of, left))
                    while data:
                        done = os.pwrite(self.dst_fd, data, dst_pos + got - left)
                        data, left = data[done:], left - done
        except BrokenPipeError:
            raise
        except OSError as exc:
            self.close()                       # bytes may be left in it
            raise self._write_error(exc) from None
        if not self._splice:
            self.close()
        return got

    def _make_pipe(self) -> tuple[int, int] | None:
        """A new pipe of PIPE_SIZE for :meth:`_through_pipe`, or None (and no more tries)
        when the system gives none that large."""
        import fcntl
        try:
            self._pipe = os.pipe()
            if fcntl.fcntl(self._pipe[1], fcntl.F_SETPIPE_SZ, PIPE_SIZE) >= PIPE_SIZE:
                return self._pipe
        except (OSError, AttributeError):      # no descriptor left; no pipe that large
            pass
        self.close()
        return None

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
        self._copier = FileCopy(self._fd, name, keep_offset=True, through_pipe=True)
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
        self._copier.close()
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

#: Disk space is reserved ahead of the writes in steps of this size, once an output has
#: grown past one step (a small output never loads ctypes).
RESERVE_STEP = 32 << 20


class SpaceAhead:
    """Reserves disk space for the regular file *fd* ahead of its writes: Linux's
    ``fallocate`` with KEEP_SIZE, so the file's size and contents do not change. A write
    into reserved space needs no block allocation by the filesystem (delayed allocation
    on ext4 costs a 1 GiB conversion about a sixth of its time). Reserving is only help:
    where it fails (not Linux, a filesystem without fallocate, too little space for a step)
    it stops, and the writes report any real error themselves. :meth:`trim` gives back what
    was reserved past the file's end; the file's owner calls it once the writes are done."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._reserved = 0     # the reservation ends here (0: nothing reserved yet)
        self._call: Callable[..., int] | None = None
        self._stopped = False

    def cover(self, start: int, end: int) -> None:
        """The bytes [*start*, *end*) are about to be written: reserve them (and a step
        beyond) unless that was done."""
        if end <= self._reserved or end < RESERVE_STEP or self._stopped:
            return
        if self._call is None:
            self._call = linuxcalls.fallocate()
            if self._call is None:
                self._stopped = True
                return
        start = max(start, self._reserved)
        length = end + RESERVE_STEP - start
        if self._call(self._fd, linuxcalls.FALLOC_FL_KEEP_SIZE, start, length) != 0:
            self._stopped = True
            return
        self._reserved = start + length

    def trim(self) -> None:
        """Give back the space reserved past the file's end (the file's size: every write
        must be done). ``OSError`` passes through."""
        if self._reserved:
            size = os.fstat(self._fd).st_size
            if size < self._reserved:
                os.ftruncate(self._fd, size)    # the same size: frees the blocks past it
            self._reserved = size
