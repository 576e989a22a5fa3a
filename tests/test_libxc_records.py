"""Each libxc header field and record type, valid and invalid, through the library.

Every test writes a real stream with the sample builders (``xenmig_libxc.samples``), breaks
one thing, verifies it and asserts on the diagnostic: record index, record name, field and
byte offset, not just validity. The seed verifier's checks (2015, shared/seeds/000_*) each
have a test here; the docstrings say which.
"""

from __future__ import annotations

import struct

import pytest
from conftest import verbose_account

from xenmig_libxc.samples import (
    L1,
    NOTAB,
    PAGE,
    XTAB,
    Step,
    hvm_context_blob,
    hvm_sample,
    page_data,
    pv_sample,
    vcpu,
)

XALLOC, BROKEN = 0xE, 0xD


def test_samples_are_valid(check) -> None:
    for sample in (pv_sample(), pv_sample(width=4), pv_sample(version=2), hvm_sample(),
                   hvm_sample(version=2)):
        out = check(sample)
        assert out.valid, [str(d) for d in out.report.diagnostics]
        assert out.report.diagnostics == []
        assert out.report.result.records == len(sample.steps)


# -- image header --------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "value", "field"), [
    ("marker", 0xFFFFFFFFFFFFFFFE, "marker"),
    ("id", 0x58454E47, "id"),
    ("version", 1, "version"),
    ("version", 4, "version"),
])
def test_image_header_fatal_fields(check, pv, key, value, field) -> None:
    """Seed: bad marker, bad id, unknown version are stream errors; nothing after is read."""
    pv.image_header[key] = value
    out = check(pv, fmt="libxc")
    diag = out.error()
    assert (diag.unit, diag.field, diag.offset) == ("image_header", field, 0)
    assert out.report.result.records == 0
    assert str(diag).startswith(f"libxc image_header @0x0: {field}: ")
    assert f"found {value:#x}" in diag.message or f"found {value})" in diag.message


def test_bad_version_message_names_allowed_versions(check, pv) -> None:
    pv.image_header["version"] = 4
    assert check(pv).error().message == "unknown stream version: expected 2 or 3 (found 4)"


@pytest.mark.parametrize("key", ["marker", "id"])
def test_bad_magic_is_not_recognised_as_libxc(check, pv, key) -> None:
    """Auto-detection does not take a stream with a broken magic for libxc."""
    pv.image_header[key] ^= 1
    diag = check(pv).error("unrecognised stream")
    assert diag.offset == 0


@pytest.mark.parametrize(("key", "value", "field", "text"), [
    ("options", 0x2, "options", "reserved bits set: 0x2"),
    ("options", 0x8000, "options", "reserved bits set: 0x8000"),
    ("reserved1", 1, "reserved1", "reserved field is not zero"),
    ("reserved2", 0x100, "reserved2", "reserved field is not zero"),
])
def test_image_header_reserved(check, pv, key, value, field, text) -> None:
    """Seed: reserved option bits and reserved fields must be zero (not fatal: walk goes on)."""
    pv.image_header[key] = value
    out = check(pv)
    diag = out.error(text)
    assert (diag.unit, diag.field, diag.offset) == ("image_header", field, 0)
    assert out.report.result.records == len(pv.steps)


def test_big_endian_is_accepted_with_a_warning(check, pv) -> None:
    """Seed refused a non-native stream; we verify it and warn that x86 restore refuses it."""
    out = check(pv, byte_order="big")
    assert out.valid
    diag = out.warning("big-endian")
    assert (diag.unit, diag.offset) == ("image_header", 0)
    assert out.report.to_dict()["byte_order"] == "big"


# -- domain header -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [0, 5, 0x80000001])
def test_unknown_domain_type_is_fatal(check, pv, dtype) -> None:
    """Seed: unrecognised domain type."""
    pv.domain_header["type"] = dtype
    out = check(pv)
    diag = out.error("unknown domain type")
    assert (diag.unit, diag.field, diag.offset) == ("domain_header", "type", 24)
    assert out.report.result.records == 0


