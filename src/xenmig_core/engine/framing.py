"""Framing: how a format's bytes divide into headers and records.

A context reads its fixed headers first, in spec order; then either a plugin walker frames
the rest (``implied`` framing, or a format with its own walker), or the spec's ``follows``
names the format of the rest of the source (a wrapper), or type-length records follow, each
body padded to the format's alignment. The record bodies themselves go to
:mod:`xenmig_core.engine.dispatch`.

Contract: a short stream raises TruncatedError, broken framing StreamError (both fatal, the
walk stops); the source ending exactly where a record (or a nested stream) would start
raises :class:`CleanEOF`, which the walk turns into an end-of-stream verdict.
"""

from __future__ import annotations

from xenmig_core.diagnostics import WARNING
from xenmig_core.engine.context import CONTINUE, Action, HeaderValue, Record, StreamContext
from xenmig_core.engine.reader import SourceReader
from xenmig_core.errors import RecordError, SpecError, StreamError, TruncatedError
from xenmig_core.spec.expr import resolve
from xenmig_core.spec.layout import ORDER_PREFIXES

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from xenmig_core.engine.consumer import Consumer
    from xenmig_core.registry import Registry
    from xenmig_core.source import ByteSource
    from xenmig_core.spec.model import HeaderSpec

#: Headers may carry variable data (a configuration, an XML document); never more than this.
MAX_HEADER_BYTES = 64 << 20
#: ``follows`` expressions see this many upcoming bytes as ``upcoming``.
FOLLOWS_PEEK = 64
_ORDERS = ORDER_PREFIXES


class CleanEOF(Exception):
    """The source ended exactly at a record boundary."""


def _general(buf: Any, lo: int, have: int, length: int) -> None:
    """The "compiled function" of a type that has none: every record the general way."""
    return None


class _Pending:
    """What takes the records of a type of one context (and byte order) until the type has
    been met :attr:`Framing.compile_after` times: the general dispatch (returns None),
    counting them in ``seen``; then the type's compiled function (bound to the context),
    which replaces this in the context's table (``_general`` for a type without one)."""

    __slots__ = ("ctx", "engine", "order", "seen", "table", "type_id")

    def __init__(self, engine: Framing, ctx: StreamContext, table: dict[int, Any],
                 type_id: int, order: str) -> None:
        self.engine = engine
        self.ctx = ctx
        self.table = table
        self.type_id = type_id
        self.order = order
        self.seen = 0

    def __call__(self, buf: Any, lo: int, have: int, length: int) -> Any:
        self.seen += 1
        if self.seen < self.engine.compile_after:
            return None
        function = self.table[self.type_id] = \
            self.engine._compiled(self.ctx, self.type_id, self.order) or _general
        return function(buf, lo, have, length)


