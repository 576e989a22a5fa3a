"""Checks of legacy units that the spec language cannot express."""

from __future__ import annotations

from array import array
from collections.abc import Callable

from xenmig_core.engine import Record, StreamContext
from xenmig_legacy.compression import DeltaError, count_kinds
from xenmig_legacy.pfnwords import as_array, type_byte_index, types
from xenmig_legacy.physmap import PhysmapError, iter_physmap
from xenmig_legacy.walker import (
    FILLER,
    FIRST_DATALESS_TYPE,
    INVALID_TYPES,
    TYPE_MASK,
    data_pages,
)

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

MAX_REPORTED = 3
_LOW_NIBBLE = bytes(b & 0x0F for b in range(256))


def check_batch(record: Record, ctx: StreamContext) -> None:
    """Per pfn word: a known type, pfn below p2m_size, bits 63-32 clear; no duplicate words.
    Fillers (0xf0000000, slots the saver could not map) are counted and otherwise ignored.
    Sets ``data_pages``, ``fillers`` and the summary; in format B counts the pages the -12
    chunks still owe."""
    words: list[int] = record.fields["pfn"]
    enum = ctx.format.spec.enums["page_type"]
    p2m_size = ctx.state["p2m_size"]
    clean = _clean_batch(words, p2m_size)
    if clean is not None:
        by_type, fillers = clean, 0
    else:
        by_type, fillers = _check_words(words, p2m_size, ctx)
    pages = data_pages(words, ctx.state["compressed"])
    if ctx.state["compressed"]:
        ctx.state["pending_pages"] += data_pages(words, False)
    for ptype, count in by_type.items():
        ctx.stat("pages", enum.label_of(ptype), count)
    ctx.stat("pages", "with data", pages)
    if fillers:
        ctx.stat("pages", "unmapped slots (fillers)", fillers)
    record.fields["data_pages"] = pages
    record.fields["fillers"] = fillers
    if fillers:
        real = [w & 0x0FFFFFFF for w in words if w != FILLER]
        ends = (real[0], real[-1]) if real else None
    else:
        ends = (words[0] & 0x0FFFFFFF, words[-1] & 0x0FFFFFFF) if len(words) else None
    span = f" ({ends[0]:#x}..{ends[1]:#x})" if ends else ""
    record.summary = (f"{len(words)} pfns{span}, {pages} pages with data"
                      + (f", {fillers} fillers" if fillers else "")
                      + (" (format B: data in -12 chunks)" if ctx.state["compressed"] else ""))


def _clean_batch(words: list[int], p2m_size: int) -> dict[int, int] | None:
    """The count of each page type (in order of first appearance) when the batch is clean
    (no filler, no invalid type, bits 63-32 clear, every pfn below *p2m_size*, no duplicate
    word), worked out over the whole batch at once; None when a word may have a problem
    (then :func:`_check_words` looks at each)."""
    items = as_array(words)
    n = len(items)
    if not n:
        return {}
    nibbles = types(items)
    found = set(nibbles)
    if not INVALID_TYPES.isdisjoint(found) or FILLER in items:
        return None
    raw = items.tobytes()
    step = items.itemsize
    pfns = bytearray(raw)              # each word with its type bits (31-28) cleared
    top = type_byte_index(step)
    pfns[top::step] = raw[top::step].translate(_LOW_NIBBLE)
    masked = array(items.typecode)
    masked.frombytes(pfns)
    if max(masked) >= p2m_size or len(set(items)) != n:   # also catches bits 63-32
        return None
    if len(found) == 1:
        return {nibbles[0]: n}
    return {t: nibbles.count(t) for t in sorted(found, key=nibbles.index)}


def _check_words(words: list[int], p2m_size: int, ctx: StreamContext
                 ) -> tuple[dict[int, int], int]:
    """Check each word, report its problems (capped); return the count of each page type
    (in order of first appearance) and of fillers."""
    problems: list[tuple[str, str, str]] = []
    seen: set[int] = set()
    fillers = 0
    by_type: dict[int, int] = {}
    for i, word in enumerate(words):
        if word == FILLER:
            fillers += 1
            continue
        ptype = (word >> 28) & 0xF
        by_type[ptype] = by_type.get(ptype, 0) + 1
        where = f"pfn[{i}]"
        if ptype in INVALID_TYPES:
            problems.append(("error", f"page type {ptype:#x} is invalid ({word:#x})", where))
        if word >> 32:
            problems.append(("error", f"bits 63-32 set ({word:#x}): a pfn word holds 28 bits "
                                      "of pfn and 4 of type", where))
        pfn = word & 0x0FFFFFFF
        if pfn >= p2m_size and (word & TYPE_MASK) < FIRST_DATALESS_TYPE:
            problems.append(("error", f"pfn {pfn:#x} is beyond the p2m size {p2m_size:#x}",
                             where))
        if word in seen:
            problems.append(("error", f"duplicate pfn word {word:#x} in one batch (Xen's "
                                      "converter refuses it)", where))
        seen.add(word)
    ctx.report_capped(problems, MAX_REPORTED, more="pfn problems in this batch", field="pfn")
    return by_type, fillers


