"""The restore-side rules of formats.md section 2, each broken by at least one stream.

Layout rules (what may come before what, at most once, v3-only records), stream-level rules
(END last and present, vcpu0 BASIC), guest-type rules (PV records in HVM streams and vice
versa) and the framing inside HVM_CONTEXT. Each test asserts the diagnostic's record index,
name and offset.
"""

from __future__ import annotations

import struct

import pytest
from conftest import verbose_account, verify_bytes

from xenmig_libxc.samples import (
    NOTAB,
    Step,
    hvm_context_blob,
    hvm_cpu_body,
    hvm_sample,
    page_data,
    pv_sample,
)


def move(sample, name: str, before: str, nth: int = 0) -> int:
    """Move the first step named *name* just before the *nth* step named *before*;
    returns its new index."""
    step = sample.steps.pop(sample.index(name))
    to = [i for i, s in enumerate(sample.steps) if s.name == before][nth]
    sample.steps.insert(to, step)
    return to


def errors_at(out, index: int) -> list:
    return [d for d in out.errors if d.record_index == index]


# -- v3-only records and STATIC_DATA_END ----------------------------------------------------
@pytest.mark.parametrize("name", ["STATIC_DATA_END", "X86_CPUID_POLICY", "X86_MSR_POLICY"])
def test_v3_records_in_a_v2_stream(check, name) -> None:
    """formats.md: restore rejects v3 policy / STATIC_DATA_END records in a v2 stream.
    (libxc-facts 0.1: Xen's restore in fact accepts them; issue 2 asks for an error.)"""
    sample = pv_sample(version=2)
    v3 = pv_sample(version=3)
    sample.steps.insert(1, v3.steps[v3.index(name)])
    out = check(sample)
    diag = out.error(f"{name} is a v3 record, found in a v2 stream")
    out.at_step(diag, 1, name)


def test_v2_infers_static_data_end_at_p2m_frames(check) -> None:
    """A v2 PV stream has no STATIC_DATA_END: inferred at X86_PV_P2M_FRAMES, so an explicit
    one afterwards is a second one."""
    sample = pv_sample(version=2)
    assert check(sample).valid
    i = sample.index("X86_PV_P2M_FRAMES") + 1
    sample.steps.insert(i, Step("STATIC_DATA_END"))
    out = check(sample)
    assert {d.message for d in errors_at(out, i)} == {
        "STATIC_DATA_END is a v3 record, found in a v2 stream",
        "a second STATIC_DATA_END: restore rejects it"}
    assert len(out.errors) == 2


def test_v2_hvm_infers_static_data_end_at_page_data(check) -> None:
    sample = hvm_sample(version=2)
    assert check(sample).valid
    i = sample.index("PAGE_DATA") + 1
    sample.steps.insert(i, Step("X86_CPUID_POLICY", {"leaves": [{"leaf": 0}]}))
    out = check(sample)
    messages = {d.message for d in errors_at(out, i)}
    assert "X86_CPUID_POLICY after STATIC_DATA_END: restore never applies it" in messages
    assert len(out.errors) == 2


def test_second_static_data_end(check, pv) -> None:
    i = pv.index("STATIC_DATA_END") + 1
    pv.steps.insert(i, Step("STATIC_DATA_END"))
    out = check(pv)
    out.at_step(out.error("a second STATIC_DATA_END"), i, "STATIC_DATA_END")


def test_p2m_frames_before_static_data_end_in_v3(check, pv) -> None:
    i = move(pv, "X86_PV_P2M_FRAMES", "STATIC_DATA_END")
    out = check(pv)
    out.at_step(out.error("X86_PV_P2M_FRAMES before STATIC_DATA_END"), i, "X86_PV_P2M_FRAMES")


def test_page_data_before_static_data_end_in_v3(check, hvm) -> None:
    i = move(hvm, "PAGE_DATA", "STATIC_DATA_END")
    out = check(hvm)
    out.at_step(out.error("PAGE_DATA before STATIC_DATA_END"), i, "PAGE_DATA")


def test_v3_without_static_data_end(check, hvm) -> None:
    del hvm.steps[hvm.index("STATIC_DATA_END")]
    out = check(hvm)
    pages = [i for i, s in enumerate(hvm.steps) if s.name == "PAGE_DATA"]
    assert [d.record_index for d in out.errors] == pages
    assert all("before STATIC_DATA_END" in d.message for d in out.errors)


@pytest.mark.parametrize("name", ["X86_CPUID_POLICY", "X86_MSR_POLICY"])
def test_policy_after_static_data_end(check, hvm, name) -> None:
    """formats.md: policy records after STATIC_DATA_END are rejected (libxc-facts 0.2:
    restore stores and ignores them; issue 2 keeps it an error)."""
    i = move(hvm, name, "PAGE_DATA")
    out = check(hvm)
    out.at_step(out.error(f"{name} after STATIC_DATA_END"), i, name)


