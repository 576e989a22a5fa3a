"""Limits on what bad input (or a bad spec) can cost: diagnostics kept, expression failures,
deep nesting, large HVM contexts, capped per-record problem lists."""

from __future__ import annotations

import struct

import pytest
from libxl_support import build as build_libxl
from libxl_support import errors
from libxl_support import verify as verify_libxl

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
    result = cli("verify", "--spec", str(spec), str(stream))
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
