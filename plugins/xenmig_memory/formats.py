"""The four export formats, each written in one pass from a finished :class:`Guest`.

- ``raw``: byte ``pfn * 4096`` holds page pfn; absent pages are holes; the file ends with
  the highest present page.
- ``elf``: ELF64 ``ET_CORE``: a PT_NOTE (per vcpu a ``CORE``/NT_PRSTATUS note, then per
  vcpu a ``QEMU`` note, as QEMU's dump-guest-memory writes them) and one PT_LOAD per run of
  present pfns (``p_paddr`` = ``p_vaddr`` = guest-physical address), data page-aligned.
  More than 65534 program headers use the ELF extended numbering (``e_phnum`` =
  PN_XNUM, the real count in section header 0's ``sh_info``).
- ``lime``: per run a 32-byte LiME header (magic, version 1, first and last address,
  8 reserved bytes) and the run's bytes.
- ``xen-core``: Xen's dump-core layout (Xen's docs/misc/dump-core-format.txt, and the
  order of Xen's own writer): ELF header, section headers, ``.note.Xen`` (none, header,
  xen_version, format_version notes), ``.xen_prstatus``, ``.xen_shared_info`` when the
  stream has it, padding to a page, ``.xen_pages``, then ``.xen_p2m`` (PV: pfn and gmfn,
  gmfn = pfn since the stream's page tables hold pfns) or ``.xen_pfn`` (HVM), then
  ``.shstrtab``.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

from xenmig_memory.cpu import CONTEXT_SLOT, Vcpu, elf_notes
from xenmig_memory.output import Output
from xenmig_memory.pfnmap import PAGE, PfnMap

EM_386 = 3
EM_X86_64 = 62
ET_CORE = 4
PT_LOAD = 1
PT_NOTE = 4
PF_RWX = 7
PN_XNUM = 0xFFFF
SHT_PROGBITS = 1
SHT_STRTAB = 3
SHT_NOTE = 7
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")
LIME_MAGIC = 0x4C694D45
LIME_HEADER = struct.Struct("<IIQQQ")
XC_CORE_MAGIC = 0xF00FEBED
XC_CORE_MAGIC_HVM = 0xF00FEBEE
XEN_ELFNOTE_DUMPCORE_NONE = 0x2000000
XEN_ELFNOTE_DUMPCORE_HEADER = 0x2000001
XEN_ELFNOTE_DUMPCORE_XEN_VERSION = 0x2000002
XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION = 0x2000003
DUMPCORE_FORMAT_VERSION = (0 << 32) | 1
#: xen_extraversion_t 16, xen_compile_info_t 144, capabilities 1024, changeset 64,
#: platform_parameters 8 (xen/include/public/version.h)
XEN_VERSION_STRINGS = 16 + 144 + 1024 + 64 + 8
TABLE_BATCH = 4096
TABLE_PIECE = 1 << 16


@dataclass
class Guest:
    """Everything an export writes: the page map over the input file *src_fd*, the vcpus,
    and what the stream said about the guest."""

    pfns: PfnMap
    src_fd: int
    vcpus: list[Vcpu]
    is_pv: bool
    guest_width: int
    shared_info: bytes | None = None
    xen_version: tuple[int, int] = (0, 0)
    pages: int = 0
    highest_pfn: int = -1
    runs: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    @property
    def long_mode(self) -> bool:
        """Whether the guest runs in 64-bit mode (vcpu 0's EFER.LMA; a 64-bit PV guest)."""
        if self.is_pv:
            return self.guest_width != 4
        return self.vcpus[0].long_mode if self.vcpus else True


def _copy_pages(guest: Guest, out: Output, low: int = 0, high: int | None = None) -> None:
    """Copy the present pages of [low, high) back to back, in pfn order, to ``out.pos``."""
    for _pfn, count, offset in guest.pfns.extents(low, high):
        out.copy(guest.src_fd, offset, count * PAGE)


# -- raw ---------------------------------------------------------------------------------
def write_raw(guest: Guest, out: Output) -> None:
    base = out.pos
    for pfn, count, offset in guest.pfns.extents():
        out.skip_to(base + pfn * PAGE)
        out.copy(guest.src_fd, offset, count * PAGE)
    out.finish()


# -- lime --------------------------------------------------------------------------------
def write_lime(guest: Guest, out: Output) -> None:
    for pfn, count in guest.pfns.runs():
        out.write(LIME_HEADER.pack(LIME_MAGIC, 1, pfn * PAGE, (pfn + count) * PAGE - 1, 0))
        _copy_pages(guest, out, pfn, pfn + count)


# -- elf ---------------------------------------------------------------------------------
def _ident() -> bytes:
    return b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)     # ELFCLASS64, LSB, version 1


def _batched(items: Iterator[bytes]) -> Iterator[bytes]:
    batch: list[bytes] = []
    for item in items:
        batch.append(item)
        if len(batch) >= TABLE_BATCH:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)


