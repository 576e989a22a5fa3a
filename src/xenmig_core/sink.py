"""Outputs that never leave partial data.

A path output is written to a temporary file beside the target and renamed into place only
when the whole output was written and synced to disk (callers that verify do so inside the
block, so a failed verification leaves nothing); on any error, Ctrl-C included, the
temporary file vanishes. ``-`` (stdout) and ``fd:N`` stream as they go: a pipe cannot be
taken back.

The final sync of a large output would otherwise wait for all of it to reach the disk at
the end; on Linux the temporary file's finished stretches are handed to the disk as the
output grows (``sync_file_range``, start only: nothing waits), so that the disk works
while the output is still being produced and the final sync has little left to do.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from xenmig_core import linuxcalls
from xenmig_core.errors import SourceError, UsageError
from xenmig_core.filecopy import BackgroundCopy, FileCopy, SpaceAhead
from xenmig_core.source import parse_fd

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import BinaryIO, TextIO

#: A temporary output's data is handed to the disk in stretches of this size.
WRITE_BEHIND = 32 << 20


def _writeback_starter() -> Callable[[int, int, int], None] | None:
    """``start(fd, offset, length)``: Linux's sync_file_range(SYNC_FILE_RANGE_WRITE), which
    starts writing a stretch of a file to disk and returns; None where it is not available
    (then the final fsync does all the work, as everywhere). The call is looked up (and
    ctypes loaded) at the first start: most outputs end before their first stretch."""
    if not sys.platform.startswith("linux"):
        return None
    found: list[Callable[..., int]] = []

    def start(fd: int, offset: int, length: int) -> None:
        if not found:
            found.append(linuxcalls.sync_file_range() or (lambda *args: 0))
        found[0](fd, offset, length, linuxcalls.SYNC_FILE_RANGE_WRITE)   # failing costs speed
    return start


def is_stream_target(spec: str | Path) -> bool:
    """True for ``-`` and ``fd:N``: outputs written as they go, never renamed."""
    return isinstance(spec, str) and (spec == "-" or parse_fd(spec) is not None)


def write_error(spec: str | Path, exc: OSError) -> SourceError:
    """The one-line error for a failed write, flush or close of output *spec*."""
    return SourceError(f"{spec}: write error: {exc.strerror or exc}")


class GuardedWriter(io.BufferedIOBase):
    """A binary writer over *raw* whose write/flush failures are :class:`SourceError`
    naming *spec* (exit 2). ``BrokenPipeError`` passes through unchanged (the reader went
    away: the CLI exits quietly). Closing it does not close *raw*: its opener does.

    *copies_later*: *raw* is a regular file of the opener's own, written only through this
    writer (not in append mode), so that :meth:`copy_later` may copy in a second thread;
    the opener then calls :meth:`end_copies` before closing *raw*."""

    def __init__(self, raw: BinaryIO, spec: str | Path, *, write_behind: bool = False,
                 copies_later: bool = False) -> None:
        super().__init__()
        self._raw = raw
        self._spec = spec
        #: with *write_behind*: how far the file was handed to the disk, what was written
        #: since, and how to hand it over
        self._synced = 0
        self._pending = 0
        self._start_writeback = _writeback_starter() if write_behind else None
        self._copier: FileCopy | None = None
        #: copies under way in a second thread (copy_later), and whether there can be any
        self._later: BackgroundCopy | None = None
        self._ahead: SpaceAhead | None = None      # the disk space reserved for them
        self._later_ok = copies_later
        self._behind_lock = threading.Lock()     # the copies' thread hands stretches too

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._raw.fileno()

    def seekable(self) -> bool:
        try:
            return self._raw.seekable()
        except (OSError, ValueError):
            return False

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        try:
            written = self._raw.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise write_error(self._spec, exc) from None
        count = len(data) if written is None else written
        if self._start_writeback is not None:
            self._pending += count
            if self._pending >= WRITE_BEHIND:
                self._write_behind()
        return count

    def copy_from(self, src_fd: int, offset: int, length: int) -> int:
        """Append *length* bytes found at *offset* of the regular file *src_fd*, as if
        written, in the kernel where it can (see :mod:`xenmig_core.filecopy`: the bytes
        need not pass through this process). Returns how many bytes were copied: fewer
        than *length* only when the input file ends first."""
        self.flush()
        if self._copier is None:
            self._copier = FileCopy(self._raw.fileno(), str(self._spec))
        done = self._copier.copy(src_fd, offset, length)
        if done and self.seekable():
            self._raw.seek(0, os.SEEK_CUR)      # the buffered file learns the new position
        if self._start_writeback is not None and done:
            self._pending += done
            if self._pending >= WRITE_BEHIND:
                self._write_behind()
        return done

    def copy_later(self, src_fd: int, offset: int, length: int) -> None:
        """Append *length* bytes found at *offset* of the regular file *src_fd*, which the
        caller knows holds them all, as :meth:`copy_from` does, but without waiting: a
        second thread copies them (:class:`~xenmig_core.filecopy.BackgroundCopy`) while
        later writes go on after them. :meth:`flush` waits until they are in the file;
        a failed copy (an input file that shrank meanwhile: :class:`SourceError`) is
        raised by the next ``copy_later`` or ``flush``. The file's disk space is reserved
        ahead of the copies (:class:`~xenmig_core.filecopy.SpaceAhead`); ``flush`` gives
        back what lies past the end. Without *copies_later* (see the class) the bytes are
        copied at once, as by :meth:`copy_from`."""
        if not self._later_ok:
            if self.copy_from(src_fd, offset, length) != length:
                raise SourceError(f"input: the file shrank while it was copied: {length} "
                                  f"bytes expected at offset {offset:#x}")
            return
        if self._later is None:
            self._later_fd = self._raw.fileno()     # open until end_copies has run
            try:
                self._later = BackgroundCopy(
                    self._later_fd, str(self._spec),
                    after=self._copied if self._start_writeback is not None else None)
            except OSError as exc:                   # no descriptor left to duplicate
                raise write_error(self._spec, exc) from None
            self._ahead = SpaceAhead(self._later_fd)
        try:
            position = self._raw.seek(length, os.SEEK_CUR) - length   # writes the buffer
        except OSError as exc:
            raise write_error(self._spec, exc) from None
        assert self._ahead is not None
        self._ahead.cover(position, position + length)
        self._later.submit(src_fd, offset, length, position)

    def _copied(self, end: int) -> None:
        """(In the copies' thread) the output is final up to *end*: hand it to the disk in
        stretches of WRITE_BEHIND."""
        start = self._start_writeback
        if start is None:
            return
        with self._behind_lock:
            end -= end % (1 << 20)
            if end - self._synced >= WRITE_BEHIND:
                start(self._later_fd, self._synced, end - self._synced)
                self._synced = end

    def written(self) -> io.RawIOBase:
        """A reader of what was written so far, from the start of the file, for reading
        it back while :meth:`copy_later` copies may still be under way: a read waits
        until no copy is pending below the end of what it asks for. The writer's own
        position is untouched (the reader reads at positions); its end is where the next
        write would go. Closing it does not close the file."""
        self.flush_buffer()
        return _WrittenReader(self._raw.fileno(), self._raw.tell(), self._later)

    def flush_buffer(self) -> None:
        """Hand the buffered bytes to the file without waiting for :meth:`copy_later`
        copies (see :meth:`flush`)."""
        try:
            self._raw.flush()
        except OSError as exc:
            raise write_error(self._spec, exc) from None

    def end_copies(self) -> None:
        """Stop the copies of :meth:`copy_later` not started yet and end their thread (the
        output is being abandoned); its opener calls this before closing the file."""
        later, self._later = self._later, None
        if later is not None:
            later.close()

    def _write_behind(self) -> None:
        """Start writing what is in the file so far to disk (the buffered tail excepted)."""
        assert self._start_writeback is not None
        try:
            end = self._raw.tell()
            fd = self._raw.fileno()
        except (OSError, ValueError):
            self._start_writeback = None
            return
        settled = self._later.settled() if self._later is not None else None
        if settled is not None:
            end = min(end, settled)       # beyond it, copies are still under way
        end -= end % (1 << 20)
        with self._behind_lock:
            if end > self._synced:
                self._start_writeback(fd, self._synced, end - self._synced)
                self._synced = end
        self._pending = 0

    def close(self) -> None:
        """Mark closed without failing: a write error was already reported by write or
        flush, and garbage collection must not report it again."""
        with contextlib.suppress(Exception):
            super().close()

    def flush(self) -> None:
        """Everything written so far is in the file (the copies of :meth:`copy_later`
        too, or their failure raised), and no disk space is reserved past its end."""
        if self.closed or getattr(self._raw, "closed", False):
            return
        try:
            self._raw.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise write_error(self._spec, exc) from None
        if self._later is not None:
            self._later.wait()
        if self._ahead is not None:
            try:
                self._ahead.trim()
            except OSError as exc:
                raise write_error(self._spec, exc) from None


class _WrittenReader(io.RawIOBase):
    """See :meth:`GuardedWriter.written`."""

    def __init__(self, fd: int, end: int, copies: BackgroundCopy | None) -> None:
        super().__init__()
        self._fd = fd
        self._end = end
        self._copies = copies
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._end}[whence]
        if base + offset < 0:
            raise OSError(22, "Invalid argument")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview | bytearray) -> int:   # type: ignore[override]
        n = max(min(len(buffer), self._end - self._pos), 0)
        if not n:
            return 0
        if self._copies is not None:
            self._copies.wait_below(self._pos + n)
        data = os.pread(self._fd, n, self._pos)
        with memoryview(buffer) as view:
            view[:len(data)] = data
        self._pos += len(data)
        return len(data)


def _stdout_buffer() -> BinaryIO:
    """``sys.stdout.buffer``, or SourceError when standard output is closed."""
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None) if stream is not None else None
    if buffer is None:
        raise SourceError("standard output is closed")
    return buffer


def _silence_stdout() -> None:
    """After a failed write to stdout, point fd 1 at /dev/null so that the interpreter's
    final flush of what is still buffered cannot fail again (best effort)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if sys.stdout is not None and sys.stdout.fileno() == 1:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.close(devnull)


@contextlib.contextmanager
def open_output(spec: str | Path, *, sync: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file for *spec*: ``-``, ``fd:N``, or a path written atomically
    (*sync*: see :func:`atomic_output`).

    Every write, flush or close failure is a :class:`SourceError` naming *spec* (exit 2);
    ``BrokenPipeError`` passes through. A closed stdout is ``SourceError``.
    """
    if isinstance(spec, str) and spec == "-":
        out = GuardedWriter(_stdout_buffer(), "<stdout>")
        try:
            yield out
            out.flush()
        except SourceError:
            _silence_stdout()
            raise
        return
    fd = parse_fd(spec) if isinstance(spec, str) else None
    if fd is not None:
        try:
            raw = os.fdopen(fd, "wb", closefd=False)
        except OSError as exc:
            raise SourceError(f"{spec}: cannot write: {exc.strerror or exc}") from None
        with _guarded(raw, spec) as out:
            yield out
        return
    with atomic_output(spec, sync=sync) as out:
        yield out


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


#: flags of a new temporary output (as tempfile.mkstemp opens one; that module, with what
#: it imports, costs more than the rest of a small conversion's output handling)
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | \
    getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _create_beside(directory: Path, name: str) -> tuple[int, Path]:
    """A new file ``.NAME.RANDOM.tmp`` in *directory*, mode 0600, that did not exist:
    its descriptor and path. OSError when none can be made."""
    for _attempt in range(100):
        path = directory / f".{name}.{os.urandom(6).hex()}.tmp"
        try:
            return os.open(path, _CREATE, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name in {directory}")


@contextlib.contextmanager
def atomic_output(path: str | Path, *, sync: bool = True) -> Iterator[BinaryIO]:
    """Yield a binary file; on normal exit it replaces *path*, on any error it vanishes.

    With *sync* (the default) the file is on disk before it is renamed into place, so
    that a crash never leaves a partial file under the final name; *sync* False skips
    that wait (and the write-behind), as ``cp`` does: faster where the disk is slow, and
    a crash soon after may leave an empty or partial file under the final name.

    - An existing target that is not a regular file (a FIFO, a device such as /dev/null)
      is written directly: renaming over it would destroy it.
    - A symlink is resolved first: the file it points to is replaced atomically (the
      temporary file goes beside that file), the link stays.
    - The new file keeps an existing target's permission bits (and owner and group when
      running as root, best effort); a new file gets ``0666 & ~umask``.
    - Write, flush and sync failures are :class:`SourceError` naming *path* (exit 2).
    """
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{target}: is a directory")
    try:
        existing: os.stat_result | None = os.stat(target)
    except OSError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        yield from _direct_output(target)
        return
    real = Path(os.path.realpath(target))
    directory = real.parent
    try:
        fd, tmp = _create_beside(directory, real.name)
    except OSError as exc:
        raise SourceError(f"{target}: cannot create output: {exc.strerror or exc}") from None
    try:
        if existing is not None:
            os.chmod(tmp, stat.S_IMODE(existing.st_mode))
            if os.geteuid() == 0:
                with contextlib.suppress(OSError):
                    os.chown(tmp, existing.st_uid, existing.st_gid)
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as raw:
            out = GuardedWriter(raw, target, write_behind=sync, copies_later=True)
            try:
                yield out
                out.flush()                 # (queued copies done: see copy_later)
                try:
                    if sync:
                        os.fsync(raw.fileno())
                except OSError as exc:
                    raise write_error(target, exc) from None
            finally:
                out.end_copies()
        try:
            os.replace(tmp, real)
        except OSError as exc:
            raise SourceError(f"{target}: cannot rename the finished output into place: "
                              f"{exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _direct_output(target: Path) -> Iterator[BinaryIO]:
    """Write straight into a special file (FIFO, device): nothing to rename or take back."""
    try:
        raw = open(target, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise SourceError(f"{target}: cannot write: {exc.strerror or exc}") from None
    with _guarded(raw, target) as out:
        yield out


@contextlib.contextmanager
def _guarded(raw: BinaryIO, name: str | Path) -> Iterator[BinaryIO]:
    """*raw* behind a GuardedWriter (OS errors become one-line SourceErrors), flushed at the
    end and always closed; a failed write was reported already, so closing stays quiet."""
    try:
        out = GuardedWriter(raw, name)
        yield out
        out.flush()
    finally:
        with contextlib.suppress(OSError):
            raw.close()


@contextlib.contextmanager
def text_output(path: str) -> Iterator[TextIO]:
    """A UTF-8 text output over :func:`open_output`: ``-``, ``fd:N`` or an atomic path."""
    if path == "-":
        if sys.stdout is None:
            raise SourceError("standard output is closed")
        try:
            yield sys.stdout      # the caller's stdout as it is (tests capture it)
            sys.stdout.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            _silence_stdout()
            raise write_error("<stdout>", exc) from None
        return
    with open_output(path) as raw:
        out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
        try:
            yield out
            out.flush()
        finally:
            out.detach()          # open_output owns (and closes) the binary file
