"""Compressed images (gzip, xz, bzip2, zstd): recognised by their magic bytes from a path or
stdin, for verify, dump and convert; offsets are offsets in the decompressed stream and the
messages say so; a raw stream that merely starts like one is not mistaken for it."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import sys
from importlib.resources import files

import jsonschema
import pytest
import zstandard
from conftest import ROOT, run_xenmig

import xenmig_core
from xenmig_core.decompress import sniff
from xenmig_core.errors import SourceError
from xenmig_libxc.samples import assemble, pv_sample

COMPRESSORS = {
    "gzip": gzip.compress,
    "xz": lzma.compress,
    "bzip2": bz2.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}
LEGACY = ROOT / "examples" / "hvm64-legacy.xl"


@pytest.fixture(params=sorted(COMPRESSORS))
def kind(request) -> str:
    return request.param


def test_verify_from_path_and_stdin(kind, tmp_path, cli) -> None:
    data = LEGACY.read_bytes()
    path = tmp_path / f"guest.xl.{kind}"
    path.write_bytes(COMPRESSORS[kind](data))
    summary = cli("verify", str(LEGACY)).stdout.split(": valid: ", 1)[1].strip()
    from_path = cli("verify", str(path))
    assert from_path.exit_code == 0, from_path.stderr
    assert from_path.stdout.strip() == f"{path}: valid: {summary} ({kind}-compressed)"
    from_stdin = cli("verify", "-", input=path.read_bytes())
    assert from_stdin.exit_code == 0, from_stdin.stderr
    assert from_stdin.stdout.strip() == f"<stdin>: valid: {summary} ({kind}-compressed)"


EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir()
                  if p.is_file() and p.suffix != ".py")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_format_verifies_compressed_from_path_and_stdin(example, kind, tmp_path,
                                                              cli) -> None:
    """Each sample stream (one of every format xenmig reads) gives the same verdict and
    summary compressed as plain, from a path and from standard input."""
    plain = cli("verify", str(example))
    assert plain.exit_code == 0, plain.stderr
    summary = plain.stdout.split(": valid: ", 1)[1].strip()
    path = tmp_path / f"{example.name}.{kind}"
    path.write_bytes(COMPRESSORS[kind](example.read_bytes()))
    for name, result in ((str(path), cli("verify", str(path))),
                         ("<stdin>", cli("verify", "-", input=path.read_bytes()))):
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip() == f"{name}: valid: {summary} ({kind}-compressed)"


def test_verify_from_a_real_pipe(tmp_path) -> None:
    packed = COMPRESSORS["xz"](LEGACY.read_bytes())
    done = run_xenmig("verify", input=packed)
    assert done.returncode == 0 and b"(xz-compressed)" in done.stdout, done.stderr


def test_offsets_are_in_the_decompressed_stream_and_say_so(kind, tmp_path, libxc, cli) -> None:
    sample = pv_sample()
    sample.steps[5].fields["pfn"][3] = (6 << 60) | 3
    sample.steps[5].payload = sample.steps[5].payload[:-4096]
    path = tmp_path / "broken.libxc.z"
    path.write_bytes(COMPRESSORS[kind](assemble(libxc, sample)))
    done = cli("verify", str(path))
    assert done.exit_code == 1
    line = done.stderr.strip()
    assert line.startswith("xenmig: invalid: record 5 (PAGE_DATA) @0xa8: pfn[3]: ")
    assert line.endswith(f" [offsets in the {kind}-decompressed stream]")
    doc = json.loads(cli("verify", "--json", str(path)).stdout)
    assert doc["compression"] == kind and doc["diagnostics"][0]["offset"] == 0xA8


def test_dump_reads_compressed_images(kind, tmp_path, cli) -> None:
    path = tmp_path / f"guest.{kind}"
    path.write_bytes(COMPRESSORS[kind](LEGACY.read_bytes()))
    args = ("dump", "-t", "jsonl", "--pages", "sha256")
    plain = [json.loads(line) for line in cli(*args, str(LEGACY)).stdout.splitlines()]
    done = cli(*args, str(path))
    assert done.exit_code == 0, done.stderr
    packed = [json.loads(line) for line in done.stdout.splitlines()]
    assert packed[1:] == plain[1:]          # all but the first line, which names the source
    # references point into files: never into a compressed one
    ref = '"ref": "'
    assert ref not in cli("dump", "-t", "jsonl", str(path)).stdout
    assert ref in cli("dump", "-t", "jsonl", str(LEGACY)).stdout
    assert packed[0]["compression"] == kind and "compression" not in plain[0]
    assert cli("dump", str(path)).stdout.splitlines()[0].endswith(
        f"({kind}-compressed: offsets in the decompressed stream)")


def test_convert_reads_compressed_images(kind, tmp_path, cli) -> None:
    path = tmp_path / f"guest.{kind}"
    path.write_bytes(COMPRESSORS[kind](LEGACY.read_bytes()))
    assert cli("convert", str(LEGACY), "-o", str(tmp_path / "a"), "--to", "libxl",
               "-q").exit_code == 0
    done = cli("convert", str(path), "-o", str(tmp_path / "b"), "--to", "libxl", "-q")
    assert done.exit_code == 0, done.stderr
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_truncated_compressed_file_is_one_line_error(kind, tmp_path, cli) -> None:
    packed = COMPRESSORS[kind](LEGACY.read_bytes())
    path = tmp_path / "cut"
    path.write_bytes(packed[:len(packed) * 2 // 3])
    done = cli("verify", str(path))
    assert done.exit_code in (1, 2)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    assert kind in lines[0] or "truncated" in lines[0]


def test_compressed_json_dump_validates_and_builds(tmp_path, cli) -> None:
    """The dump of a compressed image follows the schema, and (with --pages hex) builds the
    decompressed stream again."""
    schema = json.loads((files("xenmig_core.schemas") / "dump.schema.json").read_text())
    path = tmp_path / "guest.xz"
    path.write_bytes(COMPRESSORS["xz"](LEGACY.read_bytes()))
    done = cli("dump", "-t", "json", "--pages", "hex", str(path))
    doc = json.loads(done.stdout)
    assert doc["compression"] == "xz"
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(doc))
    (tmp_path / "guest.json").write_text(done.stdout)
    assert cli("build", str(tmp_path / "guest.json"), "-o", str(tmp_path / "again")
               ).exit_code == 0
    assert (tmp_path / "again").read_bytes() == LEGACY.read_bytes()


def test_api_reports_the_compression(kind) -> None:
    report = xenmig_core.verify(COMPRESSORS[kind](LEGACY.read_bytes()))
    assert report.valid and report.compression == kind
    assert report.size == len(LEGACY.read_bytes())


def test_magic_alone_is_not_enough(cli) -> None:
    """A stream that starts with gzip's magic but is not gzip is read as it is: here a
    legacy image whose page count, 0x88b1f, is written 1f 8b 08 00."""
    fake = b"\x1f\x8b\x08\x00" + bytes(60)
    assert sniff(fake) is None
    assert sniff(gzip.compress(b"x" * 100)) == "gzip"
    done = cli("verify", "-f", "legacy", "-", input=fake)
    assert done.exit_code == 1 and "gzip" not in done.stderr
    assert "legacy" in cli("verify", "--json", "-", input=fake).stdout


def test_zstd_without_zstandard_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(SourceError, match=r"pip install 'xenmig\[zstd\]'"):
        xenmig_core.verify(COMPRESSORS["zstd"](LEGACY.read_bytes()))