@pytest.mark.parametrize(("dtype", "label"), [(3, "x86 PVH"), (4, "ARM")])
def test_domain_types_3_and_4_from_the_2015_draft_are_errors(check, pv, hvm, dtype,
                                                             label) -> None:
    """The 2015 draft named PVH (3) and ARM (4); today's restore refuses both (its setup
    accepts only the type it restores: "Unable to restore ... domain"): an error that
    says where the type came from."""
    for sample in (pv, hvm):
        sample.domain_header["type"] = dtype
        out = check(sample)
        assert not out.valid
        diag = out.error(f"domain type {dtype} ({label}) is from the 2015 draft")
        assert (diag.unit, diag.field, diag.offset) == ("domain_header", "type", 24)
        assert out.report.to_dict()["guest_type"] == label


def test_page_shift_must_be_12(check, pv) -> None:
    """Seed: page shift expected to be 12."""
    pv.domain_header["page_shift"] = 13
    diag = check(pv).error("page shift must be 12")
    assert (diag.unit, diag.field, diag.offset) == ("domain_header", "page_shift", 24)


def test_domain_header_reserved(check, pv) -> None:
    """Seed: reserved bits set in domain header."""
    pv.domain_header["reserved"] = 1
    diag = check(pv).error("reserved")
    assert (diag.unit, diag.field, diag.offset) == ("domain_header", "reserved", 24)


def test_legacy_converted_stream_is_named(check, pv) -> None:
    """Seed: xen_major 0 means converted from a legacy stream (xen_minor: converter version)."""
    pv.domain_header.update(xen_major=0, xen_minor=2)
    lines = verbose_account(check(pv).data)
    assert any("x86 PV, converted from a legacy stream by converter version 2" in line
               for line in lines), lines


def test_domain_header_names_xen_version(check, pv) -> None:
    """Seed: 'Domain Header: x86 PV from Xen 4.17'."""
    assert "x86 PV, from Xen 4.17" in verbose_account(check(pv).data)[1]


# -- framing -------------------------------------------------------------------------------
def test_non_zero_padding(check, pv) -> None:
    """Seed: padding containing non-zero bytes."""
    pv.steps[0].overrides = {"body": struct.pack("<BBHI", 8, 4, 0, 0)[:5],
                             "padding": b"\0\0\1"}
    out = check(pv)
    errors = [d for d in out.errors if d.field == "padding"]
    assert len(errors) == 1, [str(d) for d in out.errors]
    out.at_step(errors[0], 0, "X86_PV_INFO", "padding")
    assert "000001" in errors[0].message


def test_non_zero_padding_is_the_only_error(check, hvm) -> None:
    """A blob of 8k + 4 bytes is padded with 4 bytes; one of them non-zero."""
    j = hvm.index("HVM_CONTEXT")
    blob = hvm_context_blob(1)
    hvm.steps[j] = Step("HVM_CONTEXT", {"context": blob + b"\0" * 4},
                        overrides={"padding": b"\0\0\0\xff"})
    out = check(hvm)
    diag = out.error("padding")
    out.at_step(diag, j, "HVM_CONTEXT", "padding")
    assert out.warning("4 bytes after the HVM context's END entry")


def test_unknown_mandatory_record_is_an_error(check, pv) -> None:
    """Seed: unrecognised record type. 0x13 (a proposed DOMAIN_CONTEXT) was never merged."""
    i = pv.index("X86_TSC_INFO")
    pv.steps.insert(i, Step("END", overrides={"type_id": 0x13, "body": b"abc"}))
    out = check(pv)
    diag = out.error("unknown record type 0x00000013")
    out.at_step(diag, i, "0x00000013")
    assert out.report.result.records == len(pv.steps)  # skipped, the walk went on


