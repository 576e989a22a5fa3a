"""Byte sources: a path, ``-`` (stdin), ``fd:N`` or an open binary file, read incrementally.

A :class:`ByteSource` tracks the absolute offset of the next byte, lets callers peek at the
first bytes (for format detection) even on a pipe, and skips bytes by seeking when the
underlying file allows it, otherwise without keeping them: on Linux a pipe's bytes are
spliced into /dev/null (never copied into the process), elsewhere they are read through one
reusable buffer. Nothing here ever holds more than the caller asked for at once, plus one
read buffer.

Paths, ``-`` and ``fd:N`` are read unbuffered by the OS file and buffered here, so that the
source knows exactly which bytes it holds (a skip can then seek or splice the rest): a read
asks the OS for at least :data:`FILE_READ_SIZE` bytes from a file (a record header and a
1024-pfn array in one read, which on a cold cache is one disk request, not two; after a
seek, what was read between the last two seeks, when that was less) and
:data:`PIPE_READ_SIZE` from a pipe. When long skips over a file come at a regular stride
(page batches), the OS is asked to start reading the next record's head one stride ahead,
so that on a cold cache the disk works while the current record is checked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import os
import stat
import sys

from xenmig_core.errors import SourceError, TruncatedError

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import BinaryIO

#: The reusable buffer that skips (and reads) bytes when neither seeking nor splicing can.
SKIP_BUFFER_SIZE = 1 << 20
#: At least this much is asked of a seekable file per read (what follows a skip)...
FILE_READ_SIZE = 16 << 10
#: ... except by the first read after a seek that followed another one: it asks for what
#: was read between the two (plus :data:`READ_HINT_SLACK`, rounded up to this) when that is
#: less. Skips at a regular stride (a checkpoint's page contents, 16 KiB) then copy only the
#: records between them (4 KiB), not a full read of the bytes the next skip jumps over.
READ_HINT_ROUND = 1 << 10
READ_HINT_SLACK = 512
#: A skip over a file of at most this many bytes reads those not yet buffered (with what
#: follows, in one read) instead of seeking: a seek and the read after it cost more.
READ_THROUGH_MAX = 8 << 10
#: A skip at least this long over a file is a stride (page batches); the next is read ahead.
PREFETCH_MIN_SKIP = 1 << 20
#: At least this much is asked of a pipe or other unseekable source per read.
PIPE_READ_SIZE = 64 << 10
#: Largest single splice request: a pipe gives at most what it holds anyway.
SPLICE_CHUNK = 1 << 30
#: A long read from a source that cannot tell how much it holds (a pipe) grows its result
#: by at most this much per step, so memory follows the bytes that arrived, not the claim.
GROW_STEP = 1 << 20


def parse_fd(spec: str) -> int | None:
    """Return N for ``fd:N`` (or None when *spec* is not of that form)."""
    if spec.startswith("fd:"):
        number = spec[3:]
        if not number.isdigit():
            raise SourceError(f"{spec!r}: expected fd:N with N a file descriptor number")
        return int(number)
    return None


#: Pipes a source splices from (and the forwarder splices between) are grown to this:
#: fewer, larger splices and reads.
PIPE_SIZE = 1 << 20


def grow_pipe(fd: int) -> None:
    """Ask for a :data:`PIPE_SIZE` buffer on *fd* when it is a pipe (best effort: the
    system's limit for unprivileged users may be lower, and then nothing changes)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    get_size = getattr(fcntl, "F_GETPIPE_SZ", None)
    if set_size is None or get_size is None:
        return
    with contextlib.suppress(OSError):
        if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, get_size) < PIPE_SIZE:
            fcntl.fcntl(fd, set_size, PIPE_SIZE)


