"""Records that really carry a large body (issue 14): more than 64 MiB of bytes that all
arrive, within the format's cap, cost xenmig a bounded amount of memory.

For each format that has a record able to carry such a body, one stream is written once per
session (module fixture, the body in pieces: see bigstreams.py) and ``xenmig verify`` and
``xenmig dump`` run on it from a file and from a pipe, each in a child whose own peak RSS
(tests/rss.py) must stay under 64 MiB, with the right verdict; ``dump`` shows the large field
as its length and the sha256 of the bytes written (or the values derived from it).
Legacy images cap their loaded chunks at 64 MiB: theirs carries 60 MiB, and is converted too.
Headers hold at most 16 MiB of text, whose parse trees would take many times that: an xl
configuration and a libvirt XML of 6-8 MiB are not parsed (a warning). xenstore records are
at most 16 MiB; a stream of long node paths checks the cap on the paths its checks keep.
"""

from __future__ import annotations

import filecmp
import struct
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from bigstreams import MIB, libxc_items, libxl_items, repeated, write_stream
from rss import RSS_LIMIT, run_xenmig

from xenmig_libxc.samples import XTAB, Step, hvm_context_blob, hvm_sample, pv_sample
from xenmig_libxl.samples import back_channel_steps, hvm_libxl_sample, qemu_blob

#: the large bodies: more than the RSS limit itself
BIG = 66 * MIB


@dataclass
class Case:
    """A stream to write (returns the sha256 of its large body) and what xenmig says."""

    write: Callable[[Path], str]
    code: int                          # verify's and dump's exit code
    verify: str                        # in verify's output
    dump: tuple[str, ...] = ()         # in dump's output ("{sha256}": the body's digest)
    fmt: str | None = None


def _hvm_context(path: Path) -> str:
    """An HVM context whose vcpu 0 has a second CPU_XSAVE entry of 66 MiB (extended state)
    before END: the walk reads its descriptor, and decodes its body from the spilled blob."""
    blob = hvm_context_blob(2)
    head = struct.pack("<QQQ", 7, 7, 7) + bytes(512 + 64)
    entry = struct.pack("<HHI", 16, 0, len(head) + BIG) + head

    def body() -> Iterator[bytes]:
        yield blob[:-8] + entry
        yield from repeated(bytes(range(64)), BIG)
        yield blob[-8:]
    return write_stream(path, libxc_items(hvm_sample()), "HVM_CONTEXT", {}, body(),
                        len(blob) + len(entry) + BIG)


def _hvm_entries(path: Path) -> str:
    """An HVM context of many small entries (5.4 MiB): 4200 CPU entries, then TSC_ADJUST
    entries for 65536 vcpus: the walk's bookkeeping and dump's view of the entries stay
    bounded (the view decodes the first 512 KiB's fields)."""
    from xenmig_libxc.samples import hvm_cpu_body, hvm_entry
    cpu = hvm_cpu_body("<", 0)
    blob = hvm_context_blob(1)[:-8] + b"".join(hvm_entry("<", 2, i, cpu) for i in range(4200))
    blob += b"".join(hvm_entry("<", 19, i, bytes(8)) for i in range(1 << 16))
    blob += hvm_entry("<", 0, 0, b"")
    return write_stream(path, libxc_items(hvm_sample()), "HVM_CONTEXT", {}, [blob], len(blob))


def _p2m_frames(path: Path) -> str:
    """A 64-bit PV guest's p2m frame list over the largest pfn range (2^32 pfns): 2^23
    frames, 64 MiB (+ 8 bytes of fields)."""
    frames = 1 << 23
    return write_stream(path, libxc_items(pv_sample()), "X86_PV_P2M_FRAMES",
                        {"p2m_start_pfn": 0, "p2m_end_pfn": 0xFFFFFFFF},
                        repeated(struct.pack("<Q", 0xABCDE), 8 * frames), 8 * frames)


