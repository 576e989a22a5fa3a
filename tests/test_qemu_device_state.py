"""QEMU's device state inside EMULATOR_CONTEXT: the section list, how far the walk got, and
that nothing in it makes a valid stream invalid unless QEMU's load would refuse it."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import pytest
from conftest import ROOT, run_xenmig
from libxl_support import build, errors, verify, warnings

from xenmig_core.engine import walk
from xenmig_libxl.samples import hvm_libxl_sample
from xenmig_qemu.device_state import MAX_HEADER, DeviceStateScanner, Layouts
from xenmig_qemu.samples import XEN_HVM_SECTIONS, device_state


def stream_with(registry, blob: bytes, emulator: int = 2) -> bytes:
    sample = hvm_libxl_sample(pages=4)
    step = sample.parts[sample.index("libxl", "EMULATOR_CONTEXT")][1]
    step.payload = blob
    step.fields["emulator_id"] = emulator
    return build(registry, sample)


def found(report) -> dict:
    return report.to_dict()["emulator_device_state"]


def names(state: dict) -> list[tuple[str, int, int]]:
    return [(s["name"], s["instance"], s["version"]) for s in state["sections"]]


def test_xen_device_state_sections_are_listed(registry) -> None:
    report = verify(registry, stream_with(registry, device_state()))
    assert report.valid and not warnings(report), errors(report) + warnings(report)
    state = found(report)
    assert state["format_version"] == 3 and state["machine"] is None
    assert state["walk"] == "complete"
    assert names(state) == [(n, i, v) for n, i, v, _ in XEN_HVM_SECTIONS]
    assert [s["length"] for s in state["sections"]] == [n for *_, n in XEN_HVM_SECTIONS]
    assert state["sections"][0]["found_by"] == "header"
    assert {s["found_by"] for s in state["sections"][1:]} == {"scan"}
    assert "no section footers" in state["note"]


def test_footers_confirm_the_boundaries_and_the_machine_type_is_read(registry) -> None:
    blob = device_state(XEN_HVM_SECTIONS[:4], footers=True, machine="xenfv")
    report = verify(registry, stream_with(registry, blob))
    assert report.valid
    config, footers = warnings(report)
    assert "configuration section (machine type 'xenfv'): QEMU for Xen sends none" in config
    assert "has section footers: QEMU for Xen writes none" in footers
    state = found(report)
    assert state["machine"] == "xenfv"
    assert all(s["footer"] for s in state["sections"])
    assert [s["length"] for s in state["sections"]] == [n for *_, n in XEN_HVM_SECTIONS[:4]]
    assert "footer, which confirms it" in state["note"]


@pytest.mark.parametrize("chunk", [1, 7, 300])
def test_the_walk_is_the_same_in_any_chunking(registry, monkeypatch, chunk) -> None:
    data = stream_with(registry, device_state(footers=True, machine="pc"))
    whole = found(verify(registry, data))
    monkeypatch.setattr(walk, "PAYLOAD_BUFFER_SIZE", chunk)
    assert found(verify(registry, data)) == whole


def test_an_empty_device_state_is_just_header_and_eof(registry) -> None:
    report = verify(registry, stream_with(registry, device_state([])))
    assert report.valid and not warnings(report)
    assert found(report)["sections"] == [] and found(report)["walk"] == "complete"


def test_a_section_type_qemu_refuses_is_an_error_at_the_record(registry) -> None:
    blob = struct.pack(">II", 0x5145564D, 3) + b"\x09" + bytes(16)
    report = verify(registry, stream_with(registry, blob))
    (error,) = errors(report)
    assert "section type 0x9 (unknown(0x9)) at device-state offset 0x8" in error
    assert "QEMU's load refuses it" in error and "EMULATOR_CONTEXT" in error
    assert found(report)["walk"].startswith("stopped at device-state offset 0x8")


def test_a_part_section_first_is_an_error(registry) -> None:
    blob = struct.pack(">IIBI", 0x5145564D, 3, 0x02, 5) + bytes(8) + b"\x00"
    (error,) = errors(verify(registry, stream_with(registry, blob)))
    assert "a SECTION_PART section at device-state offset 0x8, continuing a section never " \
        "started: QEMU's load refuses it" in error


def test_a_cut_device_state_warns_and_says_where_the_walk_stopped(registry) -> None:
    blob = device_state()[:-100]
    report = verify(registry, stream_with(registry, blob))
    assert report.valid
    assert any("does not end with QEMU's EOF marker" in w for w in warnings(report))
    assert found(report)["walk"] == "complete up to the end, but no EOF marker at the end"


def test_bytes_after_eof_warn(registry) -> None:
    report = verify(registry, stream_with(registry, device_state([]) + b"\x01\x02"))
    assert report.valid
    assert any("2 bytes after QEMU's EOF marker" in w for w in warnings(report))


def test_a_device_state_that_is_not_qemus_is_not_walked(registry) -> None:
    """qemu-traditional's context (emulator 1) with another layout: a note in the
    result, no new diagnostic (the spec's emulator-id warning stays the only one)."""
    report = verify(registry, stream_with(registry, b"\x00" * 64, emulator=1))
    assert report.valid
    assert found(report)["walk"].startswith("stopped at device-state offset 0x0: not a QEMU")
    assert not [w for w in warnings(report) if "device state" in w]


def _scanner(registry):
    fmt = registry.get("libxl")
    ctx = SimpleNamespace(format=fmt, state={}, error=lambda *a, **k: None,
                          warning=lambda *a, **k: None)
    record = SimpleNamespace(fields={})
    return DeviceStateScanner(record, ctx, Layouts.of(ctx)), record


def test_memory_is_bounded_by_a_header_not_by_a_body(registry) -> None:
    scanner, record = _scanner(registry)
    head = device_state([("big", 0, 1, 0)])[:-1]
    scanner.feed(memoryview(head))
    filler = memoryview(bytes(range(32, 96)) * 1024)        # 64 KiB, no header shape
    for _ in range(64):                                      # 4 MiB of body
        scanner.feed(filler)
        assert len(scanner.window) <= len(filler) + MAX_HEADER
    scanner.feed(memoryview(b"\x00"))
    scanner.finish()
    (section,) = record.fields["device_state"]["sections"]
    assert section["name"] == "big" and section["length"] == 64 * len(filler)


def test_verify_json_of_the_xl_example_lists_the_sections() -> None:
    done = run_xenmig("verify", "--json", str(ROOT / "examples" / "hvm-guest.xl"))
    assert done.returncode == 0, done.stderr
    state = json.loads(done.stdout)["emulator_device_state"]
    assert names(state) == [(n, i, v) for n, i, v, _ in XEN_HVM_SECTIONS]


def test_dump_shows_the_sections() -> None:
    done = run_xenmig("dump", "--type", "EMULATOR_CONTEXT", str(ROOT / "examples" /
                                                              "hvm-guest.xl"))
    assert done.returncode == 0, done.stderr
    text = done.stdout.decode()
    assert "name=0000:00:02.0/xen-platform instance=0 version=4" in text
    assert "walk=complete" in text


def test_bytes_after_an_early_eof_are_counted_not_kept(registry) -> None:
    scanner, record = _scanner(registry)
    scanner.feed(memoryview(device_state([])))
    for _ in range(16):
        scanner.feed(memoryview(bytes(65536)))
    assert len(scanner.window) <= 16
    scanner.finish()
    assert record.fields["device_state"]["walk"] == "complete"


def test_a_body_full_of_header_shaped_bytes_abandons_the_scan(registry, monkeypatch) -> None:
    import xenmig_qemu.device_state as device_state_module

    monkeypatch.setattr(device_state_module, "MAX_REJECTED", 10)
    blob = device_state([("big", 0, 1, 0)])[:-1] + b"\x04\x00\x00\x01\x02\x03\x00\x00" * 50
    report = verify(registry, stream_with(registry, blob + b"\x00"))
    assert report.valid
    assert any("header-shaped byte runs that are not section headers" in w
               for w in warnings(report))
    assert "scan abandoned" in found(report)["walk"]
