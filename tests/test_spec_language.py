"""The YAML spec language: validation errors that name file, line and key; compiled
layouts in both byte orders; safe expressions; and a record type added by a spec file alone
(``--spec`` and ``$XENMIG_SPEC_PATH``), which verify then accepts and names."""

from __future__ import annotations

import textwrap
from importlib.resources import files
from pathlib import Path

import pytest
from conftest import run_xenmig, verify_bytes

from xenmig_core.errors import SpecError
from xenmig_core.session import open_registry
from xenmig_core.spec.expr import Expression, Names, Template
from xenmig_core.spec.layout import BytesReader
from xenmig_core.spec.loader import build_formats, load_spec_file
from xenmig_libxc.samples import Step, assemble, hvm_sample

NOTE_SPEC = """\
xenmig_spec: 1
extends: libxc
enums:
  note_level:
    0: quiet
    1: chatty
records:
  types:
    - id: 0x40
      name: XENMIG_TEST_NOTE
      title: test note
      doc: A record type that exists only in this spec file.
      body:
        - {id: level, type: u32, enum: note_level, valid: {max: 3, message: "level too high"}}
        - {id: reserved, type: u32, reserved: true}
        - {id: text, type: bytes, size: rest}
      length: [{min: 8}, {max: 72}]
      rules:
        - {after: STATIC_DATA_END}
      summary: "{enum_name('note_level', level)}: {len(text)} bytes of text"
"""


@pytest.fixture(scope="module")
def libxc_raw():
    """The built-in libxc spec, parsed once (compiling it again from this is cheap)."""
    return load_spec_file(files("xenmig_specs") / "libxc.yaml")


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def note_stream(libxc, level: int = 1, text: bytes = b"hello, xenmig") -> bytes:
    sample = hvm_sample()
    body = level.to_bytes(4, "little") + bytes(4) + text
    sample.steps.insert(sample.index("X86_TSC_INFO"),
                        Step("END", overrides={"type_id": 0x40, "body": body}))
    return assemble(libxc, sample)


# -- a record type from a spec file alone ------------------------------------------------------
def test_unknown_without_the_spec(registry, libxc) -> None:
    report = verify_bytes(registry, note_stream(libxc))
    (diag,) = [d for d in report.diagnostics if d.is_error]
    assert "unknown record type 0x00000040" in diag.message


def test_spec_file_adds_a_record_type(tmp_path, libxc) -> None:
    registry = open_registry([write(tmp_path, NOTE_SPEC)], autoload=False)
    report = verify_bytes(registry, note_stream(libxc))
    assert report.valid and not report.diagnostics
    assert report.contexts[0].records["XENMIG_TEST_NOTE"] == 1


def test_spec_file_checks_apply(tmp_path, libxc) -> None:
    registry = open_registry([write(tmp_path, NOTE_SPEC)], autoload=False)
    for level, text, field, message in (
            (7, b"x", "level", "level too high (found 7)"),
            (1, b"x" * 70, "length", "body length 78, expected at most 72")):
        report = verify_bytes(registry, note_stream(libxc, level=level, text=text))
        errors = [(d.record_type, d.field, d.message) for d in report.diagnostics
                  if d.is_error]
        assert errors == [("XENMIG_TEST_NOTE", field, message)]


def test_verify_spec_option_names_the_record(tmp_path, libxc, cli) -> None:
    stream = tmp_path / "note.libxc"
    stream.write_bytes(note_stream(libxc))
    spec = write(tmp_path, NOTE_SPEC)
    result = cli("verify", str(stream))
    assert result.exit_code == 1
    result = cli("verify", "-v", "--spec", str(spec), str(stream))
    assert result.exit_code == 0, result.stderr
    assert "XENMIG_TEST_NOTE (21 bytes): chatty: 13 bytes of text" in result.stdout


def test_spec_path_environment(tmp_path, libxc, monkeypatch, cli) -> None:
    stream = tmp_path / "note.libxc"
    stream.write_bytes(note_stream(libxc))
    folder = tmp_path / "specs"
    folder.mkdir()
    write(folder, NOTE_SPEC, "note.yaml")
    for value in (str(folder), str(folder / "note.yaml")):
        monkeypatch.setenv("XENMIG_SPEC_PATH", value)
        result = cli("verify", "-v", str(stream))
        assert result.exit_code == 0, result.stderr
        assert "XENMIG_TEST_NOTE" in result.stdout


def test_spec_path_environment_subprocess(tmp_path, libxc) -> None:
    import os
    stream = tmp_path / "note.libxc"
    stream.write_bytes(note_stream(libxc))
    write(tmp_path, NOTE_SPEC, "note.yaml")
    env = dict(os.environ, XENMIG_SPEC_PATH=str(tmp_path / "note.yaml"))
    done = run_xenmig("verify", "-v", str(stream), env=env)
    assert done.returncode == 0, done.stderr
    assert b"XENMIG_TEST_NOTE" in done.stdout
    done = run_xenmig("specs", "list", env=env)
    assert b"0x00000040  XENMIG_TEST_NOTE" in done.stdout


