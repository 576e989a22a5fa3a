"""Helpers of the memory-export tests: streams with known pages and registers, exports,
and readers of the exported files (Volatility 3's layers, plus a reader of Xen dump-core
sections written from Xen's docs/misc/dump-core-format.txt)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from xenmig_core.convert import ConvertOptions, convert
from xenmig_core.registry import Registry
from xenmig_libxc.samples import Step

PAGE = 4096
TARGETS = ("raw", "elf", "lime", "xen-core")
EFER_LMA_LME = (1 << 10) | (1 << 8)


def page(pfn: int, generation: int = 0) -> bytes:
    """Page contents unique to (pfn, generation)."""
    return struct.pack("<QQ", pfn, generation * 0x1_0000_0001 + 0xC0FFEE) * (PAGE // 16)


def page_step(entries: list[tuple[int, int]], generation: int = 0) -> tuple[Step, dict]:
    """A PAGE_DATA step for (pfn, type) pairs and the pages it carries: {pfn: bytes or None
    for a page type without data}."""
    words = [(ptype << 60) | pfn for pfn, ptype in entries]
    carried: dict[int, bytes | None] = {}
    payload = b""
    for pfn, ptype in entries:
        if ptype in (0xD, 0xE, 0xF):
            carried[pfn] = None
        else:
            carried[pfn] = page(pfn, generation)
            payload += carried[pfn]
    return Step("PAGE_DATA", {"count": len(words), "pfn": words}, payload), carried


def apply(memory: dict[int, bytes], carried: dict[int, bytes | None]) -> None:
    """Replay a PAGE_DATA record onto *memory* (last copy wins; no-data types remove)."""
    for pfn, data in carried.items():
        if data is None:
            memory.pop(pfn, None)
        else:
            memory[pfn] = data


def regs_for(vcpu: int, long_mode: bool = True) -> dict[str, int]:
    """Distinct register values for *vcpu* (cr3 a page-aligned guest-physical address)."""
    mask = 0xFFFFFFFFFFFFFFFF if long_mode else 0xFFFFFFFF
    return {"rip": (0xFFFFFFFF81000000 + 0x1000 * vcpu + 0x123) & mask,
            "rsp": (0xFFFFC90000004000 + 0x2000 * vcpu - 0x38) & mask,
            "rax": 0x1111 * (vcpu + 1), "rbx": 0x2222, "rcx": 0x3333, "rdx": 0x4444,
            "cr3": (0x5000 + 0x1000 * vcpu), "rflags": 0x246}


def hvm_context(spec_types: dict[str, Any], vcpus: int, long_mode: bool = True,
                generation: int = 0) -> bytes:
    """HVM_CONTEXT: HEADER, a CPU entry per vcpu encoded with the spec's hvm_cpu layout
    (registers from :func:`regs_for`, rip plus *generation*), END."""
    layout = spec_types["hvm_cpu"]

    def entry(typecode: int, instance: int, body: bytes) -> bytes:
        return struct.pack("<HHI", typecode, instance, len(body)) + body
    out = entry(1, 0, struct.pack("<IIQII", 0x54381286, 1, 0, 0x000306A9, 2400000))
    for v in range(vcpus):
        values: dict[str, Any] = {f.id: 0 for f in layout.fields}
        values["fpu_regs"] = bytes(512)
        values.update(regs_for(v, long_mode))
        values["rip"] += generation
        values.update(cs_sel=0x10, ss_sel=0x18, ds_sel=0x18, es_sel=0x18, cr0=0x80050033,
                      cr4=0x6F0, msr_efer=EFER_LMA_LME if long_mode else 0,
                      cs_arbytes=0xA9B, gs_base=0xFFFF888000000000 + v)
        out += entry(2, v, layout.encode(values, "<"))
    return out + entry(0, 0, b"")


def pv_context(vcpu: int, width: int, cr3_pfn: int) -> bytes:
    """An X86_PV_VCPU_BASIC context (Xen's vcpu_guest_context of the guest's width) with
    :func:`regs_for` registers and cr3 holding *cr3_pfn* as the stream encodes it."""
    regs = regs_for(vcpu, long_mode=width == 8)
    if width == 8:
        blob = bytearray(5168)
        gprs = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax",
                "rcx", "rdx", "rsi", "rdi")
        struct.pack_into("<15Q", blob, 520, *(regs.get(n, 0) for n in gprs))
        struct.pack_into("<QQQQQ", blob, 520 + 128, regs["rip"], 0xE033, regs["rflags"],
                         regs["rsp"], 0xE02B)
        struct.pack_into("<Q", blob, 4984 + 24, cr3_pfn << 12)
        return bytes(blob)
    blob = bytearray(2800)
    struct.pack_into("<7I", blob, 516, regs["rbx"], regs["rcx"], regs["rdx"], 0, 0, 0,
                     regs["rax"])
    struct.pack_into("<IH", blob, 516 + 32, regs["rip"], 0xE019)
    struct.pack_into("<II", blob, 516 + 40, regs["rflags"], regs["rsp"])
    extended = ((cr3_pfn << 12) | (cr3_pfn >> 20)) & 0xFFFFFFFF
    struct.pack_into("<I", blob, 2716 + 12, extended)
    return bytes(blob)


def export(registry: Registry, source: Path, target: str, checkpoint: int | None = None
           ) -> tuple[Path, str]:
    """Convert *source* to *target* beside it; returns the output and the summary label."""
    out = source.with_name(f"{source.name}.{target}")
    options = ConvertOptions(target=target,
                             extra={} if checkpoint is None else {"checkpoint": checkpoint})
    result = convert(registry, str(source), str(out), options)
    return out, result.source_format


# -- readers -----------------------------------------------------------------------------
def vol_layer(path: Path, target: str) -> Any:
    """The exported file opened with Volatility 3's own layer for its format."""
    from volatility3.framework import contexts
    from volatility3.framework.layers import elf, lime, physical, xen
    cls = {"elf": elf.Elf64Layer, "lime": lime.LimeLayer,
           "xen-core": xen.XenCoreDumpLayer}[target]
    ctx = contexts.Context()
    ctx.config["base.location"] = path.resolve().as_uri()
    ctx.add_layer(physical.FileLayer(ctx, "base", "base"))
    ctx.config["memory.base_layer"] = "base"
    layer = cls(ctx, "memory", "memory")
    ctx.add_layer(layer)
    return layer


