"""Dispatch: one framed record decoded, checked, handed to its plugin handler and delivered.

For each record type the engine builds, on first use, a :class:`RecordPlan`: what the spec
and the plugins ask of that type (length rules, field checks, enum warnings, conditions, a
handler, state updates, marks, a summary) resolved once, so that a record runs exactly the
steps its type has and no others. The order of the steps, and so the order of diagnostics,
is the same for every record type (see :meth:`Dispatch._dispatch`).
"""

from __future__ import annotations

from xenmig_core.engine.compiled import compile_record, idle_callbacks
from xenmig_core.engine.context import CONTINUE, Action, Record, StreamContext
from xenmig_core.engine.guards import Guard, conditions_guard, fields_guard, rules_guard
from xenmig_core.engine.reader import SourceReader
from xenmig_core.errors import RecordError, StreamError
from xenmig_core.spec.expr import EVAL_ERRORS, Names

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from xenmig_core.engine.consumer import Consumer
    from xenmig_core.registry import Format
    from xenmig_core.source import ByteSource
    from xenmig_core.spec.model import RecordType

#: Payloads a consumer wants arrive through one reusable buffer of this size.
PAYLOAD_BUFFER_SIZE = 1 << 20
#: A body longer than this whose layout loads a variable amount has the length rules over
#: its leading fixed fields checked before the rest is read (see RecordPlan.early_length).
EARLY_LENGTH_MIN = 1 << 20


def _rule_names(rule: Any) -> frozenset[str]:
    """The names a length rule's ``when`` and argument(s) read."""
    names: set[str] = set()
    for part in (rule.when, *(rule.arg if isinstance(rule.arg, tuple) else (rule.arg,))):
        names.update(getattr(part, "names", ()))
    return frozenset(names)


class RecordPlan:
    """What one record type of one format asks for, resolved once per walk."""

    __slots__ = ("bodyless", "checks", "checks_guard", "compiled", "early_length", "enum_warns",
                 "field_ids", "field_length", "fields_guard", "handler", "has_checks", "infer",
                 "late_length", "layout", "needs_names", "payload", "reject", "rtype", "rules",
                 "rules_guard", "rules_need_names", "set", "static_length", "summary",
                 "unread", "versions")

    def __init__(self, fmt: Format, rtype: RecordType) -> None:
        layout = rtype.layout
        self.rtype = rtype
        self.reject = rtype.reject
        self.versions = rtype.versions
        self.rules = rtype.rules
        self.static_length = rtype.static_length
        self.field_length = rtype.field_length
        self.layout = layout
        self.payload = layout.payload if layout is not None else None
        self.has_checks = layout is not None and layout.has_checks
        #: (field id, {value: warning}) for each enum field some of whose values warn
        self.enum_warns: list[tuple[str, dict[int, str]]] = []
        for spec in layout.fields if layout is not None else ():
            if spec.enum:
                warns = {value: entry.warn for value, entry
                         in fmt.spec.enums[spec.enum].entries.items() if entry.warn}
                if warns:
                    self.enum_warns.append((spec.id, warns))
        self.field_ids = frozenset(f.id for f in layout.fields) if layout else frozenset()
        #: the fields after the layout's lead, and the length rules that need none of them:
        #: for a long body these are checked once the lead is decoded, before the rest is
        #: read, so that a length the record's own fields rule out is never loaded
        self.unread = self.field_ids - frozenset(layout.lead) if layout else frozenset()
        self.early_length = [rule for rule in self.field_length
                             if not _rule_names(rule) & self.unread] \
            if layout is not None and layout.lead and layout.variable else []
        self.late_length = [rule for rule in self.field_length
                            if rule not in self.early_length]
        self.checks = rtype.checks
        self.handler: Callable[..., Any] | None = fmt.handlers.get(rtype.name)
        self.set = list(rtype.set.items())
        self.infer = rtype.infer
        self.summary = rtype.summary
        #: a record of this type must have an empty body
        self.bodyless = layout is None and not rtype.length
        self.needs_names = bool(self.field_length or self.has_checks or self.checks
                                or self.set or self.infer)
        # generated once: "nothing to report" in one call for a valid record (see guards)
        self.rules_guard = rules_guard(rtype.name, rtype.versions, rtype.rules) \
            if rtype.versions is not None or rtype.rules else None
        self.rules_need_names = any(rule.when is not None for rule in rtype.rules)
        self.fields_guard = fields_guard(rtype.name, layout) \
            if layout is not None and self.has_checks else None
        self.checks_guard = conditions_guard(rtype.name, rtype.checks) if rtype.checks \
            else None
        #: the generated function per byte order (see :mod:`~xenmig_core.engine.compiled`)
        self.compiled: dict[str, Any] = {}


