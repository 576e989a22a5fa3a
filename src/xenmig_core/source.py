"""Byte sources: a path, ``-`` (stdin), ``fd:N`` or an open binary file, read incrementally.

A :class:`ByteSource` tracks the absolute offset of the next byte, lets callers peek at the
first bytes (for format detection) even on a pipe, and skips bytes by seeking when the
underlying file allows it, otherwise by reading through one reusable buffer. Nothing here
ever holds more than the caller asked for at once.
"""

from __future__ import annotations

import io
import os
import sys
from typing import BinaryIO

from xenmig_core.errors import SourceError, TruncatedError

SKIP_BUFFER_SIZE = 1 << 20


def parse_fd(spec: str) -> int | None:
    """Return N for ``fd:N`` (or None when *spec* is not of that form)."""
    if spec.startswith("fd:"):
        number = spec[3:]
        if not number.isdigit():
            raise SourceError(f"{spec!r}: expected fd:N with N a file descriptor number")
        return int(number)
    return None


class ByteSource:
    """An incremental reader over a binary stream with absolute offsets.

    Contract: ``read_exact(n)`` returns exactly *n* bytes or raises :class:`TruncatedError`
    naming the offset; ``read_upto(n)`` may return fewer at end of stream; ``skip(n)`` moves
    forward *n* bytes without keeping them; ``peek(n)`` returns up to *n* bytes without
    consuming them. ``offset`` is the absolute position of the next unread byte.
    """

    #: the compression the bytes were stored with (gzip, xz, ...); offsets are then offsets
    #: in the decompressed stream (see :mod:`xenmig_core.decompress`)
    compression: str | None = None

    def __init__(self, raw: BinaryIO, name: str, *, owned: bool = False) -> None:
        self._raw = raw
        self.name = name
        self._owned = owned
        self._pushback = b""
        self.offset = 0
        self._skip_buffer: bytearray | None = None
        try:
            self._seekable = raw.seekable()
            if self._seekable:
                self.offset = raw.tell()
        except (OSError, ValueError):
            self._seekable = False
        self.start = self.offset

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
            return cls(buffer, "<stdin>")
        fd = parse_fd(spec)
        if fd is not None:
            return cls._from_fd(fd, spec)
        try:
            raw = open(spec, "rb")  # noqa: SIM115 - closed by ByteSource.close
        except OSError as exc:
            raise SourceError(f"{spec}: cannot open: {exc.strerror or exc}") from None
        if os.path.isdir(spec):
            raw.close()
            raise SourceError(f"{spec}: is a directory")
        return cls(raw, spec, owned=True)

    @classmethod
    def _from_fd(cls, fd: int, name: str) -> ByteSource:
        try:
            raw = os.fdopen(fd, "rb", closefd=False)
        except OSError as exc:
            raise SourceError(f"{name}: cannot read: {exc.strerror or exc}") from None
        return cls(raw, name, owned=True)

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> ByteSource:
        """A source over an in-memory buffer (tests, nested blobs)."""
        return cls(io.BytesIO(data), name, owned=True)

    def close(self) -> None:
        if self._owned:
            self._raw.close()

    def __enter__(self) -> ByteSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------
    def _raw_read(self, n: int) -> bytes:
        try:
            return self._raw.read(n) or b""
        except OSError as exc:
            raise SourceError(f"{self.name}: read error at offset {self.offset}: "
                              f"{exc.strerror or exc}") from None

    def read_upto(self, n: int) -> bytes:
        """Read at most *n* bytes; fewer only at end of stream."""
        if n <= 0:
            return b""
        out = b""
        if self._pushback:
            out, self._pushback = self._pushback[:n], self._pushback[n:]
        while len(out) < n:
            chunk = self._raw_read(n - len(out))
            if not chunk:
                break
            out = chunk if not out else out + chunk
        self.offset += len(out)
        return out

    def read_exact(self, n: int, what: str = "data") -> bytes:
        """Read exactly *n* bytes, or raise TruncatedError naming *what* and the offset."""
        start = self.offset
        data = self.read_upto(n)
        if len(data) != n:
            raise TruncatedError(
                f"stream truncated: {what} needs {n} bytes at offset {start:#x}, "
                f"only {len(data)} left", offset=start)
        return data

    def readinto_exact(self, view: memoryview, what: str = "data") -> None:
        """Fill *view* completely, or raise TruncatedError."""
        start = self.offset
        filled = 0
        if self._pushback:
            take = min(len(view), len(self._pushback))
            view[:take] = self._pushback[:take]
            self._pushback = self._pushback[take:]
            filled = take
        while filled < len(view):
            try:
                got = self._raw.readinto(view[filled:])
            except OSError as exc:
                raise SourceError(f"{self.name}: read error: {exc.strerror or exc}") from None
            if not got:
                self.offset += filled
                raise TruncatedError(
                    f"stream truncated: {what} needs {len(view)} bytes at offset {start:#x}, "
                    f"only {filled} left", offset=start)
            filled += got
        self.offset += filled

    @property
    def seekable(self) -> bool:
        """True when :meth:`read_at` can re-read earlier bytes."""
        return self._seekable

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
        if len(self._pushback) < n:
            more = b""
            while len(self._pushback) + len(more) < n:
                chunk = self._raw_read(n - len(self._pushback) - len(more))
                if not chunk:
                    break
                more += chunk
            self._pushback += more
        return self._pushback[:n]

    def at_eof(self) -> bool:
        """True when no byte is left."""
        return not self.peek(1)

    def skip(self, n: int, what: str = "data") -> None:
        """Move forward *n* bytes, seeking when possible; TruncatedError if they are not there."""
        if n <= 0:
            return
        start = self.offset
        if self._pushback:
            take = min(n, len(self._pushback))
            self._pushback = self._pushback[take:]
            self.offset += take
            n -= take
        if n and self._seekable:
            end = self._raw.seek(0, os.SEEK_END)
            target = self.offset + n
            if target > end:
                self._raw.seek(end)
                left = end - start
                self.offset = end
                raise TruncatedError(
                    f"stream truncated: {what} needs {n} bytes at offset {start:#x}, "
                    f"only {max(left, 0)} left", offset=start)
            self._raw.seek(target)
            self.offset = target
            return
        if n:
            if self._skip_buffer is None:
                self._skip_buffer = bytearray(SKIP_BUFFER_SIZE)
            view = memoryview(self._skip_buffer)
            while n:
                step = min(n, len(view))
                got = self._raw_read_into(view[:step])
                if not got:
                    raise TruncatedError(
                        f"stream truncated: {what} needs more bytes at offset {start:#x}",
                        offset=start)
                n -= got
                self.offset += got

    def skip_to_eof(self) -> None:
        """Move to the end of the stream (seeking, or reading through the skip buffer)."""
        self.offset += len(self._pushback)
        self._pushback = b""
        if self._seekable:
            self.offset = self._raw.seek(0, os.SEEK_END)
            return
        if self._skip_buffer is None:
            self._skip_buffer = bytearray(SKIP_BUFFER_SIZE)
        view = memoryview(self._skip_buffer)
        while got := self._raw_read_into(view):
            self.offset += got

    def _raw_read_into(self, view: memoryview) -> int:
        try:
            return self._raw.readinto(view) or 0
        except OSError as exc:
            raise SourceError(f"{self.name}: read error: {exc.strerror or exc}") from None

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