def write_elf(guest: Guest, out: Output) -> None:
    notes = elf_notes(guest.vcpus, guest.long_mode)
    phnum = guest.runs + 1
    extended = phnum >= PN_XNUM
    phoff = EHDR.size
    shoff = phoff + phnum * PHDR.size if extended else 0
    notes_offset = phoff + phnum * PHDR.size + (SHDR.size if extended else 0)
    data_offset = -(-(notes_offset + len(notes)) // PAGE) * PAGE
    machine = EM_X86_64 if guest.long_mode else EM_386
    out.write(EHDR.pack(_ident(), ET_CORE, machine, 1, 0, phoff, shoff, 0, EHDR.size,
                        PHDR.size, PN_XNUM if extended else phnum,
                        SHDR.size if extended else 0, 1 if extended else 0, 0))

    def headers() -> Iterator[bytes]:
        yield PHDR.pack(PT_NOTE, 0, notes_offset, 0, 0, len(notes), 0, 0)
        offset = data_offset
        for pfn, count in guest.pfns.runs():
            size = count * PAGE
            yield PHDR.pack(PT_LOAD, PF_RWX, offset, pfn * PAGE, pfn * PAGE, size, size, PAGE)
            offset += size
    for block in _batched(headers()):
        out.write(block)
    if extended:
        out.write(SHDR.pack(0, 0, 0, 0, 0, 0, 0, phnum, 0, 0))
    out.write(notes)
    out.write(bytes(data_offset - (notes_offset + len(notes))))
    _copy_pages(guest, out)


# -- xen-core ----------------------------------------------------------------------------
def _xen_note(note_type: int, desc: bytes) -> bytes:
    """A ``.note.Xen`` note: namesz 4, descsz, type, ``"Xen\\0"``, then the descriptor."""
    return struct.pack("<III", 4, len(desc), note_type) + b"Xen\0" + desc


def _table_entries(first: int, count: int, p2m: bool) -> bytes:
    """``.xen_pfn`` entries (u64 pfn) or ``.xen_p2m`` entries (u64 pfn, u64 gmfn = pfn) for
    pfns first..first+count-1."""
    pfns = array("Q", range(first, first + count))
    if p2m:
        pairs = array("Q", bytes(16 * count))
        pairs[0::2] = pfns
        pairs[1::2] = pfns
        pfns = pairs
    if sys.byteorder != "little":
        pfns.byteswap()
    return pfns.tobytes()


def write_xen_core(guest: Guest, out: Output) -> None:
    nr_vcpus = len(guest.vcpus)
    notes = b"".join([
        _xen_note(XEN_ELFNOTE_DUMPCORE_NONE, b""),
        _xen_note(XEN_ELFNOTE_DUMPCORE_HEADER, struct.pack(
            "<QQQQ", XC_CORE_MAGIC if guest.is_pv else XC_CORE_MAGIC_HVM, nr_vcpus,
            guest.pages, PAGE)),
        _xen_note(XEN_ELFNOTE_DUMPCORE_XEN_VERSION, struct.pack("<QQ", *guest.xen_version)
                  + bytes(XEN_VERSION_STRINGS) + struct.pack("<Q", PAGE)),
        _xen_note(XEN_ELFNOTE_DUMPCORE_FORMAT_VERSION,
                  struct.pack("<Q", DUMPCORE_FORMAT_VERSION)),
    ])
    prstatus = b"".join(v.context.ljust(CONTEXT_SLOT, b"\0")[:CONTEXT_SLOT]
                        for v in guest.vcpus)
    table_name = ".xen_p2m" if guest.is_pv else ".xen_pfn"
    entry = 16 if guest.is_pv else 8
    names = [".shstrtab", ".note.Xen", ".xen_prstatus"]
    if guest.shared_info is not None:
        names.append(".xen_shared_info")
    names += [".xen_pages", table_name]
    strtab = b"\0"
    name_at = {}
    for name in names:
        name_at[name] = len(strtab)
        strtab += name.encode() + b"\0"
    shnum = len(names) + 1
    offset = EHDR.size + shnum * SHDR.size
    sections: list[tuple[str, int, int, int, int, int]] = []   # name, type, off, size, align, ent
    sections.append((".note.Xen", SHT_NOTE, offset, len(notes), 0, 0))
    offset += len(notes)
    sections.append((".xen_prstatus", SHT_PROGBITS, offset, len(prstatus), 8, CONTEXT_SLOT))
    offset += len(prstatus)
    if guest.shared_info is not None:
        sections.append((".xen_shared_info", SHT_PROGBITS, offset, PAGE, 8, PAGE))
        offset += PAGE
    padding = -offset % PAGE
    offset += padding
    pages_size = guest.pages * PAGE
    sections.append((".xen_pages", SHT_PROGBITS, offset, pages_size, PAGE, PAGE))
    offset += pages_size
    table_size = guest.pages * entry
    sections.append((table_name, SHT_PROGBITS, offset, table_size, 8, entry))
    offset += table_size
    strtab_offset = offset
    machine = EM_386 if guest.is_pv and guest.guest_width == 4 else EM_X86_64
    out.write(EHDR.pack(_ident(), ET_CORE, machine, 1, 0, 0, EHDR.size, 0, EHDR.size, 0, 0,
                        SHDR.size, shnum, 1))
    headers = [SHDR.pack(0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
               SHDR.pack(name_at[".shstrtab"], SHT_STRTAB, 0, 0, strtab_offset, len(strtab),
                         0, 0, 0, 0)]
    for name, kind, at, size, align, ent in sections:
        headers.append(SHDR.pack(name_at[name], kind, 0, 0, at, size, 0, 0, align, ent))
    out.write(b"".join(headers))
    out.write(notes)
    out.write(prstatus)
    if guest.shared_info is not None:
        out.write(guest.shared_info)
    out.write(bytes(padding))
    _copy_pages(guest, out)

    pending = bytearray()
    for pfn, count, _offset in guest.pfns.extents():
        for first in range(pfn, pfn + count, TABLE_PIECE):
            pending += _table_entries(first, min(TABLE_PIECE, pfn + count - first),
                                      guest.is_pv)
            if len(pending) >= 1 << 20:
                out.write(pending)
                pending = bytearray()
    out.write(pending)
    out.write(strtab)


WRITERS = {"raw": write_raw, "elf": write_elf, "lime": write_lime, "xen-core": write_xen_core}
