"""The ``verify -v`` account: one line per header and record, runs of bulk records folded.

A :class:`VerboseConsumer` writes as the walk goes, so a long stream prints progressively.
Records whose type is marked ``squash`` in the spec (PAGE_DATA) are folded into one line per
run, with the run's record indices, offsets and counts. A record's problems are written under
its line; a record with problems is never folded into a run.
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
        self._shown = -1                      # index of the last record passed to on_record
        self._pending: list[Diagnostic] = []  # found before their record's line was written

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
        if ctx.parent is not None:
            self._line(ctx.depth - 1, ctx.start_offset, f"{ctx.format.spec.title} follows:")

    def on_header(self, header: HeaderValue) -> None:
        self._flush()
        text = f"{header.context.name} {header.title}"
        if header.summary:
            text += f": {header.summary}"
        self._line(header.context.depth, header.offset, text)

    def on_record(self, record: Record) -> None:
        self._shown = record.index
        rtype = record.rtype
        if self._pending:  # a record with problems stands alone, its problems under it
            self._flush()
            self._record_line(record)
            self._write_pending()
            return
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
        if diagnostic.record_index is not None and diagnostic.record_index > self._shown:
            self._pending.append(diagnostic)  # written under the record's line
            return
        self._flush()
        self._diagnostic_line(diagnostic)

    def _diagnostic_line(self, diagnostic: Diagnostic) -> None:
        self._line(0, diagnostic.offset, f"{diagnostic.severity.upper()}: {diagnostic}")

    def _write_pending(self) -> None:
        pending, self._pending = self._pending, []
        for diagnostic in pending:
            self._diagnostic_line(diagnostic)

    def on_record_end(self, record: Record) -> None:
        if self._pending:  # the record ended before it could be shown (a fatal problem)
            self._flush()
            self._write_pending()

    def on_context_end(self, ctx: StreamContext) -> None:
        self._flush()
        self._write_pending()

    def on_trailing(self, offset: int, length: int, description: str | None) -> None:
        self._flush()
        self._line(0, offset, f"{length} trailing bytes" +
                   (f": {description}" if description else ""))

    def close(self) -> None:
        self._flush()
        self._write_pending()
