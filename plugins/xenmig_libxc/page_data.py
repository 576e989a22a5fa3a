"""PAGE_DATA checks the spec language cannot express: one pass over the pfn words."""

from __future__ import annotations

from xenmig_core.engine import Record, StreamContext

PAGE_SIZE = 4096
TYPE_SHIFT = 60
PFN_MASK = (1 << 52) - 1
RESERVED_SHIFT = 52
INVALID_TYPES = frozenset({5, 6, 7, 8})
DATA_TYPES = frozenset({0, 1, 2, 3, 4, 9, 10, 11, 12})
MAX_REPORTED = 3


def check_page_data(record: Record, ctx: StreamContext) -> None:
    """Check each pfn word (page type known, reserved bits zero, pfn within the PV guest's
    announced maximum), count the pages that carry data, and require the body length to be
    exactly 8 + 8 * count + 4096 * pages_with_data. Adds per-type page counts to ``pages``."""
    words = record.fields["pfn"]
    enum = ctx.format.spec.enums["page_type"]
    max_pfn = ctx.state["max_pfn"] if ctx.state["domain_type"] == 1 else None
    with_data = 0
    problems: list[tuple[str, str]] = []
    by_type: dict[int, int] = {}
    for i, word in enumerate(words):
        ptype = word >> TYPE_SHIFT
        by_type[ptype] = by_type.get(ptype, 0) + 1
        if ptype in DATA_TYPES:
            with_data += 1
        if len(problems) > MAX_REPORTED:
            continue
        if ptype in INVALID_TYPES:
            problems.append((f"pfn[{i}]", f"page type {ptype:#x} is invalid ({word:#018x})"))
        reserved = (word >> RESERVED_SHIFT) & 0xFF
        if reserved:
            problems.append((f"pfn[{i}]", f"reserved bits 59-52 set: {reserved:#x} "
                                          f"({word:#018x})"))
        if max_pfn is not None and max_pfn >= 0 and (word & PFN_MASK) > max_pfn:
            problems.append((f"pfn[{i}]", f"pfn {word & PFN_MASK:#x} exceeds the domain's "
                                          f"maximum {max_pfn:#x} (from X86_PV_P2M_FRAMES)"))
    for field, message in problems[:MAX_REPORTED]:
        ctx.error(message, field=field)
    if len(problems) > MAX_REPORTED:
        ctx.error(f"more pfn problems in this record after the first {MAX_REPORTED}",
                  field="pfn")
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
