"""The walk: one pass over a byte source, as a stack of format contexts.

The engine knows framing (fixed headers, type-length records with alignment and padding,
formats that hand the rest of the source to another), dispatch (spec decoders, plugin
handlers), state (marks, counts, named values for the spec's rules) and diagnostics. It
knows nothing of any particular format: record names, ids and rules all come from specs.

This module holds the walk itself (the stack of contexts, the actions between them, the
end of the stream); its parts live beside it: :mod:`~xenmig_core.engine.framing` (headers
and record framing), :mod:`~xenmig_core.engine.dispatch` (one record: decode, checks,
handler, payload), :mod:`~xenmig_core.engine.rules` (rule and expression evaluation) and
:mod:`~xenmig_core.engine.caps` (how many diagnostics are kept).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from xenmig_core.diagnostics import ERROR, Diagnostic
from xenmig_core.engine.caps import (
    MAX_DIAGNOSTICS,
    MAX_DIAGNOSTICS_PER_KIND,
    DiagnosticCaps,
    diagnostic_kind,
)
from xenmig_core.engine.consumer import Consumer
from xenmig_core.engine.context import CONTINUE, Action, StreamContext, Tally
from xenmig_core.engine.dispatch import PAYLOAD_BUFFER_SIZE, Dispatch, RecordPlan
from xenmig_core.engine.framing import FOLLOWS_PEEK, MAX_HEADER_BYTES, CleanEOF, Framing
from xenmig_core.engine.rules import RuleEvaluation
from xenmig_core.errors import SpecError, StreamError, TruncatedError
from xenmig_core.plain import Plain, factory
from xenmig_core.source import ByteSource

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

    from xenmig_core.registry import Format, Registry

__all__ = ["FOLLOWS_PEEK", "MAX_DIAGNOSTICS", "MAX_DIAGNOSTICS_PER_KIND", "MAX_HEADER_BYTES",
           "PAYLOAD_BUFFER_SIZE", "Engine", "WalkResult", "diagnostic_kind"]


class WalkResult(Plain):
    """What one walk found. ``valid`` is False when any error was reported."""

    root: StreamContext | None = None
    contexts: list[StreamContext] = factory(list)
    diagnostics: list[Diagnostic] = factory(list)
    records: int = 0
    end_offset: int = 0
    eof_note: str | None = None
    #: diagnostics found but not kept (nor passed to the consumer), by severity
    dropped: Counter[str] = factory(Tally)
    #: per kind with drops: (a diagnostic of that kind, how many were dropped); kinds first
    #: seen after the overall cap share one entry (the first of them is the sample)
    dropped_like: list[tuple[Diagnostic, int]] = factory(list)

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


class Engine(Framing, Dispatch, RuleEvaluation):
    """Walks one source. ``run(format_name)`` returns a :class:`WalkResult`.

    Contract: the walk never raises for bad input: every problem becomes a diagnostic, and
    a fatal one (broken framing, truncation) stops the walk. SpecError and PluginError
    propagate: they are bugs in a spec or plugin, not in the stream.

    Diagnostics are capped (:mod:`~xenmig_core.engine.caps`): at most
    :data:`MAX_DIAGNOSTICS_PER_KIND` alike ones and :data:`MAX_DIAGNOSTICS` in all are kept
    and passed to the consumer; the first error and a fatal one always are. The rest are
    counted in ``WalkResult.dropped``; at the end of the walk the consumer's
    ``on_diagnostics_dropped`` hears once per kind how many more there were.

    Record summaries (the spec's ``summary`` templates) are rendered only when the consumer's
    ``wants_summaries`` is true; header summaries always are.

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
        self._plans: dict[tuple[int, int], RecordPlan] = {}
        self._summaries = bool(getattr(self.consumer, "wants_summaries", True))
        self._caps = DiagnosticCaps(self.result.diagnostics, self.result.dropped,
                                    self.result.dropped_like, self.consumer)

    def report(self, diagnostic: Diagnostic, *, keep: bool = False) -> None:
        """Keep *diagnostic* and pass it to the consumer, unless a cap drops it (*keep*
        overrides the caps; the first error is always kept)."""
        self._caps.report(diagnostic, keep=keep)

    # -- contexts ------------------------------------------------------------------------
    def _start(self, fmt: Format, parent: StreamContext | None) -> StreamContext:
        ctx = StreamContext(fmt, parent=parent, depth=parent.depth + 1 if parent else 0,
                            start_offset=self.source.offset, report=self.report,
                            drop=self._caps.drop)
        ctx.state["nested"] = parent is not None
        ctx.summaries = self._summaries
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
        step = self._step
        try:
            while stack:
                ctx = stack[-1]
                try:
                    action = step(ctx)
                except CleanEOF:
                    self._at_eof(stack)
                    break
                if action is not CONTINUE:
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
        self._caps.finish()
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
