"""xenmig dump: golden text output, the JSON schema, filters, payload modes, streaming."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tracemalloc
from array import array
from importlib.resources import files

import jsonschema
import pytest
import yaml
from conftest import ROOT, run_xenmig
from dumping import dump_file, dump_text
from streams import SAMPLES, VARIANTS, all_streams

from xenmig_core.dump import DumpOptions, dump_source
from xenmig_core.engine import dispatch
from xenmig_core.plugins import hookimpl
from xenmig_core.render.json import JsonlRenderer
from xenmig_core.session import open_registry
from xenmig_core.source import ByteSource
from xenmig_core.writer import StreamWriter
from xenmig_libxc.samples import assemble, hvm_context_blob, hvm_cpu_body, page_bytes

GOLDEN = ROOT / "tests" / "golden"
#: set to regenerate tests/golden/*.txt (then review the diff): XENMIG_REGEN_GOLDEN=1 pytest
REGEN = bool(os.environ.get("XENMIG_REGEN_GOLDEN"))
EXAMPLES = sorted(p.name for p in (ROOT / "examples").iterdir()
                  if p.suffix != ".py" and p.is_file())     # plugin-example/ is a package
GOLDEN_STREAMS = ["pv32-v3", "hvm-v2-4vcpu", "pv64-v3-be", "hvm-unknown-optional",
                  "pv-bad-padding", "pv-short-pv-info", "hvm-truncated-in-payload",
                  "hvm-trailing-garbage", "pv-checkpointed", "hvm-bad-page-type"]


@pytest.fixture(scope="module")
def streams(libxc) -> dict[str, bytes]:
    return all_streams(libxc)


@pytest.fixture(scope="module")
def schema() -> jsonschema.Draft202012Validator:
    doc = json.loads((files("xenmig_core.schemas") / "dump.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    return jsonschema.Draft202012Validator(doc)


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if REGEN:
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run XENMIG_REGEN_GOLDEN=1 pytest"
    assert text == path.read_text(), f"text dump of {name} differs from {path}"


# -- golden text ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXAMPLES)
def test_example_text_matches_golden(name: str) -> None:
    done = run_xenmig("dump", f"examples/{name}", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    _check_golden(name, done.stdout.decode())


@pytest.mark.parametrize("name", GOLDEN_STREAMS)
def test_stream_text_matches_golden(registry, streams, name: str) -> None:
    text, result = dump_text(registry, ByteSource.from_bytes(streams[name], name))
    _check_golden(name, text)
    assert result.valid == (name in ("pv32-v3", "hvm-v2-4vcpu", "pv64-v3-be",
                                     "hvm-unknown-optional", "pv-checkpointed"))


def test_text_shows_decoded_values(registry) -> None:
    text, _ = dump_file(registry, ROOT / "examples" / "hvm-v3.libxc")
    assert "type=x86_hvm" in text                       # enum by name
    assert "mode=default" in text
    assert "index=STORE_PFN value=0xfefff" in text      # enum inside an array of structs
    assert "records 3-4  PAGE_DATA x2" in text          # squashed
    assert "pfn: 0x0-0x27 notab (40), 0x28-0x2b xtab (4), 0x2c-0x3f notab (20)" in text
    assert "pages: notab=60 xtab=4" in text
    assert "type=CPU instance=1" in text and "layout=hvm_cpu" in text
    unsquashed, _ = dump_file(registry, ROOT / "examples" / "hvm-v3.libxc", squash=False)
    assert "record 3  PAGE_DATA" in unsquashed and "record 4  PAGE_DATA" in unsquashed


def test_flags_spelled_out(registry, streams) -> None:
    out, _ = dump_text(registry, ByteSource.from_bytes(streams["hvm-v3-be"]), "json")
    header = next(i for i in _items(out) if i["kind"] == "header")
    assert header["fields"]["options"] == ["big_endian"]


# -- HVM context ---------------------------------------------------------------------------
def _view_entries(registry, data: bytes) -> list[dict]:
    out, _ = dump_text(registry, ByteSource.from_bytes(data), "json", types=frozenset(
        {"HVM_CONTEXT"}))
    record = next(i for i in _items(out) if i["kind"] == "record")
    return record["view"]["entries"]


def test_hvm_context_entries_and_cpu_registers(registry, streams) -> None:
    """Every entry of the sample (one of each type save.h declares) is decoded field by
    field, in Xen's save order; the CPU registers are the sample's."""
    entries = _view_entries(registry, streams["hvm-v3"])
    kinds = [(e["type"], e["instance"]) for e in entries]
    assert kinds[:5] == [("HEADER", 0), ("CPU", 0), ("CPU", 1), ("PIC", 0), ("PIC", 1)]
    assert kinds[-1] == ("END", 0)
    names = registry.specs["libxc"].enums["hvm_save_type"]
    assert {t for t, _ in kinds} == {e.name for e in names.entries.values()}
    assert all("fields" in e for e in entries[:-1]), [e["type"] for e in entries if
                                                      "fields" not in e]
    header = entries[0]["fields"]
    assert header["magic"] == 0x54381286 and header["gtsc_khz"] == 2400000
    body = hvm_cpu_body("<", 1)
    cpu1 = entries[2]["fields"]
    for name, offset in [("rax", 512), ("rip", 640), ("cr3", 672), ("msr_efer", 992),
                         ("tsc", 1008)]:
        assert cpu1[name] == int.from_bytes(body[offset:offset + 8], "little"), name
    assert cpu1["flags"] == ["fpu_initialised"]


def test_hvm_context_shows_devices_field_by_field(registry, streams) -> None:
    """As xen-hvmctx does: PIT channels, the IOAPIC redirection table, MTRR ranges."""
    by_type = {}
    for e in _view_entries(registry, streams["hvm-v3"]):
        by_type.setdefault(e["type"], e)
    pit = by_type["PIT"]["fields"]
    assert pit["channel0"]["count"] == 0x10000 and pit["channel0"]["gate"] == 1
    assert pit["channel2"]["mode"] == 3
    ioapic = by_type["IOAPIC"]["fields"]
    assert len(ioapic["redirtbl"]) == 48 and ioapic["base_address"] == 0xFEC00000
    assert ioapic["redirtbl"][1]["vector"] == 0x31
    assert ioapic["redirtbl"][16]["mode"] == ["level_triggered"]
    assert ioapic["redirtbl"][16]["mask"] == ["masked"]
    mtrr = by_type["MTRR"]["fields"]
    assert mtrr["msr_mtrr_var"][0] == {"base": 0x6, "mask": 0xFFFFFFF0000800}
    assert len(mtrr["msr_mtrr_fixed"]) == 11 and mtrr["msr_mtrr_def_type"] == 0xC06
    assert by_type["PIC"]["fields"]["mode"] == ["is_master"]
    assert by_type["CPU_MSR"]["fields"]["msrs"] == [{"index": 0xC0000103, "reserved": 0,
                                                     "val": 0}]
    assert by_type["CPU_XSAVE"]["fields"]["xcr0"] == 7


def test_hvm_context_older_layouts_and_unknown_sizes(registry, libxc) -> None:
    import struct

    from xenmig_libxc.samples import Step, hvm_sample

    def entry(typecode: int, body: bytes) -> bytes:
        return struct.pack("<HHI", typecode, 0, len(body)) + body
    compat = bytearray(hvm_cpu_body("<", 0)[:1016])
    compat[1000:1008] = (0x1122334455667788).to_bytes(8, "little")   # tsc in the compat form
    compat[1008:1016] = bytes(8)                                     # event, error code
    blob = (entry(1, struct.pack("<IIQII", 0x54381286, 1, 0, 0, 0)) + entry(2, bytes(compat))
            + entry(5, bytes(24)) + entry(14, bytes(232)) + entry(11, bytes(15))
            + entry(0, b""))
    sample = hvm_sample()
    sample.steps[sample.index("HVM_CONTEXT")] = Step("HVM_CONTEXT", {"context": blob})
    entries = _view_entries(registry, assemble(libxc, sample))
    assert entries[1]["layout"] == "hvm_cpu__compat"
    assert entries[1]["fields"]["tsc"] == 0x1122334455667788
    assert entries[2]["layout"] == "hvm_lapic__v1"
    assert entries[3]["type"] == "MTRR" and "fields" not in entries[3]   # no layout: raw
    # RTC of 15 bytes: no variant has that size; restore zero-extends it, and so does dump
    assert entries[4]["layout"] == "hvm_rtc" and entries[4]["zero_extended_from"] == 15


# -- JSON schema ---------------------------------------------------------------------------
def _items(text: str) -> list[dict]:
    return json.loads(text)["items"]


def test_every_stream_dump_validates_against_schema(registry, streams, schema) -> None:
    for name, data in streams.items():
        for pages in ("ref", "sha256"):
            out, _ = dump_text(registry, ByteSource.from_bytes(data, name), "json",
                               pages=pages)
            errors = list(schema.iter_errors(json.loads(out)))
            assert not errors, f"{name} --pages {pages}: {errors[0].message}"


def test_examples_yaml_hex_and_squashed_validate(registry, schema) -> None:
    for name in EXAMPLES:
        out, _ = dump_file(registry, ROOT / "examples" / name, "yaml", pages="hex")
        assert not list(schema.iter_errors(yaml.safe_load(out)))
        out, _ = dump_file(registry, ROOT / "examples" / name, "json", squash=True)
        doc = json.loads(out)
        formats = {i["format"] for i in doc["items"] if "format" in i}
        if any(t.squash for f in formats if f in registry.specs
               for t in registry.specs[f].records.values()):   # e.g. libxc's PAGE_DATA
            assert any(i["kind"] == "squashed" for i in doc["items"]), name
        assert not list(schema.iter_errors(doc))


def test_schema_rejects_malformed_dumps(registry, schema) -> None:
    out, _ = dump_file(registry, ROOT / "examples" / "hvm-v3.libxc", "json")
    good = json.loads(out)
    bad_record = json.loads(out)
    bad_record["items"][3]["lenght"] = 3
    bad_payload = json.loads(out)
    page = next(i for i in bad_payload["items"] if i.get("type") == "PAGE_DATA")
    page["payload"] = {"ref": "x"}                          # a ref needs a length
    bad_version = dict(good, xenmig_dump=2)
    for doc in (bad_record, bad_payload, bad_version):
        assert list(schema.iter_errors(doc))


def test_jsonl_lines_validate(registry, schema) -> None:
    out, _ = dump_file(registry, ROOT / "examples" / "pv64-2vcpu-v3.libxc", "jsonl")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["kind"] == "dump" and lines[-1]["kind"] == "end"
    doc = {k: v for k, v in lines[0].items() if k != "kind"}
    doc["items"] = lines[1:]
    assert not list(schema.iter_errors(doc))


# -- filters -------------------------------------------------------------------------------
def _kinds(out: str) -> list[tuple[str, str | None]]:
    return [(i["kind"], i.get("type") or i.get("name")) for i in _items(out)]


def test_type_filter(registry) -> None:
    out, _ = dump_file(registry, ROOT / "examples" / "pv64-2vcpu-v3.libxc", "json",
                       types=frozenset({"X86_PV_VCPU_BASIC", "domain_header"}))
    kinds = _kinds(out)
    assert kinds == [("stream", None), ("header", "domain_header"),
                     ("record", "X86_PV_VCPU_BASIC"), ("record", "X86_PV_VCPU_BASIC"),
                     ("end", None)]
    assert json.loads(out)["filtered"] is True


def test_limit_stops_the_walk(registry) -> None:
    out, _ = dump_file(registry, ROOT / "examples" / "pv64-2vcpu-v3.libxc", "json", limit=3)
    items = _items(out)
    assert [k for k, _ in _kinds(out)] == ["stream", "header", "header", "record", "end"]
    assert items[-1]["stopped"] == "--limit 3 reached"
    assert items[-1]["size"] < 1000                  # the walk stopped, the pages were not read


def test_offset_filter(registry) -> None:
    path = ROOT / "examples" / "hvm-v3.libxc"
    full, _ = dump_file(registry, path, "json")
    records = [i for i in _items(full) if i["kind"] == "record"]
    start, end = records[2]["offset"], records[5]["offset"]
    out, _ = dump_file(registry, path, "json", start=start, end=end)
    assert [i["index"] for i in _items(out) if i["kind"] == "record"] == [2, 3, 4]


def test_cli_filters_and_bad_options(cli) -> None:
    path = str(ROOT / "examples" / "hvm-v3.libxc")
    result = cli("dump", path, "--type", "HVM_PARAMS", "--type", "X86_TSC_INFO")
    assert result.exit_code == 0
    assert "record 5  X86_TSC_INFO" in result.stdout and "record 7  HVM_PARAMS" in result.stdout
    assert "PAGE_DATA" not in result.stdout
    result = cli("dump", path, "--offset", "0x80:0x3c2a0", "-t", "jsonl")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [x["index"] for x in lines if x["kind"] == "record"] == [3, 4]
    for bad in (["--offset", "x:y"], ["--to", "xml"], ["--pages", "all"], ["--limit", "0"]):
        result = cli("dump", path, *bad)
        assert result.exit_code == 2, bad
        assert result.stderr.count("\n") == 1 and "xenmig: error:" in result.stderr


def test_invalid_stream_exit_code_and_output(cli, tmp_path, streams) -> None:
    path = tmp_path / "bad"
    path.write_bytes(streams["hvm-bad-page-type"])
    result = cli("dump", str(path))
    assert result.exit_code == 1
    assert "ERROR: pfn[0]: page type 0x6 is invalid" in result.stdout
    assert "end: INVALID (1 error)" in result.stdout


# -- payload modes -------------------------------------------------------------------------
def _page_records(out: str) -> list[dict]:
    return [i for i in _items(out) if i.get("type") == "PAGE_DATA"]


def test_pages_hex_sha256_ref(registry, monkeypatch) -> None:
    monkeypatch.setattr(dispatch, "PAYLOAD_BUFFER_SIZE", 1000)   # chunks cross page boundaries
    path = ROOT / "examples" / "hvm-v3.libxc"
    data = path.read_bytes()
    hexed, _ = dump_file(registry, path, "json", pages="hex")
    digests, _ = dump_file(registry, path, "json", pages="sha256")
    refs, _ = dump_file(registry, path, "json", pages="ref")
    second_hex, second_sha, second_ref = (_page_records(o)[1] for o in (hexed, digests, refs))
    data_pfns = [p for p in range(32, 64) if not 40 <= p < 44]     # the sample's xtab hole
    assert [bytes.fromhex(p["hex"]) for p in second_hex["payload"]] == \
        [page_bytes(p) for p in data_pfns]
    assert second_sha["payload"]["sha256"] == \
        [hashlib.sha256(page_bytes(p)).hexdigest() for p in data_pfns]
    ref = second_ref["payload"]
    assert ref["ref"] == str(path) and ref["length"] == 28 * 4096
    assert data[ref["offset"]:ref["offset"] + 4096] == page_bytes(32)


def test_pages_shown_alike_with_an_observer(registry, monkeypatch) -> None:
    """With an observer of the walk (the progress display), the consumers are asked whether
    they want a payload before each of its chunks: the pages gathered so far are kept."""
    from xenmig_core.engine import Consumer
    monkeypatch.setattr(dispatch, "PAYLOAD_BUFFER_SIZE", 1000)   # many chunks a payload
    path = ROOT / "examples" / "hvm-v3.libxc"
    for pages in ("hex", "sha256"):
        outs = []
        for observer in (None, Consumer()):
            out = io.StringIO()
            with ByteSource.open(str(path)) as source:
                dump_source(registry, source, JsonlRenderer(out), DumpOptions(pages=pages),
                            observer=observer)
            outs.append(out.getvalue())
        assert outs[0] == outs[1], pages
        assert '"sha256": ["' in outs[0] or '"hex": "' in outs[0]


def test_text_hexdump_of_pages(registry) -> None:
    text, _ = dump_file(registry, ROOT / "examples" / "hvm-v3.libxc", pages="hex",
                        types=frozenset({"PAGE_DATA"}), limit=1)
    assert "page 31 (payload +0x1f000):" in text
    first = page_bytes(0)[:32].hex(" ")
    assert f"0000: {first}" in text
    assert "*" in text.split()                            # repeated lines folded


def test_default_pages_for_a_pipe_are_lengths(run_xenmig_input=None) -> None:
    data = (ROOT / "examples" / "hvm-v3.libxc").read_bytes()
    done = run_xenmig("dump", "-t", "json", "-", input=data)
    assert done.returncode == 0, done.stderr
    page = _page_records(done.stdout.decode())[0]
    assert page["payload"] == {"length": 32 * 4096}


# -- streaming -----------------------------------------------------------------------------
class _Counting(io.TextIOBase):
    def __init__(self) -> None:
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return len(text)


def test_jsonl_streams_with_bounded_memory(libxc, registry, tmp_path) -> None:
    path = tmp_path / "big"
    records = 1500
    with open(path, "wb") as out:
        writer = StreamWriter(out, libxc)
        writer.header("image_header", {"marker": 2**64 - 1, "id": 0x58454E46, "version": 3})
        writer.header("domain_header", {"type": 2, "page_shift": 12, "xen_major": 4})
        writer.record("STATIC_DATA_END")
        page = bytes(4096) * 4
        for i in range(records):
            writer.record("PAGE_DATA", {"count": 4, "pfn": [4 * i, 4 * i + 1, 4 * i + 2,
                                                           4 * i + 3]}, payload=page)
        writer.record("HVM_CONTEXT", {"context": hvm_context_blob()})
        writer.record("END")
    size = path.stat().st_size
    assert size > 22 << 20
    sink = _Counting()
    tracemalloc.start()
    with ByteSource.open(str(path)) as source:
        dump_source(registry, source, JsonlRenderer(sink), DumpOptions(pages="sha256"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # meta, stream, 2 headers, SDE, the records, HVM_CONTEXT, END, end: no diagnostic
    assert sink.lines == records + 8
    assert peak < 4 << 20, f"peak {peak} bytes for a {size}-byte stream"


# -- records written as JSON text ----------------------------------------------------------
class _ItemsOnly(JsonlRenderer):
    """A JSON Lines renderer that takes items as mappings only: the dump makes every item
    and has it encoded (the way before records were written as their JSON text)."""

    item_json = None


def _both_ways(registry, data: bytes, name: str, path=None, **options) -> tuple[str, str]:
    outs = []
    for renderer in (JsonlRenderer, _ItemsOnly):
        out = io.StringIO()
        source = ByteSource.open(str(path)) if path is not None \
            else ByteSource.from_bytes(data, name)
        with source:
            dump_source(registry, source, renderer(out), DumpOptions(**options))
        outs.append(out.getvalue())
    return outs[0], outs[1]


def test_records_as_json_text_are_what_their_items_encode_to(registry, streams) -> None:
    """A JSON dump writes most records' text directly (no mapping made, no encoder): the
    same bytes as encoding the items, for every sample stream (valid, broken, big-endian,
    with padding and diagnostics), every --pages mode and squashed runs, and for files
    (payload references); and a path not taken never goes unnoticed (both ways run)."""
    texts = 0
    for name, data in streams.items():
        for pages, squash in (("ref", False), ("hex", False), ("sha256", True)):
            direct, items = _both_ways(registry, data, name, pages=pages, squash=squash)
            assert direct == items, f"{name} --pages {pages}"
            texts += direct.count('"kind": "record"')
    for name in EXAMPLES:
        direct, items = _both_ways(registry, b"", name, ROOT / "examples" / name, pages="ref")
        assert direct == items, name
        assert '"payload": {"ref": ' in direct or "PAGE_DATA" not in direct
    assert texts > 1000


def test_records_as_json_text_of_a_file_with_an_odd_name(registry, tmp_path) -> None:
    """The payload references' file name is part of each record's generated text: quotes,
    braces, backslashes and non-ASCII letters in it come out as json.dumps writes them."""
    path = tmp_path / "it's {a} \\ \"caf\u00e9\".libxl"
    path.write_bytes((ROOT / "examples" / "remus-3-checkpoints.libxl").read_bytes())
    direct, items = _both_ways(registry, b"", path.name, path, pages="ref")
    assert direct == items
    assert json.dumps(str(path)) in direct


class _TscViewer:
    """A plugin whose X86_TSC_INFO viewer has a JSON shortcut (see the hook's contract):
    the view's text at every other call, None (the viewer's way) at the others; raising
    when *fail*."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls = 0

    @hookimpl
    def xenmig_record_viewer(self, format_name: str, name: str):
        if (format_name, name) != ("libxc", "X86_TSC_INFO"):
            return None

        def view(record, ctx):
            return {"ghz": record.fields["khz"] // 1000000, "mode": [1, 2]}

        def as_json(record, ctx, derived):
            if self.fail:
                raise ValueError("no such view")
            self.calls += 1
            if self.calls % 2:
                return None
            return json.dumps({**derived, **view(record, ctx)})
        view.json = as_json
        return view


def test_a_viewer_json_shortcut_writes_what_the_viewer_shows(tmp_path) -> None:
    """A viewer's ``json`` gives the view's text where it answers, the viewer's mapping is
    encoded where it says None; a shortcut that raises fails as its plugin (one error
    naming it), as the viewer would."""
    from xenmig_core.errors import PluginError
    registry = open_registry(plugins=[_TscViewer()], autoload=False)
    path = ROOT / "examples" / "remus-3-checkpoints.libxl"
    direct, items = _both_ways(registry, b"", path.name, path, pages="ref")
    assert direct == items
    assert direct.count('"view": {"ghz": 2, "mode": [1, 2]}') == 3
    broken = open_registry(plugins=[_TscViewer(fail=True)], autoload=False)
    with ByteSource.open(str(path)) as source, pytest.raises(
            PluginError, match="X86_TSC_INFO viewer raised ValueError: no such view"):
        dump_source(broken, source, JsonlRenderer(io.StringIO()), DumpOptions(pages="ref"))


def test_json_presenter_writes_what_the_presented_fields_encode_to(libxc) -> None:
    """The JSON presenter of a layout: ints and enum names written directly, other fields
    encoded; a value of another type than decoding gives, a missing field or an unknown
    enum value come out as encoding the presented mapping gives them."""
    from xenmig_core.present import json_presenter, presenter
    from xenmig_core.render.json import encode
    enums = libxc.enums
    for name, values in [
            ("X86_TSC_INFO", {"mode": 1, "khz": 2400000, "nsec": 5, "incarnation": 1,
                              "reserved": 0}),
            ("X86_TSC_INFO", {"mode": 77, "khz": 1, "nsec": 2, "incarnation": 3,
                              "reserved": 0}),                       # no such mode
            ("X86_TSC_INFO", {"mode": 1, "khz": True, "nsec": 1.5, "incarnation": "x",
                              "reserved": 0}),                       # not ints
            ("X86_TSC_INFO", {"mode": 1, "khz": 1}),                 # fields missing
            ("PAGE_DATA", {"count": 4, "reserved": 0, "pfn": [1, 2, 3, 4, 9]}),
            ("PAGE_DATA", {"count": 4, "reserved": 0, "pfn": array("Q", [7, 8, 9, 10])}),
            ("PAGE_DATA", {"count": 4, "reserved": 0, "pfn": array("Q", [7, 8, 10, 11])}),
            ("PAGE_DATA", {"count": 2, "reserved": 0, "pfn": array("Q", [7, 8])}),
            ("HVM_PARAMS", {"count": 1, "reserved": 0,
                            "params": [{"index": 1, "value": 2}]}),
            ("X86_PV_INFO", {"guest_width": 8, "pt_levels": 4, "reserved1": 0,
                             "reserved2": 0}),
            ("SHARED_INFO", {})]:
        layout = libxc.record_by_name(name).layout
        assert json_presenter(layout, enums)(values) == \
            encode(presenter(layout, enums)(values)), (name, values)
    from xenmig_core.spec.layout import FieldSpec, Layout
    modes = Layout("modes", [FieldSpec(id="modes", type="u32", repeat=3, enum="tsc_mode")])
    values = {"modes": array("I", [0, 1, 2])}        # a run of values, but enum names
    assert json_presenter(modes, enums)(values) == encode(presenter(modes, enums)(values))
    assert '"default"' in json_presenter(modes, enums)(values)
    tsc = libxc.record_by_name("X86_TSC_INFO").layout
    assert '"mode": "default"' in json_presenter(tsc, enums)({"mode": 0, "khz": 1, "nsec": 1,
                                                               "incarnation": 0,
                                                               "reserved": 0})


# -- output written in large pieces --------------------------------------------------------
def test_json_renderers_write_what_json_dumps_writes() -> None:
    from xenmig_core.render.json import JsonRenderer
    items = [{"kind": "record", "summary": "caf\u00e9 \"q\" \\ \u2028\n\x00", "n": -1,
              "big": 2**64 - 1, "f": 0.1, "inf": float("inf"), "none": None, "flags": [True, False],
              "nested": {"pfn": [{"first": 0, "count": 3}, 7], "": {}}, "empty": []},
             {"kind": "end", "valid": True}]
    lines = io.StringIO()
    jsonl = JsonlRenderer(lines)
    jsonl.begin({"kind": "dump"})
    for item in items:
        jsonl.item(item)
    jsonl.end()
    assert lines.getvalue().splitlines() == [json.dumps(i) for i in [{"kind": "dump"}, *items]]
    doc = io.StringIO()
    whole = JsonRenderer(doc)
    whole.begin({"kind": "dump", "xenmig_dump": 1})
    for item in items:
        whole.item(item)
    whole.end()
    assert doc.getvalue() == (json.dumps({"xenmig_dump": 1})[:-1] + ', "items": [\n'
                              + ",\n".join(json.dumps(i) for i in items) + "\n]}\n")


@pytest.mark.parametrize("to", ["text", "jsonl", "json"])
def test_items_before_an_error_that_stops_the_dump_are_written(registry, to) -> None:
    """The renderers gather their output: an error that stops the walk (here raised by an
    observer at record 20) still leaves every item before it in the output."""
    from xenmig_core.engine import Consumer
    from xenmig_core.render import RENDERERS

    class Stop(Exception):
        pass

    class StopAt(Consumer):
        def on_record(self, record) -> None:
            if record.index == 20:
                raise Stop

    out = io.StringIO()
    with ByteSource.open(str(ROOT / "examples" / "remus-3-checkpoints.libxl")) as source, \
            pytest.raises(Stop):
        dump_source(registry, source, RENDERERS[to](out), DumpOptions(pages="ref"),
                    observer=StopAt())
    text = out.getvalue()
    if to == "text":
        assert "record 19 " in text and "record 20 " not in text
    else:
        lines = text.splitlines()[1:]          # after the metadata
        indexes = [json.loads(line.rstrip(","))["index"] for line in lines
                   if '"kind": "record"' in line]
        assert indexes == list(range(20))


# -- a third party's record type -----------------------------------------------------------
EXTENSION = """
xenmig_spec: 1
extends: libxc
enums:
  note_level: {0: debug, 1: info, 2: alarm}
records:
  types:
    - id: 0x80000100
      name: MY_NOTE
      body:
        - {id: level, type: u32, enum: note_level}
        - {id: flags, type: u32}
        - {id: text, type: bytes, size: rest}
      summary: "level {enum_name('note_level', level)}"
"""


def test_third_party_record_is_dumped_and_built(tmp_path, cli) -> None:
    spec = tmp_path / "note.yaml"
    spec.write_text(EXTENSION)
    registry = open_registry([spec], autoload=False)
    sample = SAMPLES["hvm-v3"]()
    from xenmig_libxc.samples import Step
    sample.steps.insert(sample.index("END"),
                        Step("MY_NOTE", {"level": 2, "flags": 5, "text": b"hello, xen"}))
    stream = tmp_path / "noted"
    stream.write_bytes(assemble(registry.specs["libxc"], sample))
    result = cli("dump", "--spec", str(spec), str(stream), "--type", "MY_NOTE")
    assert result.exit_code == 0, result.stderr
    assert "MY_NOTE (18 bytes): level alarm" in result.stdout
    assert "level=alarm flags=5 text=68656c6c6f2c2078656e" in result.stdout
    description = tmp_path / "noted.yaml"
    assert cli("dump", "--spec", str(spec), str(stream), "-t", "yaml", "-o",
               str(description)).exit_code == 0
    assert cli("build", "--spec", str(spec), str(description), "-o",
               str(tmp_path / "again")).exit_code == 0
    assert (tmp_path / "again").read_bytes() == stream.read_bytes()


def test_variants_cover_every_item_kind(registry, streams) -> None:
    kinds = set()
    for name in VARIANTS:
        out, _ = dump_text(registry, ByteSource.from_bytes(streams[name]), "json")
        for item in _items(out):
            kinds.add(item["kind"])
            kinds.update(k for k in ("body", "padding", "payload") if k in item)
    out, _ = dump_text(registry, ByteSource.from_bytes(streams["hvm-trailing-garbage"]), "json")
    kinds.update(i["kind"] for i in _items(out))
    assert kinds >= {"stream", "header", "record", "diagnostic", "raw", "trailing", "end",
                     "body", "padding", "payload"}


def test_long_text_bytes_shown_as_text_and_rebuilt(tmp_path, cli) -> None:
    spec = tmp_path / "note.yaml"
    spec.write_text(EXTENSION)
    registry = open_registry([spec], autoload=False)
    sample = SAMPLES["hvm-v3"]()
    from xenmig_libxc.samples import Step
    note = b"line one: \xc3\xa9t\xc3\xa9\n\tline two \r\n" * 4 + b"\0\0"
    sample.steps.insert(sample.index("END"), Step("MY_NOTE", {"level": 0, "text": note}))
    stream = tmp_path / "noted"
    stream.write_bytes(assemble(registry.specs["libxc"], sample))
    result = cli("dump", "--spec", str(spec), str(stream), "--type", "MY_NOTE")
    assert f"text: {len(note)} bytes of text + 2 NUL" in result.stdout
    assert "| line one: \u00e9t\u00e9" in result.stdout
    for to in ("yaml", "json"):
        description = tmp_path / f"noted.{to}"
        assert cli("dump", "--spec", str(spec), str(stream), "-t", to, "-o",
                   str(description)).exit_code == 0
        doc = yaml.safe_load(description.read_text())
        item = next(i for i in doc["items"] if i.get("type") == "MY_NOTE")
        assert item["fields"]["text"][1] == {"zeros": 2}
        assert cli("build", "--spec", str(spec), str(description), "-o",
                   str(tmp_path / "again")).exit_code == 0
        assert (tmp_path / "again").read_bytes() == stream.read_bytes()
