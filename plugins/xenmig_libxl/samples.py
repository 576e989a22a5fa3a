"""Deterministic sample libxl streams (plain, Remus, COLO, COLO back channel).

A :class:`LibxlSample` is a list of parts, each ``(format, Step)``: libxl records, and the
libxc records of the nested stream (the step named :data:`LIBXC_HEADERS` writes the libxc
image and domain headers). Tests edit the parts (drop, repeat, move, corrupt) and
:func:`assemble_libxl` writes them with xenmig's own :class:`~xenmig_core.writer.StreamWriter`.
The libxc records come from :mod:`xenmig_libxc.samples`, so both plugins' samples agree.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xenmig_core.spec.model import FormatSpec
from xenmig_core.writer import StreamWriter
from xenmig_libxc.samples import NOTAB, Sample, Step, hvm_sample, page_data, pv_sample

LIBXL_IDENT = 0x4C6962786C466D74
LIBXC_HEADERS = "@libxc-headers"
QEMU_UPSTREAM = 2
#: What libxl saves for a qemu-upstream guest with a VGA framebuffer mapped.
PHYSMAP = [(b"physmap/f0000000/start_addr", b"f0000000"),
           (b"physmap/f0000000/size", b"800000"),
           (b"physmap/f0000000/name", b"vga.vram")]


@dataclass
class LibxlSample:
    """A libxl stream to write: header fields, the nested libxc headers, the parts."""

    header: dict[str, Any]
    libxc: Sample
    parts: list[tuple[str, Step]] = field(default_factory=list)

    def index(self, fmt: str, name: str, nth: int = 0) -> int:
        """Position of the *nth* (from 0) part of format *fmt* named *name*."""
        found = [i for i, (f, s) in enumerate(self.parts) if f == fmt and s.name == name]
        return found[nth]


def libxl_header(options: int = 0) -> dict[str, Any]:
    return {"ident": LIBXL_IDENT, "version": 2, "options": options}


def xenstore_data(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """Pack key/value pairs as restore reads them: each string NUL-terminated."""
    return b"".join(key + b"\0" + value + b"\0" for key, value in pairs)


def qemu_blob(devices: int = 3, footers: bool = False) -> bytes:
    """A small QEMU device-state stream ("QEVM", version 3, full sections, EOF); section
    footers only when asked (QEMU for Xen writes none, and refuses them)."""
    out = struct.pack(">II", 0x5145564D, 3)
    for i in range(devices):
        idstr = f"device{i}".encode()
        out += struct.pack(">BIB", 0x04, i + 1, len(idstr)) + idstr
        out += struct.pack(">II", 0, 1) + bytes((i * 7 + j) & 0xFF for j in range(65))
        if footers:
            out += struct.pack(">BI", 0x7E, i + 1)
    return out + b"\x00"


def emulator_parts(emulator: int = QEMU_UPSTREAM, xenstore: bool = True
                   ) -> list[tuple[str, Step]]:
    """The emulator records libxl writes for an HVM guest."""
    parts = []
    if xenstore:
        parts.append(("libxl", Step("EMULATOR_XENSTORE_DATA", {
            "emulator_id": emulator, "index": 0, "data": xenstore_data(PHYSMAP)})))
    parts.append(("libxl", Step("EMULATOR_CONTEXT", {"emulator_id": emulator, "index": 0},
                                qemu_blob())))
    return parts


def plain_sample(libxc: Sample, *, emulator: bool = True) -> LibxlSample:
    """What ``xl save`` writes: LIBXC_CONTEXT, the libxc stream, emulator records, END."""
    parts: list[tuple[str, Step]] = [("libxl", Step("LIBXC_CONTEXT")),
                                     ("libxc", Step(LIBXC_HEADERS))]
    parts += [("libxc", step) for step in libxc.steps]
    if emulator:
        parts += emulator_parts()
    parts.append(("libxl", Step("END")))
    return LibxlSample(libxl_header(), libxc, parts)


def hvm_libxl_sample(*, pages: int = 32) -> LibxlSample:
    return plain_sample(hvm_sample(pages=pages), emulator=True)


def pv_libxl_sample(*, pages: int = 32) -> LibxlSample:
    return plain_sample(pv_sample(pages=pages), emulator=False)


def checkpointed_sample(checkpoints: int = 3, *, colo: bool = False, hvm: bool = True,
                        pages: int = 16) -> LibxlSample:
    """A Remus (or, with *colo*, COLO) stream of *checkpoints* complete checkpoints.

    Checkpoint 1 carries the libxc static data and all memory; each later one a few dirty
    pages and the end-of-checkpoint records. After each CHECKPOINT come the emulator records
    (HVM) and CHECKPOINT_END, then, for COLO, CHECKPOINT_STATE NEW. No END anywhere.
    """
    libxc = hvm_sample(pages=pages) if hvm else pv_sample(pages=pages)
    first = [s for s in libxc.steps if s.name != "END"]
    tail_names = ("X86_TSC_INFO", "HVM_CONTEXT", "HVM_PARAMS") if hvm else ("X86_TSC_INFO",)
    tail = [s for s in first if s.name in tail_names]
    parts: list[tuple[str, Step]] = [("libxl", Step("LIBXC_CONTEXT")),
                                     ("libxc", Step(LIBXC_HEADERS))]
    for n in range(1, checkpoints + 1):
        dirty = page_data([(pfn, NOTAB) for pfn in range(n, pages, 5)])
        steps = first if n == 1 else [dirty, *tail]
        parts += [("libxc", step) for step in steps]
        parts.append(("libxc", Step("CHECKPOINT")))
        if hvm:
            parts += emulator_parts()
        parts.append(("libxl", Step("CHECKPOINT_END")))
        if colo:
            parts.append(("libxl", Step("CHECKPOINT_STATE", {"control_id": 0})))
    return LibxlSample(libxl_header(), libxc, parts)


def back_channel_steps(checkpoints: int = 2) -> list[Step]:
    """A COLO back channel: per checkpoint SVM_READY, SVM_RESUMED, SVM_SUSPENDED and a
    dirty pfn list."""
    steps = []
    for n in range(checkpoints):
        steps += [Step("CHECKPOINT_STATE", {"control_id": c}) for c in (2, 3, 1)]
        steps.append(Step("CHECKPOINT_DIRTY_PFN_LIST", {"pfn": [n, n + 8, 0x100 + n]}))
    return steps


def assemble_libxl(specs: Mapping[str, FormatSpec], sample: LibxlSample,
                   byte_order: str = "little") -> bytes:
    """Write *sample* (formats ``libxl`` and ``libxc`` from *specs*)."""
    out = io.BytesIO()
    libxl = StreamWriter(out, specs["libxl"], byte_order)
    libxc = StreamWriter(out, specs["libxc"], byte_order)
    header = dict(sample.header)
    if byte_order == "big":
        header["options"] = header.get("options", 0) | 1
    libxl.header("header", header)
    for fmt, step in sample.parts:
        if step.name == LIBXC_HEADERS:
            ihdr = dict(sample.libxc.image_header)
            if byte_order == "big":
                ihdr["options"] = ihdr.get("options", 0) | 1
            libxc.header("image_header", ihdr)
            libxc.header("domain_header", sample.libxc.domain_header)
            continue
        writer = libxl if fmt == "libxl" else libxc
        step.write(writer, byte_order)
    return out.getvalue()


def assemble_back_channel(spec: FormatSpec, steps: list[Step]) -> bytes:
    """Write a COLO back channel (format ``colo-back-channel``): records only."""
    out = io.BytesIO()
    writer = StreamWriter(out, spec)
    for step in steps:
        step.write(writer, "little")
    return out.getvalue()
