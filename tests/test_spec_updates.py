"""Spec-driven updates: each recipe of docs/spec-updates.md, loaded from the doc, on a stream
that needs it; the same stream without the file behaves as before; the file works the same
through ``--spec``, ``$XENMIG_SPEC_PATH`` and a plugin; conflicting or bad extensions are
refused with file, line and key; ``specs show`` says where each part came from."""

from __future__ import annotations

import json
import re
import struct
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, verbose_account, verify_bytes
from dumping import dump_text

import xenmig_core
from xenmig_core.errors import SpecError
from xenmig_core.plugins import hookimpl
from xenmig_core.registry import Registry
from xenmig_core.session import open_registry
from xenmig_core.source import ByteSource
from xenmig_libxc.samples import (
    Sample,
    Step,
    assemble,
    hvm_context_blob,
    hvm_sample,
    pv_sample,
    vcpu,
)

DOC = ROOT / "docs" / "spec-updates.md"
_RECIPE = re.compile(r"```yaml\n(# recipe: ([a-z0-9-]+)\n.*?)```", re.S)
RECIPES: dict[str, str] = {m[2]: m[1] for m in _RECIPE.finditer(DOC.read_text())}


@pytest.fixture(scope="module")
def base() -> Registry:
    return open_registry(autoload=False)


class SpecPlugin:
    """A third-party plugin, registered in-process, that ships one spec file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.__name__ = f"xenmig_test_specs_{path.stem}"

    @hookimpl
    def xenmig_spec_files(self) -> list[Path]:
        return [self.path]


def recipe_file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(RECIPES[name])
    return path


def spec_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def with_spec(path: Path, via: str, monkeypatch: pytest.MonkeyPatch) -> Registry:
    """A registry with *path* given through --spec's path, the environment or a plugin."""
    if via == "spec":
        return open_registry([path], autoload=False)
    if via == "env":
        monkeypatch.setenv("XENMIG_SPEC_PATH", str(path.parent))
        try:
            return open_registry(autoload=False)
        finally:
            monkeypatch.delenv("XENMIG_SPEC_PATH")
    return open_registry(plugins=[SpecPlugin(path)], autoload=False)


def errors(registry: Registry, data: bytes) -> list[str]:
    return [d.message for d in verify_bytes(registry, data).diagnostics if d.is_error]


def warnings(registry: Registry, data: bytes) -> list[str]:
    return [d.message for d in verify_bytes(registry, data).diagnostics if not d.is_error]


def dumped(registry: Registry, data: bytes, name: str) -> dict[str, Any]:
    """The json dump item of the first record called *name*."""
    with ByteSource.from_bytes(data) as source:
        text, _result = dump_text(registry, source, "json")
    return next(i for i in json.loads(text)["items"] if i.get("type") == name)


def build(registry: Registry, sample: Sample) -> bytes:
    return assemble(registry.specs["libxc"], sample)


# -- the doc ---------------------------------------------------------------------------------
def test_every_recipe_is_a_complete_spec_that_loads(base: Registry, tmp_path: Path) -> None:
    assert set(RECIPES) >= {"new-hvm-param", "new-domain-type", "new-hvm-entry",
                            "hvm-entry-variant", "longer-record", "longer-vcpu-context",
                            "relax-check", "relax-field-check", "drop-rule"}
    for name in RECIPES:
        registry = open_registry([recipe_file(tmp_path, name)], autoload=False)
        assert str(tmp_path / f"{name}.yaml") in registry.specs["libxc"].paths


# -- enums -----------------------------------------------------------------------------------
def params_stream(registry: Registry) -> bytes:
    sample = hvm_sample()
    sample.steps[sample.index("HVM_PARAMS")] = Step("HVM_PARAMS", {"count": 2, "params": [
        {"index": 1, "value": 0xFEFFF}, {"index": 45, "value": 1}]})
    return build(registry, sample)


@pytest.mark.parametrize("via", ["spec", "env", "plugin"])
def test_new_hvm_param_is_named(base, tmp_path, monkeypatch, via) -> None:
    data = params_stream(base)
    before = [line for line in verbose_account(data, base) if "HVM_PARAMS" in line]
    assert "unknown(0x2d)=0x1" in before[0]
    registry = with_spec(recipe_file(tmp_path, "new-hvm-param"), via, monkeypatch)
    after = [line for line in verbose_account(data, registry) if "HVM_PARAMS" in line]
    assert "STORE_PFN=0xfefff, NEW_PARAM=0x1" in after[0]
    params = dumped(registry, data, "HVM_PARAMS")["fields"]["params"]
    assert params[1] == {"index": "NEW_PARAM", "value": 1}
    assert dumped(base, data, "HVM_PARAMS")["fields"]["params"][1]["index"] == 45
    entry = registry.specs["libxc"].enums["hvm_param"].entries[45]
    assert (entry.name, entry.label) == ("NEW_PARAM", "new parameter")


