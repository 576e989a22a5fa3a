"""The structure of a walked stream for ``verify --json``: every header, every record (runs
of ``squash`` records folded into one entry), where each nested stream starts and resumes,
trailing data, all with absolute offsets. Bounded: after :data:`ACCOUNT_LIMIT` entries the
rest are only counted.
"""

from __future__ import annotations

from xenmig_core.engine import Consumer, Record, StreamContext
from xenmig_core.engine.context import HeaderValue

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

ACCOUNT_LIMIT = 10_000


class AccountConsumer(Consumer):
    """Collects :attr:`entries` (JSON-ready dicts, with record summaries) in stream order."""

    wants_summaries = True

    def __init__(self, limit: int = ACCOUNT_LIMIT) -> None:
        self.entries: list[dict[str, Any]] = []
        self.dropped = 0
        self.limit = limit
        self._run: dict[str, Any] | None = None
        self._last_context: StreamContext | None = None

    def _add(self, entry: dict[str, Any]) -> None:
        if len(self.entries) < self.limit:
            self.entries.append(entry)
        else:
            self.dropped += 1

    def _flush(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            self._add(run)

    def _switch(self, ctx: StreamContext) -> None:
        """Note a stream taking the walk back (a resumed or continued enclosing stream)."""
        if self._last_context is not None and ctx is not self._last_context:
            self._flush()
            self._add({"kind": "continue", "format": ctx.name, "depth": ctx.depth})
        self._last_context = ctx

    def on_context_start(self, ctx: StreamContext) -> None:
        self._flush()
        self._last_context = ctx
        self._add({"kind": "stream", "format": ctx.name, "offset": ctx.start_offset,
                   "depth": ctx.depth})

    def on_header(self, header: HeaderValue) -> None:
        self._flush()
        self._switch(header.context)
        self._add({"kind": "header", "format": header.context.name, "name": header.name,
                   "offset": header.offset, "size": header.size, "summary": header.summary})

    def on_record(self, record: Record) -> None:
        self._switch(record.context)
        rtype = record.rtype
        if rtype is not None and rtype.squash is not None:
            run = self._run
            if run is None or run["name"] != record.name or run["format"] != record.format:
                self._flush()
                run = self._run = {"kind": "records", "format": record.format,
                                   "name": record.name, "first": record.index,
                                   "offset": record.offset, "count": 0, "bytes": 0}
            run["last"] = record.index
            run["count"] += 1
            run["bytes"] += record.length
            return
        self._flush()
        self._add({"kind": "record", "format": record.format, "index": record.index,
                   "name": record.name, "offset": record.offset, "length": record.length,
                   "summary": record.summary})

    def on_trailing(self, offset: int, length: int, description: str | None) -> None:
        self._flush()
        self._add({"kind": "trailing", "offset": offset, "length": length,
                   "description": description})

    def close(self) -> None:
        self._flush()