def elf_notes(data: bytes) -> list[tuple[bytes, int, bytes]]:
    """(name, type, desc) of every note in the PT_NOTE segments of an ELF64 file."""
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    notes = []
    for i in range(phnum):
        ptype, _flags, offset, _v, _p, size = struct.unpack_from("<IIQQQQ", data,
                                                                  phoff + i * phentsize)
        if ptype != 4:
            continue
        pos = offset
        while pos < offset + size:
            namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
            pos += 12
            name = data[pos:pos + namesz].rstrip(b"\0")
            pos += -(-namesz // 4) * 4
            notes.append((name, ntype, data[pos:pos + descsz]))
            pos += -(-descsz // 4) * 4
    return notes


def xen_core_sections(data: bytes) -> dict[str, bytes]:
    """Section name -> contents of a Xen dump-core file."""
    shoff, = struct.unpack_from("<Q", data, 40)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 58)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
               for i in range(shnum)]
    strtab = headers[shstrndx]
    names = data[strtab[4]:strtab[4] + strtab[5]]
    out = {}
    for h in headers[1:]:
        name = names[h[0]:names.index(b"\0", h[0])].decode()
        out[name] = data[h[4]:h[4] + h[5]]
    return out


def xen_core_memory(data: bytes) -> dict[int, bytes]:
    """pfn -> page of a dump-core file, through .xen_p2m or .xen_pfn as the format says."""
    sections = xen_core_sections(data)
    pages = sections[".xen_pages"]
    if ".xen_p2m" in sections:
        table = sections[".xen_p2m"]
        pfns = [struct.unpack_from("<Q", table, i)[0] for i in range(0, len(table), 16)]
    else:
        table = sections[".xen_pfn"]
        pfns = [struct.unpack_from("<Q", table, i)[0] for i in range(0, len(table), 8)]
    return {pfn: pages[i * PAGE:(i + 1) * PAGE] for i, pfn in enumerate(pfns)}
