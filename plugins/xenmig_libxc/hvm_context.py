"""HVM_CONTEXT: the HVM save records inside the blob, checked as Xen's ``hvm_load`` does.

The blob is a sequence of descriptors (u16 typecode, u16 instance, u32 length) each followed
by ``length`` bytes, starting with a HEADER entry and closed by an END entry. Everything about
the entries comes from the spec (``specs/hvm_context.yaml``): which typecodes exist (enum
``hvm_save_type``), their layouts (types ``hvm_<name>`` and variants ``hvm_<name>__<tag>``),
which are per-vcpu (enum ``hvm_save_per_vcpu``) and which restore zero-extends when shorter
(enum ``hvm_save_zero_extend``), and the field checks (``valid``). This module knows only
the framing and the one-entry-per-(type, instance) bookkeeping.

The blob is either ``bytes`` or, when the record carried more than the engine holds in
memory, a :class:`~xenmig_core.spec.spill.SpilledBytes`: the walk reads it through slices
and readers only (a descriptor, then one entry's body at a time, each read from the blob's
file as it is needed), so memory is bounded by the largest entry the layouts load in memory
(see :func:`body_reader`), never by the blob.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from xenmig_core.engine import Record, StreamContext
from xenmig_core.errors import RecordError
from xenmig_core.plain import Plain
from xenmig_core.spec.layout import BytesReader, Layout, Reader
from xenmig_core.spec.model import FormatSpec
from xenmig_core.spec.spill import SpilledBytes

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

#: an HVM_CONTEXT blob: in memory, or spilled to a temporary file when it is large
Blob = bytes | SpilledBytes

#: ``record.fields['entries']`` keeps the first this many entries (real contexts hold tens);
#: ``entries_dropped`` (present only when non-zero) counts the rest.
MAX_KEPT_ENTRIES = 4096
#: at most this many problems of one HVM_CONTEXT record are reported; the rest are counted
MAX_REPORTED = 20
#: (typecode, instance) pairs remembered to find repeated entries (real contexts: tens)
MAX_TRACKED = 1 << 16
#: entries decoded and checked field by field (a 128-vcpu guest has about 1200); later ones
#: get the framing and typecode checks only, so a huge blob of tiny entries stays cheap
MAX_CHECKED = 1 << 14


class Entry(Plain):
    """One save record: its descriptor and where its body lies in the blob. (A
    :class:`~xenmig_core.plain.Plain` class with its ``__init__`` written out: a dataclass
    would cost every run its module and code generation.)"""

    index: int
    typecode: int
    instance: int
    length: int
    desc_offset: int
    offset: int                  # of the body, in the blob
    name: str | None             # None: a typecode no spec names
    overruns: bool = False       # the body runs past the blob's end

    def __init__(self, index: int, typecode: int, instance: int, length: int,
                 desc_offset: int, offset: int, name: str | None,
                 overruns: bool = False) -> None:
        self.__dict__.update(index=index, typecode=typecode, instance=instance,
                             length=length, desc_offset=desc_offset, offset=offset, name=name,
                             overruns=overruns)


class Decoded(Plain):
    """An entry's body decoded with the layout that fits it (``layout`` None: none does)."""

    layout_name: str | None = None
    layout: Layout | None = None
    fields: dict[str, Any]       # (a new dict when none is given)
    zero_extended_from: int | None = None
    problem: str | None = None   # why the length does not fit what restore reads

    def __init__(self, layout_name: str | None = None, layout: Layout | None = None,
                 fields: dict[str, Any] | None = None, zero_extended_from: int | None = None,
                 problem: str | None = None) -> None:
        self.__dict__.update(layout_name=layout_name, layout=layout,
                             fields={} if fields is None else fields,
                             zero_extended_from=zero_extended_from, problem=problem)


