"""Diagnostic caps: bad input must not cost memory or output in proportion to its size.

At most :data:`MAX_DIAGNOSTICS_PER_KIND` alike diagnostics (see :func:`diagnostic_kind`) and
:data:`MAX_DIAGNOSTICS` in all are kept and passed to the consumer; the first error and a
fatal one always are. The rest are counted; at the end of the walk the consumer hears once
per kind how many more there were.
"""

from __future__ import annotations

import functools
import re
from collections import Counter

from xenmig_core.diagnostics import ERROR, Diagnostic

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

    from xenmig_core.engine.consumer import Consumer

#: At most this many diagnostics of one kind (see :func:`diagnostic_kind`) are kept...
MAX_DIAGNOSTICS_PER_KIND = 20
#: ... and at most this many in all (plus the first error and a fatal one, always kept).
MAX_DIAGNOSTICS = 1000
#: a number in a message (compiled by ``re`` when first used: a run without diagnostics
#: needs it not)
_NUMBER = r"0x[0-9a-fA-F]+|\d+"


@functools.lru_cache(maxsize=4096)
def _shape(text: str | None) -> str | None:
    """*text* with every number replaced by ``#`` (a stream repeats its messages: cached)."""
    return re.sub(_NUMBER, "#", text) if text is not None else None


def diagnostic_kind(d: Diagnostic) -> tuple[str | None, ...]:
    """What makes diagnostics "alike" for the caps: format, record type (or header),
    severity, field and message, with every number replaced (``pfn[3]`` and ``pfn[4]``,
    ``record type 0x80000100`` and ``0x80000101`` are alike)."""
    return kind_of(d.format, d.record_type or d.unit, d.severity, d.field, d.message)


def kind_of(format_name: str | None, where: str | None, severity: str, field: str | None,
            message: str) -> tuple[str | None, ...]:
    """:func:`diagnostic_kind` of a diagnostic with these parts (*where*: its record type,
    or else its unit)."""
    return (format_name, _shape(where), severity, _shape(field), _shape(message))


class DiagnosticCaps:
    """Keeps diagnostics in *kept* (passing each to *consumer*) within the caps; counts the
    dropped ones by severity in *dropped*. :meth:`finish` lists, per kind with drops, a
    sample and the count in *dropped_like* and tells the consumer."""

    def __init__(self, kept: list[Diagnostic], dropped: Counter[str],
                 dropped_like: list[tuple[Diagnostic, int]], consumer: Consumer) -> None:
        self.kept = kept
        self.dropped = dropped
        self.dropped_like = dropped_like
        self.consumer = consumer
        #: kind -> [kept, dropped, sample]; a kind is tracked only once one of it is kept,
        #: so there are at most as many kinds as kept diagnostics (others share ``None``)
        self._kinds: dict[tuple[str | None, ...] | None, list[Any]] = {}
        self._error_kept = False

    def report(self, diagnostic: Diagnostic, *, keep: bool = False) -> None:
        """Keep *diagnostic* and pass it to the consumer, unless a cap drops it (*keep*
        overrides the caps; the first error is always kept)."""
        kind = diagnostic_kind(diagnostic)
        entry = self._kinds.get(kind)
        keep = keep or (diagnostic.is_error and not self._error_kept) or (
            len(self.kept) < MAX_DIAGNOSTICS
            and (entry is None or entry[0] < MAX_DIAGNOSTICS_PER_KIND))
        if not keep:
            self.dropped[diagnostic.severity] += 1
            if entry is None:
                entry = self._kinds.setdefault(None, [0, 0, diagnostic])
            entry[1] += 1
            return
        if entry is None:
            entry = self._kinds[kind] = [0, 0, diagnostic]
        entry[0] += 1
        self._error_kept = self._error_kept or diagnostic.is_error
        self.kept.append(diagnostic)
        self.consumer.on_diagnostic(diagnostic)

    def drop(self, format_name: str | None, where: str | None, severity: str,
             field: str | None, message: str) -> bool:
        """True when :meth:`report` would drop a diagnostic of these parts (*where*: its
        record type, or else its unit): it is then counted as dropped exactly as
        :meth:`report` counts it, and the caller need not build it. False: build it and
        :meth:`report` it (a walk repeating one warning thousands of times then pays for
        the first few only)."""
        return self.drop_kind(kind_of(format_name, where, severity, field, message), severity)

    def drop_kind(self, kind: tuple[str | None, ...], severity: str) -> bool:
        """:meth:`drop` for a diagnostic whose :func:`kind_of` is *kind* (generated code
        reporting a fixed message computes it once)."""
        if severity == ERROR and not self._error_kept:
            return False
        entry = self._kinds.get(kind)
        if entry is None:
            if len(self.kept) < MAX_DIAGNOSTICS:
                return False
            entry = self._kinds.get(None)
            if entry is None:       # the first of the shared entry: it is the sample
                return False
        elif entry[0] < MAX_DIAGNOSTICS_PER_KIND and len(self.kept) < MAX_DIAGNOSTICS:
            return False
        self.dropped[severity] += 1
        entry[1] += 1
        return True

    def finish(self) -> None:
        """At the end of the walk: one ``on_diagnostics_dropped`` per kind with drops."""
        for _kept, dropped, sample in self._kinds.values():
            if dropped:
                self.dropped_like.append((sample, dropped))
                self.consumer.on_diagnostics_dropped(sample, dropped)
