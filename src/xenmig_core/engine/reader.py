"""Readers that let a compiled layout decode straight from the byte source."""

from __future__ import annotations

from xenmig_core.errors import RecordError
from xenmig_core.source import ByteSource


class SourceReader:
    """Reads at most ``limit`` bytes of one body (or header) from a source, on demand.

    ``take`` raises a non-fatal RecordError when the body is shorter than the fields it
    declares (the framing is still intact); a short *stream* raises TruncatedError.
    *what* names the body in messages; an int *what* is a record index, named
    ``record N body`` (built only when a message needs it).
    """

    __slots__ = ("_what", "remaining", "source")

    def __init__(self, source: ByteSource, limit: int, what: str | int) -> None:
        self.source = source
        self.remaining = limit
        self._what = what

    @property
    def what(self) -> str:
        what = self._what
        return what if isinstance(what, str) else f"record {what} body"

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise RecordError(f"body too short: {n} more bytes needed, {self.what} has only "
                              f"{self.remaining} left", field=what, fatal=False)
        data = self.source.read_exact(n, self.what)
        self.remaining -= n
        return data

    def take_into(self, view: memoryview, what: str) -> None:
        """Like :meth:`take`, filling *view* straight from the source."""
        n = len(view)
        if n > self.remaining:
            raise RecordError(f"body too short: {n} more bytes needed, {self.what} has only "
                              f"{self.remaining} left", field=what, fatal=False)
        self.source.readinto_exact(view, self.what)
        self.remaining -= n

    def holds(self, n: int) -> bool:
        """True when the source is known to hold the next *n* bytes (a file), False when
        they must be read as they arrive (a pipe); TruncatedError when a file cannot."""
        return self.source.check_left(n, self.what)

    def skip_rest(self) -> None:
        self.source.skip(self.remaining, self.what)
        self.remaining = 0