def test_unknown_optional_record_is_skipped_with_a_warning(check, pv) -> None:
    """Bit 31 marks an optional record: a reader skips it (the seed wrongly refused it)."""
    i = pv.index("X86_TSC_INFO")
    pv.steps.insert(i, Step("END", overrides={"type_id": 0x80000013, "body": b"x" * 4099}))
    out = check(pv)
    assert out.valid
    diag = out.warning("unknown optional record type 0x80000013")
    out.at_step(diag, i, "0x80000013")
    assert out.report.contexts[0].records["0x80000013"] == 1


def test_toolstack_is_rejected(check, hvm) -> None:
    """Seed: TOOLSTACK raised (exit 2 there); today no restore handles it: one error."""
    i = hvm.index("END")
    hvm.steps.insert(i, Step("TOOLSTACK", payload=b"opaque toolstack data"))
    out = check(hvm)
    diag = out.error("TOOLSTACK")
    out.at_step(diag, i, "TOOLSTACK")


def test_length_above_the_cap_is_refused_before_reading(check) -> None:
    """A body longer than 128 MiB is refused from its header alone: no body bytes follow."""
    sample = hvm_sample()
    i = sample.index("X86_TSC_INFO")
    huge = Step("HVM_CONTEXT", overrides={"length": (128 << 20) + 1, "body": b""})
    sample.steps = [*sample.steps[:i], huge]
    out = check(sample)
    diag = out.error("exceeds")
    out.at_step(diag, i, "HVM_CONTEXT", "length")
    assert "0x8000001" in diag.message and "0x8000000" in diag.message
    # exactly 128 MiB is allowed: the same short stream is then merely truncated
    sample.steps[-1].overrides["length"] = 128 << 20
    out = check(sample)
    assert "exceeds" not in str(out.errors)
    assert "truncated" in out.error().message


# -- END, VERIFY, CHECKPOINT, STATIC_DATA_END -------------------------------------------------
@pytest.mark.parametrize("name", ["END", "VERIFY", "CHECKPOINT", "STATIC_DATA_END"])
def test_empty_records_with_a_body(check, pv, name) -> None:
    """Seed: END / VERIFY / CHECKPOINT with non-zero length (and STATIC_DATA_END, v3)."""
    i = pv.index("END") if name != "STATIC_DATA_END" else pv.index(name)
    if name in ("VERIFY", "CHECKPOINT"):
        pv.steps.insert(i, Step(name))
    pv.steps[i].overrides = {"body": b"\0" * 8}
    out = check(pv)
    diag = out.error("body length 8, expected 0")
    out.at_step(diag, i, name, "length")


def test_verify_record_then_pages_is_valid(check, pv) -> None:
    i = pv.index("X86_TSC_INFO")
    pv.steps[i:i] = [Step("VERIFY"), page_data([(5, NOTAB), (6, L1)])]
    assert check(pv).valid


# -- PAGE_DATA ---------------------------------------------------------------------------------
def test_page_data_count_zero(check, hvm) -> None:
    """Seed: PAGE_DATA must hold at least one pfn (restore: 'Expected at least 1 pfn')."""
    i = hvm.index("PAGE_DATA")
    hvm.steps.insert(i, Step("PAGE_DATA", {"count": 0, "pfn": []}))
    out = check(hvm)
    diag = out.error("at least one pfn")
    out.at_step(diag, i, "PAGE_DATA", "count")


def test_page_data_reserved(check, hvm) -> None:
    """Seed: reserved bits set in PAGE_DATA record."""
    i = hvm.index("PAGE_DATA")
    hvm.steps[i].fields["reserved"] = 7
    diag = check(hvm).error("reserved")
    assert (diag.record_index, diag.field) == (i, "reserved")


def test_page_data_count_beyond_body(check, hvm) -> None:
    """Seed: a pfn for each count. A count the body cannot hold is an error, not a crash."""
    i = hvm.index("PAGE_DATA")
    hvm.steps[i].fields["count"] = 20000
    out = check(hvm)
    diag = out.error("20000 items need 160000 bytes")
    out.at_step(diag, i, "PAGE_DATA", "pfn")
    assert out.report.result.records == len(hvm.steps)


