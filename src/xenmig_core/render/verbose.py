"""The ``verify -v`` account: one line per header and record, runs of bulk records folded.

A :class:`VerboseConsumer` writes as the walk goes, so a long stream prints progressively.
Records whose type is marked ``squash`` in the spec (PAGE_DATA) are folded into one line per
run, with the run's record indices, offsets and counts.
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

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._run: _Run | None = None
        self._last_context: StreamContext | None = None

    def _switch(self, ctx: StreamContext, offset: int) -> None:
        """Say so when the walk goes back to a stream (a resumed or continuing one)."""
        if self._last_context is not None and ctx is not self._last_context:
            self._flush()
            self._line(ctx.depth, offset, f"({ctx.format.spec.title} continues)")
        self._last_context = ctx

    def _line(self, depth: int, offset: int | None, text: str) -> None:
        where = f"@{offset:#010x}" if offset is not None else " " * 11
        self.out.write(f"{where}  {'  ' * depth}{text}\n")

    def _flush(self) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        ctx = run.first.context
        if run.count == 1:
            self._record_line(run.first)
            return
        extra = ""
        if run.fields:
            extra = ": " + ", ".join(f"{v} {k}" for k, v in run.fields.items())
        self._line(ctx.depth, run.first.offset,
                   f"records {run.first.index}-{run.last.index}  {run.first.name} x{run.count} "
                   f"({run.bytes} bytes){extra}")

    def _record_line(self, record: Record) -> None:
        text = f"record {record.index}  {record.name} ({record.length} bytes)"
        if record.summary:
            text += f": {record.summary}"
        self._line(record.context.depth, record.offset, text)

    def on_context_start(self, ctx: StreamContext) -> None:
        self._flush()
        self._last_context = ctx
        if ctx.parent is not None:
            self._line(ctx.depth - 1, ctx.start_offset, f"{ctx.format.spec.title} follows:")

    def on_header(self, header: HeaderValue) -> None:
        self._flush()
        self._switch(header.context, header.offset)
        text = f"{header.context.name} {header.title}"
        if header.summary:
            text += f": {header.summary}"
        self._line(header.context.depth, header.offset, text)

    def on_record(self, record: Record) -> None:
        self._switch(record.context, record.offset)
        rtype = record.rtype
        if rtype is not None and rtype.squash is not None:
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

    def on_diagnostic(self, diagnostic: Diagnostic) -> None:
        self._flush()
        depth = 0
        self._line(depth, diagnostic.offset, f"{diagnostic.severity.upper()}: {diagnostic}")

    def on_context_end(self, ctx: StreamContext) -> None:
        self._flush()

    def on_trailing(self, offset: int, length: int, description: str | None) -> None:
        self._flush()
        self._line(0, offset, f"{length} trailing bytes" +
                   (f": {description}" if description else ""))

    def close(self) -> None:
        self._flush()
