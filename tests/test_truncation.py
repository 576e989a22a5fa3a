"""A small stream cut at every byte offset: always a clean, located error, never a crash.

Library calls keep this fast (one walk per offset); a few cuts also go through the CLI as a
real subprocess, from a file and from a pipe.
"""

from __future__ import annotations

import random
import struct

import pytest
from conftest import run_xenmig, verify_bytes

from xenmig_libxc.samples import NOTAB, XTAB, Step, assemble, hvm_sample, page_data, pv_sample


def small_stream(libxc) -> bytes:
    """A valid v3 HVM stream of about 4.6 KiB: every record kind an HVM stream has, one page
    of payload (skipped by seeking or through the buffer)."""
    sample = hvm_sample()
    blob = (struct.pack("<HHI", 1, 0, 24) + struct.pack("<IIQII", 0x54381286, 1, 0, 0, 0)
            + struct.pack("<HHI", 0, 0, 0))
    i = sample.index("PAGE_DATA")
    sample.steps[i:i + 2] = [page_data([(0, NOTAB), (1, XTAB)])]
    sample.steps[sample.index("HVM_CONTEXT")] = Step("HVM_CONTEXT", {"context": blob})
    return assemble(libxc, sample)


@pytest.fixture(scope="module")
def small(libxc) -> bytes:
    return small_stream(libxc)


def test_small_stream_is_valid(registry, small) -> None:
    report = verify_bytes(registry, small)
    assert report.valid and not report.diagnostics
    assert len(small) < 5000


@pytest.mark.parametrize("fmt", ["libxc", "auto"])
def test_every_cut_is_a_clean_error_with_an_offset(registry, small, fmt) -> None:
    for cut in range(len(small)):
        report = verify_bytes(registry, small[:cut], fmt)
        errors = [d for d in report.diagnostics if d.is_error]
        assert errors, f"cut at {cut}: no error"
        first = errors[0]
        assert first.offset is not None and 0 <= first.offset <= cut, f"cut {cut}: {first}"
        text = str(first)
        assert "@0x" in text, text
        if fmt == "auto" and cut < 12:
            # too short to recognise: says so
            assert ("empty stream" if cut == 0 else "unrecognised stream") in text
        elif cut < 40:
            assert "truncated" in text and "header" in text, text
        else:
            assert "truncated" in text or "stream ended before END" in text, text


def test_cut_inside_a_payload_names_the_record(registry, small) -> None:
    """A cut inside PAGE_DATA's page bytes names the record, its offset, and what is short."""
    pd = small.index(struct.pack("<II", 1, 8 + 16 + 4096))
    report = verify_bytes(registry, small[:pd + 100])
    (diag,) = [d for d in report.diagnostics if d.is_error]
    assert (diag.record_index, diag.record_type) == (3, "PAGE_DATA")
    assert "truncated" in diag.message and "payload" in diag.message
    assert f"{pd + 8 + 24:#x}" in diag.message  # where the page bytes start


def test_cut_at_record_boundary_names_last_record(registry, small) -> None:
    end = len(small) - 8
    report = verify_bytes(registry, small[:end])
    (diag,) = [d for d in report.diagnostics if d.is_error]
    assert diag.offset == end
    assert "stream ended before END (last record 6, HVM_PARAMS)" in diag.message


@pytest.mark.parametrize(("cut", "via"), [(5, "file"), (44, "pipe"), (1000, "file"),
                                          (-1, "pipe")])
def test_cut_streams_through_the_cli(small, tmp_path, cut, via) -> None:
    """Exit 1 and one line on stderr naming the offset, from a file and from a pipe."""
    data = small[:cut]
    path = tmp_path / "cut.libxc"
    path.write_bytes(data)
    if via == "file":
        done = run_xenmig("verify", "--from", "libxc", str(path))
    else:
        done = run_xenmig("verify", "--from", "libxc", "-", input=data)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xenmig: invalid: "), lines
    assert "truncated" in lines[0] and "@0x" in lines[0]
    assert done.stdout == b""


def test_mutated_streams_never_raise(registry, small, libxc) -> None:
    """Random byte flips, deletions and insertions (seeded, so reproducible): every result
    is a report, never an exception, and every error names where it is."""
    bases = [small, assemble(libxc, pv_sample(pages=4, vcpus=1, width=4), "big")]
    rng = random.Random(20251126)
    for _ in range(400):
        data = bytearray(rng.choice(bases))
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(data))
            roll = rng.random()
            if roll < 0.6:
                data[pos] = rng.randrange(256)
            elif roll < 0.8:
                del data[pos:pos + rng.randint(1, 12)]
            else:
                data[pos:pos] = rng.randbytes(rng.randint(1, 12))
        report = verify_bytes(registry, bytes(data), rng.choice(["auto", "libxc"]))
        report.to_dict()
        for diag in report.diagnostics:
            assert diag.offset is not None or diag.record_index is not None, str(diag)