def test_page_data_count_reading_into_the_pages(check, hvm) -> None:
    """A count too large for the pfns but within the body: page bytes read as pfn words;
    the exact length rule (not a crash) reports it."""
    i = hvm.index("PAGE_DATA")
    hvm.steps[i].payload = bytes(len(hvm.steps[i].payload))  # zero pages: NOTAB pfn 0
    hvm.steps[i].fields["count"] = 1000
    out = check(hvm)
    diag = out.error("expected 4104008 (8 + 8 * 1000 pfns + 4096 * 1000 pages with data)")
    out.at_step(diag, i, "PAGE_DATA", "length")


@pytest.mark.parametrize("ptype", [5, 6, 7, 8])
def test_page_data_invalid_types(check, hvm, ptype) -> None:
    """Seed: invalid type value in pfn[i] (5-8 are not page types)."""
    i = hvm.index("PAGE_DATA")
    words = hvm.steps[i].fields["pfn"]
    words[3] = (ptype << 60) | 3
    hvm.steps[i].payload = hvm.steps[i].payload[:-PAGE]  # types 5-8 carry no data
    out = check(hvm)
    diag = out.error(f"page type {ptype:#x} is invalid")
    out.at_step(diag, i, "PAGE_DATA", "pfn[3]")


def test_page_data_reserved_pfn_bits(check, hvm) -> None:
    """Seed: reserved bits 52-59 of a pfn word."""
    i = hvm.index("PAGE_DATA")
    hvm.steps[i].fields["pfn"][2] |= 1 << 55
    out = check(hvm)
    diag = out.error("reserved bits 59-52")
    out.at_step(diag, i, "PAGE_DATA", "pfn[2]")
    assert "0x8" in diag.message


def test_page_data_problems_are_capped(check, hvm) -> None:
    i = hvm.index("PAGE_DATA")
    hvm.steps[i].fields["pfn"] = [w | (1 << 52) for w in hvm.steps[i].fields["pfn"]]
    out = check(hvm)
    assert len(out.errors) == 4
    assert "more pfn problems" in str(out.errors[-1])


@pytest.mark.parametrize("delta", [-PAGE, PAGE, 8, -8])
def test_page_data_exact_length(check, hvm, delta) -> None:
    """Seed: the body is exactly 8 + 8 * count + 4096 * pages with data."""
    i = hvm.index("PAGE_DATA")
    step = hvm.steps[i]
    step.payload = step.payload[:delta] if delta < 0 else step.payload + b"\0" * delta
    out = check(hvm)
    diag = out.error("expected")
    out.at_step(diag, i, "PAGE_DATA", "length")
    count = step.fields["count"]
    assert f"expected {8 + 8 * count + PAGE * count}" in diag.message


def test_page_data_types_without_data(check, hvm) -> None:
    """XTAB, XALLOC and BROKEN carry no data; a batch of only those is valid."""
    i = hvm.index("END")
    hvm.steps.insert(i - 3, page_data([(100, XTAB), (101, XALLOC), (102, BROKEN)]))
    out = check(hvm)
    assert out.valid
    pages = out.report.contexts[0].stats["pages"]
    assert pages["invalid"] == 1 + 4 and pages["allocate only"] == 1 and pages["broken"] == 1


def test_page_data_pinned_tables_carry_data(check, pv) -> None:
    """0x9-0xC (pinned L1-L4) carry 4096 bytes each; the pv sample's tables are pinned."""
    out = check(pv)
    pages = out.report.contexts[0].stats["pages"]
    assert pages["pinned L4 page table"] == 1 and pages["pinned L3 page table"] == 1
    assert pages["with data"] == 93


def test_page_data_batch_over_1024_warns(check, hvm) -> None:
    i = hvm.index("X86_TSC_INFO")
    hvm.steps.insert(i, page_data([(pfn, XTAB) for pfn in range(2000, 3025)]))
    out = check(hvm)
    assert out.valid
    out.at_step(out.warning("MAX_BATCH_SIZE"), i, "PAGE_DATA", "count")


