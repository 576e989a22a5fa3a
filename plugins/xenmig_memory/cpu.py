"""A vcpu's registers, from the stream's CPU state, in the shapes memory-dump tools read.

Sources (docs/research/libxc-facts.md sections 5 and 7):

- HVM: the CPU entry (typecode 2, ``struct hvm_hw_cpu``) of HVM_CONTEXT, decoded with the
  spec's layouts ``hvm_cpu`` / ``hvm_cpu__v1`` / ``hvm_cpu__compat`` (picked by size).
- PV: X86_PV_VCPU_BASIC, a ``vcpu_guest_context`` of the guest's width (5168 bytes for
  64-bit, 2800 for 32-bit). In the stream cr3 holds a pfn (64-bit: ``pfn << 12``; 32-bit
  PAE: ``(pfn << 12) | (pfn >> 20)``); :class:`Vcpu` keeps cr3 as the guest-physical
  address of the top page table, which is what the exported memory is indexed by.

Shapes written (facts from the Linux/QEMU core-dump conventions, see docs/memory.md):

- ``NT_PRSTATUS`` notes named ``CORE``: ``struct elf_prstatus`` of x86-64 (336 bytes,
  ``pr_pid`` at 32, 27 user registers from 112) or of i386 (144 bytes, ``pr_pid`` at 24,
  17 registers from 72).
- ``QEMU`` notes (type 0): QEMU's ``QEMUCPUState`` version 1 (GPRs, rip, rflags, ten
  segments, cr0-cr4), which crash reads for cr3.
- Xen dump-core's ``.xen_prstatus`` entries: ``vcpu_guest_context`` of 64-bit layout in a
  5168-byte slot (PV: the stream's own context; HVM: built from the CPU entry).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from xenmig_core.errors import RecordError
from xenmig_core.spec.layout import BytesReader

#: sizeof(vcpu_guest_context_any_t) on x86, the slot size of ``.xen_prstatus``
CONTEXT_SLOT = 5168
CONTEXT_64 = 5168
CONTEXT_32 = 2800
EFER_LMA = 1 << 10
VGCF_I387_VALID = 1 << 0
VGCF_ONLINE = 1 << 5

GPRS_64 = ("r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8", "rax", "rcx",
           "rdx", "rsi", "rdi")
#: 64-bit cpu_user_regs after the GPRs: error_code/entry_vector (u32 each), then 8-byte slots
USER_REGS_64_TAIL = ("rip", "cs", "rflags", "rsp", "ss", "es", "ds", "fs", "gs")
USER_REGS_64 = 520          # offset of user_regs in the 64-bit vcpu_guest_context
CTRLREG_64 = 4984
DEBUGREG_64 = CTRLREG_64 + 64
SEGBASES_64 = CONTEXT_64 - 24   # fs_base, gs_base_kernel, gs_base_user
USER_REGS_32 = 516
CTRLREG_32 = 2716
SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "ldtr", "tr", "gdtr", "idtr")


@dataclass
class Vcpu:
    """One vcpu's registers (missing ones are 0). ``segments`` maps cs/ds/es/fs/gs/ss/ldtr/
    tr/gdtr/idtr to (selector, limit, flags in descriptor-high-word form, base);
    ``context`` is the ``.xen_prstatus`` entry (a full-size vcpu_guest_context)."""

    vcpu_id: int
    regs: dict[str, int] = field(default_factory=dict)
    segments: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    long_mode: bool = True
    context: bytes = b""

    def reg(self, name: str) -> int:
        return self.regs.get(name, 0)

    def selector(self, name: str) -> int:
        return self.segments.get(name, (0, 0, 0, 0))[0]

    def base(self, name: str) -> int:
        return self.segments.get(name, (0, 0, 0, 0))[3]


# -- HVM ---------------------------------------------------------------------------------
def _arbytes_to_flags(arbytes: int) -> int:
    """Xen's 12-bit segment attributes (type:4 s:1 dpl:2 p:1 avl:1 l:1 db:1 g:1) in the
    position they have in a descriptor's high word (type at bit 8, avl..g at 20..23)."""
    return ((arbytes & 0xFF) << 8) | (((arbytes >> 8) & 0xF) << 20)


def hvm_vcpu(vcpu_id: int, entry: bytes, spec_types: dict[str, Any], order: str) -> Vcpu | None:
    """The vcpu of one HVM CPU save entry, or None when no layout fits its size."""
    fields: dict[str, Any] | None = None
    for name, layout in spec_types.items():
        if (name == "hvm_cpu" or name.startswith("hvm_cpu__")) \
                and layout.static_size == len(entry):
            try:
                fields = layout.decode(BytesReader(entry), order)
            except RecordError:
                continue
            break
    if fields is None:
        return None
    regs = {name: fields[name] for name in (*GPRS_64, "rsp", "rip", "rflags", "cr0", "cr2",
                                             "cr3", "cr4", "dr0", "dr1", "dr2", "dr3", "dr6",
                                             "dr7", "msr_efer", "shadow_gs")}
    segments = {}
    for seg in SEGMENTS:
        selector = fields.get(f"{seg}_sel", 0)
        arbytes = fields.get(f"{seg}_arbytes", 0)
        segments[seg] = (selector, fields[f"{seg}_limit"], _arbytes_to_flags(arbytes),
                         fields[f"{seg}_base"])
    regs["fs_base"] = fields["fs_base"]
    regs["gs_base"] = fields["gs_base"]
    regs["kernel_gs_base"] = fields["shadow_gs"]
    vcpu = Vcpu(vcpu_id, regs, segments, long_mode=bool(fields["msr_efer"] & EFER_LMA))
    vcpu.context = _context_from_hvm(vcpu, bytes(fields["fpu_regs"]))
    return vcpu


