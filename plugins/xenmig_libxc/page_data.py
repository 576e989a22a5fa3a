"""PAGE_DATA checks the spec language cannot express: one pass over the pfn words (and a
second, to say which words are wrong, only when the first found a problem)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from xenmig_core.diagnostics import ERROR
from xenmig_core.engine import Record, StreamContext

PAGE_SIZE = 4096
TYPE_SHIFT = 60
PFN_MASK = (1 << 52) - 1
RESERVED_SHIFT = 52
INVALID_TYPES = frozenset({5, 6, 7, 8})
DATA_TYPES = frozenset({0, 1, 2, 3, 4, 9, 10, 11, 12})
RESERVED_MASK = 0xFF << RESERVED_SHIFT
MAX_REPORTED = 3


def check_page_data(record: Record, ctx: StreamContext) -> None:
    """Check each pfn word (page type known, reserved bits zero, pfn within the PV guest's
    announced maximum), count the pages that carry data, and require the body length to be
    exactly 8 + 8 * count + 4096 * pages_with_data. Adds per-type page counts to ``pages``."""
    words = record.fields["pfn"]
    enum = ctx.format.spec.enums["page_type"]
    max_pfn = ctx.state["max_pfn"] if ctx.state["domain_type"] == 1 else None
    if max_pfn is not None and max_pfn < 0:
        max_pfn = None
    with_data = 0
    suspect = False
    by_type: dict[int, int] = {}
    for word in words:
        ptype = word >> TYPE_SHIFT
        by_type[ptype] = by_type.get(ptype, 0) + 1
        if ptype in DATA_TYPES:
            with_data += 1
        elif ptype in INVALID_TYPES:
            suspect = True
        if word & RESERVED_MASK or (max_pfn is not None and (word & PFN_MASK) > max_pfn):
            suspect = True
    if suspect:    # a second pass, only for a bad record: say what is wrong where
        ctx.report_capped(_pfn_problems(words, max_pfn), MAX_REPORTED,
                          more="pfn problems in this record", field="pfn")
    expected = 8 + 8 * len(words) + PAGE_SIZE * with_data
    if record.length != expected:
        ctx.error(f"body length {record.length}, expected {expected} "
                  f"(8 + 8 * {len(words)} pfns + 4096 * {with_data} pages with data)",
                  field="length")
    for ptype, count in by_type.items():
        ctx.stat("pages", enum.label_of(ptype), count)
    ctx.stat("pages", "with data", with_data)
    record.fields["pages_with_data"] = with_data
    first = words[0] & PFN_MASK if words else 0
    last = words[-1] & PFN_MASK if words else 0
    record.summary = f"{len(words)} pfns ({first:#x}..{last:#x}), {with_data} pages with data"


def _pfn_problems(words: Sequence[int], max_pfn: int | None
                  ) -> Iterator[tuple[str, str, str | None]]:
    """Each problem of each pfn word, lazily (the caller keeps only the first few)."""
    for i, word in enumerate(words):
        ptype = word >> TYPE_SHIFT
        if ptype in INVALID_TYPES:
            yield ERROR, f"page type {ptype:#x} is invalid ({word:#018x})", f"pfn[{i}]"
        reserved = (word >> RESERVED_SHIFT) & 0xFF
        if reserved:
            yield ERROR, f"reserved bits 59-52 set: {reserved:#x} ({word:#018x})", f"pfn[{i}]"
        if max_pfn is not None and (word & PFN_MASK) > max_pfn:
            yield ERROR, (f"pfn {word & PFN_MASK:#x} exceeds the domain's maximum "
                          f"{max_pfn:#x} (from X86_PV_P2M_FRAMES)"), f"pfn[{i}]"
