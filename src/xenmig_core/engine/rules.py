"""Rule evaluation: where a record may stand, how long its body may be, the spec's checks.

Every spec expression of a walk is evaluated here (through :func:`~xenmig_core.spec.expr.
evaluate` and :func:`~xenmig_core.spec.expr.render`), so a failing one is always a SpecError
naming the format, the record or header, and the expression. Problems are reported through
the context (:meth:`StreamContext.diagnose`), at the current record unless said otherwise.
"""

from __future__ import annotations

from xenmig_core.diagnostics import ERROR, Diagnostic
from xenmig_core.spec.expr import EVAL_ERRORS, Expression, evaluate, render

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from xenmig_core.engine.context import Record, StreamContext
    from xenmig_core.spec.model import Condition, HeaderSpec, LayoutRule, LengthRule, RecordType


class RuleEvaluation:
    """The engine's rule evaluation (a part of :class:`~xenmig_core.engine.walk.Engine`)."""

    report: Callable[..., None]

    def _check_rules(self, ctx: StreamContext, record: Record, rtype: RecordType) -> None:
        """The record type's ``rules`` (after/before a mark, at most N times), before the
        body is read; a rule's own ``message`` replaces the engine's wording."""
        names = None
        for rule in rtype.rules:
            if rule.when is not None:
                if names is None:
                    names = ctx.names()
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
                      names: Any, early: bool = False) -> bool:
        """Check *rules* against the body length; True when an error-severity one failed.
        *early*: checked before the body was read (the message names the rule)."""
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
                if early:
                    problem += f" (rule {rule.id}: the body is not read)"
                ctx.diagnose(rule.severity, problem, field="length", rule=rule.id)
                failed = failed or rule.severity == ERROR
        return failed

    def _run_conditions(self, ctx: StreamContext, conditions: list[Condition], names: Any,
                        header: HeaderSpec | None = None, offset: int | None = None) -> None:
        """Each condition whose ``when`` holds must be true, else its message is reported
        (at the header, or at the current or last record)."""
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

    def _header_diag(self, ctx: StreamContext, header: HeaderSpec, offset: int, severity: str,
                     message: str, field: str | None, rule: str | None = None) -> None:
        self.report(Diagnostic(severity=severity, message=message, offset=offset, field=field,
                               format=ctx.name, unit=header.name, rule=rule))

    @staticmethod
    def _enum_warnings(ctx: StreamContext, layout: Any, fields: dict[str, Any],
                       warn: Callable[[str, str], None]) -> None:
        """Warn for every field whose enum entry carries a ``warn``."""
        for spec in layout.fields:
            if spec.enum and spec.id in fields:
                entry = ctx.format.spec.enums[spec.enum].entries.get(fields[spec.id])
                if entry is not None and entry.warn:
                    warn(entry.warn, spec.id)

    # -- expressions ---------------------------------------------------------------------
    @staticmethod
    def _eval(expr: Expression, names: Any, ctx: StreamContext, where: str) -> Any:
        try:
            return expr.evaluate(names)
        except EVAL_ERRORS:  # again, to raise the SpecError that names where it failed
            return evaluate(expr, names, context=f"format {ctx.name}, {where}")

    def _value(self, value: Any, names: Any, ctx: StreamContext, where: str) -> Any:
        return self._eval(value, names, ctx, where) if isinstance(value, Expression) else value

    @staticmethod
    def _render(template: Any, names: Any, ctx: StreamContext, where: str) -> str:
        try:
            return template.render(names)
        except EVAL_ERRORS:
            return render(template, names, context=f"format {ctx.name}, {where}")
