"""Viewers for ``xenmig dump``: derived values of PAGE_DATA and HVM_CONTEXT records.

PAGE_DATA: the pfn words as runs of consecutive pfns of one page type, and page counts per
type. HVM_CONTEXT: the entries of the HVM save blob, each decoded with the layout the spec's
``types`` give for its typecode (see the head of specs/hvm_context.yaml); an entry no layout
fits is shown with its length only.
"""

from __future__ import annotations

from array import array

from xenmig_core.engine import Record, StreamContext
from xenmig_core.present import is_run, present_fields
from xenmig_core.render.json import encode
from xenmig_core.render.json import quote as _quote
from xenmig_core.spec.spill import pieces
from xenmig_libxc.hvm_context import MAX_KEPT_ENTRIES, EntryRules, body_reader, iter_entries
from xenmig_libxc.page_data import PFN_MASK, RESERVED_SHIFT, TYPE_SHIFT

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

#: a PAGE_DATA view shows at most this many runs (a real batch of 1024 pfns has a few)
MAX_RUNS = 4096
#: an HVM_CONTEXT view decodes the fields of the entries within this many bytes of the blob
#: (a 128-vcpu guest's context is under a MiB, most of it shown): decoded and rendered, an
#: entry's fields take ten times its bytes in JSON, more in YAML
MAX_DECODED_BYTES = 512 << 10


def view_page_data(record: Record, ctx: StreamContext) -> dict[str, Any]:
    """``pfn``: runs {first, last, count, type[, reserved]}, the first :data:`MAX_RUNS`
    (``pfns_not_shown`` counts the pfns after them); ``pages``: count per type. A piece of
    consecutive words (Xen's saver sends such batches) is taken in one step, and a batch
    that is one such piece (the usual case) is one run made at once."""
    enum = ctx.format.spec.enums["page_type"]
    words = record.fields["pfn"]
    if _one_run(words):
        first = words[0]
        run = _run(first, len(words), enum.name_of(first >> TYPE_SHIFT))
        return {"pfn": [run], "pages": {run["type"]: run["count"]}}
    runs: list[dict[str, Any]] = []
    pages: dict[str, int] = {}
    dropped = 0

    def add(word: int, count: int) -> None:
        nonlocal dropped
        pfn = word & PFN_MASK
        type_name = enum.name_of(word >> TYPE_SHIFT)
        reserved = (word >> RESERVED_SHIFT) & 0xFF
        pages[type_name] = pages.get(type_name, 0) + count
        last = runs[-1] if runs else None
        if last is not None and last["type"] == type_name and last["last"] + 1 == pfn \
                and last.get("reserved", 0) == reserved and not dropped:
            last["last"] = pfn + count - 1
            last["count"] += count
            return
        if len(runs) >= MAX_RUNS:
            dropped += count
            return
        runs.append(_run(word, count, type_name))
    for piece in pieces(words):
        first = piece[0] if len(piece) > 1 else 0
        if len(piece) > 1 and (first & PFN_MASK) + len(piece) <= PFN_MASK + 1 and \
                array("Q", piece) == array("Q", range(first, first + len(piece))):
            add(first, len(piece))
            continue
        for word in piece:
            add(word, 1)
    if dropped:
        return {"pfn": runs, "pfns_not_shown": dropped, "pages": pages}
    return {"pfn": runs, "pages": pages}


def view_page_data_json(record: Record, ctx: StreamContext, derived: dict[str, Any]
                        ) -> str | None:
    """The viewer's ``json`` (see the ``xenmig_record_viewer`` hook): the JSON text of the
    view a dump shows, ``{**derived, **view_page_data(record, ctx)}``, when the handler's
    ``pages_with_data`` is the only derived value (else None): for a batch that is one run
    (the usual one), written at once; for another, the viewer's mapping (plain data: made
    here) encoded."""
    with_data = derived.get("pages_with_data")
    if len(derived) != 1 or type(with_data) is not int:
        return None
    words = record.fields["pfn"]
    if not _one_run(words):
        return encode({"pages_with_data": with_data, **view_page_data(record, ctx)})
    first = words[0]
    n = len(words)
    pfn = first & PFN_MASK
    name = _quote(ctx.format.spec.enums["page_type"].name_of(first >> TYPE_SHIFT))
    reserved = (first >> RESERVED_SHIFT) & 0xFF
    run = f'{{"first": {pfn}, "last": {pfn + n - 1}, "count": {n}, "type": {name}' + \
        (f', "reserved": {reserved}}}' if reserved else "}")
    return f'{{"pages_with_data": {with_data}, "pfn": [{run}], "pages": {{{name}: {n}}}}}'


view_page_data.json = view_page_data_json    # type: ignore[attr-defined]


def _one_run(words: Any) -> bool:
    """True when *words* is an int array (as decoded) of consecutive words, with no carry
    from the pfn bits into the type bits: one run of one page type."""
    return type(words) is array and len(words) > 0 and \
        (words[0] & PFN_MASK) + len(words) <= PFN_MASK + 1 and is_run(words)


def _run(word: int, count: int, type_name: str) -> dict[str, Any]:
    """A run of *count* pfns from *word*'s, of one page type (and reserved bits)."""
    pfn = word & PFN_MASK
    run: dict[str, Any] = {"first": pfn, "last": pfn + count - 1, "count": count,
                           "type": type_name}
    reserved = (word >> RESERVED_SHIFT) & 0xFF
    if reserved:
        run["reserved"] = reserved
    return run


def view_hvm_context(record: Record, ctx: StreamContext) -> dict[str, Any]:
    """``entries``: each HVM save entry's type, instance, length and decoded fields (with the
    layout used; ``zero_extended_from`` when a shorter entry was read zero-extended, as
    restore does); ``after_end``: bytes after the END entry. At most
    :data:`MAX_KEPT_ENTRIES` entries are shown; ``entries_dropped`` counts the rest. Fields
    are decoded for the entries within the first :data:`MAX_DECODED_BYTES` of the blob
    (``fields_not_shown`` marks the others), so that the view stays small."""
    blob = record.fields["context"]
    rules = EntryRules(ctx.format.spec)
    enums = ctx.format.spec.enums
    entries: list[dict[str, Any]] = []
    end = shown = 0
    for entry in iter_entries(blob, ctx.byte_order, rules):
        if len(entries) >= MAX_KEPT_ENTRIES:
            return {"entries": entries, "entries_dropped": record.fields.get(
                "entries_dropped", 0)}
        item: dict[str, Any] = {"type": entry.name or f"unknown({entry.typecode:#x})",
                                "instance": entry.instance, "offset": entry.offset,
                                "length": entry.length}
        entries.append(item)
        if entry.overruns:
            item["overruns"] = True
            return {"entries": entries}
        end = entry.offset + entry.length
        shown += entry.length
        if shown > MAX_DECODED_BYTES:    # decoded fields take ten times their bytes
            item["fields_not_shown"] = True
            continue
        decoded = rules.decode(entry, body_reader(blob, entry), ctx.byte_order)
        if decoded.layout is not None:
            item["layout"] = decoded.layout_name
            if decoded.zero_extended_from is not None:
                item["zero_extended_from"] = decoded.zero_extended_from
            item["fields"] = present_fields(decoded.layout, decoded.fields, enums, fold=False)
    if end < len(blob):
        return {"entries": entries, "after_end": len(blob) - end}
    return {"entries": entries}
