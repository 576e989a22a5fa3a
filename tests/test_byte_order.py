"""Both byte orders: every sample verifies identically when written big-endian.

The image header's options bit 0 decides the order of everything after it (the image
header itself is always big-endian). A big-endian stream is verified, with one warning that
Xen's x86 restore refuses it; everything else (records, counts, pages, diagnostics of a
broken stream) must be the same as for the little-endian twin.
"""

from __future__ import annotations

import struct

import pytest

from xenmig_libxc.samples import Step, hvm_context_blob, hvm_sample, pv_sample

SAMPLES = {
    "pv64-v3": lambda: pv_sample(),
    "pv32-v3": lambda: pv_sample(width=4, vcpus=3),
    "pv64-v2": lambda: pv_sample(version=2),
    "hvm-v3": lambda: hvm_sample(),
    "hvm-v2": lambda: hvm_sample(version=2, vcpus=4),
}


def facts(out) -> dict:
    """What a verification found, minus the byte order itself."""
    report = out.report.to_dict()
    diagnostics = [d for d in report.pop("diagnostics") if "big-endian" not in d["text"]]
    report["warnings"] = len([d for d in diagnostics if d["severity"] == "warning"])
    for key in ("byte_order", "source"):
        report.pop(key)
    report.pop("account")  # the -v account names the byte order in its header line
    for stream in report["streams"]:
        stream["summary"] = stream["summary"].replace("big-endian", "little-endian")
        stream.pop("byte_order")
        stream["headers"]["image_header"].pop("options")
    return {"report": report, "diagnostics": diagnostics}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_sample_verifies_identically_big_endian(check, name) -> None:
    little = check(SAMPLES[name]())
    big = check(SAMPLES[name](), byte_order="big")
    assert little.valid and big.valid, [str(d) for d in big.errors]
    assert big.data != little.data and len(big.data) == len(little.data)
    assert [str(d) for d in big.warnings] == \
        ["libxc image_header @0x0: big-endian stream: valid, but Xen's x86 restore refuses it"]
    assert facts(big) == facts(little)
    assert big.report.to_dict()["byte_order"] == "big"


def test_big_endian_records_really_are_big_endian(check, pv) -> None:
    big = check(pv, byte_order="big")
    # first record: X86_PV_INFO (type 2, length 8) right after the 40 header bytes
    assert big.data[40:48] == struct.pack(">II", 2, 8)
    assert big.data[12:18] == struct.pack(">IH", 3, 1)  # version 3, options: big-endian
    assert big.data[24:28] == struct.pack(">I", 1)  # domain header in the stream's order


def test_stream_claiming_big_endian_but_little_is_invalid(check, pv) -> None:
    """The endian bit is obeyed: a little-endian body read big-endian does not verify."""
    pv.image_header["options"] = 1
    out = check(pv)  # written little-endian, header says big
    diag = out.error("unknown domain type")  # type 1 reads as 0x01000000
    assert (diag.unit, diag.field, diag.offset) == ("domain_header", "type", 24)
    assert out.report.result.records == 0


BREAKAGES = {
    "page type": lambda s: s.steps[s.index("PAGE_DATA")].fields["pfn"].__setitem__(
        2, (6 << 60) | 2),
    "p2m start after end": lambda s: s.steps[s.index("X86_PV_P2M_FRAMES")].fields.update(
        p2m_start_pfn=200),
    "vcpu basic size": lambda s: setattr(s.steps[s.index("X86_PV_VCPU_BASIC")], "payload",
                                         bytes(5000)),
    "tsc reserved": lambda s: s.steps[s.index("X86_TSC_INFO")].fields.update(reserved=3),
    "unknown record": lambda s: s.steps.insert(3, Step("END", overrides={"type_id": 0x77})),
    "padding": lambda s: s.steps[0].overrides.update(
        body=bytes(5), padding=b"\0\1\0"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_streams_fail_identically_big_endian(check, breakage) -> None:
    results = []
    for order in ("little", "big"):
        sample = pv_sample()
        BREAKAGES[breakage](sample)
        out = check(sample, byte_order=order)
        results.append([str(d) for d in out.errors])
    assert results[0] and results[0] == results[1]


def test_hvm_context_inner_records_follow_the_stream_order(check, hvm) -> None:
    """HVM save records are in the host's (the stream's) order: a little-endian blob in a
    big-endian stream has a bad HEADER."""
    hvm.steps[hvm.index("HVM_CONTEXT")].fields["context"] = hvm_context_blob(2, "little")
    out = check(hvm, byte_order="big")
    i = hvm.index("HVM_CONTEXT")
    diag = out.error("entry 0 (typecode 256 0) at blob offset 0x0 claims 402653184 bytes")
    assert (diag.record_index, diag.record_type) == (i, "HVM_CONTEXT")
    assert diag.offset == out.offsets[i] + 8        # the entry, after the record header
