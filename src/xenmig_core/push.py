"""A push-style forwarder for programs that receive a stream themselves (a migration proxy).

:class:`Forwarder` takes bytes as they arrive (``feed``) and returns the bytes that are now
safe to pass on, in order: the same record-by-record release as ``xenmig verify --forward``
(:mod:`xenmig_core.forward`). The walk runs in a thread over the fed bytes; ``feed`` returns
once the walk has used everything fed so far (it then waits for more), so what it returns is
all that can be known safe at that point.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from xenmig_core.engine.consumer import Consumer
from xenmig_core.forward import ForwardingSource, forward_source

if TYPE_CHECKING:
    import os

    from xenmig_core.api import Report
    from xenmig_core.diagnostics import Diagnostic
    from xenmig_core.registry import Registry


class _Fed(io.RawIOBase):
    """A raw input whose bytes are handed in by another thread; a read waits for them."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = threading.Condition()
        self.chunks: deque[memoryview] = deque()
        self.ended = False      # no more bytes will come
        self.waiting = False    # the reader waits for bytes

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self.cond:
            while not self.chunks and not self.ended:
                self.waiting = True
                self.cond.notify_all()
                self.cond.wait()
            self.waiting = False
            if not self.chunks:
                return 0
            chunk = self.chunks[0]
            n = min(len(buffer), len(chunk))
            buffer[:n] = chunk[:n]
            if n == len(chunk):
                self.chunks.popleft()
            else:
                self.chunks[0] = chunk[n:]
            return n


class _FirstError(Consumer):
    """Keeps the walk's first error."""

    def __init__(self) -> None:
        self.first: Diagnostic | None = None

    def on_diagnostic(self, diagnostic: Diagnostic) -> None:
        if diagnostic.is_error and self.first is None:
            self.first = diagnostic


class Forwarder:
    """Verify a stream pushed in pieces; say which prefix is safe to pass on.

    ``feed(data)`` returns the bytes that became safe (possibly empty); ``close()`` says the
    stream ended and returns the last safe bytes. The concatenation of everything returned
    is the whole stream when it is valid, else exactly the bytes before its first bad
    header or record (page contents go out as soon as their record's head was checked).
    ``valid`` is None while the verdict is open; ``report`` (a :class:`~xenmig_core.Report`)
    and ``error`` (the first error, or None) are there once the walk ended. Once the stream
    is known invalid, further bytes are ignored.

    *format*, *registry*, *specs* and stream parameters as for :func:`xenmig_core.verify`.
    """

    def __init__(self, format: str = "auto", *, registry: Registry | None = None,
                 specs: Iterable[str | os.PathLike[str]] = (), **params: Any) -> None:
        from xenmig_core.api import _registry, stream_params
        self._registry = _registry(registry, specs)
        self._params = stream_params(self._registry, params, "verify")
        self._format = format
        self._fed = _Fed()
        self._out = bytearray()
        self._done = False
        self._errors = _FirstError()
        self._failure: BaseException | None = None
        self.report: Report | None = None
        self._thread = threading.Thread(target=self._walk, name="xenmig-forwarder",
                                        daemon=True)
        self._thread.start()

    def _walk(self) -> None:
        from xenmig_core.api import Report
        try:
            source = ForwardingSource(self._fed, "<fed>")
            inner, _sent = forward_source(self._registry, source, self._format, self._take,
                                          params=self._params, consumer=self._errors)
            self.report = Report(inner)
        except BaseException as exc:  # handed to the caller's thread
            self._failure = exc
        finally:
            with self._fed.cond:
                self._done = True
                self._fed.cond.notify_all()

    def _take(self, data: memoryview) -> None:
        self._out += data

    def _settle(self) -> bytes:
        """Wait until the walk used every byte fed (or ended); return what became safe."""
        fed = self._fed
        with fed.cond:
            while not self._done and (fed.chunks or not fed.waiting):
                fed.cond.wait()
            out = bytes(self._out)
            self._out.clear()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        return out

    def feed(self, data: bytes | bytearray | memoryview) -> bytes:
        """Hand in the next bytes of the stream; return the bytes now safe to pass on."""
        if data and not self._done:
            with self._fed.cond:
                self._fed.chunks.append(memoryview(bytes(data)))
                self._fed.waiting = False
                self._fed.cond.notify_all()
        return self._settle()

    def close(self) -> bytes:
        """The stream ended: finish the verdict; return the last safe bytes."""
        with self._fed.cond:
            self._fed.ended = True
            self._fed.cond.notify_all()
            while not self._done:
                self._fed.cond.wait()
        self._thread.join()
        return self._settle()

    @property
    def valid(self) -> bool | None:
        """False from the first error on; True once ``close`` found the stream valid; None
        while the verdict is open."""
        if self._errors.first is not None:
            return False
        return self.report.valid if self.report is not None else None

    @property
    def error(self) -> Diagnostic | None:
        """The first error found so far (None while there is none)."""
        return self._errors.first

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.close()