@pytest.mark.parametrize("via", ["spec", "env", "plugin"])
def test_new_domain_type_makes_the_stream_valid(base, tmp_path, monkeypatch, via) -> None:
    sample = pv_sample()
    sample.domain_header["type"] = 8
    data = build(base, sample)
    assert errors(base, data) == ["unknown domain type (found 8)"]
    registry = with_spec(recipe_file(tmp_path, "new-domain-type"), via, monkeypatch)
    assert errors(registry, data) == []
    assert "domain type 8 (x86 next): only Xen 5 restores it" in warnings(registry, data)
    assert errors(registry, build(base, pv_sample())) == []   # known types stay known


def test_enum_values_said_again_identically_are_fine(tmp_path) -> None:
    path = spec_file(tmp_path, "again.yaml", """\
        xenmig_spec: 1
        extends: libxc
        enums:
          hvm_param:
            1: STORE_PFN
            46: OTHER_PARAM
        """)
    spec = open_registry([path], autoload=False).specs["libxc"]
    assert spec.enums["hvm_param"].name_of(46) == "OTHER_PARAM"
    assert spec.provenance["enum:hvm_param:46"].path == str(path)
    assert spec.provenance["enum:hvm_param:1"].path.endswith("libxc.yaml")


# -- HVM save entries ------------------------------------------------------------------------
def with_entry(typecode: int, body: bytes, registry: Registry) -> bytes:
    """An HVM stream whose HVM context has one more entry before END."""
    blob = hvm_context_blob(1)
    extra = struct.pack("<HHI", typecode, 0, len(body)) + body
    sample = hvm_sample(vcpus=1)
    sample.steps[sample.index("HVM_CONTEXT")] = Step("HVM_CONTEXT",
                                                     {"context": blob[:-8] + extra + blob[-8:]})
    return build(registry, sample)


def entry_view(registry: Registry, data: bytes, index: int) -> dict[str, Any]:
    return dumped(registry, data, "HVM_CONTEXT")["view"]["entries"][index]


@pytest.mark.parametrize("via", ["spec", "env", "plugin"])
def test_new_hvm_entry_is_decoded_field_by_field(base, tmp_path, monkeypatch, via) -> None:
    data = with_entry(30, struct.pack("<QII", 0x8001, 7, 0), base)
    raw = entry_view(base, data, -2)   # the entry before END
    assert raw["type"] == "unknown(0x1e)" and raw["length"] == 16 and "fields" not in raw
    assert not xenmig_core.verify(data, registry=base).valid   # hvm_load: unknown typecode
    registry = with_spec(recipe_file(tmp_path, "new-hvm-entry"), via, monkeypatch)
    assert xenmig_core.verify(data, registry=registry).valid
    entry = entry_view(registry, data, -2)
    assert entry["type"] == "NEW_ENTRY"
    assert entry["layout"] == "hvm_new_entry"
    assert entry["fields"] == {"flags": 0x8001, "counter": 7, "pad": 0}


def test_hvm_entry_variant_decodes_a_longer_entry(base, tmp_path) -> None:
    lapic = struct.pack("<QIIQIIQ", 0xFEE00900, 0, 0, 0, 0, 0, 0xABCD)
    data = with_entry(5, lapic, base)
    assert "fields" not in entry_view(base, data, -2)   # the entry before END
    registry = open_registry([recipe_file(tmp_path, "hvm-entry-variant")], autoload=False)
    entry = entry_view(registry, data, -2)
    assert entry["layout"] == "hvm_lapic__next"
    assert entry["fields"]["new_state"] == 0xABCD
    entries = dumped(registry, data, "HVM_CONTEXT")["view"]["entries"]
    first_lapic = next(e for e in entries if e["type"] == "LAPIC")
    assert first_lapic["layout"] == "hvm_lapic"   # today's size: as before


# -- record types ----------------------------------------------------------------------------
def pv_info_stream(registry: Registry, xen_major: int, features: int | None) -> bytes:
    sample = pv_sample()
    sample.domain_header["xen_major"] = xen_major
    body = struct.pack("<BBHI", 8, 4, 0, 0)
    if features is not None:
        body += struct.pack("<II", features, 0)
    sample.steps[sample.index("X86_PV_INFO")] = Step("X86_PV_INFO", overrides={"body": body})
    return build(registry, sample)


