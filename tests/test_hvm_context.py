"""HVM_CONTEXT entries: what Xen's hvm_load and the per-entry load functions refuse is an
error at the entry's offset; what they accept (repeats, a vcpu without CPU state) warns.

Each broken variant edits one entry of the realistic sample context (one entry of every
type save.h declares) and checks the one error it causes: its message, field and offset.
"""

from __future__ import annotations

import struct

import pytest
from conftest import run_xenmig, verify_bytes

from xenmig_core.session import open_registry
from xenmig_libxc.samples import Step, assemble, hvm_context_blob, hvm_entry, hvm_sample

Entries = list[list]     # [typecode, instance, body]


def split(blob: bytes) -> Entries:
    out, pos = [], 0
    while pos < len(blob):
        typecode, instance, length = struct.unpack_from("<HHI", blob, pos)
        out.append([typecode, instance, blob[pos + 8:pos + 8 + length]])
        pos += 8 + length
    return out


def join(entries: Entries) -> bytes:
    return b"".join(hvm_entry("<", *e) for e in entries)


def find(entries: Entries, typecode: int, instance: int = 0) -> int:
    return next(i for i, e in enumerate(entries) if e[:2] == [typecode, instance])


def blob_offset(entries: Entries, index: int) -> int:
    return sum(8 + len(e[2]) for e in entries[:index])


@pytest.fixture
def entries() -> Entries:
    return split(hvm_context_blob(2))


@pytest.fixture
def run(check, hvm):
    """run(entries) -> (outcome, absolute offset of the HVM_CONTEXT body)."""
    def _run(entries: Entries):
        i = hvm.index("HVM_CONTEXT")
        hvm.steps[i] = Step("HVM_CONTEXT", {"context": join(entries)})
        out = check(hvm)
        return out, out.offsets[i] + 8
    return _run


def test_the_sample_context_is_valid_without_a_warning(run, entries) -> None:
    out, _ = run(entries)
    assert out.valid and not out.report.diagnostics, [str(d) for d in out.report.diagnostics]


def _body(entries: Entries, typecode: int, instance: int = 0) -> bytearray:
    return bytearray(entries[find(entries, typecode, instance)][2])


def _set_body(entries: Entries, typecode: int, body: bytes, instance: int = 0) -> int:
    k = find(entries, typecode, instance)
    entries[k][2] = bytes(body)
    return k


def _edit_pit_length(e):
    return _set_body(e, 10, _body(e, 10)[:48])


def _edit_lapic_too_long(e):
    return _set_body(e, 5, _body(e, 5) + bytes(8))


def _edit_cpu_instance(e):
    k = find(e, 2, 1)
    e[k][1] = 200                       # (vcpu 1's other entries then warn: no CPU entry)
    return k


def _edit_pic_instance(e):
    k = find(e, 3, 1)
    e[k][1] = 2
    return k


def _edit_unknown_typecode(e):
    e.insert(len(e) - 1, [21, 0, bytes(8)])
    return len(e) - 2


def _edit_cpu_pad0(e):
    body = _body(e, 2)
    body[1028:1032] = b"\1\0\0\0"
    return _set_body(e, 2, body)


def _edit_pci_link_pad(e):
    body = _body(e, 9)
    body[7] = 1
    return _set_body(e, 9, body)


def _edit_msr_count(e):
    body = _body(e, 20)
    body[0:4] = struct.pack("<I", 2)
    return _set_body(e, 20, body)


def _edit_pit_gate(e):
    body = _body(e, 10)
    body[15] = 0                        # channel 0's gate
    return _set_body(e, 10, body)


def _edit_cpu_cr0(e):
    body = _body(e, 2)
    body[656:664] = struct.pack("<Q", 0x80000000)     # PG without PE (and ET clear)
    return _set_body(e, 2, body)


def _edit_pic_elcr(e):
    body = _body(e, 3)
    body[6] = 0x01                      # master: IRQ 0 cannot be level-triggered
    return _set_body(e, 3, body)


def _edit_header_length(e):
    e[0][2] = e[0][2][:16]
    return 0


