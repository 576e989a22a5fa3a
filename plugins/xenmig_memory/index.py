"""One engine walk that finds where the guest's memory and CPU state are in a stream.

:class:`MemoryIndex` is a :class:`~xenmig_core.engine.Consumer`. It follows every libxc
context of the walk, whatever wraps it (libxl, xl, libvirt, Remus/COLO captures), and
records, without reading page contents:

- for each pfn, the source offset of its latest copy (``Record.payload_offset`` of its
  PAGE_DATA record plus its place among the record's pages); a later copy replaces an
  earlier one, and a later XTAB/BROKEN/XALLOC entry makes the pfn absent again;
- the latest CPU state of each vcpu (HVM_CONTEXT's CPU entries; X86_PV_VCPU_BASIC), the
  latest SHARED_INFO page, the guest's type, width and page size, Xen's version;
- the checkpoints: with *stop_at* N the walk stops (:class:`Stopped`) right after the
  libxc stream's N-th CHECKPOINT record, so everything recorded is the state at the end of
  checkpoint N.
"""

from __future__ import annotations

from array import array
from typing import Any

from xenmig_core.engine import Consumer, Record, StreamContext
from xenmig_core.errors import StreamError
from xenmig_core.spec.spill import pieces
from xenmig_memory.cpu import Vcpu, hvm_vcpu, pv_vcpu
from xenmig_memory.pfnmap import ABSENT, PAGE, PFN_LIMIT, PfnMap

LIBXC = "libxc"
TYPE_SHIFT = 60
PFN_MASK = (1 << 52) - 1
#: page types whose PAGE_DATA entry carries 4096 bytes (docs/research/libxc-facts.md)
DATA_TYPES = frozenset({0, 1, 2, 3, 4, 9, 10, 11, 12})
#: page types that say "no data here": the pfn is absent from an export
NO_DATA_TYPES = frozenset({0xD, 0xE, 0xF})
HVM_CPU = 2
DOMAIN_PV, DOMAIN_HVM = 1, 2
#: vcpu contexts kept (Xen's largest guests have a few hundred vcpus)
MAX_VCPUS = 4096
#: an HVM CPU entry longer than this is no CPU state any layout reads (real ones: ~1 KiB)
MAX_CPU_ENTRY = 1 << 16
PAYLOAD_RECORDS = ("X86_PV_VCPU_BASIC", "SHARED_INFO")


class Stopped(Exception):
    """Raised from the consumer to end the walk at the requested checkpoint."""