def test_page_data_pfn_beyond_p2m(check, pv) -> None:
    """PV: a pfn above the maximum announced by X86_PV_P2M_FRAMES."""
    i = pv.index("X86_TSC_INFO")
    pv.steps.insert(i, page_data([(96, NOTAB)]))
    out = check(pv)
    diag = out.error("exceeds the domain's maximum 0x5f")
    out.at_step(diag, i, "PAGE_DATA", "pfn[0]")


# -- X86_PV_INFO -------------------------------------------------------------------------------
@pytest.mark.parametrize(("width", "levels", "field", "count"), [
    (5, 4, "guest_width", 2), (8, 2, "pt_levels", 2), (4, 4, "pt_levels", 1),
    (8, 3, "pt_levels", 1),
])
def test_pv_info_width_and_levels(check, pv, width, levels, field, count) -> None:
    """Seed: width 4 or 8, levels 3 or 4; restore: only (4, 3) and (8, 4) pair up."""
    pv.steps[0].fields.update(guest_width=width, pt_levels=levels)
    out = check(pv)
    bad = [d for d in out.errors if d.record_index == 0]
    assert len(bad) == count, [str(d) for d in out.errors]
    assert field in {d.field for d in bad}
    out.at_step(bad[0], 0, "X86_PV_INFO")


def test_pv_info_reserved(check, pv) -> None:
    """Seed: reserved bits set in X86_PV_INFO."""
    pv.steps[0].fields["reserved2"] = 1
    out = check(pv)
    out.at_step(out.error("reserved"), 0, "X86_PV_INFO", "reserved2")


@pytest.mark.parametrize("length", [4, 16])
def test_pv_info_length(check, pv, length) -> None:
    """Seed: x86_pv_info expected length 8."""
    body = struct.pack("<BBHI", 8, 4, 0, 0).ljust(length, b"\0")[:length]
    pv.steps[0].overrides = {"body": body}
    out = check(pv)
    diag = [d for d in out.errors if d.record_index == 0]
    assert len(diag) == 1, [str(d) for d in out.errors]
    out.at_step(diag[0], 0, "X86_PV_INFO")
    if length == 16:
        assert diag[0].field == "length" and "expected 8" in diag[0].message


# -- X86_PV_P2M_FRAMES -------------------------------------------------------------------------
def test_p2m_frames_start_after_end(check, pv) -> None:
    i = pv.index("X86_PV_P2M_FRAMES")
    pv.steps[i].fields.update(p2m_start_pfn=0x60, p2m_end_pfn=0x5F)
    out = check(pv)
    diag = [d for d in out.errors if d.record_index == i]
    assert len(diag) == 1, [str(d) for d in out.errors]
    out.at_step(diag[0], i, "X86_PV_P2M_FRAMES", "p2m_end_pfn")
    assert "below start pfn 0x60" in diag[0].message


@pytest.mark.parametrize(("width", "end", "frames", "ok"), [
    (8, 511, 1, True), (8, 512, 1, False), (8, 512, 2, True), (8, 1023, 3, False),
    (4, 1023, 1, True), (4, 1024, 2, True), (4, 1024, 1, False), (4, 511, 2, False),
])
def test_p2m_frames_size_rule(check, width, end, frames, ok) -> None:
    """Restore: body == 8 + 8 * (end / fpp - start / fpp + 1), fpp = 4096 / guest_width."""
    sample = pv_sample(width=width, pages=8)
    i = sample.index("X86_PV_P2M_FRAMES")
    sample.steps[i].fields.update(p2m_end_pfn=end, p2m_pfns=list(range(frames)))
    out = check(sample)
    if ok:
        assert out.valid, [str(d) for d in out.errors]
    else:
        diag = out.error("body length")
        out.at_step(diag, i, "X86_PV_P2M_FRAMES", "length")
        fpp = 4096 // width
        assert f"expected {8 + 8 * (end // fpp + 1)}" in diag.message