class Framing:
    """The engine's framing (a part of :class:`~xenmig_core.engine.walk.Engine`)."""

    registry: Registry
    source: ByteSource
    consumer: Consumer
    #: records of types the generated code can express take it (False: always the general
    #: dispatch, e.g. to compare the two)...
    compile_records: bool = True
    #: ... from the record of that type this many into the walk (generating a function
    #: costs more than the general dispatch of a few records: a short stream pays nothing)
    compile_after: int = 8

    # provided by the other parts of the engine
    _unit: Callable[..., tuple[Record, Action]]
    _compiled: Callable[..., Any]
    _eval: Callable[..., Any]
    _render: Callable[..., str]
    _run_conditions: Callable[..., None]
    _header_diag: Callable[..., None]
    _enum_warnings: Callable[..., None]

    def _step(self, ctx: StreamContext) -> Action:
        """Read the next unit of *ctx* (a header, a record, or what its walker reads) and
        return the action that follows it."""
        fmt = ctx.format
        spec = fmt.spec
        if ctx.header_index < len(spec.headers):
            if ctx.header_index == 0 and ctx.parent is not None and self.source.at_eof():
                raise CleanEOF
            header = spec.headers[ctx.header_index]
            self._read_header(ctx, header)
            ctx.header_index += 1
            return CONTINUE
        if fmt.walker is not None:
            return fmt.walker(self, ctx)
        framing = spec.framing
        if framing is not None and framing.implied:
            raise SpecError(f"format {spec.name} has implied framing but no plugin walker")
        if spec.follows is not None:
            if ctx.children:
                return Action("end")
            target = resolve(spec.follows, ctx.names(upcoming=self.source.peek(FOLLOWS_PEEK)),
                             context=f"format {ctx.name}, follows")
            if not target:
                return Action("end")
            if str(target) not in self.registry.formats:
                self._unverified_rest(ctx, str(target))
                return Action("end")
            return Action("nested", str(target))
        if framing is None:
            raise SpecError(f"format {spec.name} has neither records, follows nor a walker")
        return self._records(ctx, framing.align)

    def _unverified_rest(self, ctx: StreamContext, target: str) -> None:
        """The rest of the source is a format no loaded plugin provides: say so, skip it."""
        start = self.source.offset
        self.source.skip_to_eof()
        ctx.warning(f"the rest of the stream ({self.source.offset - start} bytes) is a "
                    f"{target!r} stream, which no loaded plugin provides: not verified",
                    offset=start, record=None, unit="rest of stream")

    # -- headers -------------------------------------------------------------------------
    def _read_header(self, ctx: StreamContext, header: HeaderSpec) -> None:
        offset = self.source.offset
        ctx.walker_state["unit"] = header.name
        order = ctx.byte_order if header.byte_order == "stream" else _ORDERS[header.byte_order]
        reader = SourceReader(self.source, MAX_HEADER_BYTES, f"{ctx.name} {header.name}")
        layout = header.layout
        try:
            prior = {k: v for done in ctx.headers.values() for k, v in done.items()}
            if layout.lead and header.fatal_fields & set(layout.lead):
                # a fatal field among the fixed ones (a length the header may not have)
                # refuses the header before its variable data is read
                fields = layout.decode_lead(reader, order)
                self._fatal_fields(ctx, header, fields, offset)
                layout.decode_rest(reader, order, fields, prior)
            else:
                fields = layout.decode(reader, order, prior)
        except TruncatedError as exc:
            raise TruncatedError(exc.message, offset=exc.offset) from None
        except RecordError as exc:
            raise StreamError(exc.message, offset=offset,
                              field=exc.field) from None
        names = ctx.names(fields)
        problems = header.layout.check(fields, names)
        for path, message, _severity in problems:
            if path in header.fatal_fields:
                # the header is not what it claims to be: its other fields mean nothing
                raise StreamError(message, offset=offset, field=path)
        for path, message, severity in problems:
            self._header_diag(ctx, header, offset, severity, message, path)
        self._enum_warnings(ctx, header.layout, fields, lambda m, f: self._header_diag(
            ctx, header, offset, WARNING, m, f))
        for key, expr in header.set.items():
            ctx.state[key] = self._eval(expr, names, ctx, header.name)
        if header.byte_order_from is not None:
            value = self._eval(header.byte_order_from, names, ctx, header.name)
            ctx.byte_order = _ORDERS[str(value)]
        self._run_conditions(ctx, header.checks, ctx.names(fields), header=header, offset=offset)
        ctx.headers[header.name] = fields
        value = HeaderValue(header.name, header.title, offset, self.source.offset - offset,
                            fields, ctx)
        handler = ctx.format.handlers.get(header.name)
        if handler is not None:
            handler(value, ctx)
        if header.summary is not None:
            value.summary = self._render(header.summary, ctx.names(fields), ctx, header.name)
        self.consumer.on_header(value)
        ctx.walker_state.pop("unit", None)

    @staticmethod
    def _fatal_fields(ctx: StreamContext, header: HeaderSpec, fields: dict[str, Any],
                      offset: int) -> None:
        """StreamError for the first failed check of a fatal field among *fields*."""
        for path, message, _severity in header.layout.check(fields, ctx.names(fields)):
            if path in header.fatal_fields:
                raise StreamError(message, offset=offset, field=path)

    # -- records -------------------------------------------------------------------------
    def _records(self, ctx: StreamContext, align: int) -> Action:
        """Type-length records of *ctx*, one after another, until one asks for an action
        other than ``continue`` (returned): each through its type's compiled function
        (:mod:`~xenmig_core.engine.compiled`) when it has one and that takes the record,
        else the general way (:meth:`_read_record`)."""
        if not self.compile_records:
            while (action := self._read_record(ctx, align)) is CONTINUE:
                pass
            return action
        source = self.source
        order = ctx.byte_order
        head = ctx.format.record_header(order)
        size = head.size
        unpack = head.unpack_from
        compiled = ctx.compiled.setdefault(order, {})
        root = ctx.parent is None
        while ctx.byte_order == order:     # (a handler that changes it: start again)
            lo = source._lo
            have = source._hi - lo
            if have >= size:
                buf = source._buf
            else:
                buf, lo, have = source.buffered(size)
                if have < size:     # the end of the source (or a short header)
                    action = self._read_record(ctx, align)
                    if action is not CONTINUE:
                        return action
                    continue
            type_id, length = unpack(buf, lo)
            function = compiled.get(type_id)
            if function is None:        # the first record of this type
                function = compiled[type_id] = _Pending(self, ctx, compiled, type_id, order)
            action = function(buf, lo, have, length)
            if action is CONTINUE:
                continue
            if action is None:          # not taken: the general way
                action = self._read_record(ctx, align)
                if action is CONTINUE:
                    continue
            elif root and action.kind == "yield":
                continue       # (the outermost stream has nothing to yield to)
            return action
        return CONTINUE

    def _read_record(self, ctx: StreamContext, align: int) -> Action:
        """One type-length record: its header here, the rest in the dispatch."""
        offset = self.source.offset
        head_struct = ctx.format.record_header(ctx.byte_order)
        size = head_struct.size
        raw = self.source.read_upto(size)
        if len(raw) != size:
            if not raw:
                raise CleanEOF
            raise TruncatedError(
                f"stream truncated: record header needs {size} bytes at offset {offset:#x}, "
                f"only {len(raw)} left", offset=offset)
        type_id, length = head_struct.unpack(raw)
        return self._unit(ctx, offset, type_id, length, align)[1]

    def _padding(self, ctx: StreamContext, record: Record, align: int, zero: bool) -> None:
        """The alignment bytes after *record*'s body (non-zero ones are an error when the
        format says padding must be zero)."""
        pad = -record.length % align
        if not pad:
            return
        data = self.source.read_exact(pad, f"record {record.index} padding")
        record.padding = data
        if zero and any(data):
            ctx.error(f"padding contains non-zero bytes: {data.hex()}", field="padding",
                      record=record)
