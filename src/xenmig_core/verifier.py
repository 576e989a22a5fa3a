"""``verify``: walk a stream with no payload reads and summarise what was found.

:func:`verify_source` is the library entry point used by the CLI (and later by ``build`` and
``convert`` to check their output). It returns a :class:`VerifyReport`, which renders as the
JSON document of ``xenmig verify --json``.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Mapping

from xenmig_core.detect import DETECT_BYTES, detect
from xenmig_core.diagnostics import Diagnostic
from xenmig_core.engine import Consumer, Engine, MultiConsumer, StreamContext, WalkResult
from xenmig_core.errors import StreamError, UsageError
from xenmig_core.plain import Plain, factory
from xenmig_core.plugins import call_each
from xenmig_core.registry import Registry
from xenmig_core.source import ByteSource
from xenmig_core.spec.layout import StructRows

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

    from xenmig_core.render.account import AccountConsumer

REPORT_SCHEMA_VERSION = 1


def choose_format(registry: Registry, source: ByteSource, requested: str) -> str:
    """Resolve ``auto`` by detection; check an explicit format against what detection sees.

    Raises StreamError (exit 1) when nothing recognises the stream, and UsageError when an
    explicit format is unknown or contradicted by a confident detection of another format.
    """
    head = source.peek(DETECT_BYTES)
    found = detect(registry, head)
    if requested == "auto":
        if not found:
            if not head:
                raise StreamError("empty stream: nothing to verify", offset=0)
            raise StreamError("unrecognised stream: no format plugin recognises its first "
                              f"bytes ({head[:16].hex(' ')})", offset=0)
        return found[0].format
    registry.get(requested)
    if found and requested not in {d.format for d in found}:
        best = found[0]
        raise UsageError(f"--from {requested}: this looks like {best.description} "
                         f"(--from {best.format}), not {requested}")
    return requested


class ContextReport(Plain):
    format: str
    offset: int
    depth: int
    finished: bool
    records: dict[str, int]
    stats: dict[str, dict[str, int]]
    details: dict[str, Any]
    headers: dict[str, dict[str, Any]]
    summary: str | None = None


class VerifyReport(Plain):
    """The outcome of verifying one stream."""

    source: str
    format: str
    result: WalkResult
    contexts: list[ContextReport] = factory(list)
    account: AccountConsumer | None = None
    #: Offset the source started at (non-zero for an ``fd:N`` opened part-way into a file).
    start: int = 0
    #: Sections plugins add through ``xenmig_report_section`` (key -> plain data).
    sections: dict[str, Any] = factory(dict)

    @property
    def size(self) -> int:
        """The stream's own size in bytes: its end less the offset it started at."""
        return max(self.result.end_offset - self.start, 0)

    @property
    def valid(self) -> bool:
        return self.result.valid

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return self.result.diagnostics

    def summary(self) -> str:
        """One line: every stream's summary, outermost first."""
        parts = [c.summary or c.format for c in self.contexts]
        text = " > ".join(dict.fromkeys(parts))
        text += f"; {self.result.records} records, {self.size} bytes"
        if self.result.eof_note:
            text += f"; {self.result.eof_note}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document. ``records`` counts record types of every stream (keys
        ``format.NAME``) and ``stats`` adds up every stream's statistics by group; the
        ``streams`` list has the same per stream."""
        records: Counter[str] = Counter()
        stats: dict[str, Counter[str]] = {}
        for ctx in self.contexts:
            records.update({f"{ctx.format}.{k}": v for k, v in ctx.records.items()})
            for group, counts in ctx.stats.items():
                stats.setdefault(group, Counter()).update(counts)
        details: dict[str, Any] = {}
        for ctx in reversed(self.contexts):   # the outermost stream's values win
            details.update(ctx.details)
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "source": self.source,
            "valid": self.valid,
            "format": self.format,
            **details,
            "size": self.size,
            "record_count": self.result.records,
            "records": dict(records),
            "stats": {group: dict(counts) for group, counts in stats.items()},
            "end_note": self.result.eof_note,
            **self.sections,
            "streams": [
                {"format": c.format, "offset": c.offset, "depth": c.depth,
                 "complete": c.finished, "summary": c.summary, "records": c.records,
                 **c.details,
                 **({"stats": c.stats} if c.stats else {}),
                 "headers": _jsonable(c.headers)}
                for c in self.contexts],
            "account": _jsonable(self.account.entries) if self.account else [],
            **({"account_dropped": self.account.dropped}
               if self.account and self.account.dropped else {}),
            **({"diagnostics_dropped": self.result.diagnostics_dropped}
               if self.result.diagnostics_dropped else {}),
            "errors": self.result.error_count,
            "warnings": self.result.warning_count,
            "diagnostics": [d.to_dict() for d in self.diagnostics],
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | array | StructRows):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return data.hex() if len(data) <= 64 else f"<{len(data)} bytes>"
    return value


def context_report(ctx: StreamContext) -> ContextReport:
    names = ctx.names()
    details = {}
    for key, expr in ctx.format.spec.report.items():
        try:
            details[key] = expr.evaluate(names)
        except (NameError, KeyError, TypeError, ValueError):
            details[key] = None
    summary = None
    if ctx.format.spec.summary is not None:
        try:
            summary = ctx.format.spec.summary.render(names)
        except (NameError, KeyError, TypeError, ValueError):
            summary = None
    return ContextReport(
        format=ctx.name, offset=ctx.start_offset, depth=ctx.depth, finished=ctx.finished,
        records=dict(ctx.counts), stats={k: dict(v) for k, v in ctx.stats.items()},
        details=details, headers=ctx.headers, summary=summary)


def verify_source(registry: Registry, source: ByteSource, fmt: str = "auto",
                  consumer: Consumer | None = None,
                  params: Mapping[str, Any] | None = None, *,
                  account: bool = True) -> VerifyReport:
    """Verify *source* as *fmt* (or detect it). Never raises for a bad stream: problems are
    in the report's diagnostics; an unrecognised stream gives a report with one error.
    *params* are the engine's stream parameters (see :class:`~xenmig_core.engine.Engine`).
    With *account* False the report has no account of headers and records (``--json``
    needs it; a verdict does not, and is faster without it)."""
    try:
        chosen = choose_format(registry, source, fmt)
    except StreamError as exc:
        result = WalkResult()
        result.diagnostics.append(Diagnostic("error", exc.message, offset=0))
        if consumer is not None:
            consumer.on_diagnostic(result.diagnostics[0])
        return VerifyReport(source.name, fmt, result, start=source.start)
    accounting = None
    if account:        # (-q and a plain verdict need no account: nor its module)
        from xenmig_core.render.account import AccountConsumer
        accounting = AccountConsumer()
    # report sections (what a plugin adds to --json) go with the account: a verdict alone
    # does not pay for them
    sections = [found for _plugin, found in call_each(registry.pm, "xenmig_report_section")
                ] if account else []
    consumers = [c for c in (accounting, *(w for _key, w in sections), consumer)
                 if c is not None]
    engine = Engine(registry, source,
                    MultiConsumer(*consumers) if len(consumers) > 1 else
                    (consumers[0] if consumers else Consumer()),
                    params=params)
    result = engine.run(chosen)
    if accounting is not None:
        accounting.close()
    report = VerifyReport(source.name, chosen, result, account=accounting, start=source.start)
    for key, watcher in sections:
        if (section := watcher.report()) is not None:
            report.sections[key] = section
    report.contexts = [context_report(c) for c in result.contexts]
    return report

