"""Deterministic benchmark streams, written with the project's own writer and samples.

Every function writes one stream to *path* and returns its size in bytes. The same
arguments always give the same bytes. Page contents are a fixed 4 KiB pattern, written
in batches of :data:`BATCH` pages (as Xen's saver sends them), so the writer never holds
more than one batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from xenmig_core.session import open_registry
from xenmig_core.spec.model import FormatSpec
from xenmig_core.writer import StreamWriter
from xenmig_legacy.samples import LegacyWriter, xl_header
from xenmig_libxc.samples import NOTAB, Sample, Step, hvm_context_blob, hvm_sample, page_data, vcpu
from xenmig_libxl.samples import (
    LIBXC_HEADERS,
    assemble_libxl,
    checkpointed_sample,
    emulator_parts,
    hvm_libxl_sample,
    libxl_header,
)

BATCH = 1024
PAGE = 4096
_PATTERN = bytes(range(256)) * 16


def _specs() -> dict[str, FormatSpec]:
    return open_registry(autoload=False).specs


def _libxc_headers(writer: StreamWriter, sample: Sample) -> None:
    writer.header("image_header", sample.image_header)
    writer.header("domain_header", sample.domain_header)


def _page_batches(writer: StreamWriter, pages: int, type_bits: int = NOTAB) -> None:
    """PAGE_DATA records for pfns 0..pages-1, BATCH at a time."""
    for start in range(0, pages, BATCH):
        count = min(BATCH, pages - start)
        writer.record("PAGE_DATA", {"count": count, "pfn": [(type_bits << 60) | pfn for pfn
                                                             in range(start, start + count)]},
                      payload=_PATTERN * count)


#: The HVM streams carry no EMULATOR_XENSTORE_DATA record: Xen's verify-stream-v2, which
#: the benchmark runs side by side, refuses the one libxl writes ("not NUL terminated").
_REFERENCE_SKIPS = "EMULATOR_XENSTORE_DATA"


def write_tiny_hvm(path: Path) -> int:
    """An HVM guest's libxl stream (xl save's inner stream) of about 100 KiB."""
    sample = hvm_libxl_sample(pages=24)
    sample.parts = [(fmt, step) for fmt, step in sample.parts if step.name != _REFERENCE_SKIPS]
    data = assemble_libxl(_specs(), sample)
    path.write_bytes(data)
    return len(data)


def write_hvm_libxl(path: Path, mib: int) -> int:
    """A plain libxl stream of an HVM guest with *mib* MiB of memory: LIBXC_CONTEXT, the
    libxc stream (PAGE_DATA batches, HVM context and params), emulator records, END."""
    specs = _specs()
    sample = hvm_sample(pages=16)
    with open(path, "wb") as out:
        libxl = StreamWriter(out, specs["libxl"])
        libxc = StreamWriter(out, specs["libxc"])
        libxl.header("header", libxl_header())
        libxl.record("LIBXC_CONTEXT")
        _libxc_headers(libxc, sample)
        wrote_pages = False
        for step in sample.steps:
            if step.name == "PAGE_DATA":
                if not wrote_pages:
                    _page_batches(libxc, max(mib * 256, 1))
                    wrote_pages = True
                continue
            step.write(libxc, "little")
        for _fmt, step in emulator_parts(xenstore=False):
            step.write(libxl, "little")
        libxl.record("END")
        return libxl.written + libxc.written


def write_checkpoints(path: Path, checkpoints: int, *, bare: bool = False) -> int:
    """A Remus-style stream of *checkpoints* checkpoints of 4 dirty pages each, 5 records
    per checkpoint (100,000 records for 20,000 checkpoints). The first checkpoint is a PV
    guest's whole libxc stream; each later one is PAGE_DATA (4 pages), X86_TSC_INFO,
    SHARED_INFO, CHECKPOINT, then CHECKPOINT_END in the libxl stream around it.

    With *bare*, the same as a bare libxc stream (the form Xen's own verifier reads): the
    fifth record of each checkpoint is an X86_PV_VCPU_EXTENDED instead of the libxl
    CHECKPOINT_END, and the stream ends with END."""
    specs = _specs()
    sample = checkpointed_sample(1, hvm=False, pages=16)
    libxc_steps = [step for fmt, step in sample.parts if fmt == "libxc"
                   and step.name != LIBXC_HEADERS]
    tsc = next(s for s in libxc_steps if s.name == "X86_TSC_INFO")
    shared = next(s for s in libxc_steps if s.name == "SHARED_INFO")
    with open(path, "wb") as out:
        libxl = StreamWriter(out, specs["libxl"])
        libxc = StreamWriter(out, specs["libxc"])
        if bare:
            _libxc_headers(libxc, sample.libxc)
            for step in libxc_steps:
                step.write(libxc, "little")
        else:
            libxl.header("header", sample.header)
            for fmt, step in sample.parts:
                if step.name == LIBXC_HEADERS:
                    _libxc_headers(libxc, sample.libxc)
                else:
                    step.write(libxl if fmt == "libxl" else libxc, "little")
        for n in range(1, checkpoints):
            page_data([((n + i) % 16, NOTAB) for i in range(4)]).write(libxc, "little")
            tsc.write(libxc, "little")
            shared.write(libxc, "little")
            if bare:
                vcpu("X86_PV_VCPU_EXTENDED", 0, 24).write(libxc, "little")
            Step("CHECKPOINT").write(libxc, "little")
            if not bare:
                Step("CHECKPOINT_END").write(libxl, "little")
        if bare:
            Step("END").write(libxc, "little")
        return libxl.written + libxc.written


def write_legacy_xl(path: Path, mib: int) -> int:
    """A legacy (Xen <= 4.5) HVM image with *mib* MiB of memory behind an xl header (what
    ``xl save`` wrote before Xen 4.6), 64-bit toolstack, 1024-page batches."""
    lw = LegacyWriter(64)
    pages = max(mib * 256, 0x100)
    with open(path, "wb") as out:
        _write_legacy(out, lw, pages)
        return out.tell()


def _write_legacy(out: BinaryIO, lw: LegacyWriter, pages: int) -> None:
    out.write(xl_header(mandatory=0, config=b"builder='hvm'\n\0"))
    out.write(lw.p2m_size(pages) + lw.tsc(0, 1, 2000000, 1))
    for start in range(0, pages, BATCH):
        count = min(BATCH, pages - start)
        out.write(lw.batch(list(range(start, start + count)), [_PATTERN] * count))
    out.write(lw.vcpu_info([0]) + lw.param(-3, 0xFEFF0000) + lw.chunk(-9) + lw.chunk(0))
    out.write(lw.hvm_tail(0xFEFFE, 0xFEFFD, 0xFEFFF, hvm_context_blob(1)))
    out.write(lw.qemu(b"DeviceModelRecord0002", b"QEVM" + bytes(1 << 20)))
