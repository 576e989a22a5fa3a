"""Memory export: every format opened with Volatility 3's own layers holds the stream's
pages at their guest-physical addresses, and the vcpu registers round-trip."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from conftest import verify_bytes
from memory_support import (
    PAGE,
    TARGETS,
    apply,
    elf_notes,
    export,
    hvm_context,
    page,
    page_step,
    pv_context,
    regs_for,
    vol_layer,
    xen_core_memory,
    xen_core_sections,
)

from xenmig_core.registry import Registry
from xenmig_legacy.samples import hvm_image, pv_image
from xenmig_libxc.samples import Sample, assemble, hvm_sample, page_bytes, pv_sample
from xenmig_libxl.samples import assemble_libxl, plain_sample
from xenmig_xl.samples import libvirt_file, xl_file

EM_386, EM_X86_64 = 3, 62


def check_memory(path: Path, target: str, memory: dict[int, bytes], *, pv: bool) -> None:
    """The export at *path* holds exactly *memory* (pfn -> page)."""
    data = path.read_bytes()
    top = max(memory)
    if target == "raw":
        assert len(data) == (top + 1) * PAGE
        for pfn in range(top + 1):
            assert data[pfn * PAGE:(pfn + 1) * PAGE] == memory.get(pfn, bytes(PAGE)), pfn
        return
    if target == "xen-core":
        assert xen_core_memory(data) == memory            # per Xen's dump-core-format.txt
        if pv:
            # Volatility's XenCoreDumpLayer types .xen_p2m entries as plain u64s and then
            # asks them for .pfn: it cannot open a PV dump-core (docs/memory.md)
            with pytest.raises(AttributeError):
                vol_layer(path, target)
            return
    layer = vol_layer(path, target)
    around = {p + d for p in memory for d in (-1, 0, 1) if p + d >= 0}
    for pfn in sorted(around):
        if target == "xen-core" and pfn == 0:
            # Volatility skips .xen_pfn entries equal to 0 (docs/memory.md)
            assert not layer.is_valid(0, PAGE)
            continue
        if pfn in memory:
            assert layer.read(pfn * PAGE, PAGE) == memory[pfn], pfn
        else:
            assert not layer.is_valid(pfn * PAGE, PAGE), pfn


def check_registers(path: Path, vcpus: int, *, long_mode: bool, cr3: list[int]) -> None:
    """The ELF notes hold rip, rsp (NT_PRSTATUS) and cr3 (QEMU note) of each vcpu."""
    data = path.read_bytes()
    assert struct.unpack_from("<H", data, 18)[0] == (EM_X86_64 if long_mode else EM_386)
    notes = elf_notes(data)
    prstatus = [d for name, t, d in notes if (name, t) == (b"CORE", 1)]
    qemu = [d for name, t, d in notes if (name, t) == (b"QEMU", 0)]
    assert len(prstatus) == len(qemu) == vcpus
    for v in range(vcpus):
        want = regs_for(v, long_mode)
        if long_mode:
            assert len(prstatus[v]) == 336
            regs = struct.unpack_from("<27Q", prstatus[v], 112)
            assert (regs[16], regs[19], regs[10]) == (want["rip"], want["rsp"], want["rax"])
        else:
            assert len(prstatus[v]) == 144
            regs = struct.unpack_from("<17I", prstatus[v], 72)
            assert (regs[12], regs[15], regs[6]) == (want["rip"], want["rsp"], want["rax"])
        version, size = struct.unpack_from("<II", qemu[v])
        assert (version, size) == (1, len(qemu[v]))
        assert struct.unpack_from("<Q", qemu[v], 8 + 16 * 8)[0] == want["rip"]
        assert struct.unpack_from("<Q", qemu[v], 8 + 18 * 8 + 10 * 24 + 3 * 8)[0] == cr3[v]


def export_all(registry: Registry, tmp_path: Path, data: bytes, memory: dict[int, bytes], *,
               pv: bool, name: str = "guest") -> dict[str, Path]:
    source = tmp_path / name
    source.write_bytes(data)
    outputs = {}
    for target in TARGETS:
        outputs[target], _label = export(registry, source, target)
        check_memory(outputs[target], target, memory, pv=pv)
    return outputs


# -- HVM ---------------------------------------------------------------------------------
def hvm_guest(libxc, vcpus: int = 2, long_mode: bool = True) -> tuple[Sample, dict]:
    """An HVM sample whose second PAGE_DATA resends pages (new contents), turns four into
    XTAB holes and adds a far pfn; its CPU entries hold :func:`regs_for` registers."""
    sample = hvm_sample(vcpus=vcpus)
    memory: dict[int, bytes] = {}
    steps = [s for s in sample.steps if s.name != "PAGE_DATA"]
    first, carried1 = page_step([(pfn, 0) for pfn in range(0, 40)])
    second, carried2 = page_step([(pfn, 0xF if 20 <= pfn < 24 else 0) for pfn in range(20, 48)]
                                 + [(0x100, 0)], generation=1)
    apply(memory, carried1)
    apply(memory, carried2)
    at = next(i for i, s in enumerate(steps) if s.name == "X86_TSC_INFO")
    steps[at:at] = [first, second]
    context = steps[next(i for i, s in enumerate(steps) if s.name == "HVM_CONTEXT")]
    context.fields["context"] = hvm_context(libxc.types, vcpus, long_mode)
    sample.steps = steps
    return sample, memory


def hvm_stream(libxc, vcpus: int = 2, long_mode: bool = True) -> tuple[bytes, dict]:
    sample, memory = hvm_guest(libxc, vcpus, long_mode)
    return assemble(libxc, sample), memory


def test_hvm_guest_every_format(registry, libxc, tmp_path):
    """Resent pages (second copy wins), an XTAB hole made by a resend, a far pfn."""
    data, memory = hvm_stream(libxc)
    assert memory[30] == page(30, 1) and 21 not in memory and 0x100 in memory
    outputs = export_all(registry, tmp_path, data, memory, pv=False)
    check_registers(outputs["elf"], 2, long_mode=True, cr3=[0x5000, 0x6000])
    sections = xen_core_sections(outputs["xen-core"].read_bytes())
    prstatus = sections[".xen_prstatus"]
    assert len(prstatus) == 2 * 5168
    for v in range(2):
        context = prstatus[v * 5168:(v + 1) * 5168]
        assert struct.unpack_from("<Q", context, 520 + 128)[0] == regs_for(v)["rip"]
        assert struct.unpack_from("<Q", context, 4984 + 24)[0] == regs_for(v)["cr3"]


def _pipes() -> list[str]:
    """The pipes this process holds open."""
    fds = [os.readlink(p) for p in list(Path("/proc/self/fd").iterdir()) if p.exists()]
    return sorted(link for link in fds if link.startswith("pipe:"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_exports_leave_no_pipe_open(registry, libxc, tmp_path):
    """The pipe the page copies go through is closed after each export (in-process, as
    the API runs them)."""
    data, memory = hvm_stream(libxc)
    before = _pipes()
    export_all(registry, tmp_path, data, memory, pv=False)
    assert _pipes() == before


def test_hvm_guest_not_in_long_mode_is_an_i386_core(registry, libxc, tmp_path):
    data, memory = hvm_stream(libxc, vcpus=1, long_mode=False)
    source = tmp_path / "guest"
    source.write_bytes(data)
    out, _label = export(registry, source, "elf")
    check_memory(out, "elf", memory, pv=False)
    check_registers(out, 1, long_mode=False, cr3=[0x5000])


# -- PV ----------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [8, 4])
def test_pv_guest_every_format(registry, libxc, tmp_path, width):
    """64- and 32-bit PV: the vcpu context's layout follows the guest's width; cr3 holds a
    pfn in the stream (32-bit: the extended-cr3 rotation) and a physical address in the
    notes."""
    sample = pv_sample(width=width, vcpus=2, pages=40)
    cr3_pfns = [0x100003, 2]          # pfn 0x100003 needs the rotation's high bits
    for step in sample.steps:
        if step.name == "X86_PV_VCPU_BASIC":
            v = step.fields["vcpu_id"]
            step.payload = pv_context(v, width, cr3_pfns[v])
    memory = {pfn: page_bytes(pfn) for pfn in range(40) if not (pfn >= 20 and pfn % 16 == 15)}
    outputs = export_all(registry, tmp_path, assemble(libxc, sample), memory, pv=True)
    check_registers(outputs["elf"], 2, long_mode=width == 8,
                    cr3=[pfn << 12 for pfn in cr3_pfns])
    core = outputs["xen-core"].read_bytes()
    assert struct.unpack_from("<H", core, 18)[0] == (EM_X86_64 if width == 8 else EM_386)
    sections = xen_core_sections(core)
    assert sections[".xen_shared_info"] == bytes(range(256)) * 16
    assert ".xen_pfn" not in sections
    p2m = sections[".xen_p2m"]
    assert struct.unpack_from("<QQ", p2m, 16) == (1, 1)     # gmfn = pfn: tables hold pfns


def test_sparse_guest(registry, libxc, tmp_path):
    """Pages far apart (across the page map's chunks): raw has holes, ELF and LiME one
    segment per run."""
    sample = hvm_sample()
    runs = [(0, 3), (0xFFFE, 4), (0x234567, 1)]
    step, carried = page_step([(first + i, 0) for first, n in runs for i in range(n)])
    sample.steps[:] = [s for s in sample.steps if s.name != "PAGE_DATA"]
    sample.steps.insert(sample.index("X86_TSC_INFO"), step)
    memory = {pfn: data for pfn, data in carried.items() if data is not None}
    source = tmp_path / "sparse"
    source.write_bytes(assemble(libxc, sample))
    for target in TARGETS:
        if target == "raw":
            continue
        out, label = export(registry, source, target)
        check_memory(out, target, memory, pv=False)
        assert "8 pages, highest pfn 0x234567" in label
    out, _label = export(registry, source, "raw")
    assert out.stat().st_size == (0x234567 + 1) * PAGE
    with out.open("rb") as raw:
        for pfn, data in memory.items():
            raw.seek(pfn * PAGE)
            assert raw.read(PAGE) == data
    assert out.stat().st_blocks * 512 < 64 * PAGE * 16       # holes, not 9 GiB of zeros
    elf = out.with_name("sparse.elf").read_bytes()
    assert struct.unpack_from("<H", elf, 56)[0] == 1 + len(runs)
    lime = out.with_name("sparse.lime").read_bytes()
    starts = []
    pos = 0
    while pos < len(lime):
        magic, version, start, end, _ = struct.unpack_from("<IIQQQ", lime, pos)
        assert (magic, version) == (0x4C694D45, 1)
        starts.append((start // PAGE, (end + 1 - start) // PAGE))
        pos += 32 + end + 1 - start
    assert starts == runs


# -- wrappers and older formats ----------------------------------------------------------
def test_xl_and_libvirt_files(registry, libxc, tmp_path):
    """An xl save file and a libvirt one (header, libxl stream, nested libxc stream) export
    the guest of their nested stream."""
    sample, memory = hvm_guest(libxc)
    stream = assemble_libxl(registry.specs, plain_sample(sample))
    xl = xl_file(registry.specs["xl"], stream, config=b'{"c_info": {"name": "g"}}\0')
    outputs = export_all(registry, tmp_path, xl, memory, pv=False, name="guest.xl")
    check_registers(outputs["elf"], 2, long_mode=True, cr3=[0x5000, 0x6000])
    libvirt = libvirt_file(registry.specs["libvirt"], stream)
    source = tmp_path / "guest.libvirt"
    source.write_bytes(libvirt)
    out, label = export(registry, source, "elf")
    assert label.startswith("libvirt")
    assert out.read_bytes() == outputs["elf"].read_bytes()


@pytest.mark.parametrize("kind", ["pv", "hvm"])
def test_legacy_image(registry, tmp_path, kind):
    """A legacy (Xen <= 4.5) image goes through the legacy plugin's converter first."""
    image = pv_image(pages=40) if kind == "pv" else hvm_image(pages=48)
    source = tmp_path / f"legacy-{kind}.img"
    source.write_bytes(image.data)
    out, label = export(registry, source, "lime")
    assert label.startswith("legacy image")
    layer = vol_layer(out, "lime")
    present = [pfn for pfn in range(0x200) if layer.is_valid(pfn * PAGE, PAGE)]
    assert present, "no pages"
    for pfn in present:
        assert layer.read(pfn * PAGE, PAGE) == page_bytes(pfn)
    if kind == "pv":
        assert 31 not in present and 30 in present          # pfn 31 was sent as XTAB


def test_page_with_big_endian_stream(registry, libxc, tmp_path):
    """Byte order is the stream's business: the same guest in a big-endian stream exports
    the same pages."""
    sample = pv_sample(width=8, vcpus=1, pages=40)
    little = tmp_path / "le"
    big = tmp_path / "be"
    little.write_bytes(assemble(libxc, sample))
    big.write_bytes(assemble(libxc, pv_sample(width=8, vcpus=1, pages=40), "big"))
    assert export(registry, little, "raw")[0].read_bytes() == \
        export(registry, big, "raw")[0].read_bytes()


def test_verify_json_says_what_an_export_would_contain(registry, libxc, tmp_path):
    data, memory = hvm_stream(libxc)
    report = verify_bytes(registry, data).to_dict()
    assert report["memory"] == {"pages": len(memory), "highest_pfn": 0x100, "runs": 3,
                                "vcpus": 2, "checkpoints": 0, "raw_size": 0x101 * PAGE}
    source = tmp_path / "guest"
    source.write_bytes(data)
    out, _label = export(registry, source, "raw")
    assert out.stat().st_size == report["memory"]["raw_size"]
    assert "memory" not in verify_bytes(registry, xl_file(registry.specs["xl"], b"")).to_dict()


def test_the_plugin_offers_exactly_the_formats_it_can_write() -> None:
    """The plugin names its targets without importing the exporter (verify stays cheap)."""
    import xenmig_memory
    from xenmig_memory.formats import WRITERS
    assert set(xenmig_memory.TARGETS) == set(WRITERS) == set(TARGETS)
