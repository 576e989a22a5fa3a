"""Spilled values (xenmig_core.spec.spill): a field above SPILL_MIN reads back, checks and
walks exactly as the same field held in memory does, whatever chunk boundaries fall inside.

The walkers are compared on the same stream decoded twice: as it is (the field spilled) and
with the spill threshold raised for the test (the field in memory); their diagnostics must
be identical.
"""

from __future__ import annotations

import hashlib
import struct

import pytest
from libxl_support import build, walk

import xenmig_core.spec.layout as layout_module
from xenmig_core.spec.layout import BytesReader, FieldSpec, Layout
from xenmig_core.spec.spill import CHUNK, SPILL_MIN, SpilledBytes, TooLarge, head
from xenmig_libxc.samples import assemble, hvm_context_blob, hvm_entry, hvm_sample
from xenmig_libxl.samples import hvm_libxl_sample


@pytest.fixture
def in_memory(monkeypatch: pytest.MonkeyPatch):
    """Within the test, call it to decode every field in memory (no spilling)."""
    def hold() -> None:
        monkeypatch.setattr(layout_module, "SPILL_MIN", 1 << 40)
    return hold


def test_spilled_bytes_read_back() -> None:
    body = (bytes(range(1, 256)) * ((SPILL_MIN + CHUNK) // 255))
    at = 3 * CHUNK - 2                    # a NUL that only a search across chunks finds
    data = body[:at] + b"\0" + body[at + 1:] + b"tail\0"
    value = Layout("t", [FieldSpec("blob", "bytes", size="rest")]).decode(
        BytesReader(data), "<")["blob"]
    assert isinstance(value, SpilledBytes) and len(value) == len(data)
    assert value[5] == data[5] and value[-1] == 0 and value[CHUNK - 3:CHUNK + 5] == \
        data[CHUNK - 3:CHUNK + 5]
    assert value.find(b"\0") == at and value.find(b"\0", at + 1) == len(data) - 1
    assert value == data and value != data[:-1] + b"x" and value.startswith(data[:9])
    assert head(value, 10) == data[:10] and value.any_set()
    assert value.summary() == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert value.reader(CHUNK - 4, CHUNK + 4).take(8, "x") == data[CHUNK - 4:CHUNK + 4]
    with pytest.raises(TooLarge, match=r"blob: the whole value of \d+ bytes is not held"):
        bytes(value)
    with pytest.raises(TooLarge, match="a slice of"):
        value[0:SPILL_MIN + 1]


def _context_stream(registry, blob_tail: bytes) -> bytes:
    """An HVM libxc stream whose context is the sample's entries, then *blob_tail* (more
    entries), then END."""
    blob = hvm_context_blob(2)[:-8] + blob_tail + hvm_entry("<", 0, 0, b"")
    sample = hvm_sample()
    sample.steps[sample.index("HVM_CONTEXT")].fields["context"] = blob
    return assemble(registry.specs["libxc"], sample)


def test_hvm_context_walk_is_the_same_spilled(registry, in_memory) -> None:
    """A 5 MiB context of many entries (repeated PIT entries, a broken one across a chunk
    boundary, a 4.5 MiB CPU_XSAVE entry, an unknown typecode): the same diagnostics and
    summary whether the blob is spilled or held."""
    blob = hvm_context_blob(1)
    # the sample's PIT entry (typecode 10), repeated
    pos, pit_entry = 0, b""
    while pos < len(blob):
        typecode, _instance, length = struct.unpack_from("<HHI", blob, pos)
        if typecode == 10:
            pit_entry = blob[pos:pos + 8 + length]
        pos += 8 + length
    assert pit_entry
    xsave = hvm_entry("<", 16, 1, struct.pack("<QQQ", 7, 7, 7) + bytes(576) +
                      bytes(SPILL_MIN // 2 + CHUNK))
    tail = pit_entry * 2000 + hvm_entry("<", 10, 0, bytes(12)) + xsave + \
        hvm_entry("<", 99, 0, b"abcd") + pit_entry * (CHUNK // len(pit_entry))
    data = _context_stream(registry, tail)
    spilled_report, spilled_log = walk(registry, data)
    in_memory()
    held_report, held_log = walk(registry, data)
    assert [str(d) for d in spilled_report.diagnostics] == \
        [str(d) for d in held_report.diagnostics]
    assert any("length 12, expected 56" in str(d) for d in held_report.diagnostics)
    index = [r.name for r in held_log.records].index("HVM_CONTEXT")
    assert isinstance(spilled_log.fields[index]["context"], SpilledBytes)
    assert spilled_log.fields[index]["entries"] == held_log.fields[index]["entries"]


def test_xenstore_pairs_are_the_same_spilled(registry, in_memory) -> None:
    """5 MiB of xenstore pairs whose bad key straddles a chunk boundary, then an odd string:
    the same errors, kept pairs and summary spilled or held."""
    pair_size = len(b"device/vbd/0000000/state\x004\x00")
    count = SPILL_MIN // pair_size + 10
    data = bytearray(b"".join(b"device/vbd/%07d/state\x004\x00" % i for i in range(count)))
    start = CHUNK // pair_size * pair_size   # a key across the first chunk boundary
    assert start < CHUNK < start + pair_size - 3
    data[start:start + 1] = b"/"             # becomes absolute
    data += b"orphan\0"
    sample = hvm_libxl_sample(pages=4)
    i = sample.index("libxl", "EMULATOR_XENSTORE_DATA")
    sample.parts[i][1].fields["data"] = bytes(data)
    stream = build(registry, sample)
    results = []
    for hold in (False, True):
        if hold:
            in_memory()
        report, log = walk(registry, stream)
        index = [r.name for r in log.records].index("EMULATOR_XENSTORE_DATA")
        fields = log.fields[index]
        results.append(([str(d) for d in report.diagnostics], fields["pairs"],
                        fields.get("pairs_dropped"),
                        isinstance(fields["data"], SpilledBytes)))
    (spilled, pairs, dropped, was_spilled), (held, held_pairs, held_dropped, _) = results
    assert was_spilled and spilled == held and pairs == held_pairs and dropped == held_dropped
    assert dropped == count - 4096 and len(pairs) == 4096
    assert any(f"pairs[{start // pair_size}].key" in d and "is absolute" in d for d in held), held
    assert any(f"{2 * count + 1} strings: key/value pairs need an even number" in d
               for d in held)