def _context_from_hvm(vcpu: Vcpu, fpu: bytes) -> bytes:
    """A 64-bit vcpu_guest_context for ``.xen_prstatus``, filled as Xen's getvcpucontext
    fills it for an HVM vcpu: FPU image, flags, user registers, control and debug
    registers, and the fs/gs bases."""
    out = bytearray(CONTEXT_SLOT)
    out[0:512] = fpu.ljust(512, b"\0")[:512]
    struct.pack_into("<Q", out, 512, VGCF_I387_VALID | VGCF_ONLINE)
    r = vcpu.reg
    struct.pack_into("<15Q", out, USER_REGS_64, *(r(n) for n in GPRS_64))
    struct.pack_into("<QQQQQQQQQ", out, USER_REGS_64 + 128, r("rip"), vcpu.selector("cs"),
                     r("rflags"), r("rsp"), vcpu.selector("ss"), vcpu.selector("es"),
                     vcpu.selector("ds"), vcpu.selector("fs"), vcpu.selector("gs"))
    struct.pack_into("<8Q", out, CTRLREG_64, r("cr0"), 0, r("cr2"), r("cr3"), r("cr4"), 0, 0, 0)
    struct.pack_into("<8Q", out, DEBUGREG_64, r("dr0"), r("dr1"), r("dr2"), r("dr3"), 0, 0,
                     r("dr6"), r("dr7"))
    struct.pack_into("<3Q", out, SEGBASES_64, r("fs_base"), r("kernel_gs_base"), r("gs_base"))
    return bytes(out)


# -- PV ----------------------------------------------------------------------------------
def pv_vcpu(vcpu_id: int, blob: bytes, width: int, order: str) -> Vcpu | None:
    """The vcpu of an X86_PV_VCPU_BASIC context of a *width*-byte guest, or None when the
    blob is not of that width's size."""
    if width == 8 and len(blob) == CONTEXT_64:
        return _pv64(vcpu_id, blob, order)
    if width == 4 and len(blob) == CONTEXT_32:
        return _pv32(vcpu_id, blob, order)
    return None


def _pv64(vcpu_id: int, blob: bytes, order: str) -> Vcpu:
    values = struct.unpack_from(order + "15Q", blob, USER_REGS_64)
    regs = dict(zip(GPRS_64, values, strict=True))
    tail = struct.unpack_from(order + "9Q", blob, USER_REGS_64 + 128)
    named = dict(zip(USER_REGS_64_TAIL, tail, strict=True))
    regs.update(rip=named["rip"], rflags=named["rflags"], rsp=named["rsp"])
    cr = struct.unpack_from(order + "8Q", blob, CTRLREG_64)
    dr = struct.unpack_from(order + "8Q", blob, DEBUGREG_64)
    regs.update(cr0=cr[0], cr2=cr[2], cr3=cr[3] & ~0xFFF, cr4=cr[4], dr0=dr[0], dr1=dr[1],
                dr2=dr[2], dr3=dr[3], dr6=dr[6], dr7=dr[7])
    fs_base, gs_kernel, gs_user = struct.unpack_from(order + "3Q", blob, SEGBASES_64)
    regs.update(fs_base=fs_base, gs_base=gs_user, kernel_gs_base=gs_kernel,
                msr_efer=EFER_LMA | (1 << 8))
    segments = {seg: (named[seg] & 0xFFFF, 0, 0, 0) for seg in ("cs", "ss", "es", "ds", "fs",
                                                                "gs")}
    segments["fs"] = (segments["fs"][0], 0, 0, fs_base)
    segments["gs"] = (segments["gs"][0], 0, 0, gs_user)
    context = blob if order == "<" else b""
    return Vcpu(vcpu_id, regs, segments, long_mode=True, context=context)


