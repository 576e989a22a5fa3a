"""Viewers for ``xenmig dump``: derived values of PAGE_DATA and HVM_CONTEXT records.

PAGE_DATA: the pfn words as runs of consecutive pfns of one page type, and page counts per
type. HVM_CONTEXT: the entries of the HVM save blob, each decoded with the layout the spec's
``types`` give for its typecode (see the comment above ``hvm_save_descriptor`` in
specs/libxc.yaml); an entry no layout fits is shown with its length only.
"""

from __future__ import annotations

from typing import Any

from xenmig_core.engine import Record, StreamContext
from xenmig_core.errors import RecordError
from xenmig_core.present import present_fields
from xenmig_core.spec.layout import BytesReader, Layout
from xenmig_libxc.page_data import PFN_MASK, RESERVED_SHIFT, TYPE_SHIFT


def view_page_data(record: Record, ctx: StreamContext) -> dict[str, Any]:
    """``pfn``: runs {first, last, count, type[, reserved]}; ``pages``: count per type."""
    enum = ctx.format.spec.enums["page_type"]
    runs: list[dict[str, Any]] = []
    pages: dict[str, int] = {}
    for word in record.fields["pfn"]:
        pfn = word & PFN_MASK
        type_name = enum.name_of(word >> TYPE_SHIFT)
        reserved = (word >> RESERVED_SHIFT) & 0xFF
        pages[type_name] = pages.get(type_name, 0) + 1
        last = runs[-1] if runs else None
        if last is not None and last["type"] == type_name and last["last"] + 1 == pfn \
                and last.get("reserved", 0) == reserved:
            last["last"] = pfn
            last["count"] += 1
            continue
        run: dict[str, Any] = {"first": pfn, "last": pfn, "count": 1, "type": type_name}
        if reserved:
            run["reserved"] = reserved
        runs.append(run)
    return {"pfn": runs, "pages": pages}


def _layouts_for(ctx: StreamContext, entry_name: str) -> list[tuple[str, Layout]]:
    base = f"hvm_{entry_name.lower()}"
    return [(name, layout) for name, layout in ctx.format.spec.types.items()
            if name == base or name.startswith(base + "__")]


def _decode_entry(ctx: StreamContext, name: str, data: bytes) -> dict[str, Any]:
    """The entry's fields with the layout that fits its length exactly, if any."""
    candidates = _layouts_for(ctx, name)
    enums = ctx.format.spec.enums
    for layout_name, layout in candidates:
        if layout.static_size == len(data):
            fields = layout.decode(BytesReader(data), ctx.byte_order)
            return {"layout": layout_name, "fields": present_fields(layout, fields, enums,
                                                                    fold=False)}
    for layout_name, layout in candidates:
        if layout.static_size is None:
            reader = BytesReader(data)
            try:
                fields = layout.decode(reader, ctx.byte_order)
            except RecordError:
                continue
            if reader.remaining == 0:
                return {"layout": layout_name,
                        "fields": present_fields(layout, fields, enums, fold=False)}
    return {}


def view_hvm_context(record: Record, ctx: StreamContext) -> dict[str, Any]:
    """``entries``: each HVM save entry's type, instance, length and decoded fields."""
    blob = record.fields["context"]
    descriptor = ctx.format.spec.types["hvm_save_descriptor"]
    names = ctx.format.spec.enums["hvm_save_type"]
    head = descriptor.static_size or 8
    entries: list[dict[str, Any]] = []
    pos = 0
    while pos + head <= len(blob):
        desc = descriptor.decode(BytesReader(blob[pos:pos + head]), ctx.byte_order)
        start = pos + head
        length = desc["length"]
        entry: dict[str, Any] = {"type": names.name_of(desc["typecode"]),
                                 "instance": desc["instance"], "offset": start,
                                 "length": length}
        if length > len(blob) - start:
            entry["overruns"] = True
            entries.append(entry)
            break
        entry.update(_decode_entry(ctx, entry["type"], bytes(blob[start:start + length])))
        entries.append(entry)
        pos = start + length
        if desc["typecode"] == 0:
            break
    if pos < len(blob) and (not entries or not entries[-1].get("overruns")):
        return {"entries": entries, "after_end": len(blob) - pos}
    return {"entries": entries}
