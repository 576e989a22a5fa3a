"""The spec-language pieces the libxl formats rely on: variants, conditional control,
header sizes from earlier headers, refused optional records (generic engine features)."""

from __future__ import annotations

import pytest

from xenmig_core.errors import SpecError
from xenmig_core.session import open_registry
from xenmig_core.source import ByteSource
from xenmig_core.verifier import verify_source

TOY = """
xenmig_spec: 1
format: toy
headers:
  - name: head
    byte_order: little
    seq: [{id: size, type: u8}]
  - name: body
    byte_order: little
    seq: [{id: text, type: bytes, size: size}]
state: {flavour: plain}
records:
  framing: {type: u8, length: u8, max_length: 255, optional_mask: 0x80, skip_optional: false,
            end: END}
  types:
    - {id: 0, name: END, control: end}
    - {id: 1, name: SAY, body: [{id: word, type: u8}],
       checks: [{expr: "flavour == 'plain'", message: "SAY in a {flavour} toy"}]}
summary: "toy ({flavour})"
"""
VARIANT = """
xenmig_spec: 1
format: toy-bare
variant_of: toy
headers: []
state: {flavour: bare}
"""


@pytest.fixture
def toys(tmp_path):
    (tmp_path / "toy.yaml").write_text(TOY)
    (tmp_path / "bare.yaml").write_text(VARIANT)
    return open_registry([tmp_path / "toy.yaml", tmp_path / "bare.yaml"], autoload=False)


def _verify(registry, data: bytes, fmt: str):
    return verify_source(registry, ByteSource.from_bytes(data), fmt)


def test_header_size_from_an_earlier_header(toys) -> None:
    report = _verify(toys, b"\x03abc" + b"\x01\x01\x07" + b"\x00\x00", "toy")
    assert report.valid, report.diagnostics
    assert report.contexts[0].headers["body"] == {"text": b"abc"}


def test_variant_replaces_headers_and_state(toys) -> None:
    report = _verify(toys, b"\x01\x01\x07\x00\x00", "toy-bare")
    assert [str(d) for d in report.diagnostics] == ["record 0 (SAY) @0x0: SAY in a bare toy"]
    assert report.contexts[0].summary == "toy (bare)"
    assert toys.specs["toy-bare"].base == "toy" and not toys.specs["toy-bare"].magic


def test_unknown_optional_record_refused(toys) -> None:
    report = _verify(toys, b"\x81\x00\x00\x00", "toy-bare")
    assert [d.message for d in report.diagnostics] == [
        "unknown record type 0x00000081 (0 bytes): in the optional range, but this format's "
        "readers refuse every unknown record"]


@pytest.mark.parametrize(("text", "message"), [
    ("format: x\nvariant_of: nothing\n", "variant of unknown format 'nothing'"),
    ("format: x\nvariant_of: toy\ndetect: []\n", "cannot change detect"),
    ("format: x\nrecords:\n  framing: {type: u8, length: u8, max_length: 9}\n  types:\n"
     "    - {id: 0, name: A, control: {resume: toy, sometimes: x}}\n", "unknown key in control"),
    ("format: x\nheaders:\n  - {name: h, byte_order: big, seq: [{id: b, type: bytes, "
     "size: later}]}\n", "must be a number, 'rest' or the id of an earlier field"),
])
def test_spec_errors(tmp_path, text, message) -> None:
    (tmp_path / "toy.yaml").write_text(TOY)
    (tmp_path / "x.yaml").write_text("xenmig_spec: 1\n" + text)
    with pytest.raises(SpecError, match=message):
        open_registry([tmp_path / "toy.yaml", tmp_path / "x.yaml"], autoload=False)


def test_payload_head_only_on_payloads(tmp_path) -> None:
    (tmp_path / "x.yaml").write_text(
        "xenmig_spec: 1\nformat: x\nrecords:\n  framing: {type: u8, length: u8, max_length: 9}"
        "\n  types:\n    - {id: 0, name: A, body: [{id: b, type: bytes, size: rest, head: 4}]}\n")
    with pytest.raises(SpecError, match="head is a number of bytes"):
        open_registry([tmp_path / "x.yaml"], autoload=False)