def test_p2m_frames_start_pfn_counts_in_the_formula(check, pv) -> None:
    i = pv.index("X86_PV_P2M_FRAMES")
    pv.steps[i].fields.update(p2m_start_pfn=512, p2m_end_pfn=1100, p2m_pfns=[1, 2])
    out = check(pv)
    assert not [d for d in out.errors if d.record_index == i]


def test_p2m_frames_not_a_multiple_of_8(check, pv) -> None:
    """Seed: length expected to be a multiple of 8."""
    i = pv.index("X86_PV_P2M_FRAMES")
    pv.steps[i].payload = b"\0\0\0\0"
    out = check(pv)
    diag = [d for d in out.errors if d.record_index == i]
    assert len(diag) == 1, [str(d) for d in out.errors]
    out.at_step(diag[0], i, "X86_PV_P2M_FRAMES", "length")
    assert diag[0].message == "body length 20 is not a multiple of 8"


def test_p2m_frames_too_short(check, pv) -> None:
    """A body shorter than the header is refused before decoding; the guest then has no
    usable p2m (the end check says so)."""
    i = pv.index("X86_PV_P2M_FRAMES")
    pv.steps[i].overrides = {"body": b"\0\0\0\0"}
    out = check(pv)
    diag = [d for d in out.errors if d.record_index == i]
    assert [d.message for d in diag] == ["body length 4, expected at least 8",
                                         "body length 4 is not a multiple of 8"]
    out.at_step(diag[0], i, "X86_PV_P2M_FRAMES", "length")
    assert "no valid X86_PV_P2M_FRAMES record" in out.errors[-1].message


# -- vcpu records ------------------------------------------------------------------------------
@pytest.mark.parametrize(("width", "size", "ok"), [
    (8, 5168, True), (8, 5160, False), (8, 2800, False), (8, 5176, False),
    (4, 2800, True), (4, 5168, False), (4, 2808, False),
])
def test_vcpu_basic_size(check, width, size, ok) -> None:
    """Restore: BASIC is exactly 5168 bytes (64-bit) or 2800 (32-bit) after the header."""
    sample = pv_sample(width=width, vcpus=1, pages=8)
    i = sample.index("X86_PV_VCPU_BASIC")
    sample.steps[i] = vcpu("X86_PV_VCPU_BASIC", 0, size)
    out = check(sample)
    if ok:
        assert out.valid, [str(d) for d in out.errors]
        return
    diag = out.error("body length")
    out.at_step(diag, i, "X86_PV_VCPU_BASIC", "length")
    assert f"expected 8 or {8 + (5168 if width == 8 else 2800)}" in diag.message


@pytest.mark.parametrize(("name", "size", "ok", "text"), [
    ("X86_PV_VCPU_EXTENDED", 128, True, ""),
    ("X86_PV_VCPU_EXTENDED", 129, False, "at most 136"),
    ("X86_PV_VCPU_XSAVE", 16, True, ""),
    ("X86_PV_VCPU_XSAVE", 15, False, "at least 24"),
    ("X86_PV_VCPU_MSRS", 16, True, ""),
    ("X86_PV_VCPU_MSRS", 24, False, "not a multiple of 16"),
])
def test_vcpu_blob_sizes(check, pv, name, size, ok, text) -> None:
    """Restore: EXTENDED at most 128, XSAVE at least 16, MSRS a multiple of 16."""
    i = pv.index(name)
    pv.steps[i] = vcpu(name, 0, size)
    out = check(pv)
    if ok:
        assert out.valid, [str(d) for d in out.errors]
        return
    diag = out.error(text)
    out.at_step(diag, i, name, "length")


@pytest.mark.parametrize("name", ["X86_PV_VCPU_BASIC", "X86_PV_VCPU_EXTENDED",
                                  "X86_PV_VCPU_XSAVE", "X86_PV_VCPU_MSRS"])
