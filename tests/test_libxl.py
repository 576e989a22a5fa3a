"""libxl v2 streams: header, every record type, nesting of the libxc stream, truncation."""

from __future__ import annotations

import pytest
from libxl_support import build, errors, verify, walk, warnings

from xenmig_libxc.samples import Step, pv_sample
from xenmig_libxl.samples import (
    emulator_parts,
    hvm_libxl_sample,
    libxl_header,
    plain_sample,
    pv_libxl_sample,
)


@pytest.fixture
def hvm():
    return hvm_libxl_sample(pages=8)


def test_hvm_stream_is_valid(registry, hvm) -> None:
    report = verify(registry, build(registry, hvm))
    assert report.valid, errors(report)
    assert not warnings(report)
    assert report.format == "libxl"
    streams = [c.format for c in report.contexts]
    assert streams == ["libxl", "libxc"]
    assert report.contexts[0].records == {"LIBXC_CONTEXT": 1, "EMULATOR_XENSTORE_DATA": 1,
                                          "EMULATOR_CONTEXT": 1, "END": 1}
    assert report.contexts[1].finished
    data = report.to_dict()
    assert data["guest_type"] == "x86 HVM" and data["emulator"] == "qemu-upstream"


def test_pv_stream_is_valid(registry) -> None:
    report = verify(registry, build(registry, pv_libxl_sample(pages=8)))
    assert report.valid, errors(report)
    assert report.to_dict()["guest_type"] == "x86 PV"


def test_big_endian_stream_is_walked_but_refused(registry) -> None:
    report = verify(registry, build(registry, pv_libxl_sample(pages=8), "big"))
    found = errors(report)
    assert len(found) == 1 and "big-endian libxl stream" in found[0]
    assert report.contexts[1].finished       # the nested libxc stream was read big-endian


# -- header ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value", "expected"), [
    ("ident", 0x4C6962786C466D75, "expected 0x4c6962786c466d74 (\"LibxlFmt\")"),
    ("version", 1, "unknown libxl stream version: expected 2"),
    ("version", 3, "unknown libxl stream version: expected 2"),
])
def test_bad_header_is_fatal(registry, hvm, field, value, expected) -> None:
    hvm.header[field] = value
    report = verify(registry, build(registry, hvm), "libxl")
    found = errors(report)
    assert len(found) == 1 and found[0].startswith(f"libxl header @0x0: {field}: ")
    assert expected in found[0]
    assert report.result.records == 0


def test_legacy_bit_is_reported(registry, hvm) -> None:
    hvm.header = libxl_header(options=2)
    report = verify(registry, build(registry, hvm))
    assert report.valid and "made by the legacy converter" in report.summary()
    assert report.to_dict()["legacy_converted"] is True


def test_reserved_option_bits_warn(registry, hvm) -> None:
    hvm.header = libxl_header(options=0x100)
    report = verify(registry, build(registry, hvm))
    assert report.valid
    assert any("reserved option bits" in w for w in warnings(report))


# -- records --------------------------------------------------------------------------------
def _libxl_index(sample, name):
    return sample.index("libxl", name)


def test_end_with_a_body(registry, hvm) -> None:
    hvm.parts[-1] = ("libxl", Step("END", overrides={"body": b"\0" * 8}))
    assert any("END" in e and "body length 8, expected 0" in e for e in errors(
        verify(registry, build(registry, hvm))))


def test_libxc_context_with_a_body(registry, hvm) -> None:
    hvm.parts[0] = ("libxl", Step("LIBXC_CONTEXT", overrides={"body": b"\1" * 4}))
    assert any("LIBXC_CONTEXT" in e and "body length 4, expected 0" in e for e in errors(
        verify(registry, build(registry, hvm))))


def test_second_libxc_context(registry, hvm) -> None:
    again = hvm.parts[:hvm.index("libxc", "END") + 1]
    end = hvm.index("libxl", "END")
    hvm.parts[end:end] = again
    found = errors(verify(registry, build(registry, hvm)))
    assert found == [found[0]] and "a second nested libxc stream" in found[0]
    assert "(LIBXC_CONTEXT)" in found[0]


