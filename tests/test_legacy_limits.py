"""Legacy images built to exhaust memory: compressed chunks of millions of tiny entries,
repeated vcpu-info, parameter and toolstack chunks, format-B pfns whose data never come.
Memory must stay bounded (checked with tracemalloc's peak, not with timing) and the outcome
must be the documented one."""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import pytest

import xenmig_legacy.convert as legacy_convert
from xenmig_core.convert import ConvertOptions, convert
from xenmig_core.errors import StreamError
from xenmig_core.source import ByteSource
from xenmig_core.verifier import verify_source
from xenmig_legacy.physmap import PhysmapEntry, build_physmap
from xenmig_legacy.samples import XL_MAGIC, LegacyWriter, hvm_image, pv_image, xl_header

EMPTIES = 1 << 16   # 1-byte EMPTY entries in one -12 chunk


def verify(registry, data: bytes):
    return verify_source(registry, ByteSource.from_bytes(data), "auto")


def run(registry, tmp_path: Path, data: bytes, target: str = "libxc") -> bytes:
    src, out = tmp_path / "in.img", tmp_path / f"out.{target}"
    src.write_bytes(data)
    convert(registry, str(src), str(out), ConvertOptions(target))
    return out.read_bytes()


def peak_bytes(action) -> int:
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_compressed_entries_are_counted_not_kept(registry) -> None:
    lw = LegacyWriter(64)
    data = hvm_image(extra_chunks=[lw.chunk(-13), lw.compressed(bytes(EMPTIES))]).data
    reports = []
    peak = peak_bytes(lambda: reports.append(verify(registry, data)))
    report = reports[0]
    messages = [d.message for d in report.diagnostics]
    assert f"{EMPTIES} compressed pages, but only 0 announced pfns await data" in messages
    # one PageEntry object kept per entry cost ~10 MiB here; counting costs nothing per entry
    assert peak < 1 << 20, peak


def test_compressed_entries_are_converted_lazily(registry, tmp_path) -> None:
    lw = LegacyWriter(64)
    batches = [lw.batch(list(range(start, start + 1024)), [])
               for start in range(0, EMPTIES, 1024)]
    data = hvm_image(p2m_size=EMPTIES, extra_chunks=[
        lw.chunk(-13), *batches, lw.compressed(bytes(EMPTIES))]).data
    plain = run(registry, tmp_path, hvm_image(p2m_size=EMPTIES).data)
    outputs: list[bytes] = []
    peak = peak_bytes(lambda: outputs.append(run(registry, tmp_path, data)))
    assert outputs[0] == plain  # unchanged pages write nothing
    assert peak < 8 << 20, peak  # ~4.5 MiB, mostly the 65536 queued pfns; 13 MiB before