@pytest.mark.parametrize(("edit", "text", "field"), [
    (_edit_pit_length, "(PIT 0) at blob offset {off:#x}: length 48, expected 56: restore fails",
     "length"),
    (_edit_lapic_too_long, "(LAPIC 0) at blob offset {off:#x}: length 40, at most 32", "length"),
    (_edit_header_length, "(HEADER 0) at blob offset 0x0: length 16, expected 24", "length"),
    (_edit_cpu_instance, "(CPU 200) at blob offset {off:#x}: vcpu id at or above HVM_MAX_VCPUS",
     "instance"),
    (_edit_pic_instance, "(PIC 2) at blob offset {off:#x}: PIC instance must be 0", "mode"),
    (_edit_unknown_typecode, "(typecode 21 0) at blob offset {off:#x}: unknown entry typecode 21:"
     " Xen's hvm_load refuses it", "typecode"),
    (_edit_cpu_pad0, "CPU pad0 is not zero: restore fails (found 1)", "pad0"),
    (_edit_pci_link_pad, "PCI_LINK pad0 is not zero", "pad0"),
    (_edit_msr_count, "(CPU_MSR 0) at blob offset {off:#x}: does not fit hvm_cpu_msr", "length"),
    (_edit_pit_gate, "PIT channel 0 or 1 with its gate clear", "channel0.gate"),
    (_edit_cpu_cr0, "bad CR0", "cr0"),
    (_edit_pic_elcr, "(PIC 0) at blob offset {off:#x}: PIC ELCR sets bits", "elcr"),
])
def test_broken_entries_are_one_error_at_the_entry(run, entries, edit, text, field) -> None:
    k = edit(entries)
    out, body = run(entries)
    off = blob_offset(entries, k)
    diag = out.error(text.format(off=off))
    assert diag.record_type == "HVM_CONTEXT"
    assert diag.offset == body + off
    assert diag.field == f"context.entry[{k}].{field}"


def test_two_cpu_entries_for_a_vcpu_warn(run, entries) -> None:
    """hvm_load has no rule against it: it loads both, the second wins. Worth a warning,
    not an error (restore accepts the stream)."""
    k = find(entries, 2, 1)
    entries.insert(k + 1, list(entries[k]))
    out, body = run(entries)
    assert out.valid
    diag = out.warning("a second CPU entry for instance 1")
    assert diag.offset == body + blob_offset(entries, k + 1)


def test_a_vcpu_without_cpu_state_warns(run, entries) -> None:
    del entries[find(entries, 2, 1)]
    out, _ = run(entries)
    assert out.valid
    out.warning("(LAPIC 1) at blob offset")
    assert "vcpu 1 has no CPU entry: restore leaves that vcpu down" in \
        out.warning("vcpu 1 has no CPU entry").message


def test_a_big_endian_stream_carries_big_endian_entries(check, hvm) -> None:
    i = hvm.index("HVM_CONTEXT")
    hvm.steps[i] = Step("HVM_CONTEXT", {"context": lambda order: hvm_context_blob(2, order)})
    out = check(hvm, byte_order="big")
    assert out.valid
    assert not [d for d in out.report.diagnostics if d.record_type == "HVM_CONTEXT"]


def test_known_typecodes_come_from_the_spec_at_run_time(entries) -> None:
    """The plugin has no list of typecodes: a value and a layout added to the spec (what an
    ``extends:`` file adding to enum hvm_save_type and types hvm_<name> does) make an entry
    of a new type known and decoded; without them it is the unknown-typecode error."""
    from xenmig_core.spec.model import EnumEntry

    registry = open_registry(autoload=False)
    spec = registry.specs["libxc"]
    entries.insert(len(entries) - 1, [21, 0, struct.pack("<Q", 0x1234)])
    sample = hvm_sample()
    sample.steps[sample.index("HVM_CONTEXT")] = Step("HVM_CONTEXT", {"context": join(entries)})
    data = assemble(spec, sample)
    assert not verify_bytes(registry, data).valid
    names = spec.enums["hvm_save_type"].entries
    try:
        names[21] = EnumEntry(21, "NEW_THING", "NEW_THING")
        spec.types["hvm_new_thing"] = spec.types["hvm_tsc_adjust"]      # one u64
        report = verify_bytes(registry, data)
        assert report.valid and not report.diagnostics, [str(d) for d in report.diagnostics]
    finally:
        del names[21]
        del spec.types["hvm_new_thing"]


def test_verify_cli_one_line_and_exit_1(tmp_path, entries) -> None:
    _edit_unknown_typecode(entries)
    registry = open_registry(autoload=False)
    sample = hvm_sample()
    sample.steps[sample.index("HVM_CONTEXT")] = Step("HVM_CONTEXT", {"context": join(entries)})
    path = tmp_path / "bad.libxc"
    path.write_bytes(assemble(registry.specs["libxc"], sample))
    done = run_xenmig("verify", str(path))
    assert done.returncode == 1
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "unknown entry typecode 21" in lines[0], lines
    assert lines[0].startswith("xenmig: invalid: record ") and "@0x" in lines[0]


def test_a_huge_context_is_checked_in_detail_only_up_to_a_bound(run, entries) -> None:
    """Framing and typecodes are checked to the end; field checks stop after MAX_CHECKED
    entries (a 128-vcpu guest has about 1200), with a warning that says so."""
    from xenmig_libxc.hvm_context import MAX_CHECKED

    extra = MAX_CHECKED + 5 - len(entries)
    tail = [[19, 0, struct.pack("<Q", 0x8000000000000000)] for _ in range(extra)]
    tail[-1] = [21, 0, b""]                                       # unknown, past the bound
    entries[-1:-1] = tail
    out, _ = run(entries)
    diag = out.error("unknown entry typecode 21")
    assert diag.field == f"context.entry[{len(entries) - 2}].typecode"
    assert any("were checked for their framing and typecode only" in w.message
               for w in out.warnings)
