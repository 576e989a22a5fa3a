"""xenmig build: round trips of every stream the tests make, derived fields, errors by path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_xenmig
from dumping import dump_file
from streams import all_streams

from xenmig_core.build import build_stream
from xenmig_core.errors import UsageError
from xenmig_core.source import ByteSource
from xenmig_core.verifier import verify_source
from xenmig_libxc.samples import assemble, hvm_context_blob, hvm_sample, page_bytes


@pytest.fixture(scope="module")
def stream_files(libxc, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("streams")
    out = {}
    for name, data in all_streams(libxc).items():
        out[name] = folder / name
        out[name].write_bytes(data)
    return out


def _round_trip(registry, path: Path, to: str, pages: str) -> bytes:
    text, _ = dump_file(registry, path, to, pages=pages)
    description = path.with_name(f"{path.name}.{pages}.{to}")
    description.write_text(text)
    built = path.with_name(f"{path.name}.{pages}.{to}.built")
    build_stream(registry, str(description), str(built), verify=False)
    return built.read_bytes()


def test_every_stream_round_trips_through_yaml(registry, stream_files) -> None:
    assert len(stream_files) >= 30
    for name, path in stream_files.items():
        assert _round_trip(registry, path, "yaml", "ref") == path.read_bytes(), name


@pytest.mark.parametrize("to", ["json", "jsonl", "yaml"])
def test_inline_pages_round_trip(registry, stream_files, to) -> None:
    names = ("pv64-v3-be", "pv-bad-padding", "hvm-truncated-in-payload", "hvm-trailing-zeros",
             "pv-checkpointed", "hvm-length-too-big")
    for name in names[:3] if to == "yaml" else names:
        path = stream_files[name]
        assert _round_trip(registry, path, to, "hex") == path.read_bytes(), name


def test_examples_round_trip_through_the_cli(tmp_path) -> None:
    for name in ("pv64-2vcpu-v3.libxc", "hvm-v3.libxc"):
        source = ROOT / "examples" / name
        dumped = run_xenmig("dump", "-t", "yaml", str(source), "-o", str(tmp_path / "d.yaml"))
        assert dumped.returncode == 0, dumped.stderr
        # pages are references: their contents (250 KiB and more) are not in the dump, which
        # holds the decoded HVM save records (about 30 KiB) and the small records
        assert (tmp_path / "d.yaml").stat().st_size < 64000
        built = run_xenmig("build", str(tmp_path / "d.yaml"), "-o", str(tmp_path / "out"))
        assert built.returncode == 0, built.stderr
        assert (tmp_path / "out").read_bytes() == source.read_bytes()


def test_pipe_dump_with_hex_pages_round_trips(tmp_path) -> None:
    data = (ROOT / "examples" / "hvm-v3.libxc").read_bytes()
    dumped = run_xenmig("dump", "-t", "jsonl", "--pages", "hex", "-", input=data)
    assert dumped.returncode == 0, dumped.stderr
    built = run_xenmig("build", "-", "-o", "-", input=dumped.stdout)
    assert built.returncode == 0, built.stderr
    assert built.stdout == data


# -- writing by hand -----------------------------------------------------------------------
HAND = """
items:
- kind: header
  format: libxc
  name: image_header
  fields: {marker: 0xffffffffffffffff, id: 0x58454e46, version: 3, options: []}
- kind: header
  format: libxc
  name: domain_header
  fields: {type: x86_hvm, page_shift: 12, xen_major: 4, xen_minor: 19}
- {kind: record, format: libxc, type: STATIC_DATA_END}
- kind: record
  format: libxc
  type: PAGE_DATA
  fields:
    pfn: [{first: 0, count: 2}, 0xf000000000000002, 3]
  payload:
  - {fill: "abcd", length: 4096}
  - {zeros: 4096}
  - {ref: page.bin, offset: 4096, length: 4096}
- kind: record
  format: libxc
  type: X86_TSC_INFO
  fields: {mode: always_emulate, khz: 1000000, nsec: 7, incarnation: 1}
- kind: record
  format: libxc
  type: HVM_CONTEXT
  fields: {context: {base64: "%s"}}
- kind: record
  format: libxc
  type: HVM_PARAMS
  fields:
    params: [{index: STORE_PFN, value: 0x10}, {index: 9, value: 1}]
