"""xenmig convert: legacy images to libxc/libxl/xl, byte for byte as worked out from the
facts (legacy-facts.md section 2), with safe outputs, pipes and file descriptors."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import run_xenmig

from xenmig_core.convert import ConvertOptions, convert
from xenmig_core.engine import Consumer
from xenmig_core.errors import StreamError, UsageError
from xenmig_core.source import ByteSource
from xenmig_core.verifier import verify_source
from xenmig_legacy.convert import CONVERTER_VERSION
from xenmig_legacy.physmap import PhysmapEntry, build_physmap
from xenmig_legacy.samples import (
    LegacyWriter,
    blob,
    hvm_image,
    pv_image,
    remus_chunks,
    xl_header,
)
from xenmig_libxc.samples import hvm_context_blob, page_bytes

PAGE = 4096
IHDR = bytes.fromhex("ffffffffffffffff 58454e46 00000003 0000 0000 00000000")
LIBXL_HDR = bytes.fromhex("4c6962786c466d74 00000002 00000002")


def rec(rtype: int, body: bytes = b"") -> bytes:
    """A v2 record, framed by hand: u32 type, u32 length, body, zero padding to 8."""
    return struct.pack("<II", rtype, len(body)) + body + bytes(-len(body) % 8)


def dhdr(domain_type: int) -> bytes:
    return struct.pack("<IHHII", domain_type, 12, 0, 0, CONVERTER_VERSION)


def run(registry, tmp_path: Path, data: bytes, target: str, **kwargs) -> bytes:
    src = tmp_path / "in.img"
    src.write_bytes(data)
    out = tmp_path / f"out.{target}"
    params = {k: kwargs.pop(k) for k in ("width", "guest", "skip_qemu") if k in kwargs}
    convert(registry, str(src), str(out), ConvertOptions(target, params=params, **kwargs))
    return out.read_bytes()


def tiny_pv(lw: LegacyWriter) -> bytes:
    vcpu0 = blob(1, 0x1430)
    out = lw.p2m_size(3) + lw.ext_info([(b"vcpu", blob(9, 0x1430)), (b"extv", b"")])
    out += lw.ulongs([0xABC])
    out += lw.tsc(1, 5, 2000000, 7)
    out += lw.batch([0x0, 0xF0000000, 0x10000002, 0xF0000001],
                    [page_bytes(0), page_bytes(2)])
    out += lw.batch([0xF0000000], [])                      # all fillers
    out += lw.vcpu_info([0]) + lw.toolstack(b"") + lw.chunk(-9) + lw.chunk(0)
    out += lw.unmapped([7]) + vcpu0 + blob(2, 128) + blob(3, PAGE)
    return out


@pytest.mark.parametrize("width", [32, 64])
def test_golden_pv_to_libxc(registry, tmp_path, width: int) -> None:
    got = run(registry, tmp_path, tiny_pv(LegacyWriter(width)), "libxc")
    expected = IHDR + dhdr(1)
    expected += rec(2, bytes([8, 4, 0, 0, 0, 0, 0, 0]))                  # X86_PV_INFO
    expected += rec(0x10)                                                 # STATIC_DATA_END
    expected += rec(3, struct.pack("<IIQ", 0, 2, 0xABC))                  # P2M_FRAMES
    expected += rec(8, struct.pack("<IIQII", 1, 2000000, 5, 7, 0))        # TSC_INFO
    expected += rec(1, struct.pack("<II3Q", 3, 0, 0, 0x1000000000000002, 0xF000000000000001)
                    + page_bytes(0) + page_bytes(2))                      # PAGE_DATA
    # the all-filler batch writes nothing (upstream: a count-0 PAGE_DATA)
    expected += rec(4, struct.pack("<II", 0, 0) + blob(1, 0x1430))        # VCPU_BASIC
    expected += rec(5, struct.pack("<II", 0, 0) + blob(2, 128))           # VCPU_EXTENDED
    expected += rec(7, blob(3, PAGE))                                     # SHARED_INFO
    expected += rec(0)                                                    # END
    assert got == expected


def tiny_hvm(lw: LegacyWriter, physmap: list[PhysmapEntry]) -> bytes:
    out = lw.p2m_size(0x100) + lw.batch([0x0, 0xE0000001], [page_bytes(0)])
    out += lw.vcpu_info([0, 2]) + lw.param(-14, 0xFE000) + lw.param(-11, 3)
    out += lw.toolstack(build_physmap(physmap, lw.width)) + lw.chunk(-9) + lw.chunk(0)
    out += lw.hvm_tail(0x11, 0x22, 0x33, hvm_context_blob(1))
    out += lw.qemu(b"DeviceModelRecord0002", b"QEVMqemu-state")
    return out


@pytest.mark.parametrize("width", [32, 64])
def test_golden_hvm_to_libxl_and_xl(registry, tmp_path, width: int) -> None:
    physmap = [PhysmapEntry(0xF0000000, 0xFC000000, 0x800000, b"vga.vram")]
    data = tiny_hvm(LegacyWriter(width), physmap)
    libxc = IHDR + dhdr(2) + rec(0x10)
    libxc += rec(1, struct.pack("<II2Q", 2, 0, 0, 0xE000000000000001) + page_bytes(0))
    libxc += rec(0xA, struct.pack("<II4Q", 2, 0, 34, 0xFE000, 9, 3))     # chunk params
    libxc += rec(0xA, struct.pack("<II6Q", 3, 0, 5, 0x11, 6, 0x22, 1, 0x33))
    libxc += rec(9, hvm_context_blob(1)) + rec(0)
    xenstore = (b"physmap/f0000000/start_addr\0fc000000\0physmap/f0000000/size\0800000\0"
                b"physmap/f0000000/name\0vga.vram\0")
    libxl = LIBXL_HDR + rec(1) + libxc + rec(2, bytes(8) + xenstore)
    libxl += rec(3, bytes(8) + b"QEVMqemu-state") + rec(0)
    assert run(registry, tmp_path, data, "libxl") == libxl
    qemu_raw = b"DeviceModelRecord0002" + struct.pack("<I", 14) + b"QEVMqemu-state"
    assert run(registry, tmp_path, data, "libxc") == libxc + qemu_raw
    assert run(registry, tmp_path, data, "libxc", skip_qemu=True) == libxc
    # --skip-qemu has no effect on libxl output (as upstream)
    assert run(registry, tmp_path, data, "libxl", skip_qemu=True) == libxl
    header = xl_header(mandatory=0, config=b"name='g'\n\0")
    expected_xl = xl_header(mandatory=2, config=b"name='g'\n\0") + libxl
    assert run(registry, tmp_path, header + data, "xl") == expected_xl
    assert run(registry, tmp_path, header + data, "libxl") == libxl
    new_header = xl_header(mandatory=2, config=b"")
    assert run(registry, tmp_path, data, "xl") == new_header + libxl


IMAGES = {
    "pv64-g64": lambda: pv_image(width=64, guest_width=8, empty_batch=True),
    "pv64-g32-xsave": lambda: pv_image(width=64, guest_width=4, xsave=576, verify_mode=True),
    "pv32-g32-xsave": lambda: pv_image(width=32, guest_width=4, xsave=832),
    "pv64-sparse-vcpus": lambda: pv_image(vcpus=(0, 3, 64), xsave=256),
    "pv32-g64-noextv": lambda: pv_image(width=32, guest_width=8, extv=False, tsc=False),
    "hvm64": lambda: hvm_image(width=64),
    "hvm32": lambda: hvm_image(width=32),
    "hvm64-remus-sig": lambda: hvm_image(qemu=b"RemusDeviceModelState", physmap=None),
    "hvm32-noparams": lambda: hvm_image(width=32, params=(), tsc=False),
}


@pytest.mark.parametrize("target", ["libxc", "libxl", "xl"])
@pytest.mark.parametrize("name", sorted(IMAGES))
def test_every_image_converts_and_verifies(registry, tmp_path, name: str, target: str) -> None:
    image = IMAGES[name]()
    out = run(registry, tmp_path, image.data, target)
    report = verify_source(registry, ByteSource.from_bytes(out))
    assert report.valid, [str(d) for d in report.diagnostics]
    assert report.format == ("libxl" if target == "libxl" else target)
    libxc = next(c for c in report.contexts if c.format == "libxc")
    assert libxc.details["guest_type"] == ("x86 PV" if image.guest == "pv" else "x86 HVM")
    assert libxc.stats["pages"]["with data"] == image.pages_with_data
    if image.guest == "pv":
        assert libxc.records["X86_PV_VCPU_BASIC"] == len(image.notes["vcpus"])
    if target != "libxc":
        libxl = next(c for c in report.contexts if c.format == "libxl")
        assert libxl.records.get("EMULATOR_CONTEXT", 0) == (image.guest == "hvm")
        assert libxl.records.get("EMULATOR_XENSTORE_DATA", 0) == bool(image.physmap)


def test_pv_physmap_data_follows_upstream_and_fails_verify(registry, tmp_path) -> None:
    """Xen's converter writes EMULATOR_XENSTORE_DATA for a PV image with physmap entries,
    which libxl's restore rejects: the same bytes are written, and verify refuses them."""
    data = pv_image(toolstack=build_physmap([PhysmapEntry(1, 2, 3, b"rom")], 64)).data
    with pytest.raises(StreamError, match="emulator record in an x86 PV stream"):
        run(registry, tmp_path, data, "libxl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.img"]
    src = tmp_path / "in.img"
    convert(registry, str(src), str(tmp_path / "o"), ConvertOptions("libxl"), verify=False)
    xenstore = b"physmap/1/start_addr\x002\x00physmap/1/size\x003\x00physmap/1/name\x00rom\x00"
    assert rec(2, bytes(8) + xenstore) + rec(0) == (tmp_path / "o").read_bytes()[-88:]


