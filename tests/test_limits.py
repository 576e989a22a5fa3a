"""Limits on what bad input (or a bad spec) can cost: diagnostics kept, expression failures,
deep nesting, large HVM contexts, capped per-record problem lists."""

from __future__ import annotations

import json
import struct

import pytest
from conftest import verbose_account, verify_bytes
from libxl_support import build as build_libxl
from libxl_support import errors
from libxl_support import verify as verify_libxl

from xenmig_core.engine import Consumer, caps
from xenmig_libxc.hvm_context import MAX_KEPT_ENTRIES
from xenmig_libxc.samples import Step
from xenmig_libxl.samples import hvm_libxl_sample
from xenmig_xl.samples import xl_file

X_SPEC = """\
xenmig_spec: 1
extends: libxc
records:
  types:
    - {{id: 0x80000100, name: X, body: [{{id: a, type: u32{check}}}]{extra}}}
"""


def _with_x(pv, build) -> bytes:
    i = pv.index("END")
    pv.steps.insert(i, Step("END", overrides={"type_id": 0x80000100,
                                              "body": struct.pack("<I", 7)}))
    return build(pv)


# -- 2: expressions that fail on stream values are spec errors, never crashes -------------------
@pytest.mark.parametrize(("check", "extra", "expression"), [
    (', valid: {expr: "value // 0"}', "", "value // 0"),
    (', valid: {min: "a // 0"}', "", "a // 0"),
    (', valid: {eq: "[1][a]"}', "", "[1][a]"),
    ("", ', summary: "{a // 0}"', "{a // 0}"),
    ("", ', checks: [{expr: "2.0 ** (a * 1000) > 0", message: m}]', "a * 1000"),
])
def test_failing_expression_is_a_spec_error(cli, tmp_path, pv, build, check, extra,
                                            expression) -> None:
    spec = tmp_path / "x.yaml"
    spec.write_text(X_SPEC.format(check=check, extra=extra))
    stream = tmp_path / "s.libxc"
    stream.write_bytes(_with_x(pv, build))
    # record summaries are rendered only for a consumer that shows them (--json, -v, dump)
    shown = ["--json"] if "summary" in extra else []
    result = cli("verify", *shown, "--spec", str(spec), str(stream))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert str(spec) in lines[0] and expression in lines[0], lines[0]
    assert "Traceback" not in result.output


# -- 4: a deeply nested xl JSON configuration is a configuration error ------------------------
def test_deeply_nested_json_config(registry) -> None:
    stream = build_libxl(registry, hvm_libxl_sample(pages=4))
    config = b"[" * 100_000 + b"\0"
    report = verify_libxl(registry, xl_file(registry.specs["xl"], stream, config=config))
    found = errors(report)
    assert len(found) == 1 and "nested too deeply" in found[0], found
    assert [c.format for c in report.contexts] == ["xl", "libxl", "libxc"]
    assert all(c.finished for c in report.contexts[1:])


# -- 3: HVM_CONTEXT: linear, and a bounded list of entries ------------------------------------
class _Fields(Consumer):
    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict = {}
        self.summary: str | None = None

    def on_record(self, record) -> None:
        if record.name == self.name:
            self.fields, self.summary = dict(record.fields), record.summary


def _hvm_blob(fillers: int, first: int = 1) -> bytes:
    """A HEADER (typecode *first*), *fillers* TSC_ADJUST entries for vcpu 0, END."""
    header = struct.pack("<HHI", first, 0, 24) + struct.pack("<IIQII", 0x54381286, 1, 0, 0, 0)
    return header + struct.pack("<HHIQ", 19, 0, 8, 0) * fillers + struct.pack("<HHI", 0, 0, 0)


def test_hvm_context_keeps_a_bounded_list_of_entries(registry, hvm, build) -> None:
    fillers = MAX_KEPT_ENTRIES + 100
    hvm.steps[hvm.index("HVM_CONTEXT")] = Step("HVM_CONTEXT", {"context": _hvm_blob(fillers)})
    seen = _Fields("HVM_CONTEXT")
    report = verify_bytes(registry, build(hvm), consumer=seen)
    assert report.valid, [str(d) for d in report.diagnostics]
    total = fillers + 2
    assert len(seen.fields["entries"]) == MAX_KEPT_ENTRIES
    assert seen.fields["entries_dropped"] == total - MAX_KEPT_ENTRIES
    assert seen.fields["entries"][0]["name"] == "HEADER"
    assert seen.summary.endswith(f", {total} entries")


def test_hvm_context_small_keeps_every_entry(registry, hvm, build) -> None:
    hvm.steps[hvm.index("HVM_CONTEXT")] = Step("HVM_CONTEXT", {"context": _hvm_blob(3, 2)})
    seen = _Fields("HVM_CONTEXT")
    report = verify_bytes(registry, build(hvm), consumer=seen)
    found = [d.message for d in report.result.errors]
    assert found[0] == "first entry is CPU, expected HEADER (restore fails: hvm_load reads " \
        "the header first)", found
    assert len(seen.fields["entries"]) == 5 and "entries_dropped" not in seen.fields


# -- 5: capped per-record problems through StreamContext.report_capped --------------------------
def test_page_data_problems_capped_with_a_count(check, hvm) -> None:
    i = hvm.index("PAGE_DATA")
    words = hvm.steps[i].fields["pfn"]
    hvm.steps[i].fields["pfn"] = [w | (1 << 52) for w in words]
    out = check(hvm)
    assert [d.field for d in out.errors] == ["pfn[0]", "pfn[1]", "pfn[2]", "pfn"]
    assert out.errors[-1].message == (f"{len(words) - 3} more pfn problems in this record "
                                      "after the first 3")


