"""Hostile lengths (issue 14): a record or header that claims the largest length its format
allows and carries a few bytes costs memory in proportion to the bytes that arrived.

Each case is a real example (or sample) stream cut a few bytes after one length field that
was set to its format's largest value. ``xenmig verify`` and ``xenmig dump`` run on it from
a file and from a pipe, each in a child whose own peak RSS (``os.wait4``, see
tests/rss.py) must stay under 64 MiB, and must end with a one-line error (exit 1, no
traceback).

The framed cases are generated: the offsets of each example's records come from the
public API (``xenmig_core.records``), the length field's position and size from the
format's framing; a few records per format are sampled, not all.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rss import RSS_LIMIT
from rss import run_xenmig as _run

import xenmig_core
from xenmig_core.engine.framing import MAX_HEADER_BYTES
from xenmig_core.spec.layout import INT_CODES
from xenmig_core.spec.model import Framing

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
#: How many body bytes each hostile case still carries after the length field.
CARRIED = 24
#: Records sampled per framed format (the ones named first, then the first others).
PREFERRED = {"libxc": ("X86_PV_P2M_FRAMES", "PAGE_DATA", "X86_HVM_CONTEXT"),
             "libxl": ("EMULATOR_CONTEXT",), "xenstore": ("NODE_DATA",),
             "colo-back-channel": ()}
PER_FORMAT = 1


def _framing_cut(data: bytes, offset: int, framing: Framing, order: str) -> bytes:
    """*data* up to the record at *offset*, its length set to the framing's largest."""
    type_size = struct.calcsize(INT_CODES[framing.type_code])
    code = order + INT_CODES[framing.length_code]
    out = bytearray(data[:offset + type_size + struct.calcsize(code) + CARRIED])
    struct.pack_into(code, out, offset + type_size, framing.max_length)
    return bytes(out)


def _framed_cases(path: Path, fmt: str | None = None, label: str | None = None
                  ) -> list[tuple[str, bytes, str | None]]:
    """Hostile variants of the records of the framed formats in one stream."""
    registry = xenmig_core.open_registry()
    data = path.read_bytes()
    picked: dict[str, list[tuple[str, int]]] = {}
    for record in xenmig_core.records(path, fmt or "auto"):
        spec = registry.specs[record.format]
        if spec.framing is None or spec.framing.implied or record.format not in PREFERRED:
            continue
        chosen = picked.setdefault(record.format, [])
        if any(name == record.name for name, _ in chosen):
            continue
        chosen.append((record.name, record.offset))
    cases = []
    for name, chosen in picked.items():
        order = {n: i for i, n in enumerate(PREFERRED[name])}
        chosen.sort(key=lambda item: order.get(item[0], len(order)))
        spec = registry.specs[name]
        byte_order = "<" if name != "libxc" or data[16:20] != b"\0\0\0\1" else ">"
        for record, offset in chosen[:PER_FORMAT]:
            assert spec.framing is not None
            cases.append((f"{label or path.name}:{name}:{record}",
                          _framing_cut(data, offset, spec.framing, byte_order), fmt))
    return cases


def _patched(path: Path, offset: int, code: str, value: int, keep: int
             ) -> tuple[str, bytes, None]:
    out = bytearray(path.read_bytes()[:offset + struct.calcsize(code) + keep])
    struct.pack_into(code, out, offset, value)
    return (f"{path.name}@{offset}", bytes(out), None)


def _unit_offset(path: Path, name: str) -> int:
    return next(r.offset for r in xenmig_core.records(path) if r.name == name)


def _colo_channel() -> bytes:
    from xenmig_libxl.samples import assemble_back_channel, back_channel_steps
    registry = xenmig_core.open_registry()
    return assemble_back_channel(registry.specs["colo-back-channel"], back_channel_steps(1))


def _cases() -> list[tuple[str, bytes, str | None]]:
    cases: list[tuple[str, bytes, str | None]] = []
    for example in ("pv64-2vcpu-v3.libxc", "hvm-v3.libxc", "remus-3-checkpoints.libxl",
                    "live-update.xenstore"):
        cases.extend(_framed_cases(EXAMPLES / example))
    with tempfile.NamedTemporaryFile(suffix=".colo", delete=False) as handle:
        handle.write(_colo_channel())
    try:
        cases.extend(_framed_cases(Path(handle.name), "colo-back-channel", "back-channel")[:1])
    finally:
        os.unlink(handle.name)
    # headers with variable data: xl's optional data, libvirt's XML (the largest a header
    # may carry is MAX_HEADER_BYTES in all)
    xl = EXAMPLES / "hvm-guest.xl"
    cases.append(_patched(xl, 32 + 12, "<I", MAX_HEADER_BYTES - 48, CARRIED))
    libvirt = EXAMPLES / "hvm-guest.libvirt"
    cases.append(_patched(libvirt, 16 + 4, "<I", MAX_HEADER_BYTES - 64, CARRIED))
    # implied framing: the lengths a walker reads (legacy's toolstack chunk and
    # a XenServer unit header's u64 length)
    legacy = EXAMPLES / "pv32-legacy.img"
    cases.append(_patched(legacy, _unit_offset(legacy, "TOOLSTACK") + 4, "<I", 0xFFFFFFFF,
                          CARRIED))
    xenserver = EXAMPLES / "uefi-guest.xenserver"
    for unit in ("VARSTORED",):
        cases.append(_patched(xenserver, _unit_offset(xenserver, unit) + 8, "<Q",
                              (1 << 64) - 1, CARRIED))
    return cases


CASES = _cases()