def _page_data(path: Path) -> str:
    """8.25 M pfns of an HVM hole (XTAB, no data) in one PAGE_DATA; the very last word has
    an invalid page type: found in the spilled array's last piece."""
    count = BIG // 8

    def words() -> Iterator[bytes]:
        step = 1 << 16
        for base in range(0, count, step):
            n = min(step, count - base)
            batch = [(XTAB << 60) | (0x100000 + base + i) for i in range(n)]
            if base + n == count:
                batch[-1] = (5 << 60) | 0x42
            yield struct.pack(f"<{n}Q", *batch)
    return write_stream(path, libxc_items(hvm_sample()), "PAGE_DATA", {"count": count},
                        words(), 8 * count)


def _emulator_context(path: Path) -> str:
    """A libxl stream whose QEMU device state is 66 MiB (a payload, scanned as it passes)."""
    blob = qemu_blob(3)

    def body() -> Iterator[bytes]:
        yield blob[:-1]
        yield from repeated(bytes(range(256)), BIG)
        yield blob[-1:]
    return write_stream(path, libxl_items(hvm_libxl_sample()), "EMULATOR_CONTEXT",
                        {"emulator_id": 2, "index": 0}, body(), len(blob) + BIG)


def _dirty_pfns(path: Path) -> str:
    """A COLO back channel whose first dirty pfn list holds 8.25 M pfns."""
    items = [("record", "colo-back-channel", step) for step in back_channel_steps(2)]
    return write_stream(path, items, "CHECKPOINT_DIRTY_PFN_LIST", {},
                        repeated(struct.pack("<Q", 0x1234), BIG), BIG)


def _legacy_toolstack(path: Path) -> str:
    """A legacy HVM image whose toolstack chunk is libxl physmap data followed by 60 MiB
    that the reader ignores (the chunk cap is 64 MiB)."""
    from xenmig_legacy.physmap import build_physmap
    from xenmig_legacy.samples import DEFAULT_PHYSMAP, LegacyWriter, hvm_image
    writer = LegacyWriter(64)
    mark = writer.toolstack(b"MARK")
    image = hvm_image(physmap=None, extra_chunks=[mark]).data
    at = image.index(mark)
    physmap = build_physmap(list(DEFAULT_PHYSMAP), 64)
    size = 60 * MIB
    import hashlib
    digest = hashlib.sha256(physmap)
    with open(path, "wb") as out:
        out.write(image[:at] + struct.pack("<iI", -18, len(physmap) + size) + physmap)
        for part in repeated(b"\xa5" * 64, size):
            out.write(part)
            digest.update(part)
        out.write(image[at + len(mark):])
    return digest.hexdigest()


def _xl_config(path: Path) -> str:
    """An xl save file whose JSON configuration is 6 MiB of empty lists (parsed, it would
    take over 60 MiB): not parsed, a warning."""
    import xenmig_core
    from xenmig_libxl.samples import assemble_libxl
    from xenmig_xl.samples import hvm_config, hvm_guest_sample, json_config_bytes, xl_file
    specs = xenmig_core.open_registry().specs
    config = hvm_config()
    config["pad"] = [[] for _ in range(500_000)]
    path.write_bytes(xl_file(specs["xl"], assemble_libxl(specs, hvm_guest_sample()),
                             config=json_config_bytes(config)))
    return ""


def _libvirt_xml(path: Path) -> str:
    """A libvirt save file whose domain XML is 8 MiB of empty elements (an element tree of
    two million nodes): not parsed, a warning."""
    import xenmig_core
    from xenmig_libxl.samples import assemble_libxl
    from xenmig_xl.samples import domain_xml, hvm_guest_sample, libvirt_file
    specs = xenmig_core.open_registry().specs
    xml = domain_xml().replace("</domain>", "<x/>" * 2_000_000 + "</domain>").encode()
    path.write_bytes(libvirt_file(specs["libvirt"], assemble_libxl(specs, hvm_guest_sample()),
                                  xml=xml + b"\0"))
    return ""