@pytest.mark.parametrize("via", ["spec", "env", "plugin"])
def test_longer_record_by_version(base, tmp_path, monkeypatch, via) -> None:
    new = pv_info_stream(base, 5, 0x3)
    assert errors(base, new) == ["body length 16, expected 8"]
    registry = with_spec(recipe_file(tmp_path, "longer-record"), via, monkeypatch)
    assert errors(registry, new) == []
    fields = dumped(registry, new, "X86_PV_INFO")["fields"]
    assert fields == {"guest_width": 8, "pt_levels": 4, "reserved1": 0, "reserved2": 0,
                      "features": 3, "reserved3": 0}
    assert any("64-bit guest, 4 levels of page tables, features 0x3" in line
               for line in verbose_account(new, registry))
    # an older Xen writes 8 bytes: still valid, and summarised without the new field
    old = pv_info_stream(base, 4, None)
    assert errors(registry, old) == errors(base, old) == []
    assert dumped(registry, old, "X86_PV_INFO")["fields"]["pt_levels"] == 4
    # the new length in a stream from an older Xen is refused, by the replaced rule
    report = verify_bytes(registry, pv_info_stream(base, 4, 0x3))
    assert [(d.message, d.field) for d in report.diagnostics if d.is_error] == [
        ("body length 16, expected 8", "length")]