@pytest.mark.parametrize(("name", "data", "fmt"), CASES, ids=[c[0] for c in CASES])
def test_hostile_length_costs_what_arrived(name: str, data: bytes, fmt: str | None,
                                           tmp_path: Path) -> None:
    path = tmp_path / "hostile"
    path.write_bytes(data)
    extra = ["--from", fmt] if fmt else []
    runs = [(command, source, stdin) for command in ("verify", "dump")
            for source, stdin in ((str(path), None), ("-", data))]
    with ThreadPoolExecutor(len(runs)) as pool:   # four children at once (2 cores: ~halved)
        results = list(pool.map(lambda run: _run([run[0], *extra, run[1]], run[2]), runs))
    for (command, _source, stdin), (code, rss, err) in zip(runs, results, strict=True):
        where = f"{command} {'pipe' if stdin is not None else 'file'}"
        assert code == 1, f"{where}: exit {code}: {err}"
        assert "Traceback" not in err, f"{where}: {err}"
        assert rss < RSS_LIMIT, f"{where}: peak RSS {rss >> 20} MiB"
        if command == "verify":
            assert err.count("\n") == 1 and err.startswith("xenmig: invalid:"), err


@pytest.mark.parametrize("data", ["{zeros: 0x10000000000}",
                                  "{fill: abcd, length: 0x10000000000}",
                                  "[{zeros: 0x4000000}, {zeros: 0x4000001}]"])
def test_build_refuses_a_huge_field_before_allocating(tmp_path: Path, data: str) -> None:
    from xenmig_core.build import MAX_IN_MEMORY, BuildError, build_stream
    description = tmp_path / "huge.yaml"
    description.write_text(f"""\
- {{kind: header, format: libxc, name: image_header,
   fields: {{marker: 0xffffffffffffffff, id: 0x58454e46, version: 3, options: []}}}}
- {{kind: header, format: libxc, name: domain_header,
   fields: {{type: x86_hvm, page_shift: 12, xen_major: 4, xen_minor: 19}}}}
- {{kind: record, format: libxc, type: PAGE_DATA, fields: {{pfn: [1]}}, payload: {data}}}
""")
    with pytest.raises(BuildError, match=f"more than build assembles in memory .*"
                                         f"{MAX_IN_MEMORY} bytes") as caught:
        build_stream(xenmig_core.open_registry(), str(description), str(tmp_path / "out"))
    assert caught.value.path == "items[2].payload"
    assert not (tmp_path / "out").exists()


def test_build_streams_huge_raw_data_in_pieces(tmp_path: Path) -> None:
    """``raw`` data is written as it is produced: a 200 MiB run of zeros costs a piece."""
    from xenmig_core.build import PIECE, DataResolver
    parts = DataResolver(tmp_path).parts({"zeros": 200 << 20}, "items[0].data")
    sizes = {len(chunk) for chunk in parts}
    assert sizes == {PIECE}


def test_p2m_frames_length_follows_from_its_pfn_range() -> None:
    """The issue's case: X86_PV_P2M_FRAMES claiming ~128 MiB for a one-frame pfn range is
    refused by the spec's size rule once its first two fields are read, naming the rule;
    the verdict is the same from a buffer and as a pipe."""
    example = EXAMPLES / "pv64-2vcpu-v3.libxc"
    offset = _unit_offset(example, "X86_PV_P2M_FRAMES")
    data = bytearray(example.read_bytes())
    struct.pack_into("<I", data, offset + 4, 0x7FFFFF8)
    for source in (io.BytesIO(bytes(data)), _Pipe(bytes(data))):
        report = xenmig_core.verify(source)
        first = report.errors[0]
        assert first.rule == "X86_PV_P2M_FRAMES.length.3"
        assert first.offset == offset
        assert "body length 134217720, expected 16" in first.message
        assert "(rule X86_PV_P2M_FRAMES.length.3: the body is not read)" in first.message


class _Pipe(io.RawIOBase):
    """A buffer read as a pipe is (no seeking)."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        return self._data.readinto(buffer)


def test_convert_costs_what_arrived(tmp_path: Path) -> None:
    """``convert`` of a legacy image whose toolstack chunk claims 4 GiB, from a file and a
    pipe: a one-line error, the child's peak RSS under the limit, no output left."""
    example = EXAMPLES / "hvm64-legacy.xl"
    _name, data, _fmt = _patched(example, _unit_offset(example, "TOOLSTACK") + 4, "<I",
                                 0xFFFFFFFF, CARRIED)
    path = tmp_path / "hostile.xl"
    path.write_bytes(data)
    out = tmp_path / "out.xl"
    for source, stdin in ((str(path), None), ("-", data)):
        code, rss, err = _run(["convert", source, "-o", str(out), "--to", "xl"], stdin)
        assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
        assert rss < RSS_LIMIT, f"peak RSS {rss >> 20} MiB"
        assert not out.exists()


def test_source_long_reads_cost_what_arrived() -> None:
    """``read_exact`` of a length far beyond the stream: a seekable source refuses before
    reading (offset unchanged), a pipe gathers only what arrives; both raise the usual
    truncation error, and neither allocates the claim."""
    import tracemalloc

    from xenmig_core.errors import TruncatedError
    from xenmig_core.source import ByteSource
    claim = 200 << 20
    for seekable in (True, False):
        raw = io.BytesIO(bytes(100_000)) if seekable else _Pipe(bytes(100_000))
        source = ByteSource(raw, "test")
        source.read_exact(8)
        tracemalloc.start()
        try:
            with pytest.raises(TruncatedError, match=r"stream truncated: body needs 209715200 "
                                                     r"bytes at offset 0x8, only 99992 left"):
                source.read_exact(claim, "body")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, f"seekable={seekable}: {peak} bytes allocated"
        assert source.offset == (8 if seekable else 100_000)