# -- validation errors: file, line, key ----------------------------------------------------------
BAD_SPECS = [
    ("unknown top-level key", """\
        xenmig_spec: 1
        extends: libxc
        recrods: {}
        """, 3, "recrods", "unknown key"),
    ("wrong spec version", """\
        xenmig_spec: 2
        extends: libxc
        """, 1, "xenmig_spec", "xenmig_spec must be 1"),
    ("unknown field key", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_FIELD
              body:
                - {id: a, type: u32, lenght: 4}
        """, 8, "lenght", "unknown key"),
    ("count from a later field", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_REPEAT
              body:
                - {id: items, type: u64, repeat: count}
                - {id: count, type: u32}
        """, 8, "repeat", "earlier field"),
    ("unknown enum", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_ENUM
              body:
                - {id: a, type: u32, enum: colours}
        """, 8, "enum", "unknown enum"),
    ("unknown type", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_TYPE
              body:
                - {id: a, type: u24}
        """, 8, "type", "unknown type"),
    ("expression syntax", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_EXPR
              checks:
                - expr: "body_length >"
                  message: nope
        """, 8, "expr", "invalid expression"),
    ("unsafe expression", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_EXPR
              checks:
                - {expr: "body_length.__class__", message: nope}
        """, 8, "expr", "Attribute"),
    ("duplicate record id", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x01
              name: MY_PAGES
        """, 5, "id", "already PAGE_DATA"),
    ("record name case", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: lower_case
        """, 6, "name", "UPPER_CASE"),
    ("bad severity", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_SEVERITY
              length:
                - {min: 8, severity: fatal}
        """, 8, "severity", "severity must be one of"),
    ("two length kinds", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_LENGTH
              length: {min: 8, max: 4}
        """, 7, None, "exactly one of"),
    ("framing in an extension", """\
        xenmig_spec: 1
        extends: libxc
        records:
          framing: {type: u32, length: u32, max_length: 16}
        """, 4, "framing", "cannot change the framing"),
    ("extends an unknown format", """\
        xenmig_spec: 1
        extends: libxd
        """, 2, "extends", "extends unknown format 'libxd'"),
    ("rule names an unknown record", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_RULE
              rules:
                - {after: STATIC_DATA_BEGIN}
        """, 8, "after", "STATIC_DATA_BEGIN"),
    ("control names an unknown format", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_CONTROL
              control: {nested: libxq}
        """, 7, "control", "unknown format 'libxq'"),
    ("bad template", """\
        xenmig_spec: 1
        extends: libxc
        records:
          types:
            - id: 0x41
              name: BAD_SUMMARY
              summary: "{body_length +}"
        """, 7, "summary", "invalid expression"),
    ("duplicate key", """\
        xenmig_spec: 1
        extends: libxc
        extends: libxl
        """, 3, None, "duplicate key 'extends'"),
    ("invalid YAML", """\
        xenmig_spec: 1
        extends: libxc
        records: [unclosed
        """, 4, None, "invalid YAML"),
]


@pytest.mark.parametrize(("text", "line", "key", "message"),
                         [case[1:] for case in BAD_SPECS], ids=[case[0] for case in BAD_SPECS])
def test_bad_spec_names_file_line_and_key(tmp_path, libxc_raw, text, line, key,
                                          message) -> None:
    path = write(tmp_path, text, "bad.yaml")
    with pytest.raises(SpecError) as info:
        build_formats([libxc_raw, load_spec_file(path)])
    err = info.value
    assert err.path == str(path), str(err)
    assert err.line == line, str(err)
    assert err.key == key, str(err)
    assert message in str(err)
    assert str(err).startswith(f"{path}:{line}")


def test_specs_check_command(tmp_path, cli) -> None:
    good = write(tmp_path, NOTE_SPEC, "good.yaml")
    result = cli("specs", "check", str(good))
    assert result.exit_code == 0 and "ok: 1 spec files" in result.stdout
    bad = write(tmp_path, BAD_SPECS[2][1], "bad.yaml")
    result = cli("specs", "check", str(bad))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"xenmig: error: {bad}:8: lenght: unknown key in body[0] (allowed: doc, enum, flags, "
        "head, id, orig_id, payload, repeat, reserved, reserved_bits, size, type, valid)"]


def test_bad_spec_on_verify_is_a_usage_error(tmp_path, cli) -> None:
    bad = write(tmp_path, BAD_SPECS[0][1], "bad.yaml")
    result = cli("verify", "--spec", str(bad), "-")
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and f"{bad}:3: recrods" in result.stderr