def test_remus_compression_is_accepted(registry, tmp_path) -> None:
    enable, _deltas = remus_chunks(64, [3])
    data = hvm_image(extra_chunks=[enable, LegacyWriter(64).compressed(
        b"\x80" + blob(5, PAGE))]).data
    out = run(registry, tmp_path, data, "libxc")
    assert rec(1, struct.pack("<IIQ", 1, 0, 3) + blob(5, PAGE)) in out
    enable, deltas = remus_chunks(64, [3, 4])
    data = hvm_image(extra_chunks=[enable, deltas]).data
    with pytest.raises(StreamError, match="page delta"):
        run(registry, tmp_path, data, "libxc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.img", "out.libxc"]


@pytest.mark.parametrize("case,message", [
    ("tmem", "tmem chunk (-5)"),
    ("truncated", "truncated"),
    ("noqemu", "no qemu record"),
    ("oldqemu", "QemuDeviceModelRecord"),
    ("pvparam", "PV stream"),
    ("unknown_block", "unrecognised extended-info block"),
])
def test_failures_leave_no_output(registry, tmp_path, case: str, message: str) -> None:
    lw = LegacyWriter(64)
    data = {
        "tmem": lambda: pv_image(extra_chunks=[lw.chunk(-5, bytes(32))]).data,
        "truncated": lambda: pv_image().data[:-100],
        "noqemu": lambda: hvm_image(qemu=None).data,
        "oldqemu": lambda: hvm_image(qemu=b"QemuDeviceModelRecord").data,
        "pvparam": lambda: pv_image(extra_chunks=[lw.param(-3, 1)]).data,
        "unknown_block": lambda: pv_image(unknown_block=True).data,
    }[case]()
    target = tmp_path / "out.libxl"
    target.write_bytes(b"precious")
    with pytest.raises(StreamError, match=re.escape(message)):
        run(registry, tmp_path, data, "libxl")
    assert target.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.img", "out.libxl"]