def vcpu_info(record: Record, ctx: StreamContext) -> None:
    """Add the online vcpus (bit indexes) to the checkpoint's set of online vcpus.

    ``state["vcpus"]`` stays a sorted list of distinct ids (at most 4096: the walker refuses
    a max vcpu id above 4095), so
    its size is bounded however many -2 chunks a stream holds. The 4.x saver writes one -2
    chunk per checkpoint; a repeated one gets a warning (once per checkpoint) and its vcpus
    are merged in: Xen's converter would append them again and then expect (and write)
    their contexts twice, which no saver produces."""
    online = [64 * i + bit for i, word in enumerate(record.fields["online"]) if word
              for bit in range(64) if word >> bit & 1]
    record.fields["vcpus_online"] = online
    ctx.state["vcpu_chunks"] += 1
    if ctx.state["vcpu_chunks"] == 1:
        ctx.state["vcpus"] = online  # already sorted and distinct
    else:
        if ctx.state["vcpu_chunks"] == 2:
            ctx.warning("a repeated vcpu info chunk (-2) in one checkpoint: xenmig merges "
                        "its vcpus into the set already listed (Xen's converter would list "
                        "them again and expect their contexts twice)")
        merged = set(ctx.state["vcpus"])
        merged.update(online)
        ctx.state["vcpus"] = sorted(merged)
    shown = ", ".join(str(v) for v in online[:16]) + (" ..." if len(online) > 16 else "")
    record.summary = f"max vcpu id {record.fields['max_vcpu_id']}, online: {shown or 'none'}"
    if not online:
        ctx.error("no vcpu is online", field="online")


def param_chunk(record: Record, ctx: StreamContext) -> None:
    """HVM parameter chunks belong to HVM streams only."""
    ctx.state["params_seen"] += 1
    if ctx.state["guest"] == "pv":
        ctx.error("HVM parameter chunk in a PV stream (Xen's converter refuses it)")
    names = ctx.format.spec.enums["param_chunk"]
    record.summary = f"HVM param {names.label_of(record.type_id)} " \
                     f"({names.name_of(record.type_id)}) = {record.fields['value']:#x}"


def compressed_data(record: Record, ctx: StreamContext) -> None:
    """Decode the page entries of a format-B chunk; each must belong to an announced pfn.

    Entries are counted by kind while they are decoded and not kept: memory does not grow
    with the number of entries (a chunk of 1-byte EMPTY entries holds millions)."""
    data = record.fields["data"]
    if record.fields["size"] != len(data):
        return  # the length rule already failed
    try:
        kinds = count_kinds(data)
    except DeltaError as exc:
        ctx.error(str(exc), field="data")
        return
    entries = sum(kinds.values())
    for kind, count in kinds.items():
        ctx.stat("compressed pages", kind, count)
    pending = ctx.state["pending_pages"] - entries
    if pending < 0:
        ctx.error(f"{entries} compressed pages, but only "
                  f"{ctx.state['pending_pages']} announced pfns await data")
    ctx.state["pending_pages"] = max(pending, 0)
    record.fields["entry_count"] = entries
    record.summary = f"{len(data)} bytes, {entries} pages (" + \
        ", ".join(f"{n} {k}" for k, n in kinds.items()) + ")"


def end_chunk(record: Record, ctx: StreamContext) -> None:
    if ctx.state["compressed"] and ctx.state["pending_pages"]:
        ctx.error(f"{ctx.state['pending_pages']} pages of format-B batches never arrived "
                  "in compressed-data chunks")
        ctx.state["pending_pages"] = 0


def toolstack(record: Record, ctx: StreamContext) -> None:
    """libxl's toolstack data should be version-1 physmap entries (converting to libxl
    needs them); anything else is only worth a warning here."""
    data = record.fields["data"]
    if not data:
        return
    entries = 0
    try:
        for _entry in iter_physmap(data, ctx.state["width"]):   # counted, not kept
            entries += 1
    except PhysmapError as exc:
        ctx.warning(f"not libxl physmap data: {exc} (converting to libxl would fail)",
                    field="data")
        return
    record.summary = f"{len(data)} bytes: libxl physmap, {entries} entries"


def qemu_record(record: Record, ctx: StreamContext) -> None:
    signature = bytes(record.fields["signature"]).decode("ascii")
    ctx.state["qemu"] = signature
    record.summary = f"{signature}, {record.fields['size']} bytes"


def qemu_to_eof(record: Record, ctx: StreamContext) -> None:
    ctx.state["qemu"] = bytes(record.fields["signature"]).decode("ascii")


HANDLERS: dict[str, Callable[..., Any]] = {
    "PAGE_BATCH_32": check_batch,
    "PAGE_BATCH_64": check_batch,
    "VCPU_INFO": vcpu_info,
    "COMPRESSED_DATA_32": compressed_data,
    "COMPRESSED_DATA_64": compressed_data,
    "END": end_chunk,
    "TOOLSTACK": toolstack,
    "QEMU_RECORD": qemu_record,
    "QEMU_RECORD_TO_EOF": qemu_to_eof,
    **{name: param_chunk for name in (
        "HVM_IDENT_PT", "HVM_VM86_TSS", "HVM_CONSOLE_PFN", "HVM_ACPI_IOPORTS_LOCATION",
        "HVM_VIRIDIAN", "HVM_GENERATION_ID_ADDR", "HVM_PAGING_RING_PFN",
        "HVM_MONITOR_RING_PFN", "HVM_SHARING_RING_PFN", "HVM_IOREQ_SERVER_PFN",
        "HVM_NR_IOREQ_SERVER_PAGES")},
}