def test_missing_spec_file(tmp_path, cli) -> None:
    result = cli("verify", "--spec", str(tmp_path / "nope.yaml"), "-")
    assert result.exit_code == 2
    assert "cannot read spec" in result.stderr and len(result.stderr.splitlines()) == 1


# -- layouts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["<", ">"])
def test_layouts_round_trip_in_both_orders(libxc, order) -> None:
    rtype = libxc.record_by_name("HVM_PARAMS")
    values = {"count": 2, "reserved": 0,
              "params": [{"index": 1, "value": 0xFEFFF}, {"index": 17, "value": 2}]}
    raw = rtype.layout.encode(values, order)
    assert len(raw) == 8 + 32
    assert raw[:4] == (2).to_bytes(4, "little" if order == "<" else "big")
    assert rtype.layout.decode(BytesReader(raw), order) == values


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize(("name", "values"), [
    ("PAGE_DATA", {"count": 3, "reserved": 0, "pfn": [5, 6, 1 << 63]}),
    ("HVM_PARAMS", {"count": 2, "reserved": 0,
                    "params": [{"index": 1, "value": 2}, {"index": 17, "value": 3}]}),
    ("HVM_CONTEXT", {"context": b"\1" * 37}),
    ("SHARED_INFO", {})])
def test_encoded_size_is_the_length_of_the_encoding(libxc, name, values, order) -> None:
    """encoded_size (what dump checks a record's rebuilding with) is len(encode), for decoded
    values (arrays, struct rows, bytes) and for values as a description gives them."""
    layout = libxc.record_by_name(name).layout
    raw = layout.encode(values, order)
    decoded = layout.decode(BytesReader(raw), order)
    assert layout.encoded_size(decoded, order) == len(raw)
    assert layout.encoded_size(values, order) == len(raw)
    if "pfn" in values:          # one item more than count, and a value out of range
        assert layout.encoded_size({**decoded, "pfn": [*decoded["pfn"], 7]}, order) \
            == len(raw) + 8
        with pytest.raises(OverflowError):
            layout.encoded_size({**values, "pfn": [-1]}, order)


def test_layout_stops_before_the_payload(libxc) -> None:
    rtype = libxc.record_by_name("PAGE_DATA")
    raw = rtype.layout.encode({"count": 2, "pfn": [5, 6]}, "<") + b"P" * 8192
    reader = BytesReader(raw)
    fields = rtype.layout.decode(reader, "<")
    assert fields["count"] == 2 and list(fields["pfn"]) == [5, 6]
    assert reader.remaining == 8192


def test_layout_checks_report_paths(libxc) -> None:
    rtype = libxc.record_by_name("X86_MSR_POLICY")
    values = {"msrs": [{"idx": 1, "flags": 0, "val": 0}, {"idx": 2, "flags": 4, "val": 0}]}
    assert rtype.layout.check(values, {}) == [
        ("msrs[1].flags", "reserved field is not zero: 0x4", "error")]


# -- expressions -----------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["__import__('os')", "x.y", "(lambda: 1)()",
                                    "open('f')()", "_hidden", "[x for x in ().__class__]"])
def test_unsafe_expressions_are_refused(source) -> None:
    with pytest.raises(SpecError):
        Expression(source)


def test_expressions_and_templates() -> None:
    assert Expression("8 + 16 * count").evaluate({"count": 3}) == 56
    assert Expression("sum(x for x in items)").evaluate({"items": [1, 2, 3], "sum": sum}) == 6
    text = Template("{count:#x} {'big' if b else 'little'}-endian {n}").render(
        {"count": 255, "b": True, "n": 1})
    assert text == "0xff big-endian 1"
    with pytest.raises(NameError):
        Expression("open").evaluate({})


@pytest.mark.parametrize("source", [
    "{count:#x} {'big' if b else 'little'}-endian {n}", "plain text", "", "{n}",
    "it's {n:>4}% \\ {{}} \"{join(str(x) for x in items)}\" {plural(n, 'page')}",
    "{missing} after"])
def test_templates_render_the_same_compiled(source) -> None:
    """Against Names a template renders through one compiled function: the same text as
    part by part over a plain mapping, and the same error for an unknown name."""
    own = {"count": 255, "b": False, "n": 1, "items": [3, 4]}
    helpers = {"join": lambda items, sep=", ": sep.join(items),
               "plural": lambda n, word: f"{n} {word}" + ("" if n == 1 else "s")}
    template = Template(source)
    try:
        expected: object = template.render({**own, **helpers})
    except (NameError, KeyError):
        expected = NameError
    names = Names(own, (helpers,))
    if expected is NameError:
        with pytest.raises(NameError):
            template.render(names)
    else:
        assert template.render(names) == expected
        assert template._fn is not None      # (the compiled path was taken)