class EntryRules:
    """What the spec says about HVM save entries, gathered once per HVM_CONTEXT record."""

    def __init__(self, spec: FormatSpec) -> None:
        self.spec = spec
        self.names = spec.enums["hvm_save_type"]
        self.codes = {e.name: v for v, e in self.names.entries.items()}
        self.per_vcpu = frozenset(spec.enums["hvm_save_per_vcpu"].entries)
        self.zero_extend = frozenset(spec.enums["hvm_save_zero_extend"].entries)
        self.descriptor = spec.types["hvm_save_descriptor"]
        self.layouts: dict[str, list[tuple[str, Layout]]] = {}
        for tname, layout in spec.types.items():
            if tname.startswith("hvm_"):
                base = tname.split("__", 1)[0]
                self.layouts.setdefault(base, []).append((tname, layout))

    def name_of(self, typecode: int) -> str | None:
        entry = self.names.entries.get(typecode)
        return entry.name if entry is not None else None

    def decode(self, entry: Entry, body: Callable[[], Reader], order: str) -> Decoded:
        """The body with the layout that fits it: a fixed one of its exact size, else one of
        variable size that consumes it exactly, else (a zero-extended type, shorter than
        its full layout) the full layout over the body and zeros, as restore reads it.
        *body* gives a fresh reader over the entry's body (:func:`body_reader`)."""
        if entry.name is None:
            return Decoded()
        size = entry.length
        base_name = f"hvm_{entry.name.lower()}"
        candidates = self.layouts.get(base_name, [])
        for lname, layout in candidates:
            if layout.static_size == size:
                return Decoded(lname, layout, layout.decode(body(), order))
        failure = None
        for lname, layout in candidates:
            if layout.static_size is None:
                reader = body()
                try:
                    fields = layout.decode(reader, order)
                except RecordError as exc:
                    failure = failure or f"does not fit {lname}: {exc.message}"
                    continue
                if reader.remaining == 0:
                    return Decoded(lname, layout, fields)
                failure = failure or f"{reader.remaining} bytes beyond {lname}'s fields"
        base = dict(candidates).get(base_name)
        if base is None or base.static_size is None:
            return Decoded(problem=failure)
        full = base.static_size
        if entry.typecode in self.zero_extend:
            if size < full:    # shorter than a fixed layout: small
                padded = body().take(size, "entry") + bytes(full - size)
                return Decoded(base_name, base, base.decode(BytesReader(padded), order),
                               zero_extended_from=size)
            return Decoded(problem=f"length {size}, at most {full} (restore reads "
                                   "shorter ones zero-extended, never longer)")
        return Decoded(problem=f"length {size}, expected {full}")


def body_reader(blob: Blob, entry: Entry) -> Callable[[], Reader]:
    """Fresh readers over *entry*'s body in *blob*: a view of the bytes, or a reader of the
    spilled blob's file (a field of the entry larger than the engine holds is spilled again,
    so a huge entry costs a chunk)."""
    start, end = entry.offset, entry.offset + entry.length
    if isinstance(blob, SpilledBytes):
        return lambda: blob.reader(start, end)
    view = memoryview(blob)[start:end]
    return lambda: BytesReader(view)


def iter_entries(blob: Blob, order: str, rules: EntryRules) -> Iterator[Entry]:
    """The entries of *blob* up to and including END (typecode 0), or up to one whose body
    overruns the blob (``overruns`` set; the walk stops there). Reads descriptors only."""
    descriptor = struct.Struct(order + "HHI")
    pos = 0
    index = 0
    size = len(blob)
    while pos + descriptor.size <= size:
        typecode, instance, length = descriptor.unpack(blob[pos:pos + descriptor.size])
        start = pos + descriptor.size
        entry = Entry(index, typecode, instance, length, pos, start, rules.name_of(typecode))
        if length > size - start:
            entry.overruns = True
            yield entry
            return
        yield entry
        pos = start + length
        index += 1
        if typecode == 0:
            return


def _label(entry: Entry) -> str:
    name = entry.name or f"typecode {entry.typecode}"
    return f"entry {entry.index} ({name} {entry.instance}) at blob offset {entry.desc_offset:#x}"