def test_tmem_error_names_chunk_and_offset(cli, tmp_path) -> None:
    lw = LegacyWriter(64)
    image = pv_image(extra_chunks=[lw.chunk(-6, bytes(8))]).data
    (tmp_path / "in").write_bytes(image)
    result = cli("convert", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--to", "libxc")
    assert result.exit_code == 1
    offset = image.index(struct.pack("<i", -6) + bytes(8))
    assert f"tmem extra chunk (-6) at offset {offset:#x}" in result.stderr
    assert not (tmp_path / "out").exists()


def test_output_equal_to_input_is_refused(registry, tmp_path) -> None:
    path = tmp_path / "img"
    path.write_bytes(hvm_image().data)
    with pytest.raises(UsageError, match="the output is the input"):
        convert(registry, str(path), str(path), ConvertOptions("libxc"))
    os.link(path, tmp_path / "hardlink")
    with pytest.raises(UsageError):
        convert(registry, str(path), str(tmp_path / "hardlink"), ConvertOptions("libxc"))
    assert path.read_bytes() == hvm_image().data


def test_interrupt_leaves_no_output(registry, tmp_path, monkeypatch) -> None:
    from xenmig_legacy import convert as legacy_convert

    def interrupt(self, record, state):
        raise KeyboardInterrupt
    monkeypatch.setattr(legacy_convert.LegacyConverter, "unit_HVM_CONTEXT", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run(registry, tmp_path, hvm_image().data, "libxl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.img"]


def test_pipes_and_fds(registry, tmp_path) -> None:
    image = hvm_image(width=32).data
    expected = run(registry, tmp_path, image, "libxl")
    done = run_xenmig("convert", "-", "-o", "-", "--to", "libxl", input=image)
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
    read_in, write_in = os.pipe()
    read_out, write_out = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "xenmig_core", "convert", f"fd:{read_in}",
                             "-o", f"fd:{write_out}", "--to", "libxl"],
                            pass_fds=(read_in, write_out), stderr=subprocess.PIPE)
    os.close(read_in)
    os.close(write_out)

    def feed() -> None:
        with os.fdopen(write_in, "wb") as pipe:
            pipe.write(image)
    feeder = threading.Thread(target=feed)
    feeder.start()
    with os.fdopen(read_out, "rb") as drain:
        got = drain.read()
    feeder.join()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()
    assert got == expected