def test_missing_libxc_context(registry, hvm) -> None:
    hvm.parts = [p for p in hvm.parts if p[0] == "libxl" and p[1].name != "LIBXC_CONTEXT"]
    found = errors(verify(registry, build(registry, hvm)))
    assert any("no LIBXC_CONTEXT record" in e for e in found)
    assert not any("PV" in e for e in found)


@pytest.mark.parametrize("name", ["EMULATOR_XENSTORE_DATA", "EMULATOR_CONTEXT"])
def test_emulator_record_shorter_than_its_header(registry, hvm, name) -> None:
    i = _libxl_index(hvm, name)
    hvm.parts[i] = ("libxl", Step(name, overrides={"body": b"\2\0\0\0"}))
    report = verify(registry, build(registry, hvm))
    assert not report.valid
    assert any(f"({name})" in e for e in errors(report))


def test_unknown_emulator_id_is_named_not_fatal(registry, hvm) -> None:
    for _fmt, step in hvm.parts:
        if step.name.startswith("EMULATOR"):
            step.fields["emulator_id"] = 7
    report, _log = walk(registry, build(registry, hvm))
    assert report.valid
    assert any("unknown emulator id" in w for w in warnings(report))
    summaries = [e["summary"] for e in report.to_dict()["account"] if e.get("name") ==
                 "EMULATOR_CONTEXT"]
    assert summaries == ["unknown(0x7), index 0, 267 bytes of device state"]


def test_qemu_traditional_and_unknown_emulator(registry) -> None:
    for emulator, warned in ((0, False), (1, True)):
        sample = plain_sample(hvm_libxl_sample(pages=8).libxc, emulator=False)
        sample.parts[-1:-1] = emulator_parts(emulator)
        report = verify(registry, build(registry, sample))
        assert report.valid
        assert any("qemu-traditional" in w for w in warnings(report)) == warned


def test_emulator_index_other_than_zero_warns(registry, hvm) -> None:
    hvm.parts[_libxl_index(hvm, "EMULATOR_CONTEXT")][1].fields["index"] = 1
    report = verify(registry, build(registry, hvm))
    assert report.valid and any("index 0" in w for w in warnings(report))


def test_emulator_records_in_a_pv_stream(registry) -> None:
    sample = plain_sample(pv_sample(pages=8), emulator=True)
    found = errors(verify(registry, build(registry, sample)))
    assert len(found) == 2
    assert all("emulator record in an x86 PV stream" in e for e in found)


def test_emulator_record_before_libxc_context_warns(registry, hvm) -> None:
    part = hvm.parts.pop(_libxl_index(hvm, "EMULATOR_CONTEXT"))
    hvm.parts.insert(0, part)
    report = verify(registry, build(registry, hvm))
    assert report.valid
    assert any("before LIBXC_CONTEXT" in w for w in warnings(report))


def test_unknown_record_types_are_refused_even_when_optional(registry, hvm) -> None:
    end = _libxl_index(hvm, "END")
    for type_id in (0x6, 0x80000006):
        sample = hvm_libxl_sample(pages=8)
        sample.parts.insert(end, ("libxl", Step("", overrides={"type_id": type_id,
                                                               "body": b"x" * 5})))
        report = verify(registry, build(registry, sample))
        found = errors(report)
        assert len(found) == 1 and f"unknown record type {type_id:#010x}" in found[0]
        assert report.contexts[0].records["END"] == 1   # the walk went on


def test_non_zero_padding(registry, hvm) -> None:
    i = _libxl_index(hvm, "EMULATOR_CONTEXT")
    step = hvm.parts[i][1]
    length = 8 + len(step.payload)
    step.overrides["padding"] = b"\xff" * (-length % 8)
    found = errors(verify(registry, build(registry, hvm)))
    assert len(found) == 1 and "padding contains non-zero bytes" in found[0]


def test_no_128mib_cap_a_huge_length_is_truncation(registry, hvm) -> None:
    i = _libxl_index(hvm, "EMULATOR_CONTEXT")
    hvm.parts[i][1].overrides["length"] = 0x9000000
    found = errors(verify(registry, build(registry, hvm)))
    assert len(found) == 1 and "truncated" in found[0] and "exceeds" not in found[0]


def test_oversized_xenstore_data_is_not_loaded(registry, hvm) -> None:
    i = _libxl_index(hvm, "EMULATOR_XENSTORE_DATA")
    hvm.parts[i][1].overrides["length"] = 0x1000001
    found = errors(verify(registry, build(registry, hvm)))
    assert "body length 16777217, expected at most 16777216" in found[0]


