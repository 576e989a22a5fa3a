"""The consumer interface: what verify, dump, build and convert see of one walk.

The engine calls these in stream order. Payload bytes (page contents, opaque blobs) are
skipped unless :meth:`Consumer.wants_payload` says otherwise; then they arrive in chunks
through :meth:`Consumer.on_payload`, as views of one reusable buffer (copy what you keep).
"""

from __future__ import annotations

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from xenmig_core.diagnostics import Diagnostic
    from xenmig_core.engine.context import HeaderValue, Record, StreamContext


class Consumer:
    """Base consumer: every callback does nothing. Subclass and override what you need.

    ``wants_summaries``: set it true to have the engine render each record's spec
    ``summary`` into ``Record.summary`` (it costs time per record, so the default is off;
    header summaries always are there; a plugin handler sees the choice as
    ``StreamContext.summaries`` and may leave its own summary out when it is false, as the
    built-in ones do).
    """

    wants_summaries: bool = False

    def on_context_start(self, ctx: StreamContext) -> None:
        """A format context starts (the root stream, or a nested one)."""

    def on_header(self, header: HeaderValue) -> None:
        """A header was read and checked."""

    def on_record(self, record: Record) -> None:
        """A record's non-payload fields were decoded and checked."""

    def wants_payload(self, record: Record) -> bool:
        """Return True to receive this record's payload bytes. Asked once per record with a
        payload, before its first chunk."""
        return False

    def on_payload(self, record: Record, offset: int, chunk: memoryview) -> None:
        """*chunk* holds payload bytes starting at *offset* within the payload."""

    def on_record_end(self, record: Record) -> None:
        """The record, with its payload and padding, has been read."""

    def on_context_end(self, ctx: StreamContext) -> None:
        """A context ended (its END record, or the stream stopped inside it)."""

    def on_diagnostic(self, diagnostic: Diagnostic) -> None:
        """An error or warning was found."""

    def on_trailing(self, offset: int, length: int, description: str | None) -> None:
        """Bytes follow the end of the outermost stream."""

    def on_diagnostics_dropped(self, like: Diagnostic, count: int) -> None:
        """At the end of the walk: *count* more diagnostics like *like* were found but not
        kept nor passed to :meth:`on_diagnostic` (the engine caps them). Called once per
        kind of diagnostic that was capped."""


class MultiConsumer(Consumer):
    """Passes every callback to each of *consumers* in order; a payload is read when any of
    them wants it (and then delivered only to those that do)."""

    def __init__(self, *consumers: Consumer) -> None:
        self.consumers = consumers
        self.wants_summaries = any(getattr(c, "wants_summaries", False) for c in consumers)
        #: the record last asked about, and those of *consumers* that want its payload
        self._asked: Record | None = None
        self._wanting: list[Consumer] = []

    def on_context_start(self, ctx: StreamContext) -> None:
        for c in self.consumers:
            c.on_context_start(ctx)

    def on_header(self, header: HeaderValue) -> None:
        for c in self.consumers:
            c.on_header(header)

    def on_record(self, record: Record) -> None:
        for c in self.consumers:
            c.on_record(record)

    def wants_payload(self, record: Record) -> bool:
        """Each consumer is asked once (its answer kept for the payload's chunks)."""
        self._asked = record
        self._wanting = [c for c in self.consumers if c.wants_payload(record)]
        return bool(self._wanting)

    def on_payload(self, record: Record, offset: int, chunk: memoryview) -> None:
        if record is not self._asked:
            self.wants_payload(record)
        for c in self._wanting:
            c.on_payload(record, offset, chunk)

    def on_record_end(self, record: Record) -> None:
        for c in self.consumers:
            c.on_record_end(record)

    def on_context_end(self, ctx: StreamContext) -> None:
        for c in self.consumers:
            c.on_context_end(ctx)

    def on_diagnostic(self, diagnostic: Diagnostic) -> None:
        for c in self.consumers:
            c.on_diagnostic(diagnostic)

    def on_trailing(self, offset: int, length: int, description: str | None) -> None:
        for c in self.consumers:
            c.on_trailing(offset, length, description)

    def on_diagnostics_dropped(self, like: Diagnostic, count: int) -> None:
        for c in self.consumers:
            c.on_diagnostics_dropped(like, count)
