"""Compiled records: one generated Python function per record type and byte order.

The general dispatch (:mod:`~xenmig_core.engine.dispatch`) interprets a record type's plan
for every record: a reader object, a decode through the layout's segments, a mapping of
names per expression, a loop per rule kind. For a type whose plan this module can express,
it generates instead, when the type is first met in a walk, one function that does the
same for that type in straight-line code: the fields are unpacked from the source's read
buffer into local variables, and every spec expression is inlined with its names resolved
once (a field is a local, ``body_length`` the length, a declared state value one dict
look-up, anything else the context's names, as the general code would find it).

Contract, per record: the function first checks, without side effects, everything that
could make the record *broken* (its length rules, a body too short for its fields, bytes
beyond them, a body not yet in the read buffer) and returns None when any would fail: the
engine then runs the general dispatch for that record, which reports exactly what it
always did. Otherwise it consumes the header and fields and does what the general code
does in the same order; a guard that does not pass (a check fails, a spec expression
raises) runs that step the general way, so diagnostics, their order and their offsets, and
spec errors are the same. Plugin handlers, scanners and consumers are called exactly as
the general code calls them.

A record type with something the generated code does not express (a layout with structs,
a payload ``head``, an expression with a comprehension) gets no function: all its records
take the general path.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable

from xenmig_core.engine.caps import kind_of
from xenmig_core.engine.consumer import Consumer
from xenmig_core.engine.context import (
    CONTEXT_HELPERS,
    CONTINUE,
    RECORD_FIELDS,
    Action,
    Record,
)
from xenmig_core.engine.guards import Unguarded, checked_fields, field_tests, rules_tests
from xenmig_core.spec.expr import EVAL_ERRORS, Expression
from xenmig_core.spec.layout import NATIVE_ORDER, ByteField, FixedRun, IntArray

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

    from xenmig_core.engine.dispatch import RecordPlan
    from xenmig_core.registry import Format

#: What :func:`compile_record` generates: called with the engine, a context and the
#: engine's source, it returns the record function bound to them (one per context), whose
#: arguments are the source's read buffer as ``source.buffered`` gave it (the record header
#: at ``lo``, ``have`` bytes buffered) and the header's length field. That returns the
#: record's action, or None (nothing consumed).
Compiled = Callable[..., "Any"]
#: The names, bound once per context, by which the record function reads the context's
#: state, names, marks and counts (only those its body reads are bound)
_PROLOGUE = (("_S", "ctx.state"), ("_N", "ctx.bare_names"), ("_H", "ctx.helpers"),
             ("_marks", "ctx.marks"), ("_counts", "ctx.counts"))


def _rename(expr: Expression, resolve: Callable[[str], str]) -> str:
    """Python source of *expr* with every name replaced by ``resolve(name)``."""
    if expr.scoped:
        raise Unguarded
    import ast  # (here: a run that generates no record code needs no ast)

    class _Names(ast.NodeTransformer):
        def visit_Name(self, node: ast.Name) -> ast.AST:
            if not isinstance(node.ctx, ast.Load):
                return node
            return ast.copy_location(ast.parse(resolve(node.id), mode="eval").body, node)

    tree = _Names().visit(ast.parse(expr.source.strip(), mode="eval"))
    return f"({ast.unparse(tree)})"


class _Writer:
    """Lines of generated source with their indentation, and the constants they use."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.scope: dict[str, Any] = {}
        self.depth = 2          # (the record function's body, inside the one that binds it)

    def __call__(self, *lines: str) -> None:
        self.lines.extend("    " * self.depth + line for line in lines)

    def const(self, value: Any, hint: str = "K") -> str:
        name = f"_{hint}{len(self.scope)}"
        self.scope[name] = value
        return name


def compile_record(plan: RecordPlan, fmt: Format, order: str,
                   idle: frozenset[str] = frozenset(), summaries: bool = True
                   ) -> Compiled | None:
    """The generated code for *plan*'s record type in byte order *order* (``<`` or ``>``;
    see :data:`Compiled`), or None when the type must take the general path. *idle*: the consumer
    callbacks (``on_record``, ``wants_payload``, ``on_record_end``) that are the base
    consumer's no-ops for the whole walk, which the function then does not call;
    *summaries*: whether the walk renders spec summaries (fixed for a walk)."""
    try:
        return _Builder(plan, fmt, order, idle, summaries).build()
    except Unguarded:
        return None