def _xenstore_paths(path: Path) -> str:
    """A xenstore stream of 200 nodes with 64 KiB paths (13 MiB): the paths the checks
    remember stop at their cap (8 MiB), with a warning."""
    import xenmig_core
    from xenmig_xenstore.samples import assemble_xenstore, node
    steps = [node("/" + f"p{i:05d}" + "x" * 65000) for i in range(200)]
    steps.append(Step("END"))
    path.write_bytes(assemble_xenstore(xenmig_core.open_registry().specs["xenstore"], steps))
    return ""


CASES = {
    "libxc-hvm-context": Case(_hvm_context, 0, "valid: libxc stream v3, x86 HVM",
                              ("sha256={sha256}",)),
    "libxc-hvm-entries": Case(_hvm_entries, 1, "at or above HVM_MAX_VCPUS (128)",
                              ("fields_not_shown",)),
    "libxc-p2m-frames": Case(_p2m_frames, 0, "valid: libxc stream v3, x86 PV",
                             ("sha256={sha256}",)),
    "libxc-page-data": Case(_page_data, 1, "pfn[8650751]: page type 0x5 is invalid",
                            ("pfn=0x100000-0x93fffe xtab (8650751), 0x42 unknown(0x5) (1)",)),
    "libxl-emulator-context": Case(_emulator_context, 0, "valid: libxl stream v2"),
    "colo-dirty-pfns": Case(_dirty_pfns, 0, "valid", ("sha256={sha256}",),
                            fmt="colo-back-channel"),
    "xl-config": Case(_xl_config, 0, "is not parsed (xenmig parses at most 1 MiB",
                      ("is not parsed",)),
    "libvirt-xml": Case(_libvirt_xml, 0, "is not parsed (xenmig parses at most 1 MiB",
                        ("is not parsed",)),
    "xenstore-paths": Case(_xenstore_paths, 0, "than xenmig keeps track of",
                           ("end: valid, 201 records, 13008024 bytes, 1 warning",)),
    "legacy-toolstack": Case(_legacy_toolstack, 0, "valid: legacy hvm image",
                             ("libxl physmap, 2 entries", "sha256={sha256}")),
}


@pytest.fixture(scope="module")
def streams(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, str]]:
    """Each case's stream, written on first use (once per session), and its body's digest."""
    folder = tmp_path_factory.mktemp("large-bodies")
    written: dict[str, tuple[Path, str]] = {}

    def get(name: str) -> tuple[Path, str]:
        if name not in written:
            path = folder / name
            written[name] = (path, CASES[name].write(path))
        return written[name]
    return get


@pytest.mark.parametrize("name", list(CASES))
def test_large_body_costs_bounded_memory(name: str, streams) -> None:
    case = CASES[name]
    path, digest = streams(name)
    extra = ["--from", case.fmt] if case.fmt else []
    runs = [(command, source) for command in ("verify", "dump") for source in ("file", "pipe")]

    def run(command: str, source: str) -> tuple:
        args = [command, *extra, str(path) if source == "file" else "-"]
        return run_xenmig(args, path if source == "pipe" else None, with_stdout=True)
    with ThreadPoolExecutor(len(runs)) as pool:
        results = list(pool.map(lambda r: run(*r), runs))
    for (command, source), (code, rss, err, out) in zip(runs, results, strict=True):
        where = f"{name}: {command} from a {source}"
        assert "Traceback" not in err, f"{where}: {err}"
        assert code == case.code, f"{where}: exit {code}: {err[-2000:]}"
        assert rss < RSS_LIMIT, f"{where}: peak RSS {rss >> 20} MiB"
        if command == "verify":
            assert case.verify in out + err, f"{where}: {out[-2000:]} {err[-2000:]}"
        else:
            for shown in case.dump:
                assert shown.format(sha256=digest) in out, f"{where}: {out[-3000:]}"