def test_appended_field_checks_apply(base, tmp_path) -> None:
    registry = open_registry([recipe_file(tmp_path, "longer-record")], autoload=False)
    sample = pv_sample()
    sample.domain_header["xen_major"] = 5
    body = struct.pack("<BBHIII", 8, 4, 0, 0, 1, 0x55)
    sample.steps[0] = Step("X86_PV_INFO", overrides={"body": body})
    report = verify_bytes(registry, build(base, sample))
    assert [(d.field, d.message) for d in report.diagnostics if d.is_error] == [
        ("reserved3", "reserved field is not zero: 0x55")]
    # a body ending inside an appended field is a short read (once the length rule allows it)
    loose = spec_file(tmp_path, "loose.yaml", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - name: X86_PV_INFO
              append: [{id: features, type: u32}, {id: reserved3, type: u32}]
              length: [{replace: X86_PV_INFO.length.1, min: 8}]
        """)
    registry = open_registry([loose], autoload=False)
    sample.steps[0] = Step("X86_PV_INFO", overrides={"body": body[:14]})
    report = verify_bytes(registry, build(base, sample))
    assert [(d.field, d.message) for d in report.diagnostics if d.is_error] == [
        ("reserved3", "body too short: 4 more bytes needed, record 0 body has only 2 left")]
    sample.steps[0] = Step("X86_PV_INFO", overrides={"body": body[:12]})   # features only
    assert dumped(registry, build(base, sample), "X86_PV_INFO")["fields"]["features"] == 1


def test_longer_vcpu_context(base, tmp_path) -> None:
    sample = pv_sample(vcpus=1)
    sample.steps[sample.index("X86_PV_VCPU_EXTENDED")] = vcpu("X86_PV_VCPU_EXTENDED", 0, 200)
    data = build(base, sample)
    assert errors(base, data) == ["body length 208, expected at most 136"]
    registry = open_registry([recipe_file(tmp_path, "longer-vcpu-context")], autoload=False)
    assert errors(registry, data) == []


def test_relaxed_check(base, tmp_path) -> None:
    sample = pv_sample()
    words = [(0xF << 60) | pfn for pfn in range(2000)]     # XTAB pages: no data
    sample.steps.insert(sample.index("END"), Step("PAGE_DATA", {"count": 2000, "pfn": words}))
    data = build(base, sample)
    assert any("2000 pfns in one record" in w for w in warnings(base, data))
    registry = open_registry([recipe_file(tmp_path, "relax-check")], autoload=False)
    assert not any("pfns in one record" in w for w in warnings(registry, data))
    assert errors(registry, data) == errors(base, data)
    sample.steps[-2] = Step("PAGE_DATA", {"count": 5000, "pfn": [0xF << 60] * 5000})
    assert any("5000 pfns in one record; Xen's saver sends at most 4096" in w
               for w in warnings(registry, build(base, sample)))


def test_relaxed_field_check(base, tmp_path) -> None:
    sample = pv_sample()
    sample.steps[0] = Step("X86_PV_INFO", {"guest_width": 8, "pt_levels": 5})
    data = build(base, sample)
    report = verify_bytes(base, data)
    assert [d.field for d in report.diagnostics if d.is_error] == ["pt_levels", "pt_levels"]
    path = recipe_file(tmp_path, "relax-field-check")
    registry = open_registry([path], autoload=False)
    assert errors(registry, data) == []
    sample.steps[0] = Step("X86_PV_INFO", {"guest_width": 8, "pt_levels": 6})
    assert errors(registry, build(base, sample)) == [
        "expected one of 3, 4, 5, found 6",
        "guest width 8 with 6 page-table levels: only 32-bit with 3 or 64-bit with 4 or 5 exist"]
    sample.steps[0] = Step("X86_PV_INFO", {"guest_width": 8, "pt_levels": 4,
                                           "reserved2": 1})
    assert errors(registry, build(base, sample)) == ["reserved field is not zero: 0x1"]
    rtype = registry.specs["libxc"].record_by_name("X86_PV_INFO")
    assert registry.specs["libxc"].provenance["valid:X86_PV_INFO.pt_levels"].line == 8
    assert base.specs["libxc"].record_by_name("X86_PV_INFO").layout is not rtype.layout


def test_dropped_rule(base, tmp_path) -> None:
    sample = pv_sample()
    policy = sample.steps.pop(sample.index("X86_MSR_POLICY"))
    sample.steps.insert(sample.index("STATIC_DATA_END") + 1, policy)
    data = build(base, sample)
    assert errors(base, data) == [
        "X86_MSR_POLICY after STATIC_DATA_END: restore never applies it"]
    registry = open_registry([recipe_file(tmp_path, "drop-rule")], autoload=False)
    assert errors(registry, data) == []
    assert registry.specs["libxc"].record_by_name("X86_MSR_POLICY").rules == []


def test_top_level_disable_and_end_check_replacement(base, tmp_path) -> None:
    sample = hvm_sample()
    sample.steps.pop(sample.index("HVM_CONTEXT"))
    data = build(base, sample)
    assert errors(base, data) == [
        "no HVM_CONTEXT record: restore cannot set the guest's CPU and device state"]
    off = spec_file(tmp_path, "off.yaml", """\
        xenmig_spec: 1
        extends: libxc
        disable: [end.check.3, image_header.check.1]
        """)
    assert errors(open_registry([off], autoload=False), data) == []
    softer = spec_file(tmp_path, "softer.yaml", """\
        xenmig_spec: 1
        extends: libxc
        end_checks:
          - replace: end.check.3
            expr: "domain_type != 2 or hvm_context_seen"
            severity: warning
            message: "no HVM_CONTEXT record"
        """)
    registry = open_registry([softer], autoload=False)
    assert errors(registry, data) == [] and "no HVM_CONTEXT record" in warnings(registry, data)


def test_the_same_added_rule_in_two_files_is_added_once(tmp_path) -> None:
    text = """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - name: X86_TSC_INFO
              checks: [{expr: "khz > 0", severity: warning, message: "no TSC frequency"}]
        end_checks:
          - {expr: "checkpoints < 100", severity: warning, message: "many checkpoints"}
        """
    paths = [spec_file(tmp_path, name, text) for name in ("a.yaml", "b.yaml")]
    spec = open_registry(paths, autoload=False).specs["libxc"]
    assert [c.id for c in spec.record_by_name("X86_TSC_INFO").checks] == ["X86_TSC_INFO.check.1"]
    assert [c.id for c in spec.end_checks][-1] == "end.check.4" and len(spec.end_checks) == 4
    assert spec.provenance["rule:end.check.4"].path == str(paths[0])


def test_added_rules_get_the_next_ids(tmp_path) -> None:
    path = spec_file(tmp_path, "more.yaml", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x02
              checks:
                - {expr: "guest_width == 8", severity: warning, message: "32-bit guest"}
                - {id: pv-info-levels, expr: "pt_levels == 4", severity: warning,
                   message: "3 levels"}
        """)
    rtype = open_registry([path], autoload=False).specs["libxc"].record_by_name("X86_PV_INFO")
    assert [c.id for c in rtype.checks] == ["X86_PV_INFO.check.1", "X86_PV_INFO.check.2",
                                            "X86_PV_INFO.check.3", "pv-info-levels"]


def test_without_extensions_nothing_changed(base) -> None:
    spec = base.specs["libxc"]
    assert not any(r.disabled for r in spec.records.values())
    assert all(not hasattr(r.layout, "appended") for r in spec.records.values())
    assert 45 not in spec.enums["hvm_param"].entries
    assert verify_bytes(base, build(base, pv_sample())).valid
    assert verify_bytes(base, build(base, hvm_sample())).valid


