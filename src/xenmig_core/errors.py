"""The exception hierarchy: every error xenmig raises on purpose is a XenmigError.

``StreamError`` and ``RecordError`` describe bad input (exit 1); ``SpecError`` and
``PluginError`` describe a broken spec or plugin; ``UsageError`` and ``SourceError`` are the
caller's or the operating system's (exit 2). Anything else escaping is a bug (exit 3).
"""

from __future__ import annotations


class XenmigError(Exception):
    """Base of all deliberate xenmig errors. ``str(err)`` is a complete one-line message."""

    exit_code = 3


class UsageError(XenmigError):
    """The caller asked for something impossible (bad option value, unknown format)."""

    exit_code = 2


class SourceError(XenmigError):
    """An input or output could not be opened, read or written."""

    exit_code = 2


class SpecError(XenmigError):
    """A spec file is invalid. The message names the file, line and key."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        where = path or "<spec>"
        if line is not None:
            where += f":{line}"
        if key:
            where += f": {key}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.key = key


class PluginError(XenmigError):
    """A plugin failed to load, or raised while handling a stream. The message names it."""

    exit_code = 3


class StreamError(XenmigError):
    """The stream is invalid and cannot be walked further (framing broken, truncated).

    *fatal* is informational only: decoders set it False for a problem confined to one
    record, but the engine does not read it (whether the walk goes on is decided by the
    framing, not by this flag). It is kept because plugins pass it.
    """

    exit_code = 1

    def __init__(self, message: str, *, offset: int | None = None, field: str | None = None,
                 fatal: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.field = field
        self.fatal = fatal


class RecordError(StreamError):
    """One record (or header) is invalid; raised by decoders and handlers."""


class TruncatedError(StreamError):
    """The stream ended in the middle of a header or record."""
