"""Deterministic legacy images (Xen <= 4.5 layout), written from the facts with plain struct
packing (independent of specs/legacy.yaml, so tests check the spec against them).

:class:`LegacyWriter` writes the pieces (chunks, tails, xl header) in a toolstack width;
:func:`pv_image` and :func:`hvm_image` put whole images together with knobs for every chunk
type, both widths, qemu tails and libxl physmap toolstack data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from xenmig_legacy.compression import encode_delta, encode_full
from xenmig_legacy.physmap import PhysmapEntry, build_physmap
from xenmig_legacy.walker import FILLER
from xenmig_libxc.samples import hvm_context_blob, page_bytes

PAGE = 4096
XL_MAGIC = b"Xen saved domain, xl format\n \0 \r"
VCPU_SIZE = {8: 0x1430, 4: 0xAF0}
PARAM_CHUNKS = {-3: 0xFEFF0000, -4: 0xFEFF1000, -8: 0xFEFFC, -10: 1, -11: 0x1F,
                -14: 0xFE000, -15: 0xFEFF8, -16: 0xFEFF7, -17: 0xFEFF6, -19: 0xFEFF2,
                -20: 2}


def blob(seed: int, size: int) -> bytes:
    """*size* deterministic bytes."""
    return bytes((seed * 31 + i * 7) & 0xFF for i in range(size))


class LegacyWriter:
    """Bytes of the pieces of a legacy image for a *width*-bit toolstack."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.ulong = "Q" if width == 64 else "I"

    def ulongs(self, values: Iterable[int]) -> bytes:
        values = list(values)
        return struct.pack(f"<{len(values)}{self.ulong}", *values)

    def p2m_size(self, size: int) -> bytes:
        return self.ulongs([size])

    def ext_info(self, blocks: Sequence[tuple[bytes, bytes]]) -> bytes:
        body = b"".join(bid + struct.pack("<I", len(data)) + data for bid, data in blocks)
        return self.ulongs([(1 << self.width) - 1]) + struct.pack("<I", len(body)) + body

    def batch(self, words: Sequence[int], pages: Sequence[bytes]) -> bytes:
        return struct.pack("<i", len(words)) + self.ulongs(words) + b"".join(pages)

    @staticmethod
    def chunk(marker: int, body: bytes = b"") -> bytes:
        return struct.pack("<i", marker) + body

    def param(self, marker: int, value: int) -> bytes:
        return self.chunk(marker, struct.pack("<IQ", 0, value))

    def vcpu_info(self, online: Sequence[int]) -> bytes:
        max_id = max(online)
        bitmap = [0] * (max_id // 64 + 1)
        for v in online:
            bitmap[v // 64] |= 1 << (v % 64)
        return self.chunk(-2, struct.pack(f"<i{len(bitmap)}Q", max_id, *bitmap))

    def tsc(self, mode: int, nsec: int, khz: int, incarnation: int) -> bytes:
        return self.chunk(-7, struct.pack("<IQII", mode, nsec, khz, incarnation))

    def toolstack(self, data: bytes) -> bytes:
        return self.chunk(-18, struct.pack("<I", len(data)) + data)

    def compressed(self, data: bytes) -> bytes:
        return self.chunk(-12, self.ulongs([len(data)]) + data)

    def unmapped(self, pfns: Sequence[int]) -> bytes:
        return struct.pack("<I", len(pfns)) + self.ulongs(pfns)

    @staticmethod
    def xsave(mask: int, data: bytes) -> bytes:
        return struct.pack("<QQ", mask, len(data)) + data

    @staticmethod
    def hvm_tail(ioreq: int, bufioreq: int, store: int, context: bytes) -> bytes:
        return struct.pack("<QQQI", ioreq, bufioreq, store, len(context)) + context

    @staticmethod
    def qemu(signature: bytes, data: bytes) -> bytes:
        if signature == b"QemuDeviceModelRecord":
            return signature + data
        return signature + struct.pack("<I", len(data)) + data


def xl_header(mandatory: int = 1, config: bytes | None = b'{"c_info": {"name": "g"}}\0',
              optional_flags: int = 0) -> bytes:
    """An xl save-file header (little-endian host) with *config* as its optional data."""
    optional = b"" if config is None else struct.pack("<I", len(config)) + config
    return XL_MAGIC + struct.pack("<IIII", 0x01020304, mandatory, optional_flags,
                                  len(optional)) + optional


DEFAULT_PHYSMAP = (PhysmapEntry(0xF0000000, 0xFC000000, 0x800000, b"vga.vram"),
                   PhysmapEntry(0xF1000000, 0xFD000000, 0x10000, b"cirrus.rom"))


@dataclass
class Image:
    """A legacy image and what a reader should find in it."""

    data: bytes
    width: int
    guest: str
    batches: int = 0
    pages_with_data: int = 0
    physmap: tuple[PhysmapEntry, ...] = ()
    notes: dict[str, object] = field(default_factory=dict)


def pv_image(*, width: int = 64, guest_width: int = 8, pages: int = 40,
             vcpus: Sequence[int] = (0, 1), extv: bool = True, xsave: int = 0,
             fillers: bool = True, empty_batch: bool = False, tsc: bool = True,
             toolstack: bytes | None = b"\1\0\0\0\0\0\0\0", verify_mode: bool = False,
             last_checkpoint: bool = True, extra_chunks: Sequence[bytes] = (),
             unknown_block: bool = False) -> Image:
    """A PV guest image as Xen 4.x's saver writes it. *xsave* is the xsave area size per vcpu
    (0: no "xcnt" block); *toolstack* the -18 chunk's data (None: no chunk; the default is
    libxl's empty physmap, version 1 with 0 entries)."""
    lw = LegacyWriter(width)
    out = bytearray(lw.p2m_size(pages))
    size = VCPU_SIZE[guest_width]
    blocks = [(b"vcpu", blob(99, size))] + ([(b"extv", b"")] if extv else [])
    if xsave:
        blocks.append((b"xcnt", struct.pack("<I", xsave + 16)))
    if unknown_block:
        blocks.append((b"abcd", b"1234"))
    out += lw.ext_info(blocks)
    fpp = PAGE // guest_width
    out += lw.ulongs(0x1000 + i for i in range((pages - 1) // fpp + 1))
    if tsc:
        out += lw.tsc(0, 123456789, 2400000, 1)
    top = 0x4 if guest_width == 8 else 0x3
    first = [(0, 0x8 | top), (1, 0x8 | (top - 1)), (2, 0x2), (3, 0x1)]
    first += [(pfn, 0) for pfn in range(4, pages // 2)]
    second = [(pfn, 0xF if pfn % 16 == 15 else 0) for pfn in range(pages // 2, pages)]
    batches = [first, second]
    data_pages = 0
    for entries in batches:
        words = [(t << 28) | pfn for pfn, t in entries]
        if fillers and entries is second:
            words[1:1] = [FILLER, FILLER]
        data = [page_bytes(pfn) for pfn, t in entries if t < 0xD]
        data_pages += len(data)
        out += lw.batch(words, data)
    if empty_batch:
        out += lw.batch([FILLER, FILLER], [])
    if verify_mode:
        out += lw.chunk(-1)
        out += lw.batch([3], [page_bytes(3)])
        data_pages += 1
    for chunk in extra_chunks:
        out += chunk
    out += lw.vcpu_info(vcpus)
    if toolstack is not None:
        out += lw.toolstack(toolstack)
    if last_checkpoint:
        out += lw.chunk(-9)
    out += lw.chunk(0)
    out += lw.unmapped([pages + 5, pages + 9])
    for v in vcpus:
        out += blob(v, size)
        if extv:
            out += blob(v + 50, 128)
        if xsave:
            out += lw.xsave(0x7, blob(v + 70, xsave))
    out += blob(7, PAGE)
    n_batches = 2 + int(empty_batch) + int(verify_mode)
    return Image(bytes(out), width, "pv", n_batches, data_pages, notes={"vcpus": list(vcpus)})


def hvm_image(*, width: int = 64, pages: int = 48, p2m_size: int = 0x100,
              vcpus: Sequence[int] = (0, 1),
              params: Sequence[int] = tuple(PARAM_CHUNKS), tsc: bool = True,
              physmap: Sequence[PhysmapEntry] | None = DEFAULT_PHYSMAP,
              qemu: bytes | None = b"DeviceModelRecord0002",
              qemu_data: bytes = b"QEVM" + bytes(range(256)) * 3 + b"xyz",
              xalloc: bool = True, last_checkpoint: bool = True,
              extra_chunks: Sequence[bytes] = ()) -> Image:
    """An HVM guest image with the chunks the 4.5 saver writes for HVM, the HVM tail and a
    qemu record (*qemu* None: none). *physmap* None: no toolstack chunk."""
    lw = LegacyWriter(width)
    out = bytearray(lw.p2m_size(max(pages, p2m_size)))
    if tsc:
        out += lw.tsc(2, 987654321, 3000000, 4)
    half = pages // 2
    first = [(pfn, 0) for pfn in range(half)]
    second = [(pfn, 0xF if 40 <= pfn < 44 else 0) for pfn in range(half, pages)]
    if xalloc:
        first.append((half, 0xE))
    data_pages = 0
    for entries in (first, second):
        words = [(t << 28) | pfn for pfn, t in entries]
        data = [page_bytes(pfn) for pfn, t in entries if t < 0xD]
        data_pages += len(data)
        out += lw.batch(words, data)
    for chunk in extra_chunks:
        out += chunk
    out += lw.vcpu_info(vcpus)
    for marker in params:
        out += lw.param(marker, PARAM_CHUNKS[marker])
    if physmap is not None:
        out += lw.toolstack(build_physmap(list(physmap), width))
    if last_checkpoint:
        out += lw.chunk(-9)
    out += lw.chunk(0)
    out += lw.hvm_tail(0xFEFFE, 0xFEFFD, 0xFEFFF, hvm_context_blob(len(vcpus)))
    if qemu is not None:
        out += lw.qemu(qemu, qemu_data)
    return Image(bytes(out), width, "hvm", 2, data_pages,
                 tuple(physmap) if physmap else ())


def remus_chunks(width: int, pfns: Sequence[int]) -> tuple[bytes, bytes]:
    """(enable-compression chunk + format-B batch, -12 chunk) re-sending *pfns*: the first
    FULL, the others deltas (against page_bytes) that change one word."""
    lw = LegacyWriter(width)
    entries = []
    for i, pfn in enumerate(pfns):
        old = page_bytes(pfn)
        if i == 0:
            entries.append(encode_full(blob(pfn, PAGE)))
        else:
            new = bytearray(old)
            new[8:12] = b"\xde\xad\xbe\xef"
            entries.append(encode_delta(old, bytes(new)))
    return (lw.chunk(-13) + lw.batch(list(pfns), []), lw.compressed(b"".join(entries)))