def test_format_b_backlog_is_capped(registry, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(legacy_convert, "MAX_FORMAT_B_PENDING", 4)
    lw = LegacyWriter(64)
    data = hvm_image(extra_chunks=[lw.chunk(-13), lw.batch([1, 2, 3], []),
                                   lw.batch([4, 5], [])]).data
    with pytest.raises(StreamError, match="more than 4 format-B pages announced"):
        run(registry, tmp_path, data)
    assert not (tmp_path / "out.libxc").exists()


def test_repeated_vcpu_info_is_a_bounded_set(registry) -> None:
    lw = LegacyWriter(64)
    every = lw.vcpu_info(list(range(4096)))
    report = verify(registry, hvm_image(extra_chunks=[every] * 40).data)
    warnings = [d.message for d in report.diagnostics if "repeated vcpu info" in d.message]
    assert len(warnings) == 1, warnings
    assert report.valid


def test_repeated_vcpu_info_lists_each_pv_vcpu_once(registry, tmp_path) -> None:
    """Xen's converter appends vcpu 0 twice and then reads two contexts; the saver wrote
    one, so xenmig merges the maps and reads (and converts) one."""
    image = pv_image(vcpus=(0, 1), extra_chunks=[LegacyWriter(64).vcpu_info([1])])
    report = verify(registry, image.data)
    assert report.valid, [str(d) for d in report.diagnostics]
    assert sum("repeated vcpu info" in d.message for d in report.diagnostics) == 1
    out = run(registry, tmp_path, image.data)
    assert out == run(registry, tmp_path, pv_image(vcpus=(0, 1)).data)


def test_repeated_param_chunk_keeps_the_last_value(registry, tmp_path) -> None:
    lw = LegacyWriter(64)
    plain = run(registry, tmp_path, hvm_image(params=(-3, -4)).data)
    again = [lw.param(-3, 0x1111), lw.param(-4, 0x2222)] * 200
    out = run(registry, tmp_path, hvm_image(params=(-3, -4), extra_chunks=again).data)
    assert out == plain


def test_toolstack_data_are_capped(registry, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(legacy_convert, "MAX_XENSTORE", 300)
    lw = LegacyWriter(64)
    blob = build_physmap([PhysmapEntry(0xF0000000, 0xF0000000, 0x800000, b"vga")], 64)
    data = hvm_image(extra_chunks=[lw.toolstack(blob)] * 10).data
    with pytest.raises(StreamError, match="physmap entries in all"):
        run(registry, tmp_path, data, "libxl")


def test_fixed_chunk_lengths_come_from_the_spec(registry) -> None:
    """The walker frames fixed-size chunks with the spec's lengths (walker.py keeps no
    table of its own)."""
    from xenmig_legacy import walker
    spec = registry.specs["legacy"]
    table = walker.fixed_chunks(spec)
    params = (-3, -4, -8, -10, -11, -14, -15, -16, -17, -19, -20)
    assert table == {0: ("END", 4), -1: ("ENABLE_VERIFY_MODE", 4), -7: ("TSC_INFO", 24),
                     -9: ("LAST_CHECKPOINT", 4), -13: ("ENABLE_COMPRESSION", 4),
                     **{m: (spec.records[m].name, 16) for m in params}}
    assert not hasattr(walker, "FIXED_CHUNKS")


def test_xl_header_uses_the_xl_spec_cap(registry, tmp_path) -> None:
    """The converter reads the xl header with specs/xl.yaml, so its 16 MiB cap on optional
    data applies (before, the converter had its own 64 MiB one)."""
    header = xl_header(mandatory=1, config=None)
    header = header[:44] + struct.pack("<I", (16 << 20) + 1)
    with pytest.raises(StreamError, match="more than 16 MiB of optional data"):
        run(registry, tmp_path, header + hvm_image().data, "xl")
    assert not (tmp_path / "out.xl").exists()


def test_big_endian_xl_header_is_copied_in_its_byte_order(registry, tmp_path) -> None:
    config = b'{"c_info": {"name": "g"}}\0'
    optional = struct.pack(">I", len(config)) + config
    header = XL_MAGIC + struct.pack(">IIII", 0x01020304, 1, 0, len(optional))
    src, out = tmp_path / "in.img", tmp_path / "out.xl"
    src.write_bytes(header + optional + hvm_image().data)
    convert(registry, str(src), str(out), ConvertOptions("xl"), verify=False)
    expected = XL_MAGIC + struct.pack(">IIII", 0x01020304, 3, 0, len(optional)) + optional
    assert out.read_bytes().startswith(expected)


def test_count_kinds_agrees_with_iter_pages() -> None:
    from collections import Counter

    from xenmig_legacy.compression import DeltaError, count_kinds, encode_delta, iter_pages
    page = bytes(range(256)) * 16
    changed = bytearray(page)
    changed[100:104] = b"abcd"
    data = bytes(5) + b"\x80" + page + encode_delta(page, bytes(changed)) + bytes(3)
    assert count_kinds(data) == Counter(e.kind for e in iter_pages(data)) == \
        {"empty": 8, "full": 1, "delta": 1}
    with pytest.raises(DeltaError, match="full page at data offset 2 is cut"):
        count_kinds(bytes(2) + b"\x80" + page[:10])