def test_large_legacy_chunk_converts_in_bounded_memory(streams, tmp_path: Path) -> None:
    """``convert`` reads through the same engine: the 60 MiB toolstack chunk, from a file
    and a pipe, gives the libxl stream with its physmap xenstore data."""
    path, _digest = streams("legacy-toolstack")
    for source in ("file", "pipe"):
        out = tmp_path / f"{source}.libxl"
        code, rss, err = run_xenmig(["convert", str(path) if source == "file" else "-",
                                     "-o", str(out), "--to", "libxl"],
                                    path if source == "pipe" else None)
        assert code == 0 and "Traceback" not in err, err
        assert rss < RSS_LIMIT, f"{source}: peak RSS {rss >> 20} MiB"
        assert b"physmap/f0000000/start_addr\0" in out.read_bytes()


def test_spilled_field_reads_back_unchanged(tmp_path: Path) -> None:
    """The decoded value of a large field is the same as an in-memory decode would give:
    an HVM_PARAMS-sized struct array and a big-endian u64 array through a pipe-like reader,
    compared item by item, with the same checks reported."""
    import io

    import xenmig_core.spec.layout as layout_module
    from xenmig_core.source import ByteSource
    from xenmig_core.spec.layout import BytesReader, Check, FieldSpec, Layout
    from xenmig_core.spec.spill import SPILL_MIN, SpilledArray, TooLarge

    n = SPILL_MIN // 8 + 3
    words = list(range(n))
    words[7] = 1 << 63
    data = struct.pack(f">{n}Q", *words)
    spec = FieldSpec("pfn", "u64", repeat="rest", checks=[Check("max", 1 << 62)])
    layout = Layout("t", [spec])

    class Pipe(io.RawIOBase):
        def __init__(self) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[override]
            return self._data.readinto(buffer)
    from xenmig_core.engine.reader import SourceReader
    spilled = layout.decode(SourceReader(ByteSource(Pipe(), "pipe"), len(data), 1), ">")
    value = spilled["pfn"]
    assert isinstance(value, SpilledArray) and len(value) == n
    assert value[7] == 1 << 63 and value[-1] == n - 1 and list(value[5:9]) == words[5:9]
    assert value == words
    import hashlib
    assert value.summary() == {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with pytest.raises(TooLarge, match="not held in memory"):
        bytes(value)
    old = layout_module.SPILL_MIN
    layout_module.SPILL_MIN = 1 << 40        # the same body, decoded in memory
    try:
        held = layout.decode(BytesReader(data), ">")
    finally:
        layout_module.SPILL_MIN = old
    assert not isinstance(held["pfn"], SpilledArray) and value == held["pfn"]
    assert layout.check(spilled, {}) == layout.check(held, {}) == [
        ("pfn", "[7] must be at most 4611686018427387904, found 9223372036854775808",
         "error")]


def test_every_dump_format_of_many_entries_costs_bounded_memory(streams) -> None:
    """An item of thousands of entries (the HVM context's view) is emitted as it is walked:
    YAML too (PyYAML's node graph of the whole item cost 70 MiB), with the same text as
    before (tests/golden)."""
    path, _digest = streams("libxc-hvm-entries")
    for fmt in ("yaml", "json", "text"):
        code, rss, err, out = run_xenmig(["dump", "-t", fmt, str(path)], with_stdout=True)
        assert "Traceback" not in err and code == 1, f"-t {fmt}: exit {code}: {err[-2000:]}"
        assert rss < RSS_LIMIT, f"-t {fmt}: peak RSS {rss >> 20} MiB"
        assert "END" in out, f"-t {fmt}: {out[-500:]}"


def test_forwarding_a_large_record_holds_it_on_disk(streams, tmp_path: Path) -> None:
    """--forward holds a record until its checks ran: a 66 MiB HVM_CONTEXT waits in a
    temporary file, not in memory, and goes out byte-identical."""
    path, _digest = streams("libxc-hvm-context")
    out = tmp_path / "forwarded"
    for source in ("file", "pipe"):
        args = ["verify", "-q", str(path) if source == "file" else "-", "--forward", str(out)]
        code, rss, err = run_xenmig(args, path if source == "pipe" else None)
        assert code == 0 and "Traceback" not in err, f"{source}: exit {code}: {err[-2000:]}"
        assert rss < RSS_LIMIT, f"{source}: peak RSS {rss >> 20} MiB"
        assert filecmp.cmp(out, path, shallow=False), source
