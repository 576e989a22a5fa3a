"""The public Python API: ``xenmig_core.verify``, ``xenmig_core.records`` and
``xenmig_core.Forwarder`` (push-style: :mod:`xenmig_core.push`).

Conventions every helper here follows (and later ones will: a push-style verifier fed bytes
as they arrive, a guest-memory export):

- *source* is a path (``str`` or ``os.PathLike``; ``"-"`` and ``"fd:N"`` mean what they mean
  on the command line), a bytes-like object, or a binary file object (a pipe works: nothing
  is read twice). A gzip, xz, bzip2 or zstd image is decompressed as it is read; offsets
  are then offsets in the decompressed stream (``Report.compression`` says so).
- *format* is a format name, or ``"auto"`` to detect it.
- Keyword arguments not named in the signature are stream parameters, checked against what
  the plugins declare (``width=32``, ``guest="pv"``; ``xenmig plugins`` lists them).
- ``registry=`` reuses one :class:`~xenmig_core.registry.Registry` (from
  :func:`open_registry`) across calls; ``specs=`` adds spec files. Without either, the
  installed plugins and ``$XENMIG_SPEC_PATH`` are loaded once and reused.
- A bad stream is never an exception: it is a report with diagnostics. Exceptions are
  :class:`~xenmig_core.errors.XenmigError` subclasses: ``SourceError`` (cannot open or read),
  ``UsageError`` (unknown format or parameter), ``SpecError``/``PluginError``.
- Memory stays bounded whatever the stream's size.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from xenmig_core.diagnostics import Diagnostic
from xenmig_core.engine import Consumer, Record
from xenmig_core.engine.context import HeaderValue
from xenmig_core.params import stream_params
from xenmig_core.registry import Registry
from xenmig_core.source import ByteSource
from xenmig_core.verifier import verify_source
from xenmig_core.verifying import Report, Source, open_source, verify_opened

#: How many records the walk may run ahead of the consumer of :func:`records`.
QUEUE_SIZE = 64

__all__ = ["Records", "Report", "Source", "StreamRecord", "open_registry",
           "open_source", "records", "verify"]


# -- sources and registries ------------------------------------------------------------------
def open_registry(specs: Iterable[str | os.PathLike[str]] = (),
                  plugins: Iterable[Any] = ()) -> Registry:
    """Every installed plugin's formats, *plugins* (modules or objects with hook
    implementations) and the spec files *specs* (plus ``$XENMIG_SPEC_PATH``)."""
    from xenmig_core.session import open_registry as session_registry
    return session_registry([os.fspath(s) for s in specs], plugins)


_DEFAULT: dict[tuple[str | None, str | None], Registry] = {}


def _registry(registry: Registry | None, specs: Iterable[str | os.PathLike[str]]) -> Registry:
    if registry is not None:
        return registry
    specs = list(specs)
    if specs:
        return open_registry(specs)
    from xenmig_core.session import SPEC_PATH_ENV
    key = (os.environ.get(SPEC_PATH_ENV), os.environ.get("XENMIG_DISABLE_PLUGIN_AUTOLOAD"))
    if key not in _DEFAULT:
        _DEFAULT[key] = open_registry()
    return _DEFAULT[key]


# -- verify ------------------------------------------------------------------------------------
def verify(source: Source, format: str = "auto", *, registry: Registry | None = None,
           specs: Iterable[str | os.PathLike[str]] = (), **params: Any) -> Report:
    """Verify *source* as *format* (``"auto"``: detect it) and return a :class:`Report`.

    >>> xenmig_core.verify("guest.xl", width=64).valid   # doctest: +SKIP
    True
    """
    registry = _registry(registry, specs)
    checked = stream_params(registry, params, "verify")
    with open_source(source) as opened:
        return verify_opened(registry, opened, format, None, checked)


# -- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamRecord:
    """One record (or, with ``headers=True``, header) of a stream, in stream order.

    ``fields`` are the decoded non-payload fields as plain data, as ``xenmig dump`` shows
    them (enum names, flag lists, runs folded into ``{first, count}``); empty when the body
    could not be decoded. ``view`` holds derived values a plugin's viewer adds (or None).
    ``offset`` is the absolute byte offset of the record's header; ``length`` its body
    length (a header's size). ``depth`` is 0 for the outermost stream, 1 for a stream nested
    in it, and so on. ``diagnostics`` are the problems found in this record.
    """

    kind: str
    format: str
    name: str
    type_id: int | None
    index: int | None
    offset: int
    length: int
    depth: int
    fields: dict[str, Any]
    view: dict[str, Any] | None = None
    summary: str | None = None
    diagnostics: tuple[Diagnostic, ...] = ()


class _Stopped(BaseException):
    """The consumer of :class:`Records` went away: stop the walk (BaseException, so that no
    plugin guard turns it into a plugin failure)."""


_END = object()


@dataclass
class _Channel:
    """What the walk thread and the iterating thread share."""

    items: queue.Queue[Any] = field(default_factory=lambda: queue.Queue(QUEUE_SIZE))
    stop: threading.Event = field(default_factory=threading.Event)

    def put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped


class _Feed(Consumer):
    """Turns engine callbacks into :class:`StreamRecord` items on the channel."""

    def __init__(self, channel: _Channel, headers: bool) -> None:
        self.channel = channel
        self.headers = headers
        self.pending: list[Diagnostic] = []
        self.fields: dict[str, Any] | None = None

    def on_diagnostic(self, diagnostic: Diagnostic) -> None:
        if diagnostic.record_index is not None:
            self.pending.append(diagnostic)

    def on_header(self, header: HeaderValue) -> None:
        if not self.headers:
            return
        from xenmig_core.dump import present_header
        fields, view = present_header(header)
        self.channel.put(StreamRecord(
            "header", header.context.name, header.name, None, None, header.offset,
            header.size, header.context.depth, fields, view, header.summary))

    def on_record(self, record: Record) -> None:
        from xenmig_core.dump import present_record_fields
        self.fields = present_record_fields(record)

    def on_record_end(self, record: Record) -> None:
        from xenmig_core.dump import derived_view
        fields, view = self.fields, derived_view(record)   # complete once the payload was read
        mine = tuple(d for d in self.pending if d.record_index == record.index)
        self.pending = [d for d in self.pending if d.record_index != record.index]
        self.channel.put(StreamRecord(
            "record", record.format, record.name, record.type_id, record.index,
            record.offset, record.length, record.context.depth, fields or {}, view,
            record.summary, mine))


class Records(Iterator[StreamRecord]):
    """An iterator over a stream's records, walking it lazily.

    The walk runs in a thread that stays at most :data:`QUEUE_SIZE` records ahead of the
    iteration, so memory stays bounded. After the last record, ``report`` holds the
    :class:`Report` of the same walk (valid, diagnostics, ...). ``close()`` (or leaving a
    ``with`` block, or dropping the iterator) stops the walk and closes the source; it
    waits for a read in progress to return (on a pipe that stays silent, that can be long).
    Exceptions of the walk (an unreadable source, a failing plugin) are raised by ``next``.
    """

    def __init__(self, registry: Registry, source: ByteSource, format: str,
                 params: dict[str, Any], headers: bool) -> None:
        self._channel = _Channel()
        self._source = source
        #: the verify report of the walk, once the iteration is over
        self.report: Report | None = None
        self._done = False
        self._thread = threading.Thread(
            target=_walk, name="xenmig-records", daemon=True,
            args=(self._channel, registry, source, format, params, headers))
        self._thread.start()

    def __iter__(self) -> Records:
        return self

    def __next__(self) -> StreamRecord:
        if self._done:
            raise StopIteration
        item = self._channel.items.get()
        if isinstance(item, StreamRecord):
            return item
        self._finish()
        if isinstance(item, BaseException):
            raise item
        self.report = item
        raise StopIteration

    def _finish(self) -> None:
        self._done = True
        self._thread.join()
        self._source.close()

    def close(self) -> None:
        """Stop the walk (if it is still going) and close the source."""
        if self._done:
            return
        self._channel.stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._channel.items.get(timeout=0.1)
        self._finish()

    def __enter__(self) -> Records:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_done", True):
            self._channel.stop.set()


def _walk(channel: _Channel, registry: Registry, source: ByteSource, format: str,
          params: dict[str, Any], headers: bool) -> None:
    """The walk thread: every record onto the channel, then the report (or the exception)."""
    try:
        inner = verify_source(registry, source, format, _Feed(channel, headers), params)
        outcome: Any = Report(inner, source.compression)
    except _Stopped:
        return
    except BaseException as exc:  # handed to the iterating thread, which raises it
        outcome = exc
    try:
        channel.put(outcome)
    except _Stopped:
        return


def records(source: Source, format: str = "auto", *, headers: bool = False,
            registry: Registry | None = None, specs: Iterable[str | os.PathLike[str]] = (),
            **params: Any) -> Records:
    """The records of *source* in stream order (nested streams included, where they stand),
    as :class:`StreamRecord` objects; headers too with ``headers=True``. See :class:`Records`.
    Raises UsageError (unknown format or parameter) and SourceError (cannot open) at once;
    a stream no format recognises yields no record and a report with one error."""
    registry = _registry(registry, specs)
    checked = stream_params(registry, params, "dump")
    if format != "auto":
        registry.get(format)
    opened = open_source(source)
    try:
        return Records(registry, opened, format, checked, headers)
    except BaseException:
        opened.close()
        raise

