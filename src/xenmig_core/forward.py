"""Forwarding: pass a stream on while it is verified, record by record.

A :class:`ForwardingSource` is a :class:`~xenmig_core.source.ByteSource` whose every byte
read from the underlying file goes through a :class:`Tap`: bytes are *pending* until the
walk says they are safe (``Tap.allow(limit)``: every byte before *limit* may go out), then
they are written to the target. A :class:`ForwardConsumer` moves that limit as the walk
goes: a header once it was checked, a record's head (fields before its payload) once its
checks passed, its payload right away (on a pipe the payload is then spliced from the input
to the target, never copied into the process), the rest of the record (its padding) at its
end. A context's end record is held until the context's end checks passed. After the first
error the limit never moves again and the walk stops reading: the target gets exactly the
bytes before the first bad header or record (a payload already on its way when a truncation
is found is the only exception: page contents carry no checks). Pending bytes are at most
one record's, and never more than :data:`MAX_PENDING`; beyond :data:`HOLD_IN_MEMORY` they
wait in an unlinked temporary file, so a record that really carries a large body costs disk,
not memory.

Latency: the source reads what is available (a pipe read returns what the pipe holds), and
a record is allowed out as soon as its checks ran; what is allowed is written before the
source reads again (a read that may wait for the sender), so nothing waits for the next
record, and the records found in one read go out in one write. After
the outermost stream ended cleanly, trailing bytes the format recognises (xl migrate's
messages) are forwarded as they come.

The walk itself is the verifier's (:func:`xenmig_core.verifier.verify_source`); this module
adds no parsing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from xenmig_core.detect import detect
from xenmig_core.engine.consumer import Consumer
from xenmig_core.errors import SourceError, StreamError
from xenmig_core.source import SPLICE_CHUNK, ByteSource, grow_pipe

if TYPE_CHECKING:
    from xenmig_core.diagnostics import Diagnostic
    from xenmig_core.engine.context import HeaderValue, Record, StreamContext
    from xenmig_core.registry import Registry

#: A detection this confident (a magic number) does not need more bytes.
MAGIC_CONFIDENCE = 90
#: Never hold more than this many unreleased bytes (the engine's record cap).
MAX_PENDING = 128 << 20
#: Held bytes beyond this many wait in an unlinked temporary file, not in memory: a record
#: that really carries a large body costs disk while its checks run, never 128 MiB of RAM.
HOLD_IN_MEMORY = 4 << 20
#: Piece in which spilled held bytes are read back and written out.
RELEASE_PIECE = 1 << 20
_UNLIMITED = 1 << 62


class ForwardStopped(StreamError):
    """Forwarding stops reading at the first error (the receiver's input is closed then)."""


class ForwardClosed(Exception):
    """The target stopped taking bytes (EPIPE): the receiver closed its input."""

    def __init__(self, offset: int) -> None:
        super().__init__(f"the receiver closed its input at offset {offset:#x}")
        self.offset = offset


def write_all(fd: int, data: memoryview | bytes) -> None:
    """Write all of *data* to *fd* (partial writes continued)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class Held:
    """Bytes held back, in order: the first :data:`HOLD_IN_MEMORY` in memory, the rest in
    an unlinked temporary file (made when first needed, emptied when all went out)."""

    def __init__(self) -> None:
        self.memory = bytearray()
        self.file: Any = None
        self.file_start = 0          # offset in the file of the first held byte there
        self.file_end = 0

    def __len__(self) -> int:
        return len(self.memory) + self.file_end - self.file_start

    def append(self, data: memoryview) -> None:
        if self.file_end == self.file_start and len(self.memory) + len(data) <= HOLD_IN_MEMORY:
            self.memory += data
            return
        if self.file is None:
            import tempfile
            self.file = tempfile.TemporaryFile(  # noqa: SIM115 (closed by clear)
                prefix="xenmig-held-", buffering=0)
        self.file.seek(self.file_end)
        self.file.write(data)
        self.file_end += len(data)

    def emit(self, n: int, write: Callable[[memoryview | bytes], None]) -> None:
        """Pass the first *n* held bytes to *write* (in pieces) and let them go."""
        if self.memory:
            take = min(n, len(self.memory))
            with memoryview(self.memory) as view:
                write(view[:take])
            del self.memory[:take]
            n -= take
        while n > 0:
            self.file.seek(self.file_start)
            piece = self.file.read(min(n, RELEASE_PIECE))
            write(piece)
            self.file_start += len(piece)
            n -= len(piece)
        if self.file is not None and self.file_start == self.file_end:
            self.file_start = self.file_end = 0
            self.file.truncate(0)

    def clear(self) -> None:
        # a new buffer rather than resizing this one: a failed write's traceback may still
        # hold a view of it
        self.memory = bytearray()
        if self.file is not None:
            self.file.close()
            self.file = None
        self.file_start = self.file_end = 0


class Tap:
    """Bytes read from a source, in order, held until allowed out.

    ``pos`` is the absolute offset of the next byte the source will read from its file;
    ``pending`` holds bytes ``[pos - len(pending), pos)``; ``limit`` is the offset before
    which bytes may go out. *write* takes the bytes released (in order); *out_fd*, when
    given, is the fd behind *write* (a pipe input may then be spliced straight to it).
    *tee* gets a copy of every byte read, as it comes.
    """

    def __init__(self, write: Callable[[memoryview], None], start: int, *,
                 out_fd: int | None = None, tee: BinaryIO | None = None,
                 on_freeze: Callable[[], None] | None = None) -> None:
        self._write = write
        self._on_freeze = on_freeze
        self.out_fd = out_fd
        self.tee = tee
        self.pos = start
        self.limit = start
        self.sent = start                  # offset of the first byte not yet released
        self.pending = Held()
        self.frozen = False                # after an error: nothing more goes out

    def _emit(self, data: memoryview | bytes) -> None:
        try:
            self._write(memoryview(data))
        except BrokenPipeError:
            raise ForwardClosed(self.sent) from None
        self.sent += len(data)

    def take(self, data: memoryview) -> None:
        """*data* was just read from the source (at ``pos``)."""
        if self.tee is not None:
            self.tee.write(data)
        n = len(data)
        if self.frozen:
            self.pos += n
            return
        if not self.pending and self.pos + n <= self.limit:
            self.pos += n
            self._emit(data)
            return
        self.pending.append(data)
        self.pos += n
        if len(self.pending) > MAX_PENDING:
            raise StreamError(f"more than {MAX_PENDING} bytes unchecked at offset "
                              f"{self.sent:#x}: too much to hold back", offset=self.sent)
        self._flush()

    def allow(self, limit: int) -> None:
        """Every byte before *limit* may go out (unless an error froze the tap). They go
        out at the next :meth:`release`: the source releases before each read that may
        wait for the sender, so that a record never waits for the next one, and many small
        records go out in one write."""
        if self.frozen or limit <= self.limit:
            return
        self.limit = limit

    def release(self) -> None:
        """Write out the held bytes that are allowed."""
        self._flush()

    def freeze(self) -> None:
        """An error was found: the bytes allowed before it go out, nothing more does, what
        is held is dropped, and the target's input ends (*on_freeze*)."""
        if self.frozen:
            return
        self._flush()
        self.frozen = True
        self.pending.clear()
        if self._on_freeze is not None:
            self._on_freeze()

    def _flush(self) -> None:
        if not self.pending:
            return
        ready = min(self.limit - self.sent, len(self.pending))
        if ready > 0:
            self.pending.emit(ready, self._emit)

    def passed(self, n: int) -> None:
        """*n* bytes at ``pos`` went to the target without passing through the process."""
        self.pos += n
        self.sent += n

    def spliceable(self) -> int:
        """How many bytes from ``pos`` may be spliced straight to the target now."""
        if self.out_fd is None or self.tee is not None or self.pending or self.frozen:
            return 0
        return max(self.limit - self.pos, 0)


class ForwardingSource(ByteSource):
    """A byte source whose bytes go through a :class:`Tap` (see the module's docs).

    It never seeks (skipped bytes must be forwarded too). A skip that the tap allows out is
    spliced from a pipe input to the target's fd when both allow it; otherwise it is read
    through the source's buffers and handed to the tap like any read.
    """

    def __init__(self, raw: BinaryIO, name: str, *, owned: bool = False) -> None:
        super().__init__(raw, name, owned=owned)
        self._seekable = False
        self._advise_fd = None
        self._in_fd = self._pipe_fd(raw)
        self._splice_fd = None             # the base class's splice goes to /dev/null
        self.tap: Tap | None = None
        #: set once the outermost stream ended cleanly: peek returns what is there
        self.trailer_check: Callable[[bytes], bool] | None = None
        #: for the first peek (format detection): true once the bytes there are enough
        self.detected: Callable[[bytes], bool] | None = None
        #: True while a read (or splice) may wait for the sender; set ``stop`` to make the
        #: next one raise ForwardClosed (a signal handler raises itself while ``reading``)
        self.reading = False
        self.stop = False

    @classmethod
    def wrap(cls, source: ByteSource) -> ForwardingSource:
        """Take over an opened (unread, uncompressed) source's file."""
        fresh = cls(source._raw, source.name, owned=source._owned)
        fresh.offset = fresh.start = source.offset
        source._owned = False
        return fresh

    def attach(self, tap: Tap) -> None:
        self.tap = tap
        if self._in_fd is not None and tap.out_fd is not None:
            for fd in (self._in_fd, tap.out_fd):
                grow_pipe(fd)

    def _raw_read_into(self, view: memoryview) -> int:
        if self.tap is not None and self.tap.frozen:
            raise ForwardStopped("forwarding stopped reading after the first error",
                                 offset=self.offset)
        if self.tap is not None:
            self.tap.release()             # the read may wait: what is checked goes first
        self.reading = True
        try:
            if self.stop:
                raise ForwardClosed(-1)
            got = super()._raw_read_into(view)
        finally:
            self.reading = False
        if got and self.tap is not None:
            self.tap.take(view[:got])
        return got

    def _discard(self, n: int) -> int:
        tap = self.tap
        if tap is not None:
            tap.release()
        if tap is not None and self._in_fd is not None and (room := tap.spliceable()):
            assert tap.out_fd is not None
            got = self._splice(tap.out_fd, min(n, room, SPLICE_CHUNK))
            if got is not None:
                tap.passed(got)
                return got
        return super()._discard(n)

    def _splice(self, out_fd: int, n: int) -> int | None:
        """Up to *n* bytes from the input pipe straight to *out_fd*; None when the system
        cannot splice these two (then the bytes are read through the buffer)."""
        assert self._in_fd is not None and self.tap is not None
        self.reading = True
        try:
            if self.stop:
                raise ForwardClosed(-1)
            return os.splice(self._in_fd, out_fd, n)
        except BrokenPipeError:
            raise ForwardClosed(self.tap.sent) from None
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise SourceError(f"{self.name}: read error at offset {self.offset}: "
                                  f"{exc.strerror or exc}") from None
            self._in_fd = None             # not here: read through the buffer instead
            return None
        finally:
            self.reading = False

    def peek(self, n: int) -> bytes:
        if self.detected is not None:
            return self._detection_peek(n)
        if self.trailer_check is None:
            return super().peek(n)
        # after the stream's end: what is there, or what one read gives (the sender may be
        # waiting for the receiver's reply before it sends more)
        have = self._hi - self._lo or self._fill(1)
        return bytes(self._buf[self._lo:self._lo + min(n, have)])

    def _detection_peek(self, n: int) -> bytes:
        """The first peek (the format's detection) reads only until the bytes there are
        enough to know the format (a magic number), not all *n*: a sender may have sent a
        short first record and wait for the receiver."""
        enough, self.detected = self.detected, None
        assert enough is not None
        have = self._hi - self._lo
        while have < n and not enough(bytes(self._buf[self._lo:self._hi])):
            more = self._fill(have + 1)
            if more == have:
                break
            have = more
        return bytes(self._buf[self._lo:self._lo + min(n, have)])

    def skip_to_eof(self) -> None:
        check, tap = self.trailer_check, self.tap
        if check is not None and tap is not None:
            head = bytes(self._buf[self._lo:self._hi]) or self.peek(1)
            if check(head):
                tap.allow(_UNLIMITED)
        super().skip_to_eof()


class ForwardConsumer(Consumer):
    """Moves the tap's limit as the walk finds headers and records good (module docs)."""

    def __init__(self, registry: Registry, source: ForwardingSource, tap: Tap) -> None:
        self.registry = registry
        self.source = source
        self.tap = tap
        self.failed = False
        self.ended = False                 # the outermost stream ended cleanly
        self._root: StreamContext | None = None

    def _allow(self, limit: int) -> None:
        if not self.failed:
            self.tap.allow(limit)

    def on_context_start(self, ctx: StreamContext) -> None:
        if self._root is None:
            self._root = ctx

    def on_header(self, header: HeaderValue) -> None:
        self._allow(self.source.offset)

    def on_record(self, record: Record) -> None:
        # checks ran; the payload (if any) is what follows, unchecked by the walk unless a
        # plugin scans it: then it waits for the record's end like the rest. A record with
        # padding to check waits for its end too.
        spec = record.context.format.spec
        if record.name == spec.end_record or (
                spec.framing is not None and record.length % spec.framing.align):
            return
        if record.payload_length and not self._scanned(record):
            self._allow(self.source.offset + record.payload_length)
        else:
            self._allow(self.source.offset)

    @staticmethod
    def _scanned(record: Record) -> bool:
        scanners = getattr(record.context.format, "scanners", None) or {}
        return record.decoded and record.name in scanners

    def on_record_end(self, record: Record) -> None:
        if record.name != record.context.format.spec.end_record:
            self._allow(self.source.offset)

    def on_context_end(self, ctx: StreamContext) -> None:
        if not ctx.finished:
            return
        if ctx is self._root and not self.failed:
            # the records before the END go out first: a receiver that stops taking them
            # stopped before the stream ended
            self.tap.release()
            # (before the END goes out: a receiver may exit as soon as it has it)
            self.ended = True
            root = ctx
            self.source.trailer_check = lambda head: bool(
                self.registry.describe_trailing(root, head))
        self._allow(self.source.offset)

    def on_diagnostic(self, diagnostic: Diagnostic) -> None:
        if diagnostic.is_error and not self.failed:
            self.failed = True
            self.tap.freeze()


def end_input(fd: int) -> None:
    """Make the reader of *fd* see the end of its input now, while *fd* stays a valid
    descriptor (it then writes to /dev/null): the receiver stops at the boundary at once."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


def forward_source(registry: Registry, source: ByteSource, fmt: str,
                   write: Callable[[memoryview], None], *, out_fd: int | None = None,
                   tee: BinaryIO | None = None, params: dict[str, Any] | None = None,
                   consumer: Consumer | None = None) -> tuple[Any, int]:
    """Verify *source* as *fmt* while forwarding what is safe through *write* (its fd
    *out_fd* when it has one: payloads are then spliced). Returns the verify report and
    how many bytes went out. At the first error the target's input ends (*out_fd* then
    writes to /dev/null) and the walk stops reading (a second error in the report says so).
    Raises :class:`ForwardClosed` when *write* meets EPIPE."""
    from xenmig_core.engine import MultiConsumer
    from xenmig_core.verifier import verify_source
    forwarding = source if isinstance(source, ForwardingSource) else \
        ForwardingSource.wrap(source)
    tap = Tap(write, forwarding.offset, out_fd=out_fd, tee=tee,
              on_freeze=None if out_fd is None else lambda: end_input(out_fd))
    forwarding.attach(tap)
    forwarding.detected = lambda head: any(
        d.confidence >= MAGIC_CONFIDENCE for d in detect(registry, head))
    watcher = ForwardConsumer(registry, forwarding, tap)
    try:
        report = verify_source(registry, forwarding, fmt,
                               MultiConsumer(watcher, consumer) if consumer else watcher,
                               params, account=False)
        if report.valid:
            tap.allow(_UNLIMITED)          # a clean end: whatever was read is known good
            tap.release()
        else:
            watcher.failed = True
            tap.freeze()
    finally:
        tap.pending.clear()
        forwarding.close()
    return report, tap.sent - forwarding.start


def open_target(spec: str) -> tuple[int, bool]:
    """The fd for a forwarding target: ``-`` (stdout), ``fd:N`` or a path (created or
    truncated; a FIFO is opened for writing). Returns (fd, owned)."""
    from xenmig_core.errors import UsageError
    from xenmig_core.source import parse_fd
    if spec == "-":
        return 1, False
    fd = parse_fd(spec)
    if fd is not None:
        try:
            os.fstat(fd)
        except OSError as exc:
            raise UsageError(f"--forward {spec}: {exc.strerror or exc}") from None
        return fd, False
    try:
        return os.open(spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), True
    except OSError as exc:
        raise UsageError(f"--forward {spec}: cannot open: {exc.strerror or exc}") from None


def open_tee(path: str | None) -> BinaryIO | None:
    """The ``--tee`` copy: an unbuffered file (every read lands in it as it comes)."""
    if path is None:
        return None
    from xenmig_core.errors import UsageError
    try:
        return open(path, "wb", buffering=0)
    except OSError as exc:
        raise UsageError(f"--tee {path}: cannot open: {exc.strerror or exc}") from None


def forward_to_fd(registry: Registry, name: str, fmt: str, out_fd: int, *,
                  tee_path: str | None = None,
                  params: dict[str, Any] | None = None) -> tuple[Any, int]:
    """Open *name* (a path, ``-`` or ``fd:N``; never decompressed: the bytes go on as they
    are) and forward it to *out_fd* while verifying it (:func:`forward_source`)."""
    tee = open_tee(tee_path)
    try:
        source = ForwardingSource.open(name, decompress=False)
        return forward_source(registry, source, fmt, lambda data: write_all(out_fd, data),
                              out_fd=out_fd, tee=tee, params=params)
    finally:
        if tee is not None:
            tee.close()