# -- PV ordering -----------------------------------------------------------------------------
def test_second_pv_info(check, pv) -> None:
    pv.steps.insert(1, Step("X86_PV_INFO", {"guest_width": 8, "pt_levels": 4}))
    out = check(pv)
    out.at_step(out.error("a second X86_PV_INFO"), 1, "X86_PV_INFO")


def test_pv_info_after_static_data_end_warns(check, pv) -> None:
    i = move(pv, "X86_PV_INFO", "X86_PV_P2M_FRAMES")
    out = check(pv)
    assert out.valid
    out.at_step(out.warning("X86_PV_INFO after STATIC_DATA_END"), i, "X86_PV_INFO")


@pytest.mark.parametrize("name", ["X86_PV_P2M_FRAMES", "PAGE_DATA", "SHARED_INFO",
                                  "X86_PV_VCPU_BASIC", "X86_PV_VCPU_MSRS"])
def test_records_before_pv_info(check, name) -> None:
    """P2M frames, memory, shared info and vcpu records need the guest width first."""
    sample = pv_sample(version=2)
    i = move(sample, name, "X86_PV_INFO")
    out = check(sample)
    diag = [d for d in errors_at(out, i) if "before X86_PV_INFO" in d.message]
    assert len(diag) == 1, [str(d) for d in out.errors]
    out.at_step(diag[0], i, name)


def test_page_data_before_p2m_frames(check, pv) -> None:
    i = move(pv, "X86_PV_P2M_FRAMES", "PAGE_DATA", nth=1)
    out = check(pv)
    diag = out.error("PAGE_DATA before X86_PV_P2M_FRAMES")
    out.at_step(diag, i - 1, "PAGE_DATA")


def test_missing_p2m_frames(check, pv) -> None:
    del pv.steps[pv.index("X86_PV_P2M_FRAMES")]
    out = check(pv)
    end = pv.index("END")
    assert [d.record_index for d in out.errors] == [4, 5, end]
    assert "no valid X86_PV_P2M_FRAMES record" in out.errors[-1].message


def test_vcpu_records_may_come_before_memory(check, pv) -> None:
    """Restore buffers vcpu records: their position relative to PAGE_DATA is free."""
    first = pv.index("X86_PV_VCPU_BASIC")
    vcpus = pv.steps[first:first + 8]
    del pv.steps[first:first + 8]
    at = pv.index("PAGE_DATA")
    pv.steps[at:at] = vcpus
    out = check(pv)
    assert out.valid and not out.report.diagnostics


def test_repeated_pfns_are_valid(check, pv) -> None:
    """Live migration sends a pfn again; the later copy wins."""
    i = pv.index("X86_TSC_INFO")
    pv.steps.insert(i, page_data([(10, NOTAB), (11, NOTAB)]))
    assert check(pv).valid


def test_missing_vcpu0_basic(check, pv) -> None:
    del pv.steps[pv.index("X86_PV_VCPU_BASIC")]
    out = check(pv)
    end = pv.index("END")
    out.at_step(out.error("no X86_PV_VCPU_BASIC record for vcpu 0"), end, "END")


def test_empty_vcpu0_basic_does_not_count(check, pv) -> None:
    i = pv.index("X86_PV_VCPU_BASIC")
    pv.steps[i] = Step("X86_PV_VCPU_BASIC", {"vcpu_id": 0})
    out = check(pv)
    out.error("no X86_PV_VCPU_BASIC record for vcpu 0")
    out.at_step(out.warning("empty vcpu context"), i, "X86_PV_VCPU_BASIC")


def test_vcpu0_basic_may_come_late(check, pv) -> None:
    i = move(pv, "X86_PV_VCPU_BASIC", "END")
    out = check(pv)
    assert out.valid, [str(d) for d in out.errors]
    assert i == pv.index("END") - 1


# -- END ------------------------------------------------------------------------------------
def test_record_after_end(check, hvm) -> None:
    hvm.steps.append(Step("X86_TSC_INFO", {"mode": 0}))
    out = check(hvm)
    diag = out.error("32 bytes of unexpected data after the end of the stream")
    assert diag.offset == out.offsets[-1]


def test_garbage_after_end(check, pv, registry) -> None:
    out = check(pv)
    report = verify_bytes(registry, out.data + b"\0")
    errors = [d for d in report.diagnostics if d.is_error]
    assert len(errors) == 1 and errors[0].offset == len(out.data)
    assert "1 bytes of unexpected data" in errors[0].message


def test_missing_end(check, pv) -> None:
    pv.steps.pop()
    out = check(pv)
    diag = out.error("stream ended before END")
    assert diag.offset == len(out.data)
    assert f"last record {len(pv.steps) - 1}, X86_PV_VCPU_MSRS" in diag.message


def test_second_end_is_data_after_end(check, pv) -> None:
    pv.steps.append(Step("END"))
    out = check(pv)
    assert out.error("unexpected data after the end").offset == out.offsets[-1]


# -- guest types -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["X86_PV_INFO", "X86_PV_P2M_FRAMES", "X86_PV_VCPU_BASIC",
                                  "X86_PV_VCPU_EXTENDED", "X86_PV_VCPU_XSAVE",
                                  "X86_PV_VCPU_MSRS", "SHARED_INFO"])