def test_empty_vcpu_blob_is_tolerated(check, pv, name) -> None:
    """Xen 4.6-4.8 wrote header-only vcpu records; restore skips them (the seed refused)."""
    i = max(j for j, s in enumerate(pv.steps) if s.name == name)  # vcpu1's
    pv.steps[i] = vcpu(name, 1, 0)
    out = check(pv)
    assert out.valid, [str(d) for d in out.errors]
    out.at_step(out.warning("empty vcpu context"), i, name)


@pytest.mark.parametrize("name", ["X86_PV_VCPU_BASIC", "X86_PV_VCPU_MSRS"])
def test_vcpu_reserved(check, pv, name) -> None:
    """Seed: reserved bits set in x86_pv_vcpu record."""
    i = pv.index(name)
    pv.steps[i].fields["reserved"] = 0x10
    out = check(pv)
    out.at_step(out.error("reserved"), i, name, "reserved")


def test_vcpu_record_shorter_than_its_header(check, pv) -> None:
    """Seed: a vcpu record must be at least 8 bytes."""
    i = pv.index("X86_PV_VCPU_XSAVE")
    pv.steps[i] = Step("X86_PV_VCPU_XSAVE", overrides={"body": b"\0\0\0\0"})
    out = check(pv)
    diag = out.error("body length 4, expected at least 8")
    out.at_step(diag, i, "X86_PV_VCPU_XSAVE", "length")


# -- SHARED_INFO, X86_TSC_INFO ---------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 4095, 4097, 8192])
def test_shared_info_size(check, pv, size) -> None:
    """Seed: shared info is exactly 4096 bytes."""
    i = pv.index("SHARED_INFO")
    pv.steps[i].payload = b"\1" * size
    out = check(pv)
    out.at_step(out.error("expected 4096"), i, "SHARED_INFO", "length")


@pytest.mark.parametrize("size", [16, 32])
def test_tsc_info_length(check, hvm, size) -> None:
    """Seed: TSC_INFO length should be 24 bytes."""
    i = hvm.index("X86_TSC_INFO")
    hvm.steps[i].overrides = {"body": bytes(size)}
    out = check(hvm)
    out.at_step(out.error(f"body length {size}, expected 24"), i, "X86_TSC_INFO", "length")


def test_tsc_info_reserved(check, hvm) -> None:
    """Seed: reserved bits set in TSC_INFO."""
    i = hvm.index("X86_TSC_INFO")
    hvm.steps[i].fields["reserved"] = 1
    out = check(hvm)
    out.at_step(out.error("reserved"), i, "X86_TSC_INFO", "reserved")


def test_tsc_info_unknown_mode_warns(check, hvm) -> None:
    i = hvm.index("X86_TSC_INFO")
    hvm.steps[i].fields["mode"] = 9
    out = check(hvm)
    assert out.valid
    out.at_step(out.warning("unknown tsc_mode"), i, "X86_TSC_INFO", "mode")


# -- HVM_CONTEXT, HVM_PARAMS --------------------------------------------------------------------
def test_hvm_context_empty(check, hvm) -> None:
    """Seed: zero length HVM context."""
    i = hvm.index("HVM_CONTEXT")
    hvm.steps[i].fields["context"] = b""
    out = check(hvm)
    out.at_step(out.error("at least 1"), i, "HVM_CONTEXT", "length")


def test_hvm_params_count_zero_warns(check, hvm) -> None:
    """Restore tolerates an empty HVM_PARAMS (older savers); the seed warned too."""
    i = hvm.index("HVM_PARAMS")
    hvm.steps[i].fields.update(count=0, params=[])
    out = check(hvm)
    assert out.valid
    out.at_step(out.warning("no params"), i, "HVM_PARAMS")


def test_hvm_params_reserved(check, hvm) -> None:
    """Seed: HVM_PARAMS reserved field not zero."""
    i = hvm.index("HVM_PARAMS")
    hvm.steps[i].fields["reserved"] = 2
    out = check(hvm)
    out.at_step(out.error("reserved"), i, "HVM_PARAMS", "reserved")