def _pv32(vcpu_id: int, blob: bytes, order: str) -> Vcpu:
    ebx, ecx, edx, esi, edi, ebp, eax = struct.unpack_from(order + "7I", blob, USER_REGS_32)
    eip, cs = struct.unpack_from(order + "IH", blob, USER_REGS_32 + 32)
    eflags, esp, ss, es, ds, fs, gs = struct.unpack_from(order + "7I", blob, USER_REGS_32 + 40)
    cr = struct.unpack_from(order + "8I", blob, CTRLREG_32)
    raw_cr3 = cr[3]
    pfn = (raw_cr3 >> 12) | ((raw_cr3 & 0xFFF) << 20)      # undo the extended-cr3 rotation
    regs = {"rax": eax, "rbx": ebx, "rcx": ecx, "rdx": edx, "rsi": esi, "rdi": edi,
            "rbp": ebp, "rsp": esp, "rip": eip, "rflags": eflags, "cr0": cr[0],
            "cr2": cr[2], "cr3": pfn << 12, "cr4": cr[4]}
    segments = {"cs": (cs, 0, 0, 0), "ss": (ss & 0xFFFF, 0, 0, 0), "es": (es & 0xFFFF, 0, 0, 0),
                "ds": (ds & 0xFFFF, 0, 0, 0), "fs": (fs & 0xFFFF, 0, 0, 0),
                "gs": (gs & 0xFFFF, 0, 0, 0)}
    context = blob.ljust(CONTEXT_SLOT, b"\0") if order == "<" else b""
    return Vcpu(vcpu_id, regs, segments, long_mode=False, context=context)


# -- notes -------------------------------------------------------------------------------
NT_PRSTATUS = 1
QEMU_NOTE_TYPE = 0
QEMU_CPUSTATE_VERSION = 1
PRSTATUS_64_SIZE = 336
PRSTATUS_32_SIZE = 144


def elf_note(name: bytes, note_type: int, desc: bytes) -> bytes:
    """One ELF64 note: namesz, descsz, type, then name and desc each padded to 4 bytes."""
    name_z = name + b"\0"
    head = struct.pack("<III", len(name_z), len(desc), note_type)
    return (head + name_z.ljust(-(-len(name_z) // 4) * 4, b"\0")
            + desc.ljust(-(-len(desc) // 4) * 4, b"\0"))


def prstatus_64(vcpu: Vcpu) -> bytes:
    """``struct elf_prstatus`` of x86-64 for *vcpu* (pr_pid = vcpu id + 1, as 0 is not a
    process id tools accept)."""
    out = bytearray(PRSTATUS_64_SIZE)
    struct.pack_into("<I", out, 32, vcpu.vcpu_id + 1)
    r = vcpu.reg
    values = [r(n) for n in GPRS_64] + [
        0,                                       # orig_rax
        r("rip"), vcpu.selector("cs"), r("rflags"), r("rsp"), vcpu.selector("ss"),
        r("fs_base"), r("gs_base"), vcpu.selector("ds"), vcpu.selector("es"),
        vcpu.selector("fs"), vcpu.selector("gs")]
    struct.pack_into("<27Q", out, 112, *(v & 0xFFFFFFFFFFFFFFFF for v in values))
    return bytes(out)


def prstatus_32(vcpu: Vcpu) -> bytes:
    """``struct elf_prstatus`` of i386 for *vcpu* (low 32 bits of each register)."""
    out = bytearray(PRSTATUS_32_SIZE)
    struct.pack_into("<I", out, 24, vcpu.vcpu_id + 1)
    r = vcpu.reg
    m = 0xFFFFFFFF
    struct.pack_into("<7I", out, 72, r("rbx") & m, r("rcx") & m, r("rdx") & m, r("rsi") & m,
                     r("rdi") & m, r("rbp") & m, r("rax") & m)
    struct.pack_into("<4I", out, 100, vcpu.selector("ds"), vcpu.selector("es"),
                     vcpu.selector("fs"), vcpu.selector("gs"))
    struct.pack_into("<IIIII", out, 116, 0, r("rip") & m, vcpu.selector("cs"),
                     r("rflags") & m, r("rsp") & m)
    struct.pack_into("<I", out, 136, vcpu.selector("ss"))
    return bytes(out)


def qemu_cpustate(vcpu: Vcpu) -> bytes:
    """QEMU's ``QEMUCPUState`` (version 1) for *vcpu*."""
    r = vcpu.reg
    gprs = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
            "r12", "r13", "r14", "r15", "rip", "rflags")
    body = struct.pack("<18Q", *(r(n) & 0xFFFFFFFFFFFFFFFF for n in gprs))
    for seg in ("cs", "ds", "es", "fs", "gs", "ss", "ldtr", "tr", "gdtr", "idtr"):
        selector, limit, flags, base = vcpu.segments.get(seg, (0, 0, 0, 0))
        body += struct.pack("<IIIIQ", selector & 0xFFFFFFFF, limit & 0xFFFFFFFF,
                            flags & 0xFFFFFFFF, 0, base & 0xFFFFFFFFFFFFFFFF)
    body += struct.pack("<5Q", r("cr0"), 0, r("cr2"), r("cr3"), r("cr4"))
    size = 8 + len(body)
    return struct.pack("<II", QEMU_CPUSTATE_VERSION, size) + body


def elf_notes(vcpus: list[Vcpu], long_mode: bool) -> bytes:
    """The PT_NOTE contents: one CORE/NT_PRSTATUS note per vcpu, then one QEMU note per
    vcpu (QEMU's order)."""
    make = prstatus_64 if long_mode else prstatus_32
    notes = [elf_note(b"CORE", NT_PRSTATUS, make(v)) for v in vcpus]
    notes += [elf_note(b"QEMU", QEMU_NOTE_TYPE, qemu_cpustate(v)) for v in vcpus]
    return b"".join(notes)