def test_report_capped_reports_first_n_and_counts_rest(registry, pv, build) -> None:
    class Probe(Consumer):
        total = None

        def on_record(self, record) -> None:
            if record.name == "END" and self.total is None:
                made = []

                def problems():
                    for n in range(10):
                        made.append(n)
                        yield ("warning" if n % 2 else "error"), f"problem {n}", f"f[{n}]"
                self.total = record.context.report_capped(problems(), 4, more="things",
                                                          field="f")
                self.made = made

    probe = Probe()
    report = verify_bytes(registry, build(pv), consumer=probe)
    assert probe.total == 10 and probe.made == list(range(10))
    texts = [(d.severity, d.field, d.message) for d in report.diagnostics]
    assert texts == [("error", "f[0]", "problem 0"), ("warning", "f[1]", "problem 1"),
                     ("error", "f[2]", "problem 2"), ("warning", "f[3]", "problem 3"),
                     ("error", "f", "6 more things after the first 4")]


# -- 1: diagnostics are capped per kind and in all; counted, never lost silently ---------------
def _unknown(type_id: int) -> Step:
    return Step("END", overrides={"type_id": type_id, "body": b""})


def _spam(pv, build, optional: int = 60, mandatory: int = 0) -> bytes:
    i = pv.index("END")
    pv.steps[i:i] = [_unknown(0x80000100 + n % 3) for n in range(optional)] + \
        [_unknown(0x00000F00 + n) for n in range(mandatory)]
    return build(pv)


class _Heard(Consumer):
    def __init__(self) -> None:
        self.diagnostics: list = []
        self.dropped: list = []

    def on_diagnostic(self, diagnostic) -> None:
        self.diagnostics.append(diagnostic)

    def on_diagnostics_dropped(self, like, count: int) -> None:
        self.dropped.append((like, count))


def test_alike_diagnostics_are_capped_and_counted(registry, pv, build) -> None:
    heard = _Heard()
    report = verify_bytes(registry, _spam(pv, build), consumer=heard)
    result = report.result
    assert report.valid
    assert len(result.diagnostics) == caps.MAX_DIAGNOSTICS_PER_KIND == 20
    assert heard.diagnostics == result.diagnostics      # the consumer hears only the kept
    assert result.dropped == {"warning": 40} and result.diagnostics_dropped == 40
    assert result.warning_count == 60 and result.error_count == 0
    assert heard.dropped == result.dropped_like == [(result.diagnostics[0], 40)]


def test_verbose_says_how_many_more_once(registry, pv, build) -> None:
    lines = verbose_account(_spam(pv, build), registry)
    assert sum(line.strip().startswith("WARNING: ") for line in lines) == 20
    more = [line for line in lines if "more like this" in line]
    assert len(more) == 1 and "... 40 more like this: WARNING: record" in more[0], more


def test_overall_cap_keeps_first_error_and_fatal_one(registry, pv, build, monkeypatch) -> None:
    monkeypatch.setattr(caps, "MAX_DIAGNOSTICS", 5)
    data = _spam(pv, build, optional=10, mandatory=4)
    end = data.index(struct.pack("<II", 0x00000F03, 0))
    report = verify_bytes(registry, data[:end + 4])          # truncated in a record header
    result = report.result
    kinds = [(d.severity, d.record_type) for d in result.diagnostics]
    assert kinds[:5] == [("warning", f"{0x80000100 + n % 3:#010x}") for n in range(5)]
    assert kinds[5:] == [("error", "0x00000f00"), ("error", None)], kinds
    assert "truncated" in str(result.diagnostics[-1]) or "ended" in str(result.diagnostics[-1])
    assert not report.valid and result.errors[0].record_type == "0x00000f00"
    assert result.dropped == {"warning": 5, "error": 2}
    assert result.error_count == 4 and result.warning_count == 10


def test_dump_counts_every_diagnostic(cli, tmp_path, pv, build) -> None:
    stream = tmp_path / "s.libxc"
    stream.write_bytes(_spam(pv, build))
    result = cli("dump", "-t", "jsonl", "--pages", "none", str(stream))
    items = [json.loads(line) for line in result.output.splitlines()]
    assert sum(i["kind"] == "diagnostic" for i in items) + sum(
        len(i.get("diagnostics", [])) for i in items) == 20
    end = items[-1]
    assert end["kind"] == "end" and end["warnings"] == 60
    assert end["diagnostics_dropped"] == 40


# -- 5: record summaries cost time per record: rendered only for a consumer that shows them ----
class _Summaries(Consumer):
    def __init__(self, wants: bool) -> None:
        self.wants_summaries = wants
        self.seen: dict[str, str | None] = {}

    def on_record(self, record) -> None:
        self.seen[record.name] = record.summary


@pytest.mark.parametrize("wants", [False, True])
def test_spec_summaries_only_for_consumers_that_want_them(registry, pv, build, wants) -> None:
    from xenmig_core.engine import Engine
    from xenmig_core.source import ByteSource
    seen = _Summaries(wants)
    result = Engine(registry, ByteSource.from_bytes(build(pv)), seen).run("libxc")
    assert result.valid, [str(d) for d in result.diagnostics]
    tsc = seen.seen["X86_TSC_INFO"]          # a spec summary
    assert (tsc == "mode default, 2400000 kHz, 123456789 ns, incarnation 1") if wants \
        else tsc is None
    page_data = seen.seen["PAGE_DATA"]      # a plugin handler's own summary, written when
    assert page_data.endswith(" pages with data") if wants \
        else page_data is None              # the walk shows summaries (ctx.summaries)
