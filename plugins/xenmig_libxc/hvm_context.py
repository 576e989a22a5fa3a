"""HVM_CONTEXT: the framing of the HVM save records inside the blob.

The blob is a sequence of descriptors (u16 typecode, u16 instance, u32 length) each followed
by ``length`` bytes, starting with a HEADER entry and closed by an END entry (typecode 0).
Entry sizes differ between Xen releases, so only the framing is checked here.
"""

from __future__ import annotations

import struct

from xenmig_core.engine import Record, StreamContext

HEADER_MAGIC = 0x54381286
TYPE_END = 0
TYPE_HEADER = 1
#: ``record.fields['entries']`` keeps the first this many entries (real contexts hold tens);
#: ``entries_dropped`` (present only when non-zero) counts the rest.
MAX_KEPT_ENTRIES = 4096


def check_hvm_context(record: Record, ctx: StreamContext) -> None:
    """Walk the entries; report a bad first entry, an entry overrunning the blob, a missing
    END, or bytes after END. Stores ``entries`` (typecode, name, instance, offset, length)
    of the first :data:`MAX_KEPT_ENTRIES` entries and, when there are more, ``entries_dropped``
    (how many more). Linear in the blob's size."""
    blob = record.fields["context"]
    order = ctx.byte_order
    descriptor = struct.Struct(order + "HHI")
    names = ctx.format.spec.enums["hvm_save_type"]
    entries: list[dict[str, object]] = []
    count = 0
    pos = 0
    ended = False
    while pos + descriptor.size <= len(blob):
        typecode, instance, length = descriptor.unpack_from(blob, pos)
        start = pos + descriptor.size
        if length > len(blob) - start:
            ctx.error(f"entry {count} ({names.name_of(typecode)}) at blob offset {pos:#x} "
                      f"claims {length} bytes, only {len(blob) - start} left", field="context")
            return
        if count < MAX_KEPT_ENTRIES:
            entries.append({"typecode": typecode, "name": names.name_of(typecode),
                            "instance": instance, "offset": start, "length": length})
        count += 1
        if count == 1 and typecode != TYPE_HEADER:
            ctx.error(f"first entry is {names.name_of(typecode)}, expected HEADER",
                      field="context")
        if typecode == TYPE_HEADER and length >= 8:
            magic, version = struct.unpack_from(order + "II", blob, start)
            if magic != HEADER_MAGIC:
                ctx.error(f"HEADER magic {magic:#x}, expected {HEADER_MAGIC:#x}",
                          field="context.header.magic")
            if version != 1:
                ctx.warning(f"HEADER version {version}, expected 1", field="context.header")
        pos = start + length
        if typecode == TYPE_END:
            ended = True
            break
    record.fields["entries"] = entries
    if count > len(entries):
        record.fields["entries_dropped"] = count - len(entries)
    if not ended:
        ctx.error("no END entry closes the HVM context", field="context")
    elif pos != len(blob):
        ctx.warning(f"{len(blob) - pos} bytes after the HVM context's END entry",
                    field="context")
    record.summary = f"{len(blob)} bytes, {count} entries"