- {kind: record, format: libxc, type: END}
"""


def _hand(tmp_path: Path) -> Path:
    import base64

    from xenmig_libxc.samples import hvm_context_blob
    (tmp_path / "page.bin").write_bytes(bytes(4096) + page_bytes(3))
    path = tmp_path / "hand.yaml"
    path.write_text(HAND % base64.b64encode(hvm_context_blob()).decode())
    return path


def test_hand_written_description_derives_counts_lengths_padding(registry, tmp_path) -> None:
    out = tmp_path / "hand.libxc"
    report = build_stream(registry, str(_hand(tmp_path)), str(out))
    assert report is not None and report.valid
    text, result = dump_file(registry, out, "json")
    assert result.valid
    records = {i["type"]: i for i in json.loads(text)["items"] if i["kind"] == "record"}
    page = records["PAGE_DATA"]
    assert page["fields"]["count"] == 4 and page["length"] == 8 + 32 + 3 * 4096
    assert page["view"]["pfn"][1] == {"first": 2, "last": 2, "count": 1, "type": "xtab"}
    assert records["HVM_PARAMS"]["fields"]["count"] == 2
    assert records["X86_TSC_INFO"]["fields"]["mode"] == "always_emulate"
    data = out.read_bytes()
    start = page["offset"] + 8 + 8 + 32
    assert data[start:start + 4096] == b"\xab\xcd" * 2048
    assert data[start + 4096:start + 8192] == bytes(4096)
    assert data[start + 8192:start + 12288] == page_bytes(3)


def test_big_endian_by_the_header_options(registry, libxc, tmp_path) -> None:
    text, _ = dump_file(registry, ROOT / "examples" / "hvm-v3.libxc", "yaml")
    doc = yaml.safe_load(text)
    doc["items"][1]["fields"]["options"] = ["big_endian"]
    description = tmp_path / "be.yaml"
    description.write_text(yaml.safe_dump(doc))
    build_stream(registry, str(description), str(tmp_path / "be"), verify=False)
    sample = hvm_sample()   # the HVM context blob is opaque: it keeps its little-endian bytes
    sample.steps[sample.index("HVM_CONTEXT")].fields["context"] = hvm_context_blob(2, "little")
    assert (tmp_path / "be").read_bytes() == assemble(libxc, sample, "big")


# -- errors name the path ------------------------------------------------------------------
def _error(registry, tmp_path: Path, edit) -> str:
    doc = yaml.safe_load(_hand(tmp_path).read_text())
    edit(doc["items"])
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(UsageError) as info:
        build_stream(registry, str(path), str(tmp_path / "never"))
    assert not (tmp_path / "never").exists()
    message = str(info.value)
    assert "\n" not in message
    return message


def _set(path: str, value):
    def edit(items):
        *parents, last = path.split(".")
        node = items
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return edit


@pytest.mark.parametrize("path, value, expected", [
    ("4.fields.khz", 1 << 32, "items[4].fields.khz: 4294967296 is out of range for u32"),
    ("4.fields.kHz", 5, "items[4].fields.kHz: no such field"),
    ("4.fields.mode", "sometimes", "items[4].fields.mode: 'sometimes' is not a number nor a "
                                   "tsc_mode name"),
    ("3.fields.count", 3, "items[3].fields.count: 3, but pfn has 4 items"),
    ("3.payload.2.ref", "missing.bin", "items[3].payload[2].ref: cannot open"),
    ("3.payload.2.length", 8192, "items[3].payload[2].length:"),
    ("3.length", 5, "items[3].length: given 5, the body is 12328 bytes"),
    ("3.padding", "00", "items[3].padding: 1 bytes, the record needs 0"),
    ("6.fields.params.0.index", "NO_SUCH_PARAM", "items[6].fields.params[0].index:"),
    ("0.fields.options", ["little_endian"], "items[0].fields.options[0]: unknown flag "
                                            "'little_endian'"),
    ("2.type", "NOT_A_RECORD", "items[2].type: format libxc has no record type"),
    ("1.format", "libxd", "items[1].format: unknown format 'libxd'"),
    ("4.payload", "00", "items[4].payload: X86_TSC_INFO has no payload field"),
    ("3.payload", {"length": 12288}, "items[3].payload: contents not given"),
    ("5.fields.context", {"base64": "!!"}, "items[5].fields.context.base64: invalid base64"),
    ("4.kind", "recrod", "items[4].kind: unknown kind 'recrod'"),
])
def test_build_errors_name_the_path(registry, tmp_path, path, value, expected) -> None:
    assert expected in _error(registry, tmp_path, _set(path, value))


def test_missing_field_and_squashed_items(registry, tmp_path) -> None:
    def drop_khz(items):
        del items[4]["fields"]["khz"]
    assert "items[4].fields.khz: missing" in _error(registry, tmp_path, drop_khz)
    squashed = {"kind": "squashed", "format": "libxc", "type": "PAGE_DATA", "first_index": 0,
                "last_index": 1, "count": 2, "offset": 0, "length": 0}
    assert "items[3]: a squashed run of records cannot be built" in _error(
        registry, tmp_path, lambda items: items.insert(3, squashed))


def test_jsonl_errors_name_the_line(registry, tmp_path) -> None:
    text, _ = dump_file(registry, ROOT / "examples" / "hvm-v3.libxc", "jsonl")
    lines = text.splitlines()
    lines[5] = lines[5].replace('"X86_MSR_POLICY"', '"X86_MSR_POLISY"')
    description = tmp_path / "d.jsonl"
    description.write_text("\n".join(lines[:9]) + "\n{broken\n")
    with pytest.raises(UsageError, match=r"^line 6\.type: format libxc has no record type "
                                         r"'X86_MSR_POLISY'"):
        build_stream(registry, str(description), str(tmp_path / "out"))
    lines[5] = lines[5].replace("POLISY", "POLICY")
    description.write_text("\n".join(lines[:9]) + "\n{broken\n")
    with pytest.raises(UsageError, match=r"^line 10: not valid JSON"):
        build_stream(registry, str(description), str(tmp_path / "out"))


def test_cli_build_error_is_one_line_exit_2(tmp_path) -> None:
    description = tmp_path / "bad.yaml"
    description.write_text("items:\n- {kind: record, format: libxc, type: END, fields: {x: 1}}\n")
    done = run_xenmig("build", str(description), "-o", str(tmp_path / "out"))
    assert done.returncode == 2
    assert done.stderr.decode() == ("xenmig: error: items[0].fields: this record type has no "
                                    "fields (give a body)\n")
    description.write_text("items: [\n")
    done = run_xenmig("build", str(description), "-o", str(tmp_path / "out"))
    assert done.returncode == 2 and done.stderr.decode().startswith("xenmig: error: line ")


def test_invalid_build_is_refused_unless_no_verify(tmp_path, stream_files, registry) -> None:
    text, _ = dump_file(registry, stream_files["hvm-bad-page-type"], "yaml")
    description = tmp_path / "bad.yaml"
    description.write_text(text)
    out = tmp_path / "bad.libxc"
    done = run_xenmig("build", str(description), "-o", str(out))
    assert done.returncode == 1
    assert "the built stream is invalid: record 5 (PAGE_DATA)" in done.stderr.decode()
    assert not out.exists()
    done = run_xenmig("build", "--no-verify", str(description), "-o", str(out))
    assert done.returncode == 0
    assert out.read_bytes() == stream_files["hvm-bad-page-type"].read_bytes()
    with ByteSource.open(str(out)) as source:
        assert not verify_source(registry, source).valid


# -- a format whose walker reads more than it reports -------------------------------------
TOY_SPEC = """
xenmig_spec: 1
format: toy
detect:
  - {offset: 0, hex: "544f5900", description: "a toy stream"}
