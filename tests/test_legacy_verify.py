"""Legacy images: the walker frames every unit, detection decides width and guest, options
win, and bad images get one clear error with the offset."""

from __future__ import annotations

import struct

import pytest

from xenmig_core.detect import detect
from xenmig_core.source import ByteSource
from xenmig_core.verifier import verify_source
from xenmig_legacy.detect import decide
from xenmig_legacy.samples import (
    LegacyWriter,
    hvm_image,
    pv_image,
    remus_chunks,
    xl_header,
)

IMAGES = {
    "pv64-g64": lambda: pv_image(width=64, guest_width=8),
    "pv64-g32": lambda: pv_image(width=64, guest_width=4, xsave=576),
    "pv32-g32": lambda: pv_image(width=32, guest_width=4, xsave=576),
    "pv32-g64": lambda: pv_image(width=32, guest_width=8, extv=False),
    "hvm64": lambda: hvm_image(width=64),
    "hvm32": lambda: hvm_image(width=32),
}


def verify(registry, data: bytes, fmt: str = "auto", **params):
    return verify_source(registry, ByteSource.from_bytes(data), fmt, params=params)


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_images_verify_with_detected_layout(registry, name: str) -> None:
    image = IMAGES[name]()
    report = verify(registry, image.data)
    assert report.valid, [str(d) for d in report.diagnostics]
    assert report.format == "legacy"
    details = report.to_dict()
    assert details["toolstack_width"] == image.width
    assert details["guest_type"] == image.guest
    assert details["width_from"].startswith("detected")
    records = report.contexts[0].records
    assert sum(v for k, v in records.items() if k.startswith("PAGE_BATCH")) == image.batches
    assert report.result.end_offset == len(image.data)


def test_detection_rule() -> None:
    lw32, lw64 = LegacyWriter(32), LegacyWriter(64)
    assert decide(pv_image(width=32, guest_width=4).data[:64]).guest == "pv"
    # a 32-bit HVM debug image starts with chunk -1: 0xffffffff where PV has its signature
    debug = lw32.p2m_size(16) + lw32.chunk(-1) + lw32.batch([1], [bytes(4096)])
    layout = decide(debug)
    assert (layout.width, layout.guest) == (32, "hvm")
    assert decide(lw64.p2m_size(16) + lw64.chunk(-7)).width == 64


def test_explicit_options_win(registry) -> None:
    image = pv_image(width=32, guest_width=4)
    report = verify(registry, image.data, "legacy", width=64)
    assert not report.valid
    assert "width 64 given" in str(report.diagnostics[0])
    report = verify(registry, hvm_image(width=32).data, "legacy", guest="pv")
    assert not report.valid
    assert "no PV extended info" in str(report.result.errors[0])
    assert "guest type pv given, but the stream looks HVM (no PV extended info" in \
        str(report.diagnostics[0])
    report = verify(registry, image.data, "legacy", width=32, guest="pv")
    assert report.valid
    assert report.to_dict()["width_from"] == "option"


def test_detection_confidence_below_magic_formats(registry) -> None:
    found = detect(registry, pv_image().data[:4096])
    assert found[0].format == "legacy" and found[0].confidence == 70
    assert detect(registry, hvm_image().data[:4096])[0].confidence == 40
    assert not detect(registry, b"\0" * 64)


def test_every_optional_chunk_type(registry) -> None:
    lw = LegacyWriter(64)
    extra = [lw.chunk(-1), lw.batch([5], [bytes(4096)])]
    image = hvm_image(extra_chunks=extra)
    report = verify(registry, image.data)
    assert report.valid
    assert any("debug" in d.message for d in report.diagnostics)


@pytest.mark.parametrize("marker", [-5, -6])
def test_tmem_is_refused_with_chunk_and_offset(registry, marker: int) -> None:
    image = pv_image(extra_chunks=[LegacyWriter(64).chunk(marker, b"\0" * 16)])
    report = verify(registry, image.data)
    error = report.result.errors[0]
    assert f"({marker})" in error.message and "not supported" in error.message
    assert error.offset == image.data.index(struct.pack("<i", marker) + b"\0" * 16)