class MemoryIndex(Consumer):
    """Collects what an export needs from one walk (see the module docstring)."""

    def __init__(self, pfns: PfnMap, stop_at: int | None = None, *,
                 contexts: bool = True, strict: bool = True) -> None:
        self.pfns = pfns
        self.stop_at = stop_at
        #: False: read no payload (vcpu contexts, shared info); only count the vcpus
        self.contexts = contexts
        #: False: pfns beyond PFN_LIMIT are counted in ``beyond`` instead of stopping the
        #: walk with a StreamError (a report must not change verify's verdict)
        self.strict = strict
        self.beyond = 0
        self.pv_vcpu_ids: set[int] = set()
        self.libxc: StreamContext | None = None
        self.other_formats: set[str] = set()
        self.page_shift: int | None = None
        self.domain_type = 0
        self.xen_version = (0, 0)
        self.guest_width = 0
        self.hvm_vcpus: dict[int, Vcpu] = {}
        self.pv_contexts: dict[int, bytes] = {}
        self.shared_info: bytes | None = None
        self.byte_order = "<"
        self.checkpoints = 0
        #: source offset just after the last CHECKPOINT record (the end of its state)
        self.checkpoint_end: int | None = None
        self.ended = False
        self.data_pages = 0
        self.problems: list[str] = []
        self._payload: bytearray | None = None

    # -- contexts ------------------------------------------------------------------------
    def _mine(self, ctx: StreamContext) -> bool:
        return ctx is self.libxc

    def on_context_start(self, ctx: StreamContext) -> None:
        if ctx.name == LIBXC and self.libxc is None:
            self.libxc = ctx
        elif ctx.name != LIBXC:
            self.other_formats.add(ctx.name)

    def on_header(self, header: Any) -> None:
        if not self._mine(header.context) or header.name != "domain_header":
            return
        fields = header.fields
        self.page_shift = fields.get("page_shift")
        self.domain_type = fields.get("type", 0)
        self.xen_version = (fields.get("xen_major", 0), fields.get("xen_minor", 0))
        self.byte_order = header.context.byte_order

    # -- records -------------------------------------------------------------------------
    def on_record(self, record: Record) -> None:
        if not self._mine(record.context) or not record.decoded:
            return
        if record.name == "X86_PV_INFO":
            self.guest_width = record.fields["guest_width"]
        elif record.name == "HVM_CONTEXT":
            self._hvm_context(record)
        if record.name == "X86_PV_VCPU_BASIC" and record.length > 8 \
                and len(self.pv_vcpu_ids) < MAX_VCPUS:
            self.pv_vcpu_ids.add(record.fields["vcpu_id"])
        if record.name in PAYLOAD_RECORDS and self.contexts:
            self._payload = bytearray()

    def wants_payload(self, record: Record) -> bool:
        return self._mine(record.context) and record.name in PAYLOAD_RECORDS \
            and self._payload is not None

    def on_payload(self, record: Record, offset: int, chunk: memoryview) -> None:
        assert self._payload is not None
        if len(self._payload) < 8192:               # a context is 5168 bytes at most
            self._payload += chunk[:8192 - len(self._payload)]

    def on_record_end(self, record: Record) -> None:
        if not self._mine(record.context):
            return
        payload, self._payload = self._payload, None
        name = record.name
        if name == "PAGE_DATA" and record.decoded:
            self._page_data(record)
        elif name == "X86_PV_VCPU_BASIC" and payload is not None and record.decoded:
            vcpu_id = record.fields["vcpu_id"]
            if payload and (vcpu_id in self.pv_contexts or len(self.pv_contexts) < MAX_VCPUS):
                self.pv_contexts[vcpu_id] = bytes(payload)
        elif name == "SHARED_INFO" and payload is not None and len(payload) == PAGE:
            self.shared_info = bytes(payload)
        elif name == "CHECKPOINT":
            self.checkpoints += 1
            self.checkpoint_end = record.offset + 8 + record.length
            if self.stop_at is not None and self.checkpoints >= self.stop_at:
                raise Stopped
        elif name == "END":
            self.ended = True

    def _page_data(self, record: Record) -> None:
        """Point each pfn of the record at its page (or mark it absent), run by run."""
        base = record.payload_offset
        if base is None and record.payload_length:
            return
        words = record.fields["pfn"]
        if not words:
            return
        first = words[0]
        if first >> TYPE_SHIFT in DATA_TYPES and base is not None \
                and (first & PFN_MASK) + len(words) <= PFN_LIMIT \
                and _consecutive(words, first):
            # the common case: one type, consecutive pfns (Xen's saver sends such batches)
            self.pfns.set_run(first & PFN_MASK, len(words), base)
            self.data_pages += len(words)
            return
        next_offset = base if base is not None else ABSENT
        run_pfn = run_count = 0
        run_offset = ABSENT
        pfns = self.pfns
        for word in words:
            ptype = word >> TYPE_SHIFT
            pfn = word & PFN_MASK
            if ptype in DATA_TYPES:
                offset = next_offset
                next_offset += PAGE
                self.data_pages += 1
            elif ptype in NO_DATA_TYPES:
                offset = ABSENT
            else:
                continue                           # invalid type: the walk reports it
            if pfn >= PFN_LIMIT:
                if self.strict:
                    raise StreamError(f"pfn {pfn:#x} is beyond what can be exported "
                                      f"(pfns below {PFN_LIMIT:#x})", field="pfn")
                self.beyond += 1
                continue
            if run_count and pfn == run_pfn + run_count and (
                    (offset == ABSENT and run_offset == ABSENT) or
                    (offset != ABSENT and run_offset != ABSENT
                     and offset == run_offset + run_count * PAGE)):
                run_count += 1
                continue
            if run_count:
                pfns.set_run(run_pfn, run_count, run_offset)
            run_pfn, run_count, run_offset = pfn, 1, offset
        if run_count:
            pfns.set_run(run_pfn, run_count, run_offset)

    def _hvm_context(self, record: Record) -> None:
        """The CPU entries of the latest HVM_CONTEXT replace every earlier vcpu state."""
        blob = record.fields.get("context", b"")
        types = record.context.format.spec.types
        vcpus: dict[int, Vcpu] = {}
        for entry in record.fields.get("entries", []):
            if entry["typecode"] != HVM_CPU:
                continue
            if entry["length"] > MAX_CPU_ENTRY:
                self.problems.append(f"vcpu {entry['instance']}: HVM CPU entry of "
                                     f"{entry['length']} bytes is no CPU state")
                continue
            data = bytes(blob[entry["offset"]:entry["offset"] + entry["length"]])
            vcpu = hvm_vcpu(entry["instance"], data, types, self.byte_order)
            if vcpu is None:
                self.problems.append(f"vcpu {entry['instance']}: HVM CPU entry of "
                                     f"{entry['length']} bytes has no known layout")
                continue
            vcpus[entry["instance"]] = vcpu
        self.hvm_vcpus = vcpus

    # -- results -------------------------------------------------------------------------
    def vcpus(self) -> list[Vcpu]:
        """The vcpus with CPU state, in id order."""
        if self.domain_type == DOMAIN_HVM:
            return [self.hvm_vcpus[i] for i in sorted(self.hvm_vcpus)]
        out = []
        for vcpu_id in sorted(self.pv_contexts):
            vcpu = pv_vcpu(vcpu_id, self.pv_contexts[vcpu_id], self.guest_width,
                           self.byte_order)
            if vcpu is not None:
                out.append(vcpu)
        return out

    def vcpu_count(self) -> int:
        """How many vcpus have CPU state (without decoding PV contexts)."""
        return len(self.hvm_vcpus) if self.domain_type == DOMAIN_HVM else len(self.pv_vcpu_ids)

    @property
    def is_pv(self) -> bool:
        return self.domain_type == DOMAIN_PV


def _consecutive(words: Any, first: int) -> bool:
    """True when *words* are first, first + 1, ... (a spilled array: piece by piece)."""
    at = first
    for piece in pieces(words):
        if array("Q", piece) != array("Q", range(at, at + len(piece))):
            return False
        at += len(piece)
    return True
