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


def hvm_context_blob(vcpus: int = 1, byte_order: str = "little") -> bytes:
    """HEADER, one CPU entry per vcpu, one LAPIC per vcpu, then END, in *byte_order* (the
    hypervisor writes its save records in the host's order, which is the stream's)."""
    order = "<" if byte_order == "little" else ">"

    def entry(typecode: int, instance: int, body: bytes) -> bytes:
        return struct.pack(order + "HHI", typecode, instance, len(body)) + body
    out = entry(1, 0, struct.pack(order + "IIQII", 0x54381286, 1, 0, 0x000306A9, 2400000))
    for v in range(vcpus):
        out += entry(2, v, bytes((v + i) & 0xFF for i in range(1032)))
        out += entry(5, v, struct.pack(order + "QIIQII", 0xFEE00900, 0, 0, 0, v * 2, 0))
    return out + entry(0, 0, b"")


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
