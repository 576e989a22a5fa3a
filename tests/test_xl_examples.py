"""The xl, libvirt and Remus examples through the CLI (CliRunner and a real subprocess), and
the committed example files against what make_examples.py writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, run_xenmig

EXAMPLES = ROOT / "examples"
FILES = ("hvm-guest.xl", "hvm-guest.libvirt", "remus-3-checkpoints.libxl")


def test_examples_are_reproducible(tmp_path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLES / "make_examples.py"), str(tmp_path)],
                          capture_output=True, check=True)
    assert done.returncode == 0
    for name in FILES:
        made = (tmp_path / name).read_bytes()
        assert made == (EXAMPLES / name).read_bytes(), name
        assert len(made) < 1 << 20


@pytest.mark.parametrize(("name", "summary"), [
    ("hvm-guest.xl", "valid: xl save file (JSON configuration) > libxl stream v2, "
                     "little-endian > libxc stream v3, x86 HVM, little-endian; 13 records"),
    ("hvm-guest.libvirt", "valid: libvirt libxl save file v2, domain hvm-guest > libxl stream "
                          "v2, little-endian > libxc stream v3, x86 HVM"),
    ("remus-3-checkpoints.libxl", "3 complete checkpoints > libxc stream v3, x86 HVM, "
                                  "little-endian, 3 checkpoints; 29 records, 118632 bytes; "
                                  "ended after checkpoint 3, as at a failover"),
])
def test_verify_subprocess(name, summary) -> None:
    done = run_xenmig("verify", str(EXAMPLES / name))
    assert done.returncode == 0, done.stderr
    assert summary in done.stdout.decode()
    assert done.stderr == b""


def test_verify_from_stdin_with_explicit_format() -> None:
    data = (EXAMPLES / "hvm-guest.xl").read_bytes()
    done = run_xenmig("verify", "-f", "xl", "-", input=data)
    assert done.returncode == 0, done.stderr
    done = run_xenmig("verify", "--from", "libxl", "-", input=data)
    assert done.returncode == 2
    assert done.stderr.decode().strip() == (
        "xenmig: error: --from libxl: this looks like an xl save file (--from xl), not libxl")


def test_verbose_account_of_an_xl_file(cli) -> None:
    result = cli("verify", "-v", str(EXAMPLES / "hvm-guest.xl"))
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "@0x00000000  xl save file header: xl save file, little-endian"
    assert lines[2].startswith("@0x00000030  xl optional data: JSON configuration, ")
    assert "domain 'hvm-guest' (hvm)" in lines[2]
    assert lines[3] == "@0x0000038e  libxl migration stream follows:"
    assert lines[5] == "@0x0000039e    record 0  LIBXC_CONTEXT (0 bytes)"
    assert lines[6] == "@0x000003a6    libxc migration stream follows:"
    assert "(libxl migration stream continues)" in result.stdout
    assert "EMULATOR_XENSTORE_DATA (105 bytes): qemu-upstream, index 0, 3 keys" in result.stdout


def test_verbose_account_of_checkpoints(cli) -> None:
    result = cli("verify", "-v", str(EXAMPLES / "remus-3-checkpoints.libxl"))
    assert result.exit_code == 0
    text = result.stdout
    for n in (1, 2, 3):
        assert f"CHECKPOINT (0 bytes): end of checkpoint {n}" in text
        assert f"CHECKPOINT_END (0 bytes): end of checkpoint {n}" in text
    assert text.count("(libxc migration stream continues)") == 2


def test_json_covers_the_whole_file(cli) -> None:
    result = cli("verify", "--json", str(EXAMPLES / "hvm-guest.libvirt"))
    report = json.loads(result.stdout)
    assert report["valid"] and report["format"] == "libvirt"
    assert [s["format"] for s in report["streams"]] == ["libvirt", "libxl", "libxc"]
    assert [s["offset"] for s in report["streams"]] == [0, 292, 316]
    kinds = [(e["kind"], e.get("format"), e.get("name")) for e in report["account"]]
    assert kinds[:5] == [("stream", "libvirt", None), ("header", "libvirt", "header"),
                         ("header", "libvirt", "domain_xml"), ("stream", "libxl", None),
                         ("header", "libxl", "header")]
    assert ("records", "libxc", "PAGE_DATA") in kinds
    assert kinds[-1] == ("record", "libxl", "END")
    assert report["guest_type"] == "x86 HVM" and report["domain_name"] == "hvm-guest"


def test_json_of_a_checkpointed_stream(cli) -> None:
    result = cli("verify", "--json", str(EXAMPLES / "remus-3-checkpoints.libxl"))
    report = json.loads(result.stdout)
    assert report["checkpoints"] == 3
    assert report["end_note"] == "ended after checkpoint 3, as at a failover"
    ends = [e["offset"] for e in report["account"] if e.get("name") == "CHECKPOINT_END"]
    assert len(ends) == 3


def test_invalid_file_one_line(tmp_path) -> None:
    data = bytearray((EXAMPLES / "remus-3-checkpoints.libxl").read_bytes())
    cut = tmp_path / "cut.libxl"
    cut.write_bytes(data[:-8])
    done = run_xenmig("verify", str(cut))
    assert done.returncode == 1
    err = done.stderr.decode().strip()
    assert err == ("xenmig: invalid: libxl end of stream @0x1cf60: stream ended inside "
                   "checkpoint 3, before its CHECKPOINT_END: the last complete checkpoint is 2 "
                   "(a restore would fail over to it)")


def test_verbose_puts_errors_under_their_record(cli, tmp_path) -> None:
    data = bytearray((EXAMPLES / "hvm-guest.xl").read_bytes())
    key = data.index(b"physmap/f0000000/start_addr")
    data[key:key + 1] = b"/"
    broken = tmp_path / "broken.xl"
    broken.write_bytes(bytes(data))
    result = cli("verify", "-v", str(broken))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "EMULATOR_XENSTORE_DATA (105 bytes)" in line)
    assert lines[at + 1].strip().startswith("ERROR: record 10 (EMULATOR_XENSTORE_DATA)")
    assert "is absolute" in lines[at + 1]
    assert lines[-1].endswith(": INVALID: 1 error")