def test_failed_pipe_conversion_exits_non_zero(tmp_path) -> None:
    done = run_xenmig("convert", "-", "-o", "-", "--to", "libxc",
                      input=pv_image().data[:-5000])
    assert done.returncode == 1
    assert b"truncated" in done.stderr


def test_cli_convert_and_no_verify(cli, tmp_path) -> None:
    src = tmp_path / "in"
    src.write_bytes(pv_image(width=32, guest_width=4).data)
    result = cli("convert", str(src), "-o", str(tmp_path / "o"), "--to", "xl", "--no-verify")
    assert result.exit_code == 0
    assert "not verified" in result.stderr
    result = cli("convert", str(src), "-o", str(tmp_path / "o2"), "--to", "libxc",
                 "--width", "32", "--guest", "pv")
    assert result.exit_code == 0 and "verified" in result.stderr
    assert cli("convert", str(src), "-o", str(tmp_path / "o3"), "--to", "qcow").exit_code == 2
    assert cli("verify", str(tmp_path / "o")).exit_code == 0


def test_p2m_frames_of_a_32_bit_toolstack_are_zero_extended(registry) -> None:
    from xenmig_legacy.convert import LegacyConverter

    class Sink:
        data = b""

        def write(self, chunk) -> None:
            Sink.data += bytes(chunk)
    conv = LegacyConverter(registry, ConvertOptions("libxc"))
    conv.out, conv.widen = Sink(), True
    raw = struct.pack("<3I", 0xFFFFFFFF, 1, 0x80000000)
    for piece in (raw[:3], raw[3:9], raw[9:]):       # chunk boundaries inside words
        conv.on_payload(None, 0, memoryview(piece))
    assert Sink.data == struct.pack("<3Q", 0xFFFFFFFF, 1, 0x80000000)