def test_pv_records_in_an_hvm_stream(check, hvm, name) -> None:
    pv = pv_sample()
    i = hvm.index("END")
    hvm.steps.insert(i, pv.steps[pv.index(name)])
    out = check(hvm)
    out.at_step(out.error("in an x86 HVM stream: restore rejects it"), i, name)


@pytest.mark.parametrize("name", ["HVM_CONTEXT", "HVM_PARAMS"])
def test_hvm_records_in_a_pv_stream(check, pv, name) -> None:
    hvm = hvm_sample()
    i = pv.index("END")
    pv.steps.insert(i, hvm.steps[hvm.index(name)])
    out = check(pv)
    diag = out.error("in an x86 PV stream")
    out.at_step(diag, i, name)


def test_missing_hvm_context(check, hvm) -> None:
    del hvm.steps[hvm.index("HVM_CONTEXT")]
    out = check(hvm)
    out.error("no HVM_CONTEXT record")


def test_hvm_params_before_or_after_context(check, hvm) -> None:
    """The spec lists HVM_PARAMS first, Xen's saver writes HVM_CONTEXT first: both valid."""
    assert check(hvm).valid
    move(hvm, "HVM_PARAMS", "HVM_CONTEXT")
    out = check(hvm)
    assert out.valid and not out.report.diagnostics


# -- HVM_CONTEXT inner framing -----------------------------------------------------------------
def entry(typecode: int, instance: int, body: bytes) -> bytes:
    return struct.pack("<HHI", typecode, instance, len(body)) + body


HEADER = entry(1, 0, struct.pack("<IIQII", 0x54381286, 1, 0, 0x306A9, 2400000))
END = entry(0, 0, b"")
CPU0 = entry(2, 0, hvm_cpu_body("<", 0))
TSC_ADJUST = entry(19, 0, bytes(8))


def at_entry(out, diag, step: int, blob_offset: int) -> None:
    """*diag* is at the HVM_CONTEXT record of step *step*, at the entry starting at
    *blob_offset* of its blob (the record header is 8 bytes)."""
    assert (diag.record_index, diag.record_type) == (step, "HVM_CONTEXT"), str(diag)
    assert diag.offset == out.offsets[step] + 8 + blob_offset, str(diag)


@pytest.mark.parametrize(("blob", "text", "where"), [
    (CPU0 + END, "first entry is CPU, expected HEADER", 0),
    (HEADER + entry(2, 0, bytes(16))[:-8], "claims 16 bytes, only 8 left", 32),
    (HEADER + CPU0, "no END entry closes the HVM context", 32 + len(CPU0)),
    (HEADER + TSC_ADJUST + b"\0\0\0", "no END entry closes the HVM context", 48),
    (entry(1, 0, struct.pack("<IIQII", 0x12345678, 1, 0, 0, 0)) + END,
     "HEADER magic is not HVM_FILE_MAGIC 0x54381286: restore fails (\"bad magic number\") "
     "(found 0x12345678)", 0),
    (entry(1, 0, struct.pack("<IIQII", 0x54381286, 2, 0, 0, 0)) + END,
     "HEADER version is not HVM_FILE_VERSION 1", 0),
])
def test_hvm_context_framing(check, hvm, blob, text, where) -> None:
    i = hvm.index("HVM_CONTEXT")
    hvm.steps[i].fields["context"] = blob
    out = check(hvm)
    at_entry(out, out.error(text), i, where)


def test_hvm_context_entry_overrun_names_the_entry(check, hvm) -> None:
    i = hvm.index("HVM_CONTEXT")
    hvm.steps[i].fields["context"] = HEADER + struct.pack("<HHI", 5, 1, 100) + bytes(40)
    out = check(hvm)
    diag = out.error("claims")
    assert "entry 1 (LAPIC 1) at blob offset 0x20" in diag.message
    assert diag.field == "context"
    at_entry(out, diag, i, 0x20)


def test_hvm_context_bytes_after_end_warn(check, hvm) -> None:
    i = hvm.index("HVM_CONTEXT")
    hvm.steps[i].fields["context"] = HEADER + CPU0 + END + b"\0" * 8
    out = check(hvm)
    assert out.valid
    at_entry(out, out.warning("8 bytes after the HVM context's END"), i,
             len(HEADER + CPU0 + END))


def test_hvm_context_entries_are_listed(check, hvm) -> None:
    hvm.steps[hvm.index("HVM_CONTEXT")].fields["context"] = hvm_context_blob(3)
    out = check(hvm)
    assert out.valid
    i = hvm.index("HVM_CONTEXT")
    line = next(x for x in verbose_account(out.data) if f"record {i}  HVM_CONTEXT" in x)
    blob = len(hvm_context_blob(3))
    # HEADER, 3 x 9 per-vcpu entries, 11 per-domain entries, END
    assert line.endswith(f"HVM_CONTEXT ({blob} bytes): {blob} bytes, 40 entries")
