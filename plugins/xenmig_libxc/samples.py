"""Deterministic sample libxc streams, for ``examples/`` and the test suite.

A sample is a list of :class:`Step` (one record each) plus header fields; tests edit the list
(drop, repeat, reorder, corrupt a field) and :func:`assemble` writes it with the library's
:class:`~xenmig_core.writer.StreamWriter`, in either byte order. Page contents are a
repeating pattern derived from the pfn, so every sample is byte-for-byte reproducible.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from typing import Any

from xenmig_core.spec.model import FormatSpec
from xenmig_core.writer import StreamWriter

PAGE = 4096
VCPU_BASIC_64 = 5168
VCPU_BASIC_32 = 2800
NOTAB, L1, L2, L3, L4, PINNED, XTAB = 0x0, 0x1, 0x2, 0x3, 0x4, 0x8, 0xF


@dataclass
class Step:
    """One record to write: by name with fields and payload, plus writer overrides.

    A field value may be a callable taking the byte order (``"little"`` or ``"big"``): it
    is called when the sample is assembled, for contents that a producer writes in the
    stream's byte order inside an opaque blob (the HVM save records of HVM_CONTEXT).
    """

    name: str
    fields: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""
    overrides: dict[str, Any] = field(default_factory=dict)

    def write(self, writer: StreamWriter, byte_order: str) -> int:
        """Write this step's record with *writer*; returns its offset."""
        fields = {k: v(byte_order) if callable(v) else v for k, v in self.fields.items()}
        return writer.record(self.name, fields, payload=self.payload, **self.overrides)


@dataclass
class Sample:
    image_header: dict[str, Any]
    domain_header: dict[str, Any]
    steps: list[Step]

    def index(self, name: str) -> int:
        """Position of the first step named *name*."""
        return next(i for i, s in enumerate(self.steps) if s.name == name)


