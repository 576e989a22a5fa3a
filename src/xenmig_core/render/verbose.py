"""The ``verify -v`` account: one line per header and record, runs of bulk records folded.

A :class:`VerboseConsumer` writes as the walk goes, so a long stream prints progressively.
Records whose type is marked ``squash`` in the spec (PAGE_DATA) are folded into one line per
run, with the run's record indices, offsets and counts. A diagnostic is printed under the
line of the header or record it concerns (the engine reports it while checking, before that
line can be written), indented one step further; when the walk goes back to a stream after
a nested one yielded or ended, a "(... continues)" line says so. The engine caps alike
diagnostics: at the end, one "... N more like this" line per capped kind says how many
were not shown.
"""

from __future__ import annotations

from collections import Counter
from typing import TextIO

from xenmig_core.diagnostics import Diagnostic
from xenmig_core.engine import Consumer, Record, StreamContext
from xenmig_core.engine.context import HeaderValue


class _Run:
    def __init__(self, record: Record) -> None:
        self.first = record
        self.last = record
        self.count = 0
        self.bytes = 0
        self.fields: Counter[str] = Counter()


class VerboseConsumer(Consumer):
    """Writes the account to *out*; diagnostics appear inline, under what they concern."""

    wants_summaries = True

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._run: _Run | None = None
        self._last_context: StreamContext | None = None
        self._pending: list[Diagnostic] = []
        self._depth = 0

    def _line(self, depth: int, offset: int | None, text: str) -> None:
        where = f"@{offset:#010x}" if offset is not None else " " * 11
        self.out.write(f"{where}  {'  ' * depth}{text}\n")
        self._depth = depth

    def _diagnostics(self) -> None:
        """Print the diagnostics waiting for the line they belong under."""
        pending, self._pending = self._pending, []
        depth = self._depth + 1
        for diagnostic in pending:
            self.out.write(f"{' ' * 11}  {'  ' * depth}{diagnostic.severity.upper()}: "
                           f"{diagnostic.tagged()}\n")

    def _flush(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            if run.count == 1:
                self._record_line(run.first)
            else:
                extra = ""
                if run.fields:
                    extra = ": " + ", ".join(f"{v} {k}" for k, v in run.fields.items())
                self._line(run.first.context.depth, run.first.offset,
                           f"records {run.first.index}-{run.last.index}  {run.first.name} "
                           f"x{run.count} ({run.bytes} bytes){extra}")
        self._diagnostics()

    def _record_line(self, record: Record) -> None:
        text = f"record {record.index}  {record.name} ({record.length} bytes)"
        if record.summary:
            text += f": {record.summary}"
        self._line(record.context.depth, record.offset, text)

    def _switch(self, ctx: StreamContext, offset: int) -> None:
        """Say so when the walk goes back to a stream (a resumed or continuing one)."""
        if self._last_context is not None and ctx is not self._last_context:
            pending, self._pending = self._pending, []
            self._flush()
            self._line(ctx.depth, offset, f"({ctx.format.spec.title} continues)")
            self._pending = pending
        self._last_context = ctx

    def on_context_start(self, ctx: StreamContext) -> None:
        self._flush()
        self._last_context = ctx
        if ctx.parent is not None:
            self._line(ctx.depth - 1, ctx.start_offset, f"{ctx.format.spec.title} follows:")

    def on_header(self, header: HeaderValue) -> None:
        pending, self._pending = self._pending, []
        self._flush()
        self._switch(header.context, header.offset)
        text = f"{header.context.name} {header.title}"
        if header.summary:
            text += f": {header.summary}"
        self._line(header.context.depth, header.offset, text)
        self._pending = pending
        self._diagnostics()

    def on_record(self, record: Record) -> None:
        pending, self._pending = self._pending, []
        self._switch(record.context, record.offset)
        rtype = record.rtype
        if rtype is not None and rtype.squash is not None and not pending:
            run = self._run
            if run is None or run.first.name != record.name or run.first.context is not \
                    record.context:
                self._flush()
                run = self._run = _Run(record)
            run.last = record
            run.count += 1
            run.bytes += record.length
            for label, name in rtype.squash.items():
                value = record.fields.get(name)
                if isinstance(value, int):
                    run.fields[label] += value
            return
        self._flush()
        self._record_line(record)
        self._pending = pending
        self._diagnostics()

    def on_record_end(self, record: Record) -> None:
        if self._pending:         # found after the record's line: its padding, its control
            self._flush()

    def on_diagnostic(self, diagnostic: Diagnostic) -> None:
        self._pending.append(diagnostic)

    def on_context_end(self, ctx: StreamContext) -> None:
        self._flush()

    def on_trailing(self, offset: int, length: int, description: str | None) -> None:
        self._flush()
        self._line(0, offset, f"{length} trailing bytes" +
                   (f": {description}" if description else ""))
        self._diagnostics()

    def on_diagnostics_dropped(self, like: Diagnostic, count: int) -> None:
        """Once per capped kind, at the end: how many alike diagnostics were not shown."""
        self._flush()
        self.out.write(f"{' ' * 11}    ... {count} more like this: "
                       f"{like.severity.upper()}: {like}\n")

    def close(self) -> None:
        self._flush()