class ByteSource:
    """An incremental reader over a binary stream with absolute offsets.

    Contract: ``read_exact(n)`` returns exactly *n* bytes or raises :class:`TruncatedError`
    naming the offset; ``read_upto(n)`` may return fewer at end of stream; ``skip(n)`` moves
    forward *n* bytes without keeping them; ``peek(n)`` returns up to *n* bytes without
    consuming them. ``offset`` is the absolute position of the next unread byte.

    The source reads ahead into its own buffer (at most :data:`PIPE_READ_SIZE` beyond what
    was asked). On close, a seekable file it did not open itself is left positioned at
    ``offset``, as if nothing had been read ahead.
    """

    #: the compression the bytes were stored with (gzip, xz, ...); offsets are then offsets
    #: in the decompressed stream (see :mod:`xenmig_core.decompress`)
    compression: str | None = None

    def __init__(self, raw: BinaryIO, name: str, *, owned: bool = False) -> None:
        self._raw = raw
        self.name = name
        self._owned = owned
        self.offset = 0
        self._skip_buffer: bytearray | None = None
        try:
            self._seekable = raw.seekable()
            if self._seekable:
                self.offset = raw.tell()
        except (OSError, ValueError):
            self._seekable = False
        self.start = self.offset
        self._end: int | None = None        # a seekable file's size, when last asked
        #: for read-ahead hints after long skips: the fd, and where the last one landed
        self._advise_fd = self._file_fd(raw) if self._seekable else None
        self._landed: int | None = None
        #: where the last seek landed, and the size of the first read after the last one
        #: (0: the whole buffer; see READ_HINT_ROUND)
        self._seek_landed: int | None = None
        self._read_hint = 0
        # the read buffer: bytes [_lo, _hi) of _buf are the next unread ones
        self._min_read = FILE_READ_SIZE if self._seekable else PIPE_READ_SIZE
        self._buf = bytearray(self._min_read)
        self._view = memoryview(self._buf)
        self._lo = self._hi = 0
        #: an fd the source may splice from (an unbuffered pipe), else None
        self._splice_fd = self._pipe_fd(raw) if not self._seekable else None
        if self._splice_fd is not None:
            grow_pipe(self._splice_fd)
        self._null_fd: int | None = None

    @staticmethod
    def _file_fd(raw: BinaryIO) -> int | None:
        """The fd of *raw* when it is an OS-unbuffered file the OS takes read hints for."""
        if not isinstance(raw, io.FileIO) or not hasattr(os, "posix_fadvise"):
            return None
        try:
            return raw.fileno()
        except (OSError, ValueError):
            return None

    @staticmethod
    def _pipe_fd(raw: BinaryIO) -> int | None:
        """The fd of *raw* when it is an OS-unbuffered pipe that splice(2) can drain."""
        if not isinstance(raw, io.FileIO) or not hasattr(os, "splice"):
            return None
        try:
            fd = raw.fileno()
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                return None
        except (OSError, ValueError):
            return None
        return fd

    # -- opening -------------------------------------------------------------------------
    @classmethod
    def open(cls, spec: str | int | BinaryIO, *, decompress: bool = True) -> ByteSource:
        """Open *spec*: a path, ``-`` for stdin, ``fd:N``, an int fd, or a binary file;
        a compressed one (gzip, xz, bzip2, zstd) is decompressed unless *decompress* is
        False (:mod:`xenmig_core.decompress`)."""
        source = cls._open(spec)
        if not decompress:
            return source
        from xenmig_core.decompress import maybe_decompress
        try:
            return maybe_decompress(source)
        except BaseException:
            source.close()
            raise

    @classmethod
    def _open(cls, spec: str | int | BinaryIO) -> ByteSource:
        if isinstance(spec, int):
            return cls._from_fd(spec, f"fd:{spec}")
        if not isinstance(spec, str):
            return cls(spec, getattr(spec, "name", "<stream>"))
        if spec == "-":
            buffer = getattr(sys.stdin, "buffer", None) if sys.stdin is not None else None
            if buffer is None:
                raise SourceError("standard input is closed")
            raw = _unbuffered(buffer)
            return cls(raw, "<stdin>", owned=raw is not buffer)
        fd = parse_fd(spec)
        if fd is not None:
            return cls._from_fd(fd, spec)
        try:
            raw = open(spec, "rb", buffering=0)  # noqa: SIM115 - closed by ByteSource.close
        except OSError as exc:
            raise SourceError(f"{spec}: cannot open: {exc.strerror or exc}") from None
        if os.path.isdir(spec):
            raw.close()
            raise SourceError(f"{spec}: is a directory")
        return cls(raw, spec, owned=True)

    @classmethod
    def _from_fd(cls, fd: int, name: str) -> ByteSource:
        try:
            raw = io.FileIO(fd, "rb", closefd=False)
        except (OSError, ValueError) as exc:
            message = exc.strerror if isinstance(exc, OSError) else None
            raise SourceError(f"{name}: cannot read: {message or exc}") from None
        return cls(raw, name, owned=True)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> ByteSource:
        """A source over an in-memory buffer (tests, nested blobs)."""
        return cls(io.BytesIO(data), name, owned=True)

    def close(self) -> None:
        """Close what this source opened; leave a seekable file at ``offset``."""
        if self._null_fd is not None:
            os.close(self._null_fd)
            self._null_fd = None
        if self._seekable and self._hi > self._lo:
            with contextlib.suppress(OSError, ValueError):
                self._raw.seek(self.offset)
        self._lo = self._hi = 0
        if self._owned:
            self._raw.close()

    def __enter__(self) -> ByteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the buffer ----------------------------------------------------------------------
    def _raw_read_into(self, view: memoryview) -> int:
        """One read of the underlying file into *view* (0 at end of stream)."""
        try:
            return self._raw.readinto(view) or 0
        except OSError as exc:
            raise SourceError(f"{self.name}: read error at offset {self.offset}: "
                              f"{exc.strerror or exc}") from None

    def _fill(self, n: int) -> int:
        """Make at least *n* unread bytes buffered (fewer only at end of stream); return
        how many are buffered. The buffer grows only for a peek beyond its size."""
        hi = self._hi
        have = hi - self._lo
        if have >= n:
            return have
        end = len(self._buf)
        if not have:
            self._lo = self._hi = hi = 0
            if n > end:                            # an empty buffer, a large peek
                self._view.release()
                self._buf = bytearray(n)
                self._view = memoryview(self._buf)
                end = n
        elif n > end - self._lo:                   # make room: move the rest to the front
            if n > len(self._buf):
                fresh = bytearray(n)
                fresh[:have] = self._view[self._lo:self._hi]
                self._view.release()
                self._buf, self._view = fresh, memoryview(fresh)
            else:
                self._buf[:have] = self._view[self._lo:self._hi]
            self._lo, self._hi = 0, have
            hi, end = have, len(self._buf)
        if self._read_hint:         # the first read after a seek: what the last stride read
            want = hi + (self._read_hint if self._read_hint > n - have else n - have)
            if want < end:
                end = want
            self._read_hint = 0
        while True:
            got = self._raw_read_into(self._view[hi:end])
            if not got:
                break
            self._hi = hi = hi + got
            have += got
            if have >= n:
                break
            end = len(self._buf)
        return have

    def _take(self, n: int) -> bytes:
        """The next *n* buffered bytes (n <= buffered), consumed."""
        lo = self._lo
        data = self._buf[lo:lo + n]
        self._lo = lo + n
        self.offset += n
        return bytes(data)

    def _drop_buffer(self) -> int:
        """Forget the buffered bytes (consuming them); return how many there were."""
        have = self._hi - self._lo
        self._lo = self._hi = 0
        self.offset += have
        return have

    # -- reading in place -----------------------------------------------------------------
    def buffered(self, n: int) -> tuple[bytearray, int, int]:
        """``(buffer, start, count)``: the next *count* unread bytes are
        ``buffer[start:start + count]``, with at least *n* of them (fewer only at the end of
        the stream) when *n* fits the read buffer. Nothing is consumed; the view is valid
        until the next call on this source. With :meth:`consume`, lets a caller decode small
        units straight from the read buffer (one call, no copies) and decide only then
        whether to take them."""
        have = self._hi - self._lo
        if have < n:
            have = self._fill(min(n, len(self._buf)))
        return self._buf, self._lo, have

    def consume(self, n: int) -> None:
        """Consume the next *n* bytes, all of them buffered (see :meth:`buffered`)."""
        self._lo += n
        self.offset += n

    # -- reading -------------------------------------------------------------------------
    def read_upto(self, n: int) -> bytes:
        """Read at most *n* bytes; fewer only at end of stream."""
        if n <= 0:
            return b""
        if n <= len(self._buf) or self._hi - self._lo >= n:
            return self._take(min(n, self._fill(n)))
        if self._seekable:         # never more than the file holds
            out = bytearray(min(n, self._left(n)))
            filled = self._read_into(memoryview(out))
            del out[filled:]
            return bytes(out)
        return self._read_growing(n)

    def _read_growing(self, n: int) -> bytes:
        """Up to *n* bytes of an unseekable source, read in :data:`GROW_STEP` steps into a
        growing buffer (a length field may claim far more than will ever arrive)."""
        out = bytearray()
        while len(out) < n:
            size = len(out)
            step = min(n - size, GROW_STEP)
            out.extend(bytes(step))
            with memoryview(out) as view:
                filled = self._read_into(view[size:])
            if filled < step:
                del out[size + filled:]
                break
        return bytes(out)

    def _left(self, n: int) -> int:
        """For a seekable source: how many bytes are left, asking the OS only when the
        last known size does not already cover *n* more (the file may have grown)."""
        end = self._end
        if end is None or self.offset + n > end:
            try:
                position = self._raw.tell()
                end = self._end = self._raw.seek(0, os.SEEK_END)
                self._raw.seek(position)
            except OSError as exc:
                raise SourceError(f"{self.name}: seek error at offset {self.offset}: "
                                  f"{exc.strerror or exc}") from None
        return max(end - self.offset, 0)

    def holds(self, n: int) -> bool:
        """True when the source is known to hold *n* more bytes (a seekable file that does;
        its size is asked of the OS only when the last one known falls short); False
        otherwise, a pipe included. Never raises for a short file (see :meth:`check_left`)."""
        return self._seekable and self._left(n) >= n

    def check_left(self, n: int, what: str = "data") -> bool:
        """Before allocating for *n* bytes: True when the source is known to hold them (a
        seekable file), False when it cannot tell (a pipe: read them as they arrive);
        TruncatedError, the same as a short read's, when it is known not to."""
        if not self._seekable:
            return n <= self._hi - self._lo
        left = self._left(n)
        if left < n:
            raise TruncatedError(
                f"stream truncated: {what} needs {n} bytes at offset {self.offset:#x}, "
                f"only {left} left", offset=self.offset)
        return True

    def read_exact(self, n: int, what: str = "data") -> bytes:
        """Read exactly *n* bytes, or raise TruncatedError naming *what* and the offset.
        A length that cannot fit in a seekable source is refused before anything is
        read; from a pipe the bytes are gathered as they arrive (see :meth:`read_upto`)."""
        start = self.offset
        if n > len(self._buf) and self._seekable:
            self.check_left(n, what)
        data = self.read_upto(n)
        if len(data) != n:
            raise TruncatedError(
                f"stream truncated: {what} needs {n} bytes at offset {start:#x}, "
                f"only {len(data)} left", offset=start)
        return data

    def _read_into(self, view: memoryview) -> int:
        """Fill *view* as far as the stream goes; return how many bytes were filled."""
        n = len(view)
        filled = min(self._hi - self._lo, n)
        view[:filled] = self._view[self._lo:self._lo + filled]
        self._lo += filled
        self.offset += filled
        rest = n - filled
        if 0 < rest < len(self._buf):          # a small rest: one read through the buffer
            take = min(rest, self._fill(rest))
            view[filled:filled + take] = self._view[self._lo:self._lo + take]
            self._lo += take
            self.offset += take
            filled += take
        else:                                  # a large rest: straight into view
            while filled < n:
                got = self._raw_read_into(view[filled:])
                if not got:
                    break
                filled += got
                self.offset += got
        return filled

    def readinto_exact(self, view: memoryview, what: str = "data") -> None:
        """Fill *view* completely, or raise TruncatedError."""
        start = self.offset
        filled = self._read_into(view)
        if filled < len(view):
            raise TruncatedError(
                f"stream truncated: {what} needs {len(view)} bytes at offset {start:#x}, "
                f"only {filled} left", offset=start)

    @property
    def seekable(self) -> bool:
        """True when :meth:`read_at` can re-read earlier bytes."""
        return self._seekable

    def file_fd(self) -> int | None:
        """The descriptor of the regular file this source reads without transformation
        (no decompression), for consumers that copy stretches of it at known offsets
        (``Record.payload_offset``) in the kernel; None for pipes and anything else."""
        if not self._seekable or self.compression is not None:
            return None
        try:
            fd = self._raw.fileno()
            return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return None

    def read_at(self, offset: int, n: int) -> bytes | None:
        """Up to *n* bytes at absolute *offset*, leaving the read position unchanged; None
        when the source cannot seek (a pipe): those bytes are gone."""
        if not self._seekable:
            return None
        try:
            position = self._raw.tell()
            self._raw.seek(offset)
            data = self._raw.read(n) or b""
            self._raw.seek(position)
        except OSError as exc:
            raise SourceError(f"{self.name}: read error at offset {offset}: "
                              f"{exc.strerror or exc}") from None
        return data

    def peek(self, n: int) -> bytes:
        """Return up to *n* upcoming bytes without consuming them."""
        have = self._fill(n)
        return bytes(self._buf[self._lo:self._lo + min(n, have)])

    def at_eof(self) -> bool:
        """True when no byte is left."""
        return not self._fill(1)

    # -- skipping ------------------------------------------------------------------------
    def skip(self, n: int, what: str = "data", *what_args: object) -> None:
        """Move forward *n* bytes, seeking when possible; TruncatedError if they are not there
        (naming *what*, or ``what % what_args`` when there are *what_args*: formatted only
        then)."""
        if n <= 0:
            return
        have = self._hi - self._lo
        if n <= have or (self._seekable and n <= READ_THROUGH_MAX
                         and n <= len(self._buf) and self._fill(n) >= n):
            self._lo += n
            self.offset += n
            return
        start = self.offset
        self._lo = self._hi = 0          # the buffered bytes are skipped too
        self.offset = start + have
        n -= have
        if self._seekable:
            self._seek_forward(start, n, what % what_args if what_args else what)
            return
        if what_args:
            what = what % what_args
        while n:
            got = self._discard(n)
            if not got:
                raise TruncatedError(
                    f"stream truncated: {what} needs more bytes at offset {start:#x}",
                    offset=start)
            n -= got
            self.offset += got

    def _seek_forward(self, start: int, n: int, what: str) -> None:
        target = self.offset + n
        try:
            if self._end is None or target > self._end:   # the file may have grown
                self._end = self._raw.seek(0, os.SEEK_END)
            if target > self._end:
                self._raw.seek(self._end)
                self.offset = self._end
                raise TruncatedError(
                    f"stream truncated: {what} needs {n} bytes at offset {start:#x}, "
                    f"only {max(self._end - start, 0)} left", offset=start)
            self._raw.seek(target)
        except OSError as exc:
            raise SourceError(f"{self.name}: seek error at offset {self.offset}: "
                              f"{exc.strerror or exc}") from None
        self.offset = target
        if self._seek_landed is not None and start >= self._seek_landed:
            # read since the last seek: about what the first read after this one needs
            span = start - self._seek_landed + READ_HINT_SLACK + READ_HINT_ROUND - 1
            self._read_hint = span - span % READ_HINT_ROUND if span < FILE_READ_SIZE \
                else FILE_READ_SIZE
        self._seek_landed = target
        if n >= PREFETCH_MIN_SKIP and self._advise_fd is not None:
            self._prefetch(target)

    def _prefetch(self, target: int) -> None:
        """After a long skip landing at *target*: if the previous one landed a stride
        before, ask the OS to start reading what one more stride ahead holds (with equal
        records, page batches, that is where the next record's head is read)."""
        if self._landed is None:
            self._landed = target
            return
        stride = target - self._landed
        self._landed = target
        if stride < PREFETCH_MIN_SKIP:
            return
        ahead = target + stride
        if ahead >= (self._end or 0):
            return
        try:
            os.posix_fadvise(self._advise_fd, ahead, FILE_READ_SIZE, os.POSIX_FADV_WILLNEED)
        except OSError:
            self._advise_fd = None

    def _discard(self, n: int) -> int:
        """Consume up to *n* bytes of an unseekable source without keeping them (the buffer
        is empty); return how many (0 at end of stream)."""
        if self._splice_fd is not None:
            try:
                if self._null_fd is None:
                    self._null_fd = os.open(os.devnull, os.O_WRONLY)
                return os.splice(self._splice_fd, self._null_fd, min(n, SPLICE_CHUNK))
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                                     errno.EBADF):
                    raise SourceError(f"{self.name}: read error at offset {self.offset}: "
                                      f"{exc.strerror or exc}") from None
                self._splice_fd = None     # not here: read through the buffer instead
        if self._skip_buffer is None:
            self._skip_buffer = bytearray(SKIP_BUFFER_SIZE)
        view = memoryview(self._skip_buffer)
        return self._raw_read_into(view[:min(n, len(view))])

    def skip_to_eof(self) -> None:
        """Move to the end of the stream (seeking, or reading through the skip buffer)."""
        self._drop_buffer()
        if self._seekable:
            self.offset = self._end = self._raw.seek(0, os.SEEK_END)
            return
        while got := self._discard(SPLICE_CHUNK):
            self.offset += got

    def iter_chunks(self, n: int, buffer: memoryview, what: str = "data"):
        """Yield successive views of *buffer* holding the next *n* bytes, in order.

        The same buffer is reused for every chunk: a consumer must copy what it keeps.
        """
        start = self.offset
        left = n
        while left:
            step = min(left, len(buffer))
            view = buffer[:step]
            try:
                self.readinto_exact(view, what)
            except TruncatedError:
                raise TruncatedError(
                    f"stream truncated: {what} needs {n} bytes at offset {start:#x}",
                    offset=start) from None
            left -= step
            yield view


def _unbuffered(buffer: BinaryIO) -> BinaryIO:
    """Standard input's fd as an unbuffered OS file (so that the source does its own
    buffering and may splice), or *buffer* itself when it is not backed by an fd (tests)."""
    raw = getattr(buffer, "raw", None)
    if not isinstance(raw, io.FileIO):
        return buffer
    try:
        return io.FileIO(raw.fileno(), "rb", closefd=False)
    except (OSError, ValueError):
        return buffer
