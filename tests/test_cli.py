"""The ``xenmig verify`` command line: exit codes, inputs (path, stdin, fd:N), --json, -q, -v.

Most tests use typer's CliRunner (in process, fast); those about real pipes, file
descriptors and the console script run ``python -m xenmig_core`` as a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, run_xenmig

from xenmig_libxc.samples import Step, assemble, pv_sample

PV = ROOT / "examples" / "pv64-2vcpu-v3.libxc"
HVM = ROOT / "examples" / "hvm-v3.libxc"


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    return lines[0]


@pytest.fixture
def broken(tmp_path, libxc) -> Path:
    """A PV stream with a bad page type in record 5 and a second error in record 7."""
    sample = pv_sample()
    sample.steps[5].fields["pfn"][3] = (6 << 60) | 3
    sample.steps[5].payload = sample.steps[5].payload[:-4096]
    sample.steps[7].fields["reserved"] = 1
    path = tmp_path / "broken.libxc"
    path.write_bytes(assemble(libxc, sample))
    return path


# -- exit codes ---------------------------------------------------------------------------------
def test_valid_exit_0(cli) -> None:
    result = cli("verify", str(PV))
    assert result.exit_code == 0
    assert one_line(result.stdout) == (
        f"{PV}: valid: libxc stream v3, x86 PV, 64-bit, little-endian; 18 records, "
        "397800 bytes")
    assert result.stderr == ""


def test_invalid_exit_1_one_line(cli, broken) -> None:
    result = cli("verify", str(broken))
    assert result.exit_code == 1
    assert result.stdout == ""
    line = one_line(result.stderr)
    assert line.startswith("xenmig: invalid: record 5 (PAGE_DATA) @0xa8: pfn[3]: page type "
                           "0x6 is invalid (0x6000000000000003)")
    assert line.endswith("(1 more; -v shows all)")


def test_missing_file_exit_2(cli, tmp_path) -> None:
    result = cli("verify", str(tmp_path / "nope.libxc"))
    assert result.exit_code == 2
    assert one_line(result.stderr) == \
        f"xenmig: error: {tmp_path / 'nope.libxc'}: cannot open: No such file or directory"


def test_directory_exit_2(cli, tmp_path) -> None:
    result = cli("verify", str(tmp_path))
    assert result.exit_code == 2
    assert "is a directory" in one_line(result.stderr).lower()


def test_unknown_format_exit_2(cli) -> None:
    result = cli("verify", "--from", "libxq", str(PV))
    assert result.exit_code == 2
    assert one_line(result.stderr).startswith("xenmig: error: unknown format 'libxq' (known: ")
    assert "libxc" in result.stderr


def test_unknown_option_exit_2(cli) -> None:
    result = cli("verify", "--frobnicate", str(PV))
    assert result.exit_code == 2


def test_garbage_exit_1(cli, tmp_path) -> None:
    path = tmp_path / "garbage"
    path.write_bytes(b"this is not a migration stream at all\n" * 10)
    result = cli("verify", str(path))
    assert result.exit_code == 1
    assert one_line(result.stderr) == ("xenmig: invalid: @0x0: unrecognised stream: no format "
                                       "plugin recognises its first bytes "
                                       "(74 68 69 73 20 69 73 20 6e 6f 74 20 61 20 6d 69)")
    result = cli("verify", "--from", "libxc", str(path))
    assert result.exit_code == 1
    assert "image_header @0x0: marker" in one_line(result.stderr)


def test_empty_input_exit_1(cli, tmp_path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    for args, stdin in (([str(path)], None), ([], b""), (["-"], b"")):
        result = cli("verify", *args, input=stdin)
        assert result.exit_code == 1
        assert one_line(result.stderr) == "xenmig: invalid: @0x0: empty stream: nothing to verify"


def test_internal_error_exit_3(cli, monkeypatch) -> None:
    import xenmig_core.verifying as api_module

    def boom(*args, **kwargs):
        raise RuntimeError("a bug")
    monkeypatch.setattr(api_module, "verify_source", boom)
    result = cli("verify", str(PV))
    assert result.exit_code == 3
    assert one_line(result.stderr) == \
        "xenmig: internal error: RuntimeError: a bug (please report this)"


def test_warnings_go_to_stderr_and_stay_valid(cli, tmp_path, libxc) -> None:
    path = tmp_path / "be.libxc"
    path.write_bytes(assemble(libxc, pv_sample(), "big"))
    result = cli("verify", str(path))
    assert result.exit_code == 0
    assert one_line(result.stderr) == ("xenmig: warning: libxc image_header @0x0: big-endian "
                                       "stream: valid, but Xen's x86 restore refuses it")
    assert "big-endian" in one_line(result.stdout)


# -- inputs -------------------------------------------------------------------------------------
def test_stdin_pipe_subprocess() -> None:
    done = run_xenmig("verify", "-", input=PV.read_bytes())
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == ("<stdin>: valid: libxc stream v3, x86 PV, 64-bit, "
                                    "little-endian; 18 records, 397800 bytes\n")
    done = run_xenmig("verify", input=HVM.read_bytes())  # '-' is the default
    assert done.returncode == 0, done.stderr


def test_fd_of_a_file_subprocess() -> None:
    fd = os.open(HVM, os.O_RDONLY)
    try:
        done = run_xenmig("verify", f"fd:{fd}", pass_fds=(fd,))
    finally:
        os.close(fd)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"fd:{fd}: valid: libxc stream v3, x86 HVM".encode())


def test_fd_of_a_pipe_subprocess() -> None:
    """Xen's tools hand a helper an already-open descriptor, often a socket or pipe."""
    read_end, write_end = os.pipe()
    data = PV.read_bytes()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as out:
            out.write(data)
    proc = subprocess.Popen([sys.executable, "-m", "xenmig_core", "verify", "-v",
                             f"fd:{read_end}"], pass_fds=(read_end,),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(read_end)  # the child has its own copy
    writer = threading.Thread(target=feed)
    writer.start()
    stdout, stderr = proc.communicate(timeout=60)
    writer.join()
    assert proc.returncode == 0, stderr
    assert b"records 5-6  PAGE_DATA x2" in stdout


@pytest.mark.parametrize(("spec", "text"), [("fd:x", "expected fd:N"),
                                            ("fd:987", "fd:987: cannot read")])
def test_bad_fd_exit_2(cli, spec, text) -> None:
    result = cli("verify", spec)
    assert result.exit_code == 2
    assert text in one_line(result.stderr)


def test_console_script_and_module() -> None:
    script = shutil.which("xenmig", path=str(Path(sys.executable).parent))
    assert script is not None, "the xenmig console script is installed next to python"
    done = subprocess.run([script, "--version"], capture_output=True)
    assert done.returncode == 0 and done.stdout.startswith(b"xenmig ")


# -- --json -------------------------------------------------------------------------------------
def test_json_report_schema(cli) -> None:
    result = cli("verify", "--json", str(PV))
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert {k: report[k] for k in ("schema_version", "valid", "format", "stream_version",
                                   "byte_order", "guest_type", "guest_width", "xen_version",
                                   "converted_from_legacy", "size", "record_count",
                                   "errors", "warnings")} == {
        "schema_version": 1, "valid": True, "format": "libxc", "stream_version": 3,
        "byte_order": "little", "guest_type": "x86 PV", "guest_width": 64,
        "xen_version": "4.17", "converted_from_legacy": False, "size": 397800,
        "record_count": 18, "errors": 0, "warnings": 0}
    assert report["records"]["libxc.X86_PV_VCPU_BASIC"] == 2
    assert report["records"]["libxc.PAGE_DATA"] == 2
    assert report["stats"]["pages"] == {"pinned L4 page table": 1, "pinned L3 page table": 1,
                                        "L2 page table": 1, "L1 page table": 1, "normal": 89,
                                        "invalid": 3, "with data": 93}
    (stream,) = report["streams"]
    assert stream["records"]["END"] == 1 and stream["complete"] is True
    assert stream["headers"]["domain_header"] == {"type": 1, "page_shift": 12, "reserved": 0,
                                                  "xen_major": 4, "xen_minor": 17}
    assert stream["stats"]["pages"] == report["stats"]["pages"]
    assert report["diagnostics"] == []


def test_json_report_of_an_invalid_stream(cli, broken) -> None:
    result = cli("verify", "--json", str(broken))
    assert result.exit_code == 1
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["errors"] == 2
    first = report["diagnostics"][0]
    assert {k: first[k] for k in ("severity", "offset", "record_index", "record_type",
                                  "field", "format")} == {
        "severity": "error", "offset": 0xA8, "record_index": 5, "record_type": "PAGE_DATA",
        "field": "pfn[3]", "format": "libxc"}
    assert first["text"].startswith("record 5 (PAGE_DATA) @0xa8: pfn[3]: page type 0x6")


def test_json_legacy_converted(cli, tmp_path, libxc) -> None:
    sample = pv_sample()
    sample.domain_header.update(xen_major=0, xen_minor=1)
    path = tmp_path / "converted.libxc"
    path.write_bytes(assemble(libxc, sample))
    report = json.loads(cli("verify", "--json", str(path)).stdout)
    assert report["xen_version"] is None and report["converted_from_legacy"] is True


# -- -q and -v ----------------------------------------------------------------------------------
def test_quiet_prints_nothing(cli, broken, tmp_path, libxc) -> None:
    big = tmp_path / "be.libxc"
    big.write_bytes(assemble(libxc, pv_sample(), "big"))
    for path, code in ((PV, 0), (broken, 1), (big, 0)):
        result = cli("verify", "-q", str(path))
        assert (result.exit_code, result.stdout, result.stderr) == (code, "", "")
    result = cli("verify", "-q", str(tmp_path / "missing"))
    assert result.exit_code == 2  # usage errors are still reported


def test_verbose_account(cli) -> None:
    result = cli("verify", "-v", str(PV))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "@0x00000000  libxc image header: libxc stream v3, little-endian"
    assert lines[1] == "@0x00000018  libxc domain header: x86 PV, from Xen 4.17"
    assert lines[2] == ("@0x00000028  record 0  X86_PV_INFO (8 bytes): 64-bit guest, "
                        "4 levels of page tables")
    assert ("@0x000000a8  records 5-6  PAGE_DATA x2 (381712 bytes): 96 pfns, "
            "93 pages with data") in lines
    assert "@0x000611e0  record 17  END (0 bytes)" in lines
    # what the seed printed per record, more precisely
    for expected in ("record 4  X86_PV_P2M_FRAMES (16 bytes): pfns 0x0-0x5f, 1 frame",
                     "record 7  X86_TSC_INFO (24 bytes): mode default, 2400000 kHz, "
                     "123456789 ns, incarnation 1",
                     "record 8  SHARED_INFO (4096 bytes)",
                     "record 13  X86_PV_VCPU_BASIC (5176 bytes): vcpu1, 5168 bytes of context",
                     "record 16  X86_PV_VCPU_MSRS (40 bytes): vcpu1, 2 MSRs"):
        assert any(line.endswith(expected) for line in lines), expected
    assert not [line for line in lines if "record 5 " in line or "record 6 " in line]
    assert lines[-1].endswith("valid: libxc stream v3, x86 PV, 64-bit, little-endian; "
                              "18 records, 397800 bytes")


def test_verbose_squash_runs_are_broken_by_other_records(cli, tmp_path, libxc) -> None:
    sample = pv_sample()
    sample.steps.insert(6, Step("VERIFY"))
    path = tmp_path / "split.libxc"
    path.write_bytes(assemble(libxc, sample))
    lines = cli("verify", "-v", str(path)).stdout.splitlines()
    pages = [line for line in lines if "PAGE_DATA" in line]
    assert len(pages) == 2
    assert "record 5  PAGE_DATA" in pages[0] and "48 pfns (0x0..0x2f)" in pages[0]
    assert "record 7  PAGE_DATA" in pages[1]


def test_verbose_shows_every_diagnostic_inline(cli, broken) -> None:
    result = cli("verify", "-v", str(broken))
    assert result.exit_code == 1
    out = result.stdout.splitlines()
    errors = [i for i, line in enumerate(out) if "ERROR:" in line]
    assert len(errors) == 2
    # each problem right under its record's line; the broken PAGE_DATA is not folded
    first, second = errors
    assert out[first - 1].startswith("@0x000000a8  record 5  PAGE_DATA (")
    assert out[first].lstrip().startswith("ERROR: record 5 (PAGE_DATA) @0xa8: pfn[3]")
    assert out[first + 1].startswith("@0x0002f238  record 6  PAGE_DATA (")
    assert out[second - 1].startswith("@0x0005c3c8  record 7  X86_TSC_INFO")
    assert "record 7 (X86_TSC_INFO) @0x5c3c8: reserved: reserved field" in out[second]
    assert out[-1] == f"{broken}: INVALID: 2 errors"


def test_json_wins_over_verbose_and_quiet_over_both(cli) -> None:
    result = cli("verify", "-v", "--json", str(HVM))
    assert json.loads(result.stdout)["guest_type"] == "x86 HVM"
    result = cli("verify", "-q", "-v", "--json", str(HVM))
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