@pytest.mark.parametrize(("count", "field"), [(6, "params"), (4, "length")])
def test_hvm_params_count_and_length(check, hvm, count, field) -> None:
    """Seed: length should be 8 + 16 * count."""
    i = hvm.index("HVM_PARAMS")
    hvm.steps[i].fields["count"] = count
    out = check(hvm)
    out.at_step(out.error(), i, "HVM_PARAMS", field)


def test_hvm_params_shorter_than_header(check, hvm) -> None:
    """Seed: length should be at least 8 bytes."""
    i = hvm.index("HVM_PARAMS")
    hvm.steps[i].overrides = {"body": b"\0\0\0\0"}
    out = check(hvm)
    diag = out.error("body too short")
    out.at_step(diag, i, "HVM_PARAMS", "count")


def test_hvm_params_unknown_index_is_not_an_error(check, hvm) -> None:
    """Param indices are the hypervisor's business: an unknown one is named, not refused."""
    i = hvm.index("HVM_PARAMS")
    hvm.steps[i].fields["params"][0]["index"] = 200
    out = check(hvm)
    assert out.valid and not out.report.diagnostics


# -- v3 records ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "size", "text"), [
    ("X86_CPUID_POLICY", 0, "at least 24"),
    ("X86_CPUID_POLICY", 36, "body length 36 is not a multiple of 24"),
    ("X86_MSR_POLICY", 0, "at least 16"),
    ("X86_MSR_POLICY", 20, "body length 20 is not a multiple of 16"),
])
def test_policy_lengths(check, hvm, name, size, text) -> None:
    i = hvm.index(name)
    hvm.steps[i].overrides = {"body": bytes(size)}
    out = check(hvm)
    diag = [d for d in out.errors if d.record_index == i]
    assert len(diag) == 1 and text in diag[0].message, [str(d) for d in out.errors]
    out.at_step(diag[0], i, name)


def test_msr_policy_flags_must_be_zero(check, hvm) -> None:
    i = hvm.index("X86_MSR_POLICY")
    hvm.steps[i].fields["msrs"][0]["flags"] = 1
    out = check(hvm)
    out.at_step(out.error("reserved"), i, "X86_MSR_POLICY", "msrs[0].flags")


def test_checkpoint_dirty_pfn_list_is_not_for_saved_images(check, hvm) -> None:
    i = hvm.index("END")
    hvm.steps.insert(i, Step("CHECKPOINT_DIRTY_PFN_LIST", {"pfn": [1, 2, 3]}))
    out = check(hvm)
    out.at_step(out.error("COLO back channel"), i, "CHECKPOINT_DIRTY_PFN_LIST")


def test_checkpoint_records(check, hvm) -> None:
    """A checkpointed (Remus) stream repeats memory and context after each CHECKPOINT and
    may stop after one, as at a failover; the report says so. Outside libxl, a plain restore
    would refuse CHECKPOINT: verify warns once per CHECKPOINT."""
    end = hvm.index("END")
    again = [page_data([(5, NOTAB)]), hvm.steps[hvm.index("X86_TSC_INFO")],
             hvm.steps[hvm.index("HVM_CONTEXT")], hvm.steps[hvm.index("HVM_PARAMS")]]
    hvm.steps[end:] = [Step("CHECKPOINT"), *again, Step("CHECKPOINT")]
    out = check(hvm)
    assert out.valid
    assert [d.message for d in out.report.diagnostics] == [
        "CHECKPOINT in a bare libxc stream: only a checkpointed (Remus/COLO) restore accepts "
        "it, a plain restore refuses it"] * 2
    report = out.report.to_dict()
    assert report["checkpoints"] == 2
    assert report["end_note"] == "stream ended after checkpoint 2, as at a failover"
    # ... but not in the middle of a checkpoint
    hvm.steps.pop()
    out = check(hvm)
    assert "stream ended before END (last record 12, HVM_PARAMS)" in out.error().message