def test_unknown_chunk_and_truncation(registry) -> None:
    image = hvm_image(extra_chunks=[struct.pack("<i", -21)])
    assert "unrecognised chunk -21" in str(verify(registry, image.data).result.errors[0])
    cut = hvm_image().data[:-10]
    error = verify(registry, cut).result.errors[0]
    assert "truncated" in error.message and error.record_type == "QEMU_RECORD"


def test_batch_checks(registry) -> None:
    lw = LegacyWriter(64)
    dup = lw.batch([7, 7], [bytes(4096)] * 2)
    report = verify(registry, hvm_image(extra_chunks=[dup]).data)
    assert any("duplicate pfn" in d.message for d in report.result.errors)
    big = struct.pack("<i", 1025)
    assert "MAX_BATCH" in str(verify(registry, hvm_image(extra_chunks=[big]).data).result.errors[0])


def test_param_chunk_in_pv_is_an_error(registry) -> None:
    image = pv_image(extra_chunks=[LegacyWriter(64).param(-3, 1)])
    assert "PV stream" in verify(registry, image.data).result.errors[0].message


def test_remus_format_b_is_decoded(registry) -> None:
    enable, data = remus_chunks(64, [3, 4, 5])
    image = hvm_image(extra_chunks=[enable, data])
    report = verify(registry, image.data)
    assert report.valid, [str(d) for d in report.diagnostics]
    stats = report.contexts[0].stats["compressed pages"]
    assert stats == {"full": 1, "delta": 2}
    broken = data[:-3]
    broken = broken[:4] + struct.pack("<Q", len(broken) - 12) + broken[12:]
    report = verify(registry, hvm_image(extra_chunks=[enable, broken]).data)
    assert any("cut" in d.message for d in report.result.errors)


def test_remus_checkpoints_repeat(registry) -> None:
    first = pv_image(last_checkpoint=False).data
    lw = LegacyWriter(64)
    again = lw.batch([3], [bytes(4096)]) + lw.vcpu_info([0, 1]) + lw.chunk(0)
    tail_start = first.index(lw.chunk(0) + lw.unmapped([45, 49]))
    tail = first[tail_start + 4:]
    report = verify(registry, first + again + tail)
    assert report.valid, [str(d) for d in report.diagnostics]
    assert report.to_dict()["checkpoints"] == 2


def test_xl_header_hands_over_when_available(registry) -> None:
    if "xl" not in registry.formats:
        pytest.skip("the xl format is not on this branch yet")
    data = xl_header(mandatory=1) + pv_image().data
    report = verify(registry, data)
    assert report.valid, [str(d) for d in report.diagnostics]
    assert [c.format for c in report.contexts] == ["xl", "legacy"]


def test_cli_verify_options(cli, tmp_path) -> None:
    path = tmp_path / "pv32.img"
    path.write_bytes(pv_image(width=32, guest_width=4).data)
    result = cli("verify", str(path))
    assert result.exit_code == 0 and "legacy pv image, 32-bit toolstack" in result.stdout
    assert cli("verify", "--width", "48", str(path)).exit_code == 2
    assert cli("verify", "--from", "legacy", "--guest", "hvm", str(path)).exit_code == 1


def test_closed_stdout_is_not_a_plugin_error(tmp_path) -> None:
    """verify -v | head: the walker's consumer hits EPIPE; that is not a plugin bug."""
    import subprocess
    import sys
    path = tmp_path / "img"
    path.write_bytes(pv_image(pages=8, vcpus=range(200)).data)   # ~600 lines of output
    proc = subprocess.Popen([sys.executable, "-m", "xenmig_core", "verify", "-v", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None and proc.stdout.read(10)
    proc.stdout.close()
    _out, err = proc.communicate(timeout=30)
    assert b"plugin" not in err and b"Traceback" not in err