def _passes(guard: Guard, *args: Any) -> bool:
    """True when *guard* says there is nothing to report; False also when a spec
    expression failed inside it (the general code then raises the SpecError naming it)."""
    try:
        return guard(*args)
    except EVAL_ERRORS:
        return False


class Dispatch:
    """The engine's record dispatch (a part of :class:`~xenmig_core.engine.walk.Engine`)."""

    source: ByteSource
    consumer: Consumer
    _next_index: int
    _payload_buffer: memoryview | None
    _plans: dict[tuple[int, int], RecordPlan]
    _summaries: bool

    # provided by the other parts of the engine
    _padding: Callable[..., None]
    _check_rules: Callable[..., None]
    _check_length: Callable[..., bool]
    _run_conditions: Callable[..., None]
    _eval: Callable[..., Any]
    _render: Callable[..., str]
    _nothing_to_resume: Callable[..., str]

    def walker_record(self, ctx: StreamContext, type_id: int, length: int
                      ) -> tuple[Record, Action]:
        """For walkers of implied framing: the next *length* bytes of the source are one unit
        of record type *type_id* (its header, if any, included). They are decoded, checked,
        dispatched and delivered exactly like a type-length record's body (no padding).
        Returns the record (fields decoded, handler run) and the action it asks for."""
        return self._unit(ctx, self.source.offset, type_id, length, 1)

    def _plan(self, fmt: Format, rtype: RecordType) -> RecordPlan:
        key = (id(fmt), id(rtype))
        plan = self._plans.get(key)
        if plan is None or plan.rtype is not rtype:
            plan = self._plans[key] = RecordPlan(fmt, rtype)
        return plan

    def _compiled(self, ctx: StreamContext, type_id: int, order: str) -> Any:
        """The compiled function of *ctx*'s record type *type_id* in byte order *order*,
        bound to *ctx* and the engine's source, or None (an unknown type, or one the
        generated code cannot express)."""
        rtype = ctx.format.spec.records.get(type_id)
        if rtype is None:
            return None
        plan = ctx.plans.get(type_id)
        if plan is None or plan.rtype is not rtype:
            plan = ctx.plans[type_id] = self._plan(ctx.format, rtype)
        if order not in plan.compiled:
            plan.compiled[order] = compile_record(
                plan, ctx.format, order, idle_callbacks(self.consumer), self._summaries)
        bind = plan.compiled[order]
        return None if bind is None else bind(self, ctx, self.source)

    def _unit(self, ctx: StreamContext, offset: int, type_id: int, length: int,
              align: int) -> tuple[Record, Action]:
        """One record of *ctx* at *offset* whose header said *type_id* and *length*: the
        body, its padding to *align*, the control action; counts, marks, consumer calls."""
        spec = ctx.format.spec
        framing = spec.framing
        assert framing is not None
        plan = ctx.plans.get(type_id)
        if plan is not None:
            rtype = plan.rtype
        else:
            rtype = spec.records.get(type_id)
            if rtype is not None:
                plan = ctx.plans[type_id] = self._plan(ctx.format, rtype)
        record = Record(self._next_index, offset, type_id,
                        rtype.name if rtype else f"{type_id:#010x}", length, ctx, rtype,
                        optional=bool(type_id & framing.optional_mask))
        self._next_index += 1
        ctx.current = record
        if length > framing.max_length:
            raise StreamError(f"body length {length:#x} exceeds the format's maximum "
                              f"{framing.max_length:#x}", field="length")
        action: Action | None = CONTINUE
        if plan is None:
            self._unknown_record(ctx, record)
            self.source.skip(length, f"record {record.index} body")
        else:
            action = self._dispatch(ctx, record, plan)
        if length % align:
            self._padding(ctx, record, align, framing.padding_must_be_zero)
        if action is None:
            assert rtype is not None
            action = self._control(ctx, record, rtype) if rtype.control is not None \
                else CONTINUE
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

    def _dispatch(self, ctx: StreamContext, record: Record, plan: RecordPlan
                  ) -> Action | None:
        """Decode, check and hand one known record to its handler. Returns the handler's
        action, or None when the spec's ``control`` decides (after the padding is read).

        The steps, in order: ``reject``, ``versions``, ``rules``; length rules that need no
        field; decoding (a body of the wrong size for those rules is not decoded: "body
        length 4, expected at least 8" says more than a short read inside it); the payload's
        ``head``; length rules that need fields; bytes beyond the fields; field checks; enum
        warnings; ``checks``; the plugin handler (not for a broken body); ``set`` (a broken
        body still sets what needs no field); ``infer``; the summary (only when the consumer
        wants summaries); the consumer's ``on_record``; the payload, delivered or skipped."""
        rtype = plan.rtype
        if plan.reject is not None:
            ctx.error(self._render(plan.reject, ctx.names(), ctx, rtype.name))
        if (plan.versions is not None or plan.rules) and (
                plan.rules_guard is None or not _passes(
                    plan.rules_guard, ctx.names() if plan.rules_need_names else None,
                    ctx.marks, ctx.counts, ctx.state)):
            self._rules_phase(ctx, record, plan)
        length = record.length
        layout = plan.layout
        broken = bool(plan.static_length) and self._check_length(ctx, plan.static_length,
                                                                  record, None)
        reader = None
        early_failed = False
        if broken:
            pass
        elif layout is not None:
            reader = SourceReader(self.source, length, record.index)
            try:
                if plan.early_length and length > EARLY_LENGTH_MIN:
                    early_failed = self._decode_early(ctx, record, plan, reader)
                else:
                    record.fields = layout.decode(reader, ctx.byte_order)
                    record.decoded = True
            except RecordError as exc:
                ctx.error(exc.message, field=exc.field)
                broken = True
        elif length and plan.bodyless:
            broken = True
            ctx.error(f"{rtype.name} has no body, found {length} bytes", field="length")
        remaining = length if reader is None else reader.remaining
        payload = plan.payload
        if payload is not None:
            record.payload_length = remaining
            if payload.head and not broken:    # a look at its start, not consumed
                record.fields[payload.id + "_head"] = self.source.peek(
                    min(payload.head, remaining))
        summary = plan.summary if self._summaries else None
        names = None
        if plan.needs_names or summary is not None:
            names = Names(record.fields, ctx.name_fallback)
            names["body_length"] = length
        length_failed = early_failed
        if not broken:
            if early_failed:
                pass
            elif record.decoded is not True or not plan.early_length or \
                    length <= EARLY_LENGTH_MIN:
                if plan.field_length:
                    length_failed = self._check_length(ctx, plan.field_length, record, names)
            elif plan.late_length:
                length_failed = self._check_length(ctx, plan.late_length, record, names)
            if not length_failed and remaining and layout is not None and payload is None:
                ctx.error(f"{remaining} bytes beyond the body's fields "
                          f"(body length {length})")
            if plan.has_checks and (plan.fields_guard is None or not _passes(
                    plan.fields_guard, record.fields, names)):
                self._field_checks(ctx, record, plan, names)
            if plan.enum_warns:
                fields = record.fields
                for field_id, warns in plan.enum_warns:
                    if field_id in fields:
                        warning = warns.get(fields[field_id])
                        if warning:
                            ctx.warning(warning, field=field_id)
            if early_failed:        # the rest was never read: checks that need it wait
                self._run_conditions(ctx, [c for c in plan.checks if not (
                    c.expr.names | (c.when.names if c.when else frozenset())) & plan.unread],
                    names)
            elif plan.checks and (plan.checks_guard is None
                                  or not _passes(plan.checks_guard, names)):
                self._run_conditions(ctx, plan.checks, names)
        action: Action | None = None
        handler = plan.handler
        if handler is not None and not broken and not length_failed:
            result = handler(record, ctx)
            if result is not None:
                action = result
            if names is not None:   # what the handler added to the fields is seen
                names = Names(record.fields, ctx.name_fallback)
                names["body_length"] = length
        if plan.set:
            skip = plan.field_ids if broken else plan.unread if early_failed else frozenset()
            for key, expr in plan.set:
                if not expr.names & skip:  # a broken body still sets what needs no field
                    ctx.state[key] = self._eval(expr, names, ctx, rtype.name)
        for inference in plan.infer:
            if inference.when is None or self._eval(inference.when, names, ctx, rtype.name):
                ctx.marks.add(inference.mark)
        if summary is not None and not broken and not early_failed and record.summary is None:
            record.summary = self._render(summary, names, ctx, rtype.name)
        self.consumer.on_record(record)
        if record.payload_length:
            record.payload_offset = self.source.offset
            factory = ctx.format.scanners.get(rtype.name) if record.decoded else None
            self._deliver_payload(record, factory(record, ctx) if factory else None)
        elif remaining:
            self.source.skip(remaining, f"record {record.index} body")
        return action

    def _rules_phase(self, ctx: StreamContext, record: Record, plan: RecordPlan) -> None:
        """The record type's ``versions`` and ``rules``, the general way (its guard did not
        pass, or it has none)."""
        if plan.versions is not None:
            version = ctx.state.get("version")
            if version not in plan.versions:
                allowed = "/".join(f"v{v}" for v in plan.versions)
                ctx.error(f"{record.name} is a {allowed} record, found in a "
                          f"v{version} stream")
        if plan.rules:
            self._check_rules(ctx, record, plan.rtype)

    @staticmethod
    def _field_checks(ctx: StreamContext, record: Record, plan: RecordPlan,
                      names: Names | None) -> None:
        """The layout's field checks, the general way (reports every failed one)."""
        assert plan.layout is not None
        for path, message, severity in plan.layout.check(record.fields, names):
            ctx.diagnose(severity, message, field=path)

    @staticmethod
    def _names_of(ctx: StreamContext, record: Record) -> Names:
        """The names a record's expressions see: its fields, ``body_length``, the state."""
        names = Names(record.fields, ctx.name_fallback)
        names["body_length"] = record.length
        return names

    def _decode_early(self, ctx: StreamContext, record: Record, plan: RecordPlan,
                      reader: SourceReader) -> bool:
        """Decode a long body's lead, check the length rules that follow from it, and only
        then the rest. True when such a rule failed (error severity): the rest is not read
        (the caller skips it), and the fields after the lead stay undecoded."""
        layout = plan.layout
        assert layout is not None
        fields = record.fields = layout.decode_lead(reader, ctx.byte_order)
        names = Names(fields, ctx.name_fallback)
        names["body_length"] = record.length
        if self._check_length(ctx, plan.early_length, record, names, early=True):
            return True
        layout.decode_rest(reader, ctx.byte_order, fields)
        record.decoded = True
        return False

    def _deliver_payload(self, record: Record, scanner: Any = None,
                         wanted: bool | None = None) -> None:
        """The payload to the consumer when it wants it (*wanted*: its answer, when the
        caller already asked), and to the plugin's *scanner* (``xenmig_payload_scanner``)
        if any; otherwise it is skipped unread."""
        what = f"record {record.index} ({record.name}) payload"
        if wanted is None:
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
