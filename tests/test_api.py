"""The public Python API (docs/api.md): every example in the docs runs; verify and records
on paths, bytes, file objects and pipes; the report is the ``verify --json`` document; the
records are dump's, in stream order, produced lazily."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT
from dumping import dump_text

import xenmig_core
from xenmig_core.errors import SourceError, UsageError
from xenmig_core.source import ByteSource
from xenmig_libxc.samples import assemble, pv_sample

PV = ROOT / "examples" / "pv64-2vcpu-v3.libxc"
XL = ROOT / "examples" / "hvm-guest.xl"
LEGACY32 = ROOT / "examples" / "pv32-legacy.img"


def python_blocks(doc: str) -> list[str]:
    """The ``python`` blocks of docs/*doc*, dedented (some stand in list items)."""
    text = (ROOT / "docs" / doc).read_text()
    return [textwrap.dedent(b) for b in re.findall(r"```python\n(.*?)```", text, re.S)]


@pytest.mark.parametrize("doc", ["api.md", "plugins.md"])
def test_every_example_in_the_docs_runs(doc, monkeypatch, capsys) -> None:
    blocks = python_blocks(doc)
    assert blocks, f"docs/{doc} has no python examples"
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/{doc} example {number + 1}", "exec"), namespace)
    assert "Traceback" not in capsys.readouterr().err


def test_report_is_the_verify_json_document(registry, cli) -> None:
    report = xenmig_core.verify(XL, registry=registry)
    done = cli("verify", "--json", str(XL))
    assert done.exit_code == 0
    assert json.loads(done.stdout) == report.to_dict()
    assert report.valid and report.format == "xl" and report.compression is None


def test_sources_path_bytes_file_object_and_pipe(registry) -> None:
    data = PV.read_bytes()
    expected = xenmig_core.verify(str(PV), registry=registry).to_dict()
    for source in (PV, data, bytearray(data), memoryview(data), io.BytesIO(data)):
        doc = xenmig_core.verify(source, registry=registry).to_dict()
        assert {k: v for k, v in doc.items() if k != "source"} == \
            {k: v for k, v in expected.items() if k != "source"}
    with subprocess.Popen(["cat", str(PV)], stdout=subprocess.PIPE) as cat:
        assert xenmig_core.verify(cat.stdout, registry=registry).valid
        assert not cat.stdout.closed            # a file object given is not closed


def test_diagnostics_name_offset_record_severity_message(registry, libxc) -> None:
    sample = pv_sample()
    sample.steps[5].fields["pfn"][3] = (6 << 60) | 3      # a page type without data
    sample.steps[5].payload = sample.steps[5].payload[:-4096]
    report = xenmig_core.verify(assemble(libxc, sample), registry=registry)
    assert not report.valid and report.error_count == 1
    (diag,) = report.errors
    assert (diag.severity, diag.offset, diag.record, diag.record_index, diag.field) == \
        ("error", 0xA8, "PAGE_DATA", 5, "pfn[3]")
    assert "page type 0x6 is invalid" in diag.message
    assert report.to_dict()["diagnostics"][0]["offset"] == 0xA8


def test_stream_parameters_are_checked(registry) -> None:
    assert xenmig_core.verify(LEGACY32, registry=registry, width=32).valid
    with pytest.raises(UsageError, match="must be 32 or 64"):
        xenmig_core.verify(LEGACY32, registry=registry, width=48)
    with pytest.raises(UsageError, match=r"unknown stream parameter 'colour'.*guest, width"):
        xenmig_core.verify(LEGACY32, registry=registry, colour="blue")


def test_a_missing_file_raises_source_error() -> None:
    with pytest.raises(SourceError, match="cannot open"):
        xenmig_core.verify("no/such/stream")
    with pytest.raises(SourceError):
        xenmig_core.records("no/such/stream")


def test_records_are_dumps_records_in_order(registry) -> None:
    """Same records, offsets, fields and derived views as ``dump -t jsonl``, including the
    streams nested in an xl save file."""
    with ByteSource.open(str(XL)) as source:
        out, _ = dump_text(registry, source, "jsonl", pages="none")
    items = [json.loads(line) for line in out.splitlines()]
    dumped = [(i["format"], i["type"], i["offset"], i["length"], i.get("fields", {}),
               i.get("view")) for i in items if i["kind"] == "record"]
    walked = [(r.format, r.name, r.offset, r.length, r.fields, r.view)
              for r in xenmig_core.records(XL, registry=registry)]
    assert walked == dumped
    assert [f for f, *_ in walked][:2] == ["libxl", "libxc"]
    headers = [(r.format, r.name) for r in xenmig_core.records(XL, registry=registry,
                                                               headers=True)
               if r.kind == "header"]
    assert headers == [(i["format"], i["name"]) for i in items if i["kind"] == "header"]


def test_records_carry_their_diagnostics_and_the_report(registry, libxc) -> None:
    sample = pv_sample()
    sample.steps[7].fields["reserved"] = 1
    walk = xenmig_core.records(assemble(libxc, sample), registry=registry)
    flagged = [(r.index, [d.field for d in r.diagnostics]) for r in walk if r.diagnostics]
    assert flagged == [(7, ["reserved"])]
    assert walk.report is not None and not walk.report.valid


def test_records_walk_lazily_and_stop_when_closed(registry, libxc) -> None:
    """The walk stays a bounded number of records ahead of the loop: after one record of a
    stream of hundreds, most of it has not been read; closing stops the thread."""
    data = assemble(libxc, pv_sample(vcpus=300))          # 1200 vcpu records
    walk = xenmig_core.records(io.BytesIO(data), registry=registry)
    next(walk)
    time.sleep(0.3)                           # give the walk time to run ahead, if it would
    assert walk._channel.items.qsize() <= 64
    assert walk._source.offset < len(data) // 2
    walk.close()
    assert not walk._thread.is_alive() and walk.report is None
    assert list(walk) == []


def test_records_raise_the_walks_exceptions(registry) -> None:
    class Failing(io.RawIOBase):
        def __init__(self) -> None:
            self.data = io.BytesIO(PV.read_bytes())

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            if self.data.tell() > 100_000:
                raise OSError(5, "Input/output error")
            return self.data.readinto(buffer)

    walk = xenmig_core.records(Failing(), registry=registry)
    with pytest.raises(SourceError, match="Input/output error"):
        list(walk)


def test_verify_is_the_api_function_after_the_engine_was_imported() -> None:
    code = ("import xenmig_core.verifier, xenmig_core.api, xenmig_core; "
            f"print(xenmig_core.verify({str(PV)!r}).valid, xenmig_core.verify.__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["True", "xenmig_core.api"], done.stderr


def test_importing_the_package_stays_cheap() -> None:
    code = ("import sys, xenmig_core; "
            "print(sorted(m for m in sys.modules if m.startswith('xenmig')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert done.stdout.strip() == "['xenmig_core', 'xenmig_core.version']", \
        done.stdout + done.stderr