headers:
  - name: toy_header
    byte_order: little
    seq:
      - {id: magic, type: u32, valid: {eq: 0x594f54}}
      - {id: chunks, type: u32}
"""


class _ToyWalker:
    """Reads 16-byte chunks to the end of the source and reports none of them."""

    @staticmethod
    def walk(engine, ctx):
        from xenmig_core.engine import Action
        if engine.source.at_eof():
            ctx.finished = True
            return Action("end")
        engine.source.read_upto(16)
        return Action("continue")


def test_bytes_a_walker_does_not_report_still_round_trip(tmp_path) -> None:
    import io
    import struct as st

    from dumping import dump_text

    from xenmig_core.plugins import hookimpl
    from xenmig_core.session import open_registry

    class Toy:
        @staticmethod
        @hookimpl
        def xenmig_walker(format_name):
            return _ToyWalker.walk if format_name == "toy" else None

    spec = tmp_path / "toy.yaml"
    spec.write_text(TOY_SPEC)
    registry = open_registry([spec], plugins=[Toy()], autoload=False)
    data = st.pack("<II", 0x594F54, 3) + bytes(range(40))
    stream = tmp_path / "toy.bin"
    stream.write_bytes(data)
    with ByteSource.open(str(stream)) as source:
        out = io.StringIO()
        from xenmig_core.dump import DumpOptions, dump_source
        from xenmig_core.render.yaml import YamlRenderer
        dump_source(registry, source, YamlRenderer(out), DumpOptions(pages="hex"), "toy")
    doc = yaml.safe_load(out.getvalue())
    kinds = [i["kind"] for i in doc["items"]]
    assert kinds == ["stream", "header", "raw", "end"]
    assert doc["items"][2]["offset"] == 8 and doc["items"][2]["length"] == 40
    description = tmp_path / "toy.yaml.dump"
    description.write_text(out.getvalue())
    build_stream(registry, str(description), str(tmp_path / "again"), verify=False)
    assert (tmp_path / "again").read_bytes() == data
    text, _ = dump_text(registry, ByteSource.from_bytes(data, "toy"), "text", "toy")
    assert "40 bytes not walked" in text


def test_every_example_round_trips(registry, tmp_path) -> None:
    for source in sorted((ROOT / "examples").iterdir()):
        if source.suffix == ".py" or not source.is_file():   # plugin-example/ is a package
            continue
        text, result = dump_file(registry, source, "yaml")
        assert result.valid, source.name
        description = tmp_path / f"{source.name}.yaml"
        description.write_text(text)
        build_stream(registry, str(description), str(tmp_path / source.name))
        assert (tmp_path / source.name).read_bytes() == source.read_bytes(), source.name


def test_long_raw_regions_are_split_and_bounded(registry, stream_files, tmp_path) -> None:
    import tracemalloc

    from xenmig_core.dump import DumpOptions, dump_source
    from xenmig_core.render.json import JsonlRenderer
    garbage = bytes(range(251)) * (12 * 4096 + 7)          # ~12 MiB, not a multiple of 1 MiB
    for name in ("hvm-v3", "hvm-length-too-big"):           # trailing, and after a fatal error
        data = stream_files[name].read_bytes() + garbage
        source = tmp_path / f"{name}-long"
        source.write_bytes(data)
        description = tmp_path / f"{name}-long.jsonl"
        tracemalloc.start()
        with ByteSource.open(str(source)) as src, open(description, "w") as out:
            dump_source(registry, src, JsonlRenderer(out), DumpOptions(pages="hex"))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 12 << 20, f"{name}: peak {peak}"
        items = [json.loads(line) for line in description.read_text().splitlines()]
        regions = [i for i in items if i["kind"] in ("trailing", "raw")]
        assert len(regions) >= 12 and max(i["length"] for i in regions) <= 1 << 20
        tracemalloc.start()
        build_stream(registry, str(description), str(tmp_path / "again"), verify=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 12 << 20, f"{name}: build peak {peak}"
        assert (tmp_path / "again").read_bytes() == data, name


def test_fd_outputs_for_dump_and_build(tmp_path) -> None:
    import os
    import subprocess
    import sys
    source = ROOT / "examples" / "hvm-v3.libxc"
    with open(tmp_path / "d.yaml", "wb") as description:
        done = subprocess.run([sys.executable, "-m", "xenmig_core", "dump", "-t", "yaml",
                               str(source), "-o", f"fd:{description.fileno()}"],
                              pass_fds=(description.fileno(),), capture_output=True)
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out", "wb") as out:
        done = subprocess.run([sys.executable, "-m", "xenmig_core", "build",
                               str(tmp_path / "d.yaml"), "-o", f"fd:{out.fileno()}"],
                              pass_fds=(out.fileno(),), capture_output=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_bytes() == source.read_bytes()
    assert not [p for p in os.listdir(tmp_path) if p.startswith("fd:")]