def page_bytes(pfn: int) -> bytes:
    """Deterministic contents of page *pfn*."""
    return struct.pack("<QQ", pfn, pfn ^ 0x5A5A5A5A5A5A5A5A) * (PAGE // 16)


def page_data(entries: list[tuple[int, int]]) -> Step:
    """A PAGE_DATA step for (pfn, type) pairs; pages carry data for types 0-4 and 9-0xC."""
    words = [(ptype << 60) | pfn for pfn, ptype in entries]
    payload = b"".join(page_bytes(pfn) for pfn, ptype in entries
                       if ptype <= L4 or PINNED | L1 <= ptype <= PINNED | L4)
    return Step("PAGE_DATA", {"count": len(words), "pfn": words}, payload)


def vcpu(name: str, vcpu_id: int, size: int) -> Step:
    blob = bytes((vcpu_id * 31 + i) & 0xFF for i in range(size))
    return Step(name, {"vcpu_id": vcpu_id}, blob)


def _headers(version: int, domain_type: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return ({"marker": 0xFFFFFFFFFFFFFFFF, "id": 0x58454E46, "version": version, "options": 0},
            {"type": domain_type, "page_shift": 12, "xen_major": 4, "xen_minor": 17})


def _policies() -> list[Step]:
    leaves = [{"leaf": 0, "subleaf": 0xFFFFFFFF, "a": 0xD, "b": 0x756E6547, "c": 0x6C65746E,
               "d": 0x49656E69},
              {"leaf": 7, "subleaf": 0, "a": 0, "b": 0x209, "c": 0, "d": 0}]
    return [Step("X86_CPUID_POLICY", {"leaves": leaves}),
            Step("X86_MSR_POLICY", {"msrs": [{"idx": 0xCE, "flags": 0, "val": 0}]}),
            Step("STATIC_DATA_END")]


def pv_sample(*, version: int = 3, width: int = 8, vcpus: int = 2, pages: int = 96) -> Sample:
    """An x86 PV guest: page tables, normal pages and a hole, *vcpus* vcpus."""
    ihdr, dhdr = _headers(version, 1)
    max_pfn = pages - 1
    fpp = PAGE // width
    frames = max_pfn // fpp + 1
    levels = 4 if width == 8 else 3
    top = L4 if width == 8 else L3
    steps = [Step("X86_PV_INFO", {"guest_width": width, "pt_levels": levels})]
    if version >= 3:
        steps += _policies()
    steps.append(Step("X86_PV_P2M_FRAMES", {"p2m_start_pfn": 0, "p2m_end_pfn": max_pfn,
                                            "p2m_pfns": [0x1000 + i for i in range(frames)]}))
    first = [(0, PINNED | top), (1, PINNED | L3 if width == 8 else L2), (2, L2), (3, L1)]
    first += [(pfn, NOTAB) for pfn in range(4, pages // 2)]
    second = [(pfn, XTAB if pfn % 16 == 15 else NOTAB) for pfn in range(pages // 2, pages)]
    steps += [page_data(first), page_data(second)]
    steps.append(Step("X86_TSC_INFO", {"mode": 0, "khz": 2400000, "nsec": 123456789,
                                       "incarnation": 1}))
    steps.append(Step("SHARED_INFO", {}, bytes(range(256)) * 16))
    basic = VCPU_BASIC_64 if width == 8 else VCPU_BASIC_32
    for v in range(vcpus):
        steps += [vcpu("X86_PV_VCPU_BASIC", v, basic), vcpu("X86_PV_VCPU_EXTENDED", v, 24),
                  vcpu("X86_PV_VCPU_XSAVE", v, 16 + 576), vcpu("X86_PV_VCPU_MSRS", v, 32)]
    steps.append(Step("END"))
    return Sample(ihdr, dhdr, steps)


def hvm_entry(order: str, typecode: int, instance: int, body: bytes) -> bytes:
    """One HVM save record: descriptor (u16 typecode, u16 instance, u32 length) and body."""
    return struct.pack(order + "HHI", typecode, instance, len(body)) + body


def hvm_cpu_body(order: str, v: int) -> bytes:
    """struct hvm_hw_cpu (1032 bytes) of a 64-bit guest in long mode, vcpu *v*."""
    fpu = struct.pack(order + "HHHH", 0x37F, 0, 0, 0) + bytes(16) \
        + struct.pack(order + "II", 0x1F80, 0xFFFF) + bytes(512 - 32)
    gprs = [0x1000 * v + i for i in range(16)]                       # rax .. r15
    rip, rflags = 0xFFFFFFFF81000000 + 0x40 * v, 0x246
    crs = [0x80050033, 0, 0x1000 + 0x1000 * v, 0x3506F0]             # cr0 cr2 cr3 cr4
    drs = [0, 0, 0, 0, 0xFFFF0FF0, 0x400]                              # dr0-3 dr6 dr7
    sels = [0x10, 0x18, 0x18, 0, 0, 0x18, 0x40, 0]                    # cs ds es fs gs ss tr ldtr
    limits = [0xFFFFFFFF] * 6 + [0x67, 0, 0xFFF, 0x7F]                # .. tr ldtr idtr gdtr
    bases = [0] * 6 + [0xFFFFFE0000003000, 0, 0xFFFFFE0000000000, 0xFFFFFE0000001000]
    arbytes = [0xA09B, 0xC093, 0xC093, 0x1C000, 0x1C000, 0xC093, 0x8B, 0x1C000]
    msrs = [0, 0xFFFFFE0000003000, 0, 0xFFFF888000000000 + (v << 20),  # sysenter cs/esp/eip,
            0, 0xFFFFFFFF81A00010, 0x0023001000000000,                # shadow gs, flags, lstar,
            0xFFFFFFFF81A00040, 0x47700, 0xD01, v]                    # star .. efer, tsc_aux
    # tsc, pending event, error code, flags (FPU initialised), pad0
    tail = struct.pack(order + "QIIII", 0x123456789A + v, 0, 0, 1, 0)
    return (fpu + struct.pack(order + "18Q", *gprs, rip, rflags)
            + struct.pack(order + "10Q", *crs, *drs) + struct.pack(order + "8I", *sels)
            + struct.pack(order + "10I", *limits) + struct.pack(order + "10Q", *bases)
            + struct.pack(order + "8I", *arbytes) + struct.pack(order + "11Q", *msrs) + tail)


def _per_domain(order: str) -> list[tuple[int, int, bytes]]:
    """PIC x2, IOAPIC, PCI_IRQ, ISA_IRQ, PCI_LINK, PIT, RTC, HPET, PMTIMER, VIRIDIAN_DOMAIN
    (typecode, instance, body), as an idle guest would have them."""
    pics = [(3, 0, bytes([0x01, 0xB8, 0, 0x30, 0, 0x40, 0x00, 0])),   # master, is_master set
            (3, 1, bytes([0x00, 0xFF, 0, 0x38, 0, 0x00, 0x0C, 0]))]
    redir = b"".join(struct.pack(order + "BBB4sB", 0x30 + pin if pin < 16 else 0,
                                 0x80 if 16 <= pin < 24 else 0, 0 if pin < 16 else 1,
                                 bytes(4), 0) for pin in range(48))
    ioapic = struct.pack(order + "QII", 0xFEC00000, 0, 0) + redir
    channel = struct.Struct(order + "IHBBBBBBBBBB")
    pit = (channel.pack(0x10000, 0, 0, 0, 0x34, 3, 3, 0, 3, 2, 0, 1)
           + channel.pack(0x12, 0, 0, 0, 0x54, 1, 1, 0, 1, 2, 0, 1)
           + channel.pack(0x10000, 0, 0, 0, 0x36, 3, 3, 0, 3, 3, 0, 0)
           + struct.pack(order + "II", 0, 0))
    rtc = bytes([0x30, 0, 0x15, 0, 0x12, 0, 2, 1, 1, 12, 0x26, 0x02, 0x00, 0x80]) \
        + bytes([0x0C, 0]) + struct.pack(order + "q", -3600)
    hpet = struct.pack(order + "5Q", 0x05F5E1008086A201, 0, 1, 0, 0) + bytes(25 * 8) \
        + struct.pack(order + "QQ", 0x2A3B4C5D, 0) \
        + b"".join(struct.pack(order + "4Q", 0x30 + 0x10 * t, 0xFFFFFFFF, 0, 0) for t in range(3)) \
        + bytes(84 * 8) + struct.pack(order + "3Q", 0, 0, 0)
    return [*pics, (4, 0, ioapic), (7, 0, bytes(16)),
            (8, 0, struct.pack(order + "Q", 1 << 0)),
            (9, 0, bytes([5, 10, 11, 5, 0, 0, 0, 0])), (10, 0, pit), (11, 0, rtc),
            (12, 0, hpet), (13, 0, struct.pack(order + "IHH", 0x00ABCDEF, 0, 0x0120)),
            (15, 0, struct.pack(order + "4Q", 0x1F000, 0x1040A00002580, 0x123456, 0x1E000))]


def _per_vcpu(order: str, v: int) -> dict[int, bytes]:
    """The per-vcpu entries of vcpu *v* but CPU, by typecode."""
    apic_base = 0xFEE00800 | (0x100 if v == 0 else 0)                # enabled; BSP on vcpu 0
    regs = bytearray(1024)
    regs[0x20:0x24] = struct.pack(order + "I", (2 * v) << 24)        # APIC ID
    regs[0x30:0x34] = struct.pack(order + "I", 0x50014)              # version
    regs[0xF0:0xF4] = struct.pack(order + "I", 0x1FF)                # spurious vector, enabled
    mtrr = struct.pack(order + "Q", 0x0007040600070406) \
        + struct.pack(order + "4Q", 0x6, 0xFFFFFFF0000800, 0xC0000000, 0xFFFFFC0000800) \
        + bytes(12 * 8) + struct.pack(order + "11Q", *([0x0606060606060606] * 11)) \
        + struct.pack(order + "QQ", 0x508, 0xC06)
    xsave = struct.pack(order + "3Q", 0, 0x7, 0x7) + bytes(512) \
        + struct.pack(order + "8Q", 0x7, 0, 0, 0, 0, 0, 0, 0) + bytes(256)   # x87, SSE, AVX
    viridian = struct.pack(order + "QB7sQ", 0x2001 + (v << 12), 0, bytes(7), 0x3000 + v) \
        + bytes(16 * 8 + 4 * 8 + 4 * 8)
    return {5: struct.pack(order + "QIIQII", apic_base, 0, 0, 0, 2 * v, 0),
            6: bytes(regs), 14: mtrr, 16: xsave, 17: viridian,
            18: struct.pack(order + "4Q", 0x1000802, 0, 0, 0),
            19: struct.pack(order + "Q", 0),
            20: struct.pack(order + "IIIIQ", 1, 0, 0xC0000103, 0, v)}   # one MSR: TSC_AUX


def hvm_context_blob(vcpus: int = 1, byte_order: str = "little") -> bytes:
    """A realistic HVM context of a *vcpus*-vcpu 64-bit guest: one entry of every type Xen's
    save.h declares (per-vcpu types once per vcpu), in Xen's save order (by typecode), in
    *byte_order* (the hypervisor writes its save records in the host's order, which is the
    stream's). Every entry passes restore's checks."""
    order = "<" if byte_order == "little" else ">"
    entries = [(1, 0, struct.pack(order + "IIQII", 0x54381286, 1, 0, 0x000306A9, 2400000))]
    entries += [(2, v, hvm_cpu_body(order, v)) for v in range(vcpus)]
    per_vcpu = [_per_vcpu(order, v) for v in range(vcpus)]
    per_domain = _per_domain(order)
    for typecode in range(3, 21):
        entries += [e for e in per_domain if e[0] == typecode]
        entries += [(typecode, v, bodies[typecode]) for v, bodies in enumerate(per_vcpu)
                    if typecode in bodies]
    return b"".join(hvm_entry(order, *e) for e in entries) + hvm_entry(order, 0, 0, b"")


def hvm_sample(*, version: int = 3, vcpus: int = 2, pages: int = 64) -> Sample:
    """An x86 HVM guest with a hole (XTAB pages), its HVM context and params."""
    ihdr, dhdr = _headers(version, 2)
    steps = _policies() if version >= 3 else []
    half = pages // 2
    steps += [page_data([(pfn, NOTAB) for pfn in range(half)]),
              page_data([(pfn, XTAB if 40 <= pfn < 44 else NOTAB)
                         for pfn in range(half, pages)])]
    steps.append(Step("X86_TSC_INFO", {"mode": 0, "khz": 2400000, "nsec": 987654321,
                                       "incarnation": 3}))
    steps.append(Step("HVM_CONTEXT", {"context": lambda order: hvm_context_blob(vcpus, order)}))
    params = [(1, 0xFEFFF), (5, 0xFEFFE), (6, 0xFEFFD), (17, 0xFEFFC), (9, 0x1)]
    steps.append(Step("HVM_PARAMS", {"count": len(params), "params": [
        {"index": i, "value": v} for i, v in params]}))
    steps.append(Step("END"))
    return Sample(ihdr, dhdr, steps)


def assemble(spec: FormatSpec, sample: Sample, byte_order: str = "little") -> bytes:
    """Write *sample* as a stream of format *spec* in *byte_order*."""
    return assemble_with_offsets(spec, sample, byte_order)[0]


def assemble_with_offsets(spec: FormatSpec, sample: Sample,
                          byte_order: str = "little") -> tuple[bytes, list[int]]:
    """Like :func:`assemble`, plus the offset of each step's record in the output."""
    out = io.BytesIO()
    writer = StreamWriter(out, spec, byte_order)
    ihdr = dict(sample.image_header)
    if byte_order == "big":
        ihdr["options"] = ihdr.get("options", 0) | 1
    writer.header("image_header", ihdr)
    writer.header("domain_header", sample.domain_header)
    offsets = []
    for step in sample.steps:
        offsets.append(step.write(writer, byte_order))
    return out.getvalue(), offsets