def _entry_problems(entry: Entry, decoded: Decoded, rules: EntryRules,
                    desc: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(severity, message, field) for one entry, from the spec's rules."""
    where = f"context.entry[{entry.index}]"
    names: dict[str, Any] = {"typecode": entry.typecode, "instance": entry.instance,
                             "length": entry.length,
                             "per_vcpu": entry.typecode in rules.per_vcpu}
    for path, message, severity in rules.descriptor.check(desc, names):
        yield severity, f"{_label(entry)}: {message}", f"{where}.{path}"
    if entry.name is None:
        yield ("error", f"{_label(entry)}: unknown entry typecode {entry.typecode}: Xen's "
               "hvm_load refuses it (\"unknown entry typecode\"); a spec extension that "
               "names it makes it known", f"{where}.typecode")
        return
    if decoded.problem is not None:
        yield ("error", f"{_label(entry)}: {decoded.problem}: restore fails (\"HVM restore "
               "mismatch\")", f"{where}.length")
    if decoded.layout is not None:
        names.update(decoded.fields)
        for path, message, severity in decoded.layout.check(decoded.fields, names):
            yield severity, f"{_label(entry)}: {message}", f"{where}.{path}"


def check_hvm_context(record: Record, ctx: StreamContext) -> None:
    """Walk the entries and check each as restore does: HEADER first, every typecode known,
    lengths per type (and Xen version, through the layouts' variants), the spec's field
    checks, instances in range, and an END. Repeated (type, instance) entries and per-vcpu
    entries of a vcpu with no CPU entry are warnings (restore loads them; the last wins /
    the vcpu stays down). Stores ``entries`` (typecode, name, instance, offset, length) of the
    first :data:`MAX_KEPT_ENTRIES` and ``entries_dropped``. Linear in the blob's size."""
    blob = record.fields["context"]
    order = ctx.byte_order
    rules = EntryRules(ctx.format.spec)
    body_start = record.offset + ctx.format.record_header(order).size
    header_code, cpu_code = rules.codes.get("HEADER"), rules.codes.get("CPU")
    descriptor = rules.descriptor
    kept: list[dict[str, object]] = []
    # compact keys and values (ints, not tuples or entries): 65536 of each stay a few MiB
    seen: set[int] = set()                   # typecode << 16 | instance
    cpus: set[int] = set()
    vcpu_entries: dict[int, int] = {}        # instance -> its first per-vcpu entry, packed
    reported = dropped = errors = 0
    worst = "warning"
    count = 0
    ended = overran = False
    last_end = 0

    def report(severity: str, message: str, where: str | None, at: int,
               always: bool = False) -> None:
        """Report at blob offset *at*; past MAX_REPORTED only count, except the first error
        and those *always* shown (the blob's framing)."""
        nonlocal reported, dropped, worst, errors
        first_error = severity == "error" and not errors
        errors += severity == "error"
        if reported < MAX_REPORTED or first_error or always:
            reported += 1
            ctx.diagnose(severity, message, field=where, offset=body_start + at)
        else:
            dropped += 1
            worst = "error" if severity == "error" else worst
    for entry in iter_entries(blob, order, rules):
        count += 1
        if len(kept) < MAX_KEPT_ENTRIES:
            kept.append({"typecode": entry.typecode,
                         "name": entry.name or f"unknown({entry.typecode:#x})",
                         "instance": entry.instance, "offset": entry.offset,
                         "length": entry.length})
        if entry.overruns:
            report("error", f"{_label(entry)} claims {entry.length} bytes, only "
                   f"{len(blob) - entry.offset} left", "context", entry.desc_offset, True)
            overran = True
            break
        last_end = entry.offset + entry.length
        if entry.index == 0 and entry.typecode != header_code:
            report("error", f"first entry is {entry.name or entry.typecode}, expected HEADER "
                   "(restore fails: hvm_load reads the header first)", "context", 0)
        if entry.typecode == 0:
            ended = True
            break
        if entry.index < MAX_CHECKED:
            desc = descriptor.decode(BytesReader(blob[entry.desc_offset:entry.offset]), order)
            decoded = rules.decode(entry, body_reader(blob, entry), order)
            for severity, message, where in _entry_problems(entry, decoded, rules, desc):
                report(severity, message, where, entry.desc_offset)
        elif entry.name is None:
            report("error", f"{_label(entry)}: unknown entry typecode {entry.typecode}: Xen's "
                   "hvm_load refuses it (\"unknown entry typecode\")",
                   f"context.entry[{entry.index}].typecode", entry.desc_offset)
        key = entry.typecode << 16 | entry.instance
        if key in seen:
            report("warning", f"{_label(entry)}: a second {entry.name or entry.typecode} entry "
                   f"for instance {entry.instance}: restore loads both, the last wins",
                   f"context.entry[{entry.index}]", entry.desc_offset)
        elif len(seen) < MAX_TRACKED:
            seen.add(key)
        if entry.typecode == cpu_code:
            cpus.add(entry.instance)
        elif entry.typecode in rules.per_vcpu and entry.instance not in vcpu_entries:
            vcpu_entries[entry.instance] = \
                entry.index << 80 | entry.desc_offset << 16 | entry.typecode
    record.fields["entries"] = kept
    if count > len(kept):
        record.fields["entries_dropped"] = count - len(kept)
    for instance, packed in sorted(vcpu_entries.items()):
        if instance not in cpus and ended:
            entry = Entry(packed >> 80, packed & 0xFFFF, instance, 0,
                          (packed >> 16) & ((1 << 64) - 1), 0, rules.name_of(packed & 0xFFFF))
            report("warning", f"{_label(entry)}: vcpu {instance} has no CPU entry: restore "
                   "leaves that vcpu down", f"context.entry[{entry.index}]", entry.desc_offset)
    if not ended and not overran:
        report("error", "no END entry closes the HVM context (restore fails: \"save did not "
               "end with a null entry\")", "context", last_end, True)
    elif ended and last_end != len(blob):
        report("warning", f"{len(blob) - last_end} bytes after the HVM context's END entry",
               "context", last_end)
    if count > MAX_CHECKED + 1:         # said once, whatever the cap
        ctx.diagnose("warning", f"{count - MAX_CHECKED} entries after the first {MAX_CHECKED} "
                     "were checked for their framing and typecode only (real contexts have "
                     "far fewer)", field="context", offset=body_start)
    if dropped:
        ctx.diagnose(worst, f"{dropped} more HVM context problems after the first "
                     f"{MAX_REPORTED}", field="context")
    record.summary = f"{len(blob)} bytes, {count} entries"