def test_a_variant_and_its_base_change_apart(tmp_path) -> None:
    """libxl's extensions reach its variant colo-back-channel (a copy of libxl as extended);
    an extension of the variant leaves libxl alone."""
    of_base = spec_file(tmp_path, "libxl-more.yaml", """\
        xenmig_spec: 1
        extends: libxl
        enums:
          emulator: {3: {name: qemu-next, label: qemu next}}
        records:
          types:
            - name: CHECKPOINT_END
              checks: [{expr: "True", message: never}]
        """)
    of_variant = spec_file(tmp_path, "colo-less.yaml", """\
        xenmig_spec: 1
        extends: colo-back-channel
        enums:
          emulator: {4: {name: qemu-colo, label: qemu colo}}
        disable: [CHECKPOINT_END.check.3]
        """)
    specs = open_registry([of_base, of_variant], autoload=False).specs
    libxl, colo = specs["libxl"], specs["colo-back-channel"]
    assert [c.id for c in libxl.record_by_name("CHECKPOINT_END").checks] == [
        "CHECKPOINT_END.check.1", "CHECKPOINT_END.check.2", "CHECKPOINT_END.check.3"]
    assert [c.id for c in colo.record_by_name("CHECKPOINT_END").checks] == [
        "CHECKPOINT_END.check.1", "CHECKPOINT_END.check.2"]
    assert colo.enums["emulator"].name_of(3) == "qemu-next"
    assert colo.enums["emulator"].name_of(4) == "qemu-colo"
    assert 4 not in libxl.enums["emulator"].entries