def idle_callbacks(consumer: Any) -> frozenset[str]:
    """The per-record callbacks of *consumer* that are :class:`Consumer`'s own no-ops (not
    overridden by its class nor set on the instance)."""
    own = getattr(consumer, "__dict__", {})
    return frozenset(name for name in ("on_record", "wants_payload", "on_record_end")
                     if name not in own
                     and getattr(type(consumer), name, None) is getattr(Consumer, name))


class _Builder:
    def __init__(self, plan: RecordPlan, fmt: Format, order: str,
                 idle: frozenset[str] = frozenset(), summaries: bool = True) -> None:
        self.plan = plan
        self.idle = idle
        self.summaries = summaries
        self.rtype = plan.rtype
        self.fmt = fmt
        self.order = order
        spec = fmt.spec
        framing = spec.framing
        if framing is None or framing.implied or (
                plan.payload is not None and plan.payload.head):
            raise Unguarded
        self.framing = framing
        self.state = frozenset(spec.state)
        self.locals: dict[str, str] = {}      # field id -> local variable
        self.w = _Writer()
        #: the body length a static ``exact`` rule fixes (the function takes no other), or None
        self.exact: int | None = next(
            (rule.arg for rule in plan.static_length if rule.kind == "exact"
             and isinstance(rule.arg, int) and not isinstance(rule.arg, bool)), None)

    # -- names ---------------------------------------------------------------------------
    def _record_name(self, name: str) -> str:
        """How a record expression (fields, body_length, state) reads *name*."""
        if name == "body_length":
            return "_L"
        if name in self.locals:
            return self.locals[name]
        return self._state_name(name)

    def _state_name(self, name: str) -> str:
        """How a rule's ``when`` (the context's names: no field, no body_length) reads it:
        as the context's names would, state first (live), then the context's helpers
        (``_H``), then the format's (``_G``)."""
        if name in self.state:
            return f"_S[{name!r}]"
        if name in CONTEXT_HELPERS:
            return f"(_S[{name!r}] if {name!r} in _S else _H[{name!r}])"
        if name in self.fmt.helpers:
            return f"(_S[{name!r}] if {name!r} in _S else _G[{name!r}])"
        # (a value the walk puts in state, e.g. ``nested``: found there without the
        # names' fallback search)
        return f"(_S[{name!r}] if {name!r} in _S else _N[{name!r}])"

    def _later_name(self, name: str) -> str:
        """How an expression after a plugin handler reads *name*: the record's fields as
        the handler left them (``_F``), then as :meth:`_state_name`."""
        if name == "body_length":
            return "_L"
        return f"(_F[{name!r}] if {name!r} in _F else {self._state_name(name)})"

    def expr(self, value: Any) -> str:
        """Source of a rule argument or expression over the record's names."""
        if isinstance(value, Expression):
            return _rename(value, self._record_name)
        if isinstance(value, int) and not isinstance(value, bool):
            return repr(value)
        raise Unguarded

    # -- the function --------------------------------------------------------------------
    def build(self) -> Compiled:
        plan, w = self.plan, self.w
        if self.exact is None or self.exact > self.framing.max_length:
            w(f"if length > {self.framing.max_length}:", "    return None")
        for rule in plan.static_length:
            w(f"if not ({self._length_test(rule)}):", "    return None")
        w.scope["_G"] = self.fmt.helpers
        w("try:")
        w.depth += 1
        w(f"p = lo + {self.fmt.record_header(self.order).size}", "rem = length")
        self._decode()
        for rule in plan.field_length:
            test = self._length_test(rule)
            if rule.when is not None:
                test = f"not {self.expr(rule.when)} or ({test})"
            w(f"if not ({test}):", "    return None")
        w.depth -= 1
        w("except _EVAL_ERRORS:", "    return None")
        self._commit()
        self._checks()
        self._after_checks()
        return self._compile()

    def _length_test(self, rule: Any) -> str:
        if rule.kind == "multiple_of":
            return f"not (length - {rule.after}) % {int(rule.arg)}"
        if rule.kind == "one_of":
            return f"length in ({', '.join(self.expr(v) for v in rule.arg)},)"
        op = {"exact": "==", "min": ">=", "max": "<="}.get(rule.kind)
        if op is None:
            raise Unguarded
        return f"length {op} {self.expr(rule.arg)}"

    def _need(self, n: str) -> None:
        """Generated: the next *n* bytes of the body are in the buffer at ``p``, or None."""
        self.w(f"q = p - lo + {n}",
               "if q > have:",
               "    p -= lo",
               "    buf, lo, have = src.buffered(q)",
               "    p += lo",
               "    if q > have:",
               "        return None")

    def _count(self, source: Any, item: int) -> str:
        if isinstance(source, int):
            return repr(source)
        if source == "rest":
            if item > 1:
                self.w(f"if rem % {item}:", "    return None")
            return f"rem // {item}" if item > 1 else "rem"
        if source in self.locals:
            return self.locals[source]
        raise Unguarded

    def _decode(self) -> None:
        layout = self.plan.layout
        w = self.w
        if layout is None:
            if self.plan.bodyless:
                w("if length:", "    return None")
            return
        for segment in layout.segments:
            if isinstance(segment, FixedRun):
                names = []
                for spec in segment.fields:
                    names.append(self.locals.setdefault(spec.id, f"f{len(self.locals)}"))
                st = w.const(segment.structs[self.order], "ST")
                w(f"if rem < {segment.size}:", "    return None")
                self._need(str(segment.size))
                w(f"{', '.join(names)}, = {st}.unpack_from(buf, p)",
                  f"p += {segment.size}", f"rem -= {segment.size}")
            elif isinstance(segment, IntArray):
                spec = segment.spec
                count = self._count(spec.repeat, segment.itemsize)
                local = self.locals.setdefault(spec.id, f"f{len(self.locals)}")
                w(f"need = {count} * {segment.itemsize}", "if need > rem:", "    return None")
                self._need("need")
                w(f"{local} = _array({segment.array_code!r}, buf[p:p + need])")
                if self.order != NATIVE_ORDER:
                    w(f"{local}.byteswap()")
                w("p += need", "rem -= need")
            elif isinstance(segment, ByteField):
                spec = segment.spec
                count = self._count(spec.size, 1)
                local = self.locals.setdefault(spec.id, f"f{len(self.locals)}")
                w(f"need = {count}", "if need > rem:", "    return None")
                self._need("need")
                w(f"{local} = bytes(buf[p:p + need])", "p += need", "rem -= need")
            else:
                raise Unguarded
        if layout.payload is None:
            w("if rem:", "    return None")

    def _commit(self) -> None:
        """Generated: consume the header and fields; the Record; the steps before checks."""
        plan, w, rtype = self.plan, self.w, self.rtype
        taken = "p - lo" if plan.layout is not None else \
            str(self.fmt.record_header(self.order).size)
        w(f"src._lo = {'p' if plan.layout is not None else f'lo + {taken}'}",
          "offset = src.offset", f"src.offset = offset + {taken}")   # consumed (all buffered)
        fields = ", ".join(f"{k!r}: {v}" for k, v in self.locals.items())
        payload = "rem" if plan.payload is not None else "0"
        optional = bool(rtype.id & self.framing.optional_mask)
        w("index = eng._next_index", "eng._next_index = index + 1")
        self._new_record(index="index", offset="offset", type_id=repr(rtype.id),
                         name=repr(rtype.name), length="length", context="ctx",
                         rtype="_RTYPE", fields=f"{{{fields}}}", payload_length=payload,
                         optional=repr(optional), decoded=repr(plan.layout is not None))
        w("ctx.current = record")
        w.scope.update(_RTYPE=rtype, _PLAN=plan, _array=array,
                       _EVAL_ERRORS=EVAL_ERRORS, _CONTINUE=CONTINUE, bytes=bytes)
        if plan.reject is not None:
            w("ctx.error(eng._render(_RTYPE.reject, ctx.names(), ctx, record.name))")
        if plan.versions is not None or plan.rules:
            constants: dict[str, Any] = {}
            try:
                tests = rules_tests(rtype.name, plan.versions, plan.rules,
                                    lambda e: _rename(e, self._state_name), constants)
            except Unguarded:
                tests = ["False"]
            w.scope.update(constants)
            self._guarded(" and ".join(f"({t})" for t in tests),
                          "eng._rules_phase(ctx, record, _PLAN)")

    def _new_record(self, **values: str) -> None:
        """Generated: ``record``, a :class:`Record` of these attribute *values* (source) and
        the class's defaults for the others, its attributes set one by one (the class's
        ``__init__`` binding fourteen arguments costs more)."""
        w = self.w
        w.scope.update(_new=object.__new__, _Record=Record)
        w("record = _new(_Record)")
        for name, default in RECORD_FIELDS:
            value = values.pop(name, None)
            if value is None:
                if default is dict:
                    value = "{}"
                elif default is None or type(default) in (bool, int, str, bytes):
                    value = repr(default)
                else:       # (a required field not given: the general path)
                    raise Unguarded
            w(f"record.{name} = {value}")
        if values:
            raise Unguarded

    def _guarded(self, test: str, general: str) -> None:
        """Generated: *general* runs when *test* is false or raises a spec error."""
        self.w("try:", f"    ok = {test}", "except _EVAL_ERRORS:", "    ok = False",
               "if not ok:", f"    {general}")

    def _checks(self) -> None:
        plan, w = self.plan, self.w
        layout = plan.layout
        if plan.has_checks:
            assert layout is not None
            try:
                tests = []
                constants: dict[str, Any] = {}
                for spec in checked_fields(layout):
                    if spec.payload:
                        continue      # never decoded: the general code skips it too
                    tests += field_tests(spec, self.locals[spec.id], self.expr, constants)
                w.scope.update(constants)
                test = " and ".join(f"({t})" for t in tests) or "True"
            except Unguarded:
                test = "False"
            self._guarded(test, "eng._field_checks(ctx, record, _PLAN, "
                                "eng._names_of(ctx, record))")
        for field_id, warns in plan.enum_warns:
            spec = next(f for f in layout.fields if f.id == field_id) if layout else None
            if spec is None or not spec.is_int or spec.repeat is not None:
                raise Unguarded
            table = w.const(warns, "W")
            w(f"warning = {table}.get({self.locals[field_id]})",
              "if warning:", f"    ctx.warning(warning, field={field_id!r})")
        for i, cond in enumerate(plan.checks):     # each on its own: its report in order
            test = self.expr(cond.expr)
            if cond.when is not None:
                test = f"not {self.expr(cond.when)} or {test}"
            general = f"eng._run_conditions(ctx, _RTYPE.checks[{i}:{i + 1}], " \
                "eng._names_of(ctx, record))"
            w("try:", f"    ok = {test}", "except _EVAL_ERRORS:", "    ok = None",
              "if not ok:")
            if "{" in cond.message.source:       # a message that needs the record's names
                w(f"    {general}")
            else:                               # a fixed message: reported right here
                # (the caps' verdict on its kind, computed once: a repeated one is
                # dropped without building anything)
                kind = w.const(kind_of(self.fmt.name, self.rtype.name, cond.severity,
                                       cond.field, cond.message.source), "D")
                w("    if ok is None:", f"        {general}",
                  f"    elif not eng._caps.drop_kind({kind}, {cond.severity!r}):",
                  f"        ctx.diagnose({cond.severity!r}, {cond.message.source!r}, "
                  f"field={cond.field!r}, record=record, rule={cond.id!r})")

    def _after_checks(self) -> None:
        """Generated: the handler, ``set``, ``infer``, the summary, the consumer, the payload
        or the rest of the body, the padding, the control, counts and marks."""
        plan, w, rtype = self.plan, self.w, self.rtype
        # (no handler, and no control or one that always applies: the action is fixed,
        # returned at the end)
        control = rtype.control
        self.fixed_action: str | None = None
        if plan.handler is None and control is None:
            self.fixed_action = "_CONTINUE"
        elif plan.handler is None and control.when is None and control.kind != "resume":
            self.fixed_action = w.const(Action(control.kind, control.format), "A")
        if self.fixed_action is None:
            w("action = None")
        names = "eng._names_of(ctx, record)"
        resolve = self._record_name
        if plan.handler is not None:
            handler = plan.handler
            raw = getattr(handler, "__wrapped__", None)
            guard = getattr(handler, "guard", None)
            if raw is not None and guard is not None:   # the registry's guard, inline
                w.scope.update(_HANDLER=raw, _PASSED=guard[0], _PLUGIN_ERROR=guard[1],
                               _Exception=Exception)
                w("try:", "    result = _HANDLER(record, ctx)", "except _PASSED:",
                  "    raise", "except _Exception as exc:",
                  "    raise _PLUGIN_ERROR(exc) from exc")
            else:
                w.scope["_HANDLER"] = handler
                w("result = _HANDLER(record, ctx)")
            w("if result is not None:", "    action = result")
            if plan.set or plan.infer:       # what the handler added to the fields is seen
                w("_F = record.fields")
                resolve = self._later_name
        for i, (key, expr) in enumerate(plan.set):
            w("try:", f"    value = {_rename(expr, resolve)}", "except _EVAL_ERRORS:",
              f"    value = eng._eval(_PLAN.set[{i}][1], {names}, ctx, record.name)",
              f"_S[{key!r}] = value")
        for i, inference in enumerate(plan.infer):
            if inference.when is None:
                w(f"ctx.marks.add({inference.mark!r})")
                continue
            w("try:", f"    ok = {_rename(inference.when, resolve)}", "except _EVAL_ERRORS:",
              f"    ok = eng._eval(_PLAN.infer[{i}].when, {names}, ctx, record.name)",
              "if ok:", f"    ctx.marks.add({inference.mark!r})")
        if plan.summary is not None and self.summaries:
            w("if record.summary is None:",
              "    record.summary = eng._render(_RTYPE.summary, eng._names_of(ctx, record), "
              "ctx, record.name)")
        if "on_record" not in self.idle:
            w("eng.consumer.on_record(record)")
        if plan.payload is not None:
            w("pl = record.payload_length", "if pl:", "    record.payload_offset = src.offset")
            if self.fmt.scanners.get(rtype.name) is None:
                skip = "if"
                if "wants_payload" not in self.idle:
                    w("    if eng.consumer.wants_payload(record):",
                      "        eng._deliver_payload(record, None, True)")
                    skip = "elif"
                w(f"    {skip} pl <= src._hi - src._lo:",   # buffered
                  "        src._lo += pl",
                  "        src.offset += pl",
                  "    else:",
                  "        src.skip(pl, "
                  f"{'record %d (' + rtype.name.replace('%', '%%') + ') payload'!r}, index)")
            else:
                w.scope["_SCANNER"] = self.fmt.scanners[rtype.name]
                w("    eng._deliver_payload(record, _SCANNER(record, ctx))")
        elif plan.layout is None and self.exact != 0:
            w("if length:", "    src.skip(length, 'record %d body', index)")
        align = self.framing.align
        if align > 1 and (self.exact is None or self.exact % align):
            w(f"if length % {align}:",
              f"    eng._padding(ctx, record, {align}, {self.framing.padding_must_be_zero})")
        self._control()
        w(f"_counts[{rtype.name!r}] += 1", f"if {rtype.name!r} not in _marks:",
          f"    _marks.add({rtype.name!r})", "ctx.last_record = record")
        if "on_record_end" not in self.idle:
            w("eng.consumer.on_record_end(record)")
        w("ctx.current = None", f"return {self.fixed_action or 'action'}")

    def _control(self) -> None:
        """Generated: the spec's ``control`` when the handler chose no action. A ``when``
        is evaluated inline (with ``next_type`` peeked as the general code peeks it); a
        ``resume`` that finds nothing to resume goes the general way, which reports it."""
        w, control = self.w, self.rtype.control
        if self.fixed_action is not None:
            return
        if control is None:
            w("if action is None:", "    action = _CONTINUE")
            return
        action = w.const(Action(control.kind, control.format), "A")   # immutable: shared
        w("if action is None:")
        w.depth += 1
        general = "eng._control(ctx, record, _RTYPE)"
        if control.when is not None:
            fields = self._later_name if self.plan.handler is not None else self._record_name

            def resolve(name: str) -> str:
                return "_T" if name == "next_type" else fields(name)

            if self.plan.handler is not None:
                w("_F = record.fields")
            w("_T = eng._next_type(ctx)", "try:", f"    ok = {_rename(control.when, resolve)}",
              "except _EVAL_ERRORS:", "    ok = None")
            w("if ok is None:", f"    action = {general}", "elif not ok:",
              "    action = _CONTINUE")
            w("else:")
            w.depth += 1
        if control.kind == "resume":
            w(f"child = ctx.children.get({control.format!r})",
              "if child is None or not child.suspended:", f"    action = {general}",
              "else:", f"    action = {action}")
        else:
            w(f"action = {action}")
        if control.when is not None:
            w.depth -= 1
        w.depth -= 1

    def _compile(self) -> Compiled:
        body = "\n".join(self.w.lines)
        prologue = [f"    {name} = {value}\n" for name, value in _PROLOGUE
                    if re.search(rf"\b{name}\b", body)]       # only what the body reads
        source = "def _bind(eng, ctx, src):\n" + "".join(prologue) + \
            "    def _record(buf, lo, have, length):\n" + \
            ("        _L = length\n" if re.search(r"\b_L\b", body) else "") + \
            body + "\n    return _record\n"
        scope: dict[str, Any] = {"__builtins__": {}, **self.w.scope}
        exec(compile(source, f"<record {self.fmt.name}.{self.rtype.name}>", "exec"), scope)
        bind = scope["_bind"]

        def bound(eng: Any, ctx: Any, src: Any) -> Callable[..., Any]:
            function = bind(eng, ctx, src)
            function.source = source      # for debugging: what was generated
            return function  # type: ignore[no-any-return]
        bound.source = source  # type: ignore[attr-defined]
        return bound