@pytest.mark.parametrize("length", [0, 8])
def test_checkpoint_state_length(registry, length) -> None:
    sample = hvm_libxl_sample(pages=8)
    sample.parts.insert(-1, ("libxl", Step("CHECKPOINT_STATE", overrides={
        "body": bytes(length)})))
    report = verify(registry, build(registry, sample))
    found = errors(report)
    if length == 0:       # restore would read past the body: the record is broken
        assert len(found) == 1 and "(CHECKPOINT_STATE)" in found[0]
        assert "body length 0, expected 4 or 8" in found[0]
    else:                 # 8 is readable, but not what libxl writes; in a saved image: refused
        assert any("libxl writes 4" in w for w in warnings(report))
        assert len(found) == 1 and "stream with no complete checkpoint" in found[0]


# -- the nested libxc stream, cut at every record boundary -----------------------------------
def test_truncated_at_every_record_boundary(registry) -> None:
    data = build(registry, hvm_libxl_sample(pages=4))
    report, log = walk(registry, data)
    assert report.valid
    boundaries = [r.end for r in log.records][:-1]
    libxc_ends = {r.end for r in log.records if r.format == "libxc"}
    assert len(boundaries) >= 10
    for cut in [16, 24, 48, *boundaries]:
        cut_report = verify(registry, data[:cut])
        found = errors(cut_report)
        assert len(found) == 1, (cut, found)
        if cut == 48:     # between the libxc image header and its domain header
            assert "domain_header" in found[0] and "stream truncated" in found[0]
            continue
        assert f"end of stream @{cut:#x}" in found[0], (cut, found)
        if cut in libxc_ends and cut != max(libxc_ends):
            assert "libxc end of stream" in found[0]
            assert "stream ended before END (last record" in found[0]
        elif cut == 24:
            assert "where a libxc migration stream should start" in found[0]


def test_truncated_inside_records(registry) -> None:
    data = build(registry, hvm_libxl_sample(pages=4))
    _, log = walk(registry, data)
    for r in log.records:
        for cut in (r.offset + 4, r.end - 1):
            if cut <= r.offset:
                continue
            found = errors(verify(registry, data[:cut]))
            assert len(found) == 1 and "truncated" in found[0], (r, cut, found)


def test_trailing_bytes_after_end(registry, hvm) -> None:
    data = build(registry, hvm)
    found = errors(verify(registry, data + b"garbage!"))
    assert found == ["libxl trailer @" + hex(len(data)) +
                     ": 8 bytes of unexpected data after the end of the stream"]
    cleared = verify(registry, data + b"domain is yours, you are cleared to unpause\0")
    assert cleared.valid and "captured migration stream" in warnings(cleared)[0]


@pytest.mark.parametrize(("emulator", "blob", "expected"), [
    (2, b"QEVM\0\0\0\3\0", None),
    (2, b"QEVM\0\0\0\2\0", "version bytes b'\\x00\\x00\\x00\\x02': QEMU loads only version 3"),
    (2, b"DeviceModelRecord0002", "does not start with QEMU's \"QEVM\" magic (it starts "
                                  "b'DeviceMo')"),
    (2, b"", "(it starts b'')"),
    (0, b"DeviceModelRecord0002", None),     # legacy-converted: opaque
])
def test_qemu_upstream_device_state_header(registry, hvm, emulator, blob, expected) -> None:
    step = hvm.parts[_libxl_index(hvm, "EMULATOR_CONTEXT")][1]
    step.fields["emulator_id"] = emulator
    step.payload = blob
    found = errors(verify(registry, build(registry, hvm)))
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found
        assert "(EMULATOR_CONTEXT)" in found[0] and ": blob: " in found[0]


def test_checkpoint_state_pad_must_be_zero(registry) -> None:
    sample = hvm_libxl_sample(pages=4)
    sample.parts.insert(-1, ("libxl", Step("CHECKPOINT_STATE", overrides={
        "body": b"\0\0\0\0\1\0\0\0"})))
    found = errors(verify(registry, build(registry, sample)))
    assert any("pad: reserved bytes are not zero" in e for e in found), found