# -- precedence and conflicts ----------------------------------------------------------------
def test_the_same_file_twice_counts_once(tmp_path, monkeypatch) -> None:
    path = recipe_file(tmp_path, "longer-record")
    monkeypatch.setenv("XENMIG_SPEC_PATH", str(path))
    registry = open_registry([path], plugins=[SpecPlugin(path)], autoload=False)
    assert registry.specs["libxc"].paths.count(str(path)) == 1
    note = spec_file(tmp_path, "note.yaml", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - {id: 0x4242, name: MY_NOTE, body: [{id: text, type: bytes, size: rest}]}
        """)
    monkeypatch.chdir(tmp_path)
    other = Path("sub") / ".." / "note.yaml"
    (tmp_path / "sub").mkdir()
    assert open_registry([note, other], autoload=False).specs["libxc"].record_by_name("MY_NOTE")


def test_identical_changes_from_two_files_are_made_once(base, tmp_path) -> None:
    first = recipe_file(tmp_path, "longer-record")
    second = tmp_path / "copy.yaml"
    second.write_text(first.read_text())
    registry = open_registry([first, second], autoload=False)
    assert errors(registry, pv_info_stream(base, 5, 1)) == []
    spec = registry.specs["libxc"]
    assert spec.provenance["rule:X86_PV_INFO.length.1"].path == str(first)


CONFLICTS = [
    ("enum value", """\
        enums:
          hvm_param:
            45: OTHER_PARAM
        """, "45", "enum hvm_param value 45 (0x2d) is already 'NEW_PARAM'", "new-hvm-param"),
    ("replaced length rule", """\
        records:
          types:
            - name: X86_PV_INFO
              length:
                - {replace: X86_PV_INFO.length.1, one_of: [8, 24]}
        """, "replace", "both change rule X86_PV_INFO.length.1 of libxc, differently",
     "longer-record"),
    ("appended fields", """\
        records:
          types:
            - name: X86_PV_INFO
              append:
                - {id: caps, type: u64}
        """, "append", "both change the fields appended to X86_PV_INFO of libxc",
     "longer-record"),
    ("disable what another replaced", """\
        records:
          types:
            - name: X86_PV_INFO
              disable: [X86_PV_INFO.length.1]
        """, "disable", "both change rule X86_PV_INFO.length.1", "longer-record"),
    ("field valid", """\
        records:
          types:
            - name: X86_PV_INFO
              valid: {pt_levels: {any_of: [3, 4]}}
        """, "pt_levels", "both change the valid checks of X86_PV_INFO.pt_levels of libxc",
     "relax-field-check"),
    ("state", """\
        state:
          checkpoints: 1
        """, "checkpoints", "both change the initial value of state 'checkpoints' of libxc",
     "state"),
    ("type", """\
        types:
          hvm_new_entry:
            - {id: flags, type: u64}
        """, "hvm_new_entry", "both change type 'hvm_new_entry' of libxc", "new-hvm-entry"),
]


@pytest.mark.parametrize(("text", "key", "message", "recipe"),
                         [c[1:] for c in CONFLICTS], ids=[c[0] for c in CONFLICTS])
def test_conflicting_extensions_name_both_files(tmp_path, text, key, message, recipe) -> None:
    first = recipe_file(tmp_path, recipe) if recipe in RECIPES else spec_file(
        tmp_path, "first.yaml", "xenmig_spec: 1\nextends: libxc\nstate: {checkpoints: 2}\n")
    second = spec_file(tmp_path, "other.yaml", "xenmig_spec: 1\nextends: libxc\n"
                       + textwrap.dedent(text))
    with pytest.raises(SpecError) as info:
        open_registry([first, second], autoload=False)
    err = info.value
    assert (err.path, err.key) == (str(second), key), str(err)
    assert err.line is not None and message in str(err), str(err)
    assert f"{first}:" in str(err), str(err)


def test_conflict_through_env_and_spec_names_both(tmp_path, monkeypatch, cli) -> None:
    first = recipe_file(tmp_path, "new-hvm-param")
    second = spec_file(tmp_path, "other.yaml", """\
        xenmig_spec: 1
        extends: libxc
        enums:
          hvm_param: {45: OTHER_PARAM}
        """)
    monkeypatch.setenv("XENMIG_SPEC_PATH", str(first))
    result = cli("specs", "list", "--spec", str(second))
    assert result.exit_code == 2
    assert f"{second}:4: 45: enum hvm_param value 45" in result.stderr
    assert f"({first}:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- bad extension files ---------------------------------------------------------------------
BAD = [
    ("clashing enum value", """\
        enums:
          hvm_param:
            40: NOT_HV_RSRV_SIZE
        """, 5, "40", "already 'HV_RSRV_SIZE'"),
    ("enum name taken", """\
        enums:
          hvm_param:
            47: STORE_PFN
        """, 5, "47", "already names value 1 'STORE_PFN'"),
    ("enum kind", """\
        enums:
          page_type:
            kind: flags
            0x10: other
        """, 5, "kind", "of kind 'enum'"),
    ("unknown rule id to replace", """\
        records:
          types:
            - name: X86_PV_INFO
              length:
                - {replace: X86_PV_INFO.length.9, exact: 16}
        """, 7, "replace", "rule id 'X86_PV_INFO.length.9' does not exist"),
    ("replace a rule of another kind", """\
        records:
          types:
            - name: X86_PV_INFO
              checks:
                - {replace: X86_PV_INFO.rule.1, expr: "True", message: x}
        """, 7, "replace", "is not a check of X86_PV_INFO"),
    ("unknown rule id to disable", """\
        records:
          types:
            - name: X86_PV_INFO
              disable: [X86_PV_INFO.rule.7]
        """, 6, "disable", "rule id 'X86_PV_INFO.rule.7' does not exist"),
    ("unknown id in top-level disable", """\
        disable: [end.check.9]
        """, 3, "disable", "rule id 'end.check.9' does not exist in libxc"),
    ("append after a rest-sized field", """\
        records:
          types:
            - name: X86_PV_VCPU_BASIC
              append:
                - {id: extra, type: u32}
        """, 6, "append", "ends with 'context', which takes the rest of the body"),
    ("append after a rest array", """\
        records:
          types:
            - name: X86_CPUID_POLICY
              append:
                - {id: extra, type: u32}
        """, 6, "append", "ends with 'leaves'"),
    ("append a field it has", """\
        records:
          types:
            - name: X86_PV_INFO
              append:
                - {id: pt_levels, type: u32}
        """, 7, "id", "already has a field 'pt_levels'"),
    ("change the body", """\
        records:
          types:
            - name: X86_PV_INFO
              body:
                - {id: x, type: u64}
        """, 6, "body", "'body' of X86_PV_INFO"),
    ("id and name disagree", """\
        records:
          types:
            - {id: 0x02, name: X86_TSC_INFO, checks: []}
        """, 5, "id", "is already X86_PV_INFO"),
    ("name with another id", """\
        records:
          types:
            - {id: 0x77, name: X86_PV_INFO, checks: []}
        """, 5, "id", "X86_PV_INFO is record id 0x2, not 119"),
    ("redefine a type", """\
        types:
          hvm_lapic:
            - {id: x, type: u64}
        """, 4, "hvm_lapic", "name it hvm_lapic__<tag>"),
    ("rule id used twice", """\
        records:
          types:
            - name: X86_PV_INFO
              rules:
                - {id: X86_PV_INFO.rule.1, at_most: 2}
        """, 7, "id", "already exists"),
    ("replacement with an id", """\
        records:
          types:
            - name: X86_PV_INFO
              length:
                - {replace: X86_PV_INFO.length.1, id: mine, exact: 16}
        """, 7, "id", "keeps the id"),
    ("valid of an unknown field", """\
        records:
          types:
            - name: X86_PV_INFO
              valid:
                levels: {any_of: [5]}
        """, 7, "levels", "X86_PV_INFO has no field 'levels'"),
    ("bad valid key", """\
        records:
          types:
            - name: X86_PV_INFO
              valid:
                pt_levels: {one_of: [5]}
        """, 7, "one_of", "unknown key in valid"),
    ("disable in a defining spec", None, 3, "disable", "only an 'extends' spec"),
]


@pytest.mark.parametrize(("text", "line", "key", "message"), [c[1:] for c in BAD],
                         ids=[c[0] for c in BAD])
def test_bad_extension_names_file_line_and_key(tmp_path, text, line, key, message) -> None:
    if text is None:
        body = "xenmig_spec: 1\nformat: mine\ndisable: [x]\n"
    else:
        body = "xenmig_spec: 1\nextends: libxc\n" + textwrap.dedent(text)
    path = spec_file(tmp_path, "bad.yaml", body)
    with pytest.raises(SpecError) as info:
        open_registry([path], autoload=False)
    err = info.value
    assert (err.path, err.line, err.key) == (str(path), line, key), str(err)
    assert message in str(err), str(err)


# -- specs show --------------------------------------------------------------------------------
def test_specs_show_tells_where_each_part_came_from(tmp_path, cli) -> None:
    path = recipe_file(tmp_path, "longer-record")
    drop = recipe_file(tmp_path, "drop-rule")
    result = cli("specs", "show", "libxc", "X86_PV_INFO", "--spec", str(path))
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("libxc record X86_PV_INFO (0x00000002): x86 PV info  [")
    features = next(line for line in lines if line.strip().startswith("features:"))
    assert f"[{path}:8]" in features and "appended" in features
    assert any(line.strip().startswith("pt_levels:") and "libxc.yaml:" in line
               for line in lines)
    length = next(line for line in lines if "X86_PV_INFO.length.1" in line)
    assert "exact: 16 if xen_major >= 5 else 8" in length
    assert f"[{path}:11, replaces " in length and "libxc.yaml:" in length
    assert any("X86_PV_INFO.rule.1  severity: error, at_most: 1" in line for line in lines)
    result = cli("specs", "show", "libxc", "0x12", "--json", "--spec", str(drop))
    desc = json.loads(result.stdout)
    assert desc["name"] == "X86_MSR_POLICY" and desc["rules"] == []
    assert desc["disabled"][0]["id"] == "X86_MSR_POLICY.rule.1"
    assert desc["disabled"][0]["by"] == f"{drop}:7"


def test_specs_show_format_lists_added_enum_values(tmp_path, cli) -> None:
    path = recipe_file(tmp_path, "new-hvm-param")
    result = cli("specs", "show", "libxc", "--spec", str(path))
    assert result.exit_code == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if "NEW_PARAM" in x)
    assert line.split() == ["45", "NEW_PARAM", "(new", "parameter)", f"[{path}:6]"]
    assert "end.check.1  severity: error" in result.stdout
    assert cli("specs", "show", "libxc", "NOPE").exit_code == 2
    assert cli("specs", "show", "nope").exit_code == 2


def test_dump_and_build_round_trip_with_appended_fields(base, tmp_path, cli) -> None:
    path = recipe_file(tmp_path, "longer-record")
    for name, data in (("new", pv_info_stream(base, 5, 0x3)), ("old", pv_info_stream(base, 4,
                                                                                       None))):
        stream = tmp_path / f"{name}.libxc"
        stream.write_bytes(data)
        described, rebuilt = tmp_path / f"{name}.yaml", tmp_path / f"{name}.out"
        assert cli("dump", "--spec", str(path), "-t", "yaml", "-o", str(described),
                   str(stream)).exit_code == 0
        text = described.read_text()
        assert "pt_levels: 4" in text and ("features: 3" in text) == (name == "new")
        result = cli("build", "--spec", str(path), str(described), "-o", str(rebuilt))
        assert result.exit_code == 0, result.stderr
        assert rebuilt.read_bytes() == data


# -- rule ids in diagnostics -------------------------------------------------------------------
def test_rule_ids_in_verbose_output_and_json(base, tmp_path, cli) -> None:
    sample = hvm_sample()
    sample.steps.pop(sample.index("HVM_CONTEXT"))
    policy = sample.steps.pop(sample.index("X86_MSR_POLICY"))
    sample.steps.insert(sample.index("STATIC_DATA_END") + 1, policy)
    stream = tmp_path / "bad.libxc"
    stream.write_bytes(assemble(base.specs["libxc"], sample, "big"))
    result = cli("verify", "-v", str(stream))
    assert result.exit_code == 1
    lines = [line.strip() for line in result.stdout.splitlines() if ": " in line]
    assert "WARNING: libxc image_header @0x0: big-endian stream: valid, but Xen's x86 " \
        "restore refuses it [image_header.check.1]" in lines
    assert "ERROR: record 2 (X86_MSR_POLICY) @0x68: X86_MSR_POLICY after STATIC_DATA_END: " \
        "restore never applies it [X86_MSR_POLICY.rule.1]" in lines
    assert any(line.endswith("restore cannot set the guest's CPU and device state "
                             "[end.check.3]") for line in lines)
    report = json.loads(cli("verify", "--json", str(stream)).stdout)
    rules = [d.get("rule") for d in report["diagnostics"]]
    assert rules == ["image_header.check.1", "X86_MSR_POLICY.rule.1", "end.check.3"]
    # a length rule, and a field check (no rule id: the field names it)
    data = pv_info_stream(base, 5, 3)
    diagnostics = verify_bytes(base, data).diagnostics
    assert [(d.rule, d.message) for d in diagnostics] == [
        ("X86_PV_INFO.length.1", "body length 16, expected 8")]
    sample = pv_sample()
    sample.steps[0] = Step("X86_PV_INFO", {"guest_width": 8, "pt_levels": 4, "reserved2": 1})
    diagnostics = verify_bytes(base, build(base, sample)).diagnostics
    assert [(d.rule, d.field) for d in diagnostics] == [(None, "reserved2")]


def test_recipe_through_the_command_line(base, tmp_path, monkeypatch, cli) -> None:
    stream = tmp_path / "next.libxc"
    stream.write_bytes(pv_info_stream(base, 5, 0x3))
    path = recipe_file(tmp_path, "longer-record")
    assert cli("verify", str(stream)).exit_code == 1
    result = cli("verify", "--spec", str(path), str(stream))
    assert result.exit_code == 0, result.stderr
    monkeypatch.setenv("XENMIG_SPEC_PATH", str(path))
    assert cli("verify", str(stream)).exit_code == 0


def test_specs_show_describes_every_built_in_format_and_record(base) -> None:
    from xenmig_core.spec.show import describe_format, describe_record, text_lines
    for spec in base.specs.values():
        desc = describe_format(spec)
        assert text_lines(desc)[0] == f"{spec.name}: {spec.title}"
        assert json.loads(json.dumps(desc))["records"] == desc["records"]
        for rtype in spec.records.values():
            desc = describe_record(spec, rtype)
            lines = text_lines(desc)
            assert lines[0].startswith(f"{spec.name} record {rtype.name} ")
            ids = [r["id"] for key in ("length", "rules", "checks") for r in desc[key]]
            assert all(any(f"    {i}  " in line for line in lines) for i in ids)
            assert all(r["from"] for key in ("length", "rules", "checks") for r in desc[key])
            json.dumps(desc)


def test_the_spec_cache_notices_a_changed_extension_file(base, tmp_path) -> None:
    """The compiled-spec cache is keyed by every spec file's contents: editing an extension
    between two runs changes the verdict of the second run, as it would without a cache."""
    import os

    from conftest import run_xenmig
    env = {**os.environ, "XENMIG_CACHE_DIR": str(tmp_path / "cache")}
    stream = tmp_path / "new.libxc"
    stream.write_bytes(pv_info_stream(base, 5, 0x3))
    extension = recipe_file(tmp_path, "longer-record")
    for _ in range(2):   # the second run is served from the cache
        done = run_xenmig("verify", "--spec", str(extension), str(stream), env=env)
        assert done.returncode == 0, done.stderr
    assert list((tmp_path / "cache").glob("specs-*.cache"))
    extension.write_text("xenmig_spec: 1\nextends: libxc\n")   # the change taken back
    done = run_xenmig("verify", "--spec", str(extension), str(stream), env=env)
    assert done.returncode == 1
    assert b"body length 16, expected 8" in done.stderr