def test_sigterm_leaves_no_output(tmp_path) -> None:
    """libxl sends SIGTERM to abort: the temporary output goes, the target never appears."""
    import signal
    import time
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "xenmig_core", "convert", f"fd:{read_fd}",
                             "-o", str(tmp_path / "out"), "--to", "libxc"],
                            pass_fds=(read_fd,), stderr=subprocess.PIPE)
    os.close(read_fd)
    with os.fdopen(write_fd, "wb") as feed:
        feed.write(pv_image().data[:50000])       # then stall: the converter waits
        feed.flush()
        deadline = time.monotonic() + 20
        while not any(p.suffix == ".tmp" for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) != 0
    assert list(tmp_path.iterdir()) == []


def test_v2_inputs_are_not_converted(registry, tmp_path) -> None:
    from conftest import ROOT
    refused = re.escape("a v2 (libxl) stream follows: nothing to convert")
    with pytest.raises(StreamError, match=refused):
        convert(registry, str(ROOT / "examples" / "hvm-guest.xl"), str(tmp_path / "o"),
                ConvertOptions("libxl"))
    with pytest.raises(UsageError, match="no converter from libxc to libxl"):
        convert(registry, str(ROOT / "examples" / "hvm-v3.libxc"), str(tmp_path / "o"),
                ConvertOptions("libxl"))
    assert list(tmp_path.iterdir()) == []


def test_vcpu_records_follow_the_online_map(registry, tmp_path) -> None:
    from xenmig_core.engine import Consumer, Engine

    class Ids(Consumer):
        def __init__(self) -> None:
            self.seen: list[tuple[str, int]] = []

        def on_record(self, record) -> None:
            if record.name.startswith("X86_PV_VCPU"):
                self.seen.append((record.name, record.fields["vcpu_id"]))
    out = run(registry, tmp_path, pv_image(vcpus=(0, 3, 64), xsave=256).data, "libxc")
    ids = Ids()
    Engine(registry, ByteSource.from_bytes(out), ids).run("libxc")
    assert ids.seen == [(name, v) for v in (0, 3, 64) for name in (
        "X86_PV_VCPU_BASIC", "X86_PV_VCPU_EXTENDED", "X86_PV_VCPU_XSAVE")]


def test_only_the_first_remus_checkpoint_is_converted(registry, tmp_path) -> None:
    """As upstream: a Remus image (no -9 chunk) converts its first checkpoint; the rest is
    never read."""
    lw = LegacyWriter(64)
    first = pv_image(last_checkpoint=False).data
    tail = first[first.index(lw.chunk(0) + lw.unmapped([45, 49])) + 4:]
    second = lw.batch([3], [bytes(4096)]) + lw.vcpu_info([0, 1]) + lw.chunk(0) + tail
    whole = run(registry, tmp_path, first + second + b"garbage", "libxc")
    assert whole == run(registry, tmp_path, first, "libxc")


