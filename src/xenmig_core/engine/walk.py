"""The walk: one pass over a byte source, as a stack of format contexts.

The engine knows framing (fixed headers, type-length records with alignment and padding,
formats that hand the rest of the source to another), dispatch (spec decoders, plugin
handlers), state (marks, counts, named values for the spec's rules) and diagnostics. It
knows nothing of any particular format: record names, ids and rules all come from specs.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xenmig_core.diagnostics import ERROR, WARNING, Diagnostic
from xenmig_core.engine.consumer import Consumer
from xenmig_core.engine.context import CONTINUE, Action, HeaderValue, Record, StreamContext
from xenmig_core.engine.reader import SourceReader
from xenmig_core.errors import RecordError, SpecError, StreamError, TruncatedError
from xenmig_core.source import ByteSource
from xenmig_core.spec.expr import Expression, evaluate, render, resolve
from xenmig_core.spec.layout import ORDER_PREFIXES
from xenmig_core.spec.model import Condition, HeaderSpec, LayoutRule, LengthRule, RecordType

if TYPE_CHECKING:
    from xenmig_core.registry import Format, Registry

#: Headers may carry variable data (a configuration, an XML document); never more than this.
MAX_HEADER_BYTES = 64 << 20
PAYLOAD_BUFFER_SIZE = 1 << 20
#: ``follows`` expressions see this many upcoming bytes as ``upcoming``.
FOLLOWS_PEEK = 64
_ORDERS = ORDER_PREFIXES


#: At most this many diagnostics of one kind (see :func:`diagnostic_kind`) are kept...
MAX_DIAGNOSTICS_PER_KIND = 20
#: ... and at most this many in all (plus the first error and a fatal one, always kept).
MAX_DIAGNOSTICS = 1000
_NUMBER = re.compile(r"0x[0-9a-fA-F]+|\d+")


def diagnostic_kind(d: Diagnostic) -> tuple[str | None, ...]:
    """What makes diagnostics "alike" for the caps: format, record type (or header),
    severity, field and message, with every number replaced (``pfn[3]`` and ``pfn[4]``,
    ``record type 0x80000100`` and ``0x80000101`` are alike)."""
    def shape(text: str | None) -> str | None:
        return _NUMBER.sub("#", text) if text is not None else None
    return (d.format, shape(d.record_type or d.unit), d.severity, shape(d.field),
            shape(d.message))


class _CleanEOF(Exception):
    """The source ended exactly at a record boundary."""


@dataclass
class WalkResult:
    """What one walk found. ``valid`` is False when any error was reported."""

    root: StreamContext | None = None
    contexts: list[StreamContext] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    records: int = 0
    end_offset: int = 0
    eof_note: str | None = None
    #: diagnostics found but not kept (nor passed to the consumer), by severity
    dropped: Counter[str] = field(default_factory=Counter)
    #: per kind with drops: (a diagnostic of that kind, how many were dropped); kinds first
    #: seen after the overall cap share one entry (the first of them is the sample)
    dropped_like: list[tuple[Diagnostic, int]] = field(default_factory=list)

    @property
    def diagnostics_dropped(self) -> int:
        """How many diagnostics the caps dropped (0 when every one was kept)."""
        return sum(self.dropped.values())

    @property
    def error_count(self) -> int:
        """Errors found, kept or dropped."""
        return len(self.errors) + self.dropped["error"]

    @property
    def warning_count(self) -> int:
        """Warnings found, kept or dropped."""
        return len(self.diagnostics) - len(self.errors) + self.diagnostics_dropped \
            - self.dropped["error"]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def valid(self) -> bool:
        return not self.errors


class Engine:
    """Walks one source. ``run(format_name)`` returns a :class:`WalkResult`.

    Contract: the walk never raises for bad input: every problem becomes a diagnostic, and
    a fatal one (broken framing, truncation) stops the walk. SpecError and PluginError
    propagate: they are bugs in a spec or plugin, not in the stream.

    Diagnostics are capped (bad input must not cost memory or output in proportion to its
    size): at most :data:`MAX_DIAGNOSTICS_PER_KIND` alike ones and :data:`MAX_DIAGNOSTICS`
    in all are kept and passed to the consumer; the first error and a fatal one always are.
    The rest are counted in ``WalkResult.dropped``; at the end of the walk the consumer's
    ``on_diagnostics_dropped`` hears once per kind how many more there were.

    *params* are values the caller knows better than the stream (``--width 32``): every
    context whose format declares a ``state`` variable of that name starts with the value
    instead of the spec's initial one (formats that declare no such variable ignore it).
    With *examine_trailing* False the walk stops at the end of the outermost stream and
    reads nothing after it (the caller owns the rest of the source, e.g. a pipe whose
    remaining bytes another program reads).
    """

    def __init__(self, registry: Registry, source: ByteSource,
                 consumer: Consumer | None = None, *,
                 params: Mapping[str, Any] | None = None,
                 examine_trailing: bool = True) -> None:
        self.registry = registry
        self.source = source
        self.consumer = consumer or Consumer()
        self.params = dict(params or {})
        self.examine_trailing = examine_trailing
        self.result = WalkResult()
        self._next_index = 0
        self._payload_buffer: memoryview | None = None
        #: kind -> [kept, dropped, sample]; a kind is tracked only once one of it is kept,
        #: so there are at most as many kinds as kept diagnostics (others share ``None``)
        self._kinds: dict[tuple[str | None, ...] | None, list[Any]] = {}
        self._error_kept = False

    # -- diagnostics ---------------------------------------------------------------------
    def report(self, diagnostic: Diagnostic, *, keep: bool = False) -> None:
        """Keep *diagnostic* and pass it to the consumer, unless a cap drops it (*keep*
        overrides the caps; the first error is always kept)."""
        kind = diagnostic_kind(diagnostic)
        entry = self._kinds.get(kind)
        keep = keep or (diagnostic.is_error and not self._error_kept) or (
            len(self.result.diagnostics) < MAX_DIAGNOSTICS
            and (entry is None or entry[0] < MAX_DIAGNOSTICS_PER_KIND))
        if not keep:
            self.result.dropped[diagnostic.severity] += 1
            if entry is None:
                entry = self._kinds.setdefault(None, [0, 0, diagnostic])
            entry[1] += 1
            return
        if entry is None:
            entry = self._kinds[kind] = [0, 0, diagnostic]
        entry[0] += 1
        self._error_kept = self._error_kept or diagnostic.is_error
        self.result.diagnostics.append(diagnostic)
        self.consumer.on_diagnostic(diagnostic)

    def _report_dropped(self) -> None:
        for _kept, dropped, sample in self._kinds.values():
            if dropped:
                self.result.dropped_like.append((sample, dropped))
                self.consumer.on_diagnostics_dropped(sample, dropped)

    # -- contexts ------------------------------------------------------------------------
    def _start(self, fmt: Format, parent: StreamContext | None) -> StreamContext:
        ctx = StreamContext(fmt, parent=parent, depth=parent.depth + 1 if parent else 0,
                            start_offset=self.source.offset, report=self.report)
        ctx.state["nested"] = parent is not None
        for key, value in self.params.items():
            if key in fmt.spec.state:
                ctx.state[key] = value
        if parent is not None:
            ctx.byte_order = parent.byte_order
            parent.children[fmt.name] = ctx
        self.result.contexts.append(ctx)
        self.consumer.on_context_start(ctx)
        return ctx

    def run(self, format_name: str) -> WalkResult:
        root = self._start(self.registry.get(format_name), None)
        self.result.root = root
        stack = [root]
        try:
            while stack:
                ctx = stack[-1]
                try:
                    action = self._step(ctx)
                except _CleanEOF:
                    self._at_eof(stack)
                    break
                self._apply(action, ctx, stack)
            else:
                if self.examine_trailing:
                    self._after_root()
        except StreamError as exc:
            ctx = stack[-1] if stack else root
            if isinstance(exc, TruncatedError):
                verdict = self.registry.call_stream_eof(ctx, partial=True)
                if verdict is not None and verdict[0] == "error":
                    exc.message = f"{exc.message} ({verdict[1]})"
            self._fatal(ctx, exc)
        self.result.end_offset = self.source.offset
        self.result.records = self._next_index
        self._report_dropped()
        return self.result

    def _apply(self, action: Action, ctx: StreamContext, stack: list[StreamContext]) -> None:
        kind = action.kind
        if kind == "continue":
            return
        if kind == "end":
            stack.pop()
            self._finish(ctx)
        elif kind == "yield":
            if ctx.parent is None:
                return  # nothing to hand back to: the stream simply goes on
            stack.pop()
            ctx.suspended = True
        elif kind == "nested":
            assert action.format is not None
            if action.format in ctx.children:
                ctx.error(f"a second nested {action.format} stream", record=ctx.last_record)
            stack.append(self._start(self.registry.get(action.format), ctx))
        elif kind == "resume":
            assert action.format is not None
            child = ctx.children.get(action.format)
            if child is None or not child.suspended:
                ctx.error(self._nothing_to_resume(ctx, action.format), record=ctx.last_record)
                return
            child.suspended = False
            stack.append(child)
        else:
            raise SpecError(f"unknown action {kind!r} from format {ctx.name}")

    @staticmethod
    def _nothing_to_resume(ctx: StreamContext, fmt: str) -> str:
        status = ctx.child_status(fmt)
        why = {"none": "none was started", "finished": "it has ended",
               "running": "it is running"}.get(status, status)
        return f"nothing to resume: no suspended {fmt} stream ({why})"

    def _finish(self, ctx: StreamContext) -> None:
        ctx.finished = True
        self._run_conditions(ctx, ctx.format.spec.end_checks, ctx.names())
        for message in self.registry.call_stream_end(ctx):
            ctx.error(message, record=ctx.last_record)
        self.consumer.on_context_end(ctx)

    def _after_root(self) -> None:
        """The outermost stream ended: anything left over is trailing data."""
        offset = self.source.offset
        head = self.source.peek(64)
        if not head:
            return
        assert self.result.root is not None
        description = self.registry.describe_trailing(self.result.root, head)
        start = offset
        self.source.skip_to_eof()
        length = self.source.offset - start
        self.consumer.on_trailing(start, length, description)
        root = self.result.root
        if description:
            root.warning(f"{length} bytes after the end of the stream: {description}",
                         offset=start, record=None, unit="trailer")
        else:
            root.error(f"{length} bytes of unexpected data after the end of the stream",
                       offset=start, record=None, unit="trailer")

    def _at_eof(self, stack: list[StreamContext]) -> None:
        top = stack[-1]
        verdict = self.registry.call_stream_eof(top)
        if verdict is not None:
            severity, message = verdict
            if severity == "ok":
                self.result.eof_note = message
            else:
                top.error(message, record=None, offset=self.source.offset, unit="end of stream")
        else:
            last = top.last_record
            after = f" (last record {last.index}, {last.name})" if last else ""
            expected = top.format.spec.end_record or "its end"
            if top.header_index == 0 and top.format.spec.headers and top.parent is not None:
                message = f"stream ended where a {top.format.spec.title} should start"
            else:
                message = f"stream ended before {expected}{after}"
            top.error(message, record=None, offset=self.source.offset, unit="end of stream")
        for ctx in reversed(stack):
            self.consumer.on_context_end(ctx)

    def _fatal(self, ctx: StreamContext, exc: StreamError) -> None:
        record = ctx.current
        self.report(keep=True, diagnostic=Diagnostic(
            severity=ERROR, message=exc.message,
            offset=exc.offset if exc.offset is not None else (record.offset if record else None),
            record_index=record.index if record else None,
            record_type=record.name if record else None, field=exc.field,
            format=ctx.name, unit=None if record else ctx.walker_state.get("unit")))

    # -- one step ------------------------------------------------------------------------
    def _step(self, ctx: StreamContext) -> Action:
        fmt = ctx.format
        spec = fmt.spec
        if ctx.header_index < len(spec.headers):
            if ctx.header_index == 0 and ctx.parent is not None and self.source.at_eof():
                raise _CleanEOF
            header = spec.headers[ctx.header_index]
            self._read_header(ctx, header)
            ctx.header_index += 1
            return CONTINUE
        if fmt.walker is not None:
            return fmt.walker(self, ctx)
        if spec.framing is not None and spec.framing.implied:
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
        if spec.framing is None:
            raise SpecError(f"format {spec.name} has neither records, follows nor a walker")
        return self._read_record(ctx)

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
        try:
            prior = {k: v for done in ctx.headers.values() for k, v in done.items()}
            fields = header.layout.decode(reader, order, prior)
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

    def _header_diag(self, ctx: StreamContext, header: HeaderSpec, offset: int, severity: str,
                     message: str, field: str | None, rule: str | None = None) -> None:
        self.report(Diagnostic(severity=severity, message=message, offset=offset, field=field,
                               format=ctx.name, unit=header.name, rule=rule))

    # -- records -------------------------------------------------------------------------
    def _read_record(self, ctx: StreamContext) -> Action:
        framing = ctx.format.spec.framing
        assert framing is not None
        offset = self.source.offset
        head_struct = ctx.format.record_header(ctx.byte_order)
        first = self.source.peek(1)
        if not first:
            raise _CleanEOF
        raw = self.source.read_exact(head_struct.size, "record header")
        type_id, length = head_struct.unpack(raw)
        return self._unit(ctx, offset, type_id, length, framing.align)[1]

    def walker_record(self, ctx: StreamContext, type_id: int, length: int
                      ) -> tuple[Record, Action]:
        """For walkers of implied framing: the next *length* bytes of the source are one unit
        of record type *type_id* (its header, if any, included). They are decoded, checked,
        dispatched and delivered exactly like a type-length record's body (no padding).
        Returns the record (fields decoded, handler run) and the action it asks for."""
        return self._unit(ctx, self.source.offset, type_id, length, 1)

    def _unit(self, ctx: StreamContext, offset: int, type_id: int, length: int,
              align: int) -> tuple[Record, Action]:
        framing = ctx.format.spec.framing
        assert framing is not None
        rtype = ctx.format.spec.records.get(type_id)
        record = Record(index=self._next_index, offset=offset, type_id=type_id,
                        name=rtype.name if rtype else f"{type_id:#010x}", length=length,
                        context=ctx, rtype=rtype,
                        optional=bool(type_id & framing.optional_mask))
        self._next_index += 1
        ctx.current = record
        if length > framing.max_length:
            raise StreamError(f"body length {length:#x} exceeds the format's maximum "
                              f"{framing.max_length:#x}", field="length")
        action: Action | None = CONTINUE
        if rtype is None:
            self._unknown_record(ctx, record)
            self.source.skip(length, f"record {record.index} body")
        else:
            action = self._dispatch(ctx, record, rtype)
        self._padding(ctx, record, align, framing.padding_must_be_zero)
        if action is None:
            assert rtype is not None
            action = self._control(ctx, record, rtype)
        ctx.counts[record.name] += 1
        ctx.marks.add(record.name)
        ctx.last_record = record
        self.consumer.on_record_end(record)
        ctx.current = None
        return record, action

    def _control(self, ctx: StreamContext, record: Record, rtype: RecordType) -> Action:
        """The spec's ``control`` for a record whose handler did not choose an action."""
        control = rtype.control
        if control is None:
            return CONTINUE
        if control.when is not None:
            names = ctx.names(record.fields, body_length=record.length,
                              next_type=self._next_type(ctx))
            if not self._eval(control.when, names, ctx, rtype.name):
                return CONTINUE
        if control.kind == "resume":
            assert control.format is not None
            child = ctx.children.get(control.format)
            if child is None or not child.suspended:
                message = self._nothing_to_resume(ctx, control.format)
                if control.message is not None:
                    message = self._render(control.message, ctx.names(record.fields), ctx,
                                           rtype.name)
                ctx.error(message)
                return CONTINUE
        return Action(control.kind, control.format)

    def _next_type(self, ctx: StreamContext) -> int | None:
        """The type of the record after the current one, or None at the end of the source
        (or when the format has no record header to peek at)."""
        try:
            head = ctx.format.record_header(ctx.byte_order)
        except KeyError:
            return None
        raw = self.source.peek(head.size)
        return head.unpack(raw)[0] if len(raw) == head.size else None

    def _unknown_record(self, ctx: StreamContext, record: Record) -> None:
        framing = ctx.format.spec.framing
        if record.optional and framing is not None and not framing.skip_optional:
            ctx.error(f"unknown record type {record.type_id:#010x} ({record.length} bytes): "
                      "in the optional range, but this format's readers refuse every "
                      "unknown record")
        elif record.optional:
            ctx.warning(f"unknown optional record type {record.type_id:#010x} "
                        f"({record.length} bytes), skipped")
        else:
            ctx.error(f"unknown record type {record.type_id:#010x}: a reader must refuse an "
                      "unknown mandatory record")
        self.consumer.on_record(record)

    def _dispatch(self, ctx: StreamContext, record: Record, rtype: RecordType
                  ) -> Action | None:
        """Decode, check and hand one known record to its handler. Returns the handler's
        action, or None when the spec's ``control`` decides (after the padding is read)."""
        if rtype.reject is not None:
            ctx.error(self._render(rtype.reject, ctx.names(), ctx, rtype.name))
        version = ctx.state.get("version")
        if rtype.versions is not None and version not in rtype.versions:
            allowed = "/".join(f"v{v}" for v in rtype.versions)
            ctx.error(f"{rtype.name} is a {allowed} record, found in a v{version} stream")
        self._check_rules(ctx, record, rtype)
        reader = SourceReader(self.source, record.length, f"record {record.index} body")
        layout = rtype.layout
        # a body of the wrong size for the rules that need no field is not decoded at all:
        # "body length 4, expected at least 8" says more than a short read inside it
        broken = self._check_length(ctx, rtype.static_length, record, None)
        if broken:
            pass
        elif layout is not None:
            try:
                record.fields = layout.decode(reader, ctx.byte_order)
                record.decoded = True
            except RecordError as exc:
                ctx.error(exc.message, field=exc.field)
                broken = True
        elif record.length and not rtype.length:
            broken = True
            ctx.error(f"{rtype.name} has no body, found {record.length} bytes", field="length")
        if layout is not None and layout.payload is not None:
            record.payload_length = reader.remaining
            if layout.payload.head and not broken:    # a look at its start, not consumed
                record.fields[layout.payload.id + "_head"] = self.source.peek(
                    min(layout.payload.head, reader.remaining))
        names = ctx.names(record.fields, body_length=record.length)
        length_failed = False
        if not broken:
            length_failed = self._check_length(ctx, rtype.field_length, record, names)
            if not length_failed and reader.remaining and layout is not None \
                    and layout.payload is None:
                ctx.error(f"{reader.remaining} bytes beyond the body's fields "
                          f"(body length {record.length})")
            for path, message, severity in layout.check(record.fields, names) if layout else []:
                ctx.diagnose(severity, message, field=path)
            if layout is not None:
                self._enum_warnings(ctx, layout, record.fields,
                                    lambda m, f: ctx.warning(m, field=f))
            self._run_conditions(ctx, rtype.checks, names)
        action: Action | None = None
        handler = ctx.format.handlers.get(rtype.name)
        if handler is not None and not broken and not length_failed:
            result = handler(record, ctx)
            if result is not None:
                action = result
        fields = {f.id for f in layout.fields} if layout is not None and broken else set()
        for key, expr in rtype.set.items():
            if not expr.names & fields:  # a broken body still sets what needs no field
                ctx.state[key] = self._eval(expr, names, ctx, rtype.name)
        for inference in rtype.infer:
            if inference.when is None or self._eval(inference.when, names, ctx, rtype.name):
                ctx.marks.add(inference.mark)
        if rtype.summary is not None and not broken and record.summary is None:
            record.summary = self._render(rtype.summary, names, ctx, rtype.name)
        self.consumer.on_record(record)
        if record.payload_length:
            record.payload_offset = self.source.offset
            factory = ctx.format.scanners.get(rtype.name) if record.decoded else None
            self._deliver_payload(record, factory(record, ctx) if factory else None)
            reader.remaining = 0
        else:
            reader.skip_rest()
        return action

    def _deliver_payload(self, record: Record, scanner: Any = None) -> None:
        """The payload to the consumer when it wants it, and to the plugin's *scanner*
        (``xenmig_payload_scanner``) if any; otherwise it is skipped unread."""
        what = f"record {record.index} ({record.name}) payload"
        wanted = self.consumer.wants_payload(record)
        if not wanted and scanner is None:
            self.source.skip(record.payload_length, what)
            return
        if self._payload_buffer is None:
            self._payload_buffer = memoryview(bytearray(PAYLOAD_BUFFER_SIZE))
        position = 0
        for chunk in self.source.iter_chunks(record.payload_length, self._payload_buffer, what):
            if scanner is not None:
                scanner.feed(chunk)
            if wanted:
                self.consumer.on_payload(record, position, chunk)
            position += len(chunk)
        if scanner is not None:
            scanner.finish()

    def _padding(self, ctx: StreamContext, record: Record, align: int, zero: bool) -> None:
        pad = -record.length % align
        if not pad:
            return
        data = self.source.read_exact(pad, f"record {record.index} padding")
        record.padding = data
        if zero and any(data):
            ctx.error(f"padding contains non-zero bytes: {data.hex()}", field="padding",
                      record=record)

    # -- rules ---------------------------------------------------------------------------
    def _check_rules(self, ctx: StreamContext, record: Record, rtype: RecordType) -> None:
        names = None
        for rule in rtype.rules:
            if rule.when is not None:
                names = names or ctx.names()
                if not self._eval(rule.when, names, ctx, rtype.name):
                    continue
            problem = self._rule_problem(ctx, rtype, rule)
            if problem is None:
                continue
            if rule.message is not None:
                problem = self._render(rule.message, ctx.names(), ctx, rtype.name)
            ctx.diagnose(rule.severity, problem, rule=rule.id)

    @staticmethod
    def _rule_problem(ctx: StreamContext, rtype: RecordType, rule: LayoutRule) -> str | None:
        if rule.kind == "after":
            missing = [m for m in rule.arg if m not in ctx.marks]
            return f"{rtype.name} before {', '.join(missing)}" if missing else None
        if rule.kind == "before":
            present = [m for m in rule.arg if m in ctx.marks]
            return f"{rtype.name} after {', '.join(present)}" if present else None
        seen = ctx.counts[rtype.name]
        if seen >= rule.arg:
            times = "once" if rule.arg == 1 else f"{rule.arg} times"
            return f"{rtype.name} may appear at most {times} (this is number {seen + 1})"
        return None

    def _check_length(self, ctx: StreamContext, rules: list[LengthRule], record: Record,
                      names: Any) -> bool:
        failed = False
        length = record.length
        for rule in rules:
            if rule.when is not None and not self._eval(rule.when, names, ctx, record.name):
                continue
            measured = length - rule.after
            problem = None
            if rule.kind == "multiple_of":
                if measured % rule.arg:
                    whose = f"body length {length}" + (f" less {rule.after}" if rule.after else "")
                    problem = f"{whose} is not a multiple of {rule.arg}"
            elif rule.kind == "one_of":
                options = [self._value(v, names, ctx, record.name) for v in rule.arg]
                if length not in options:
                    problem = (f"body length {length}, expected "
                               f"{' or '.join(str(o) for o in options)}")
            else:
                bound = self._value(rule.arg, names, ctx, record.name)
                if rule.kind == "exact" and length != bound:
                    problem = f"body length {length}, expected {bound}"
                elif rule.kind == "min" and length < bound:
                    problem = f"body length {length}, expected at least {bound}"
                elif rule.kind == "max" and length > bound:
                    problem = f"body length {length}, expected at most {bound}"
            if problem:
                ctx.diagnose(rule.severity, problem, field="length", rule=rule.id)
                failed = failed or rule.severity == ERROR
        return failed

    def _run_conditions(self, ctx: StreamContext, conditions: list[Condition], names: Any,
                        header: HeaderSpec | None = None, offset: int | None = None) -> None:
        where = header.name if header else (ctx.current.name if ctx.current else ctx.name)
        for cond in conditions:
            if cond.when is not None and not self._eval(cond.when, names, ctx, where):
                continue
            if self._eval(cond.expr, names, ctx, where):
                continue
            message = self._render(cond.message, names, ctx, where)
            if header is not None:
                self._header_diag(ctx, header, offset or 0, cond.severity, message, cond.field,
                                  rule=cond.id)
            else:
                ctx.diagnose(cond.severity, message, field=cond.field,
                          record=ctx.current or ctx.last_record, rule=cond.id)

    def _enum_warnings(self, ctx: StreamContext, layout: Any, fields: dict[str, Any],
                       warn: Callable[[str, str], None]) -> None:
        for spec in layout.fields:
            if spec.enum and spec.id in fields:
                entry = ctx.format.spec.enums[spec.enum].entries.get(fields[spec.id])
                if entry is not None and entry.warn:
                    warn(entry.warn, spec.id)

    # -- expressions ---------------------------------------------------------------------
    @staticmethod
    def _eval(expr: Expression, names: Any, ctx: StreamContext, where: str) -> Any:
        return evaluate(expr, names, context=f"format {ctx.name}, {where}")

    def _value(self, value: Any, names: Any, ctx: StreamContext, where: str) -> Any:
        return self._eval(value, names, ctx, where) if isinstance(value, Expression) else value

    @staticmethod
    def _render(template: Any, names: Any, ctx: StreamContext, where: str) -> str:
        return render(template, names, context=f"format {ctx.name}, {where}")