def test_a_file_output_is_verified_by_reading_it_back(registry, tmp_path, monkeypatch) -> None:
    """A regular-file output is verified after it is written (seeking past the pages), not
    through the second walk fed by a pipe; a failed verification still leaves nothing, and
    an existing target is kept."""
    from xenmig_core import convert as core_convert

    def no_tee(*args, **kwargs):
        raise AssertionError("a file output needs no tee")
    monkeypatch.setattr(core_convert, "_Tee", no_tee)
    src = tmp_path / "in.img"
    src.write_bytes(hvm_image().data)
    result = convert(registry, str(src), str(tmp_path / "out"), ConvertOptions("xl"))
    assert result.verify is not None and result.verify.valid
    assert result.verify.format == "xl" and result.verify.size == result.bytes_written
    assert result.bytes_written == (tmp_path / "out").stat().st_size
    bad = pv_image(toolstack=build_physmap([PhysmapEntry(1, 2, 3, b"rom")], 64)).data
    src.write_bytes(bad)
    (tmp_path / "out").write_bytes(b"precious")
    with pytest.raises(StreamError, match=r"does not verify: .*emulator record in an x86 PV"):
        convert(registry, str(src), str(tmp_path / "out"), ConvertOptions("libxl"))
    assert (tmp_path / "out").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.img", "out"]


def test_a_pipe_output_is_verified_as_it_is_written(tmp_path) -> None:
    bad = pv_image(toolstack=build_physmap([PhysmapEntry(1, 2, 3, b"rom")], 64)).data
    done = run_xenmig("convert", "-", "-o", "-", "--to", "libxl", input=bad)
    assert done.returncode == 1
    assert b"does not verify" in done.stderr and b"emulator record" in done.stderr


class PayloadReader(Consumer):
    """An observer that has every payload read (and so delivered to the converter too)."""

    def wants_payload(self, record) -> bool:
        return True


def test_page_contents_are_copied_in_the_kernel_and_equal_streaming(registry, tmp_path,
                                                                     monkeypatch) -> None:
    """File to file, page contents (and other verbatim payloads) go from the input file
    to the output by ``copy_later`` (in the background; the engine seeks past them); the
    bytes are those a streamed conversion writes, with or without an observer walking along
    (``-v``)."""
    from xenmig_core.sink import GuardedWriter
    copied: list[int] = []
    real = GuardedWriter.copy_later

    def spy(self, src_fd: int, offset: int, length: int) -> None:
        copied.append(length)
        real(self, src_fd, offset, length)
    monkeypatch.setattr(GuardedWriter, "copy_later", spy)
    image = hvm_image(width=64)
    streamed = run_xenmig("convert", "-", "-o", "-", "--to", "xl", input=image.data)
    assert streamed.returncode == 0, streamed.stderr
    assert run(registry, tmp_path, image.data, "xl") == streamed.stdout
    assert sum(copied) >= PAGE * image.pages_with_data
    copied.clear()
    observed = run(registry, tmp_path, image.data, "xl",
                   extra={"observer": PayloadReader()})
    assert observed == streamed.stdout and copied


def test_an_input_file_cut_inside_copied_pages_is_refused(registry, tmp_path) -> None:
    """A cut anywhere in the page contents is the usual truncation error (exit 1, nothing
    left behind), not a short copy."""
    data = hvm_image(width=64).data
    for cut in range(len(data) // 3, len(data) - 1, len(data) // 7):
        with pytest.raises(StreamError, match="truncated"):
            run(registry, tmp_path, data[:cut], "libxl")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.img"]


@pytest.mark.parametrize("flag", [[], ["--no-sync"]])
def test_cli_convert_syncs_the_output_unless_told_not_to(cli, registry, tmp_path, monkeypatch,
                                                         flag) -> None:
    from xenmig_core import sink
    synced: list[int] = []
    real = sink.os.fsync
    monkeypatch.setattr(sink.os, "fsync", lambda fd: (synced.append(fd), real(fd)))
    src = tmp_path / "in"
    data = hvm_image().data
    src.write_bytes(data)
    result = cli("convert", str(src), "-o", str(tmp_path / "o"), "--to", "xl", *flag)
    assert result.exit_code == 0, result.stderr
    assert bool(synced) == (not flag)
    assert (tmp_path / "o").read_bytes() == run(registry, tmp_path, data, "xl")
