"""Property test: mutated example streams never break the library's contract.

Hypothesis mutates the examples (bit flips, byte runs, length fields set to large values,
truncation), from a seekable buffer and from an unseekable one (as a pipe reads), and
checks through the public API (``xenmig_core.verify`` and ``xenmig_core.records``) that no
exception escapes but the documented ones (UsageError, SourceError: not expected here) and
that every error names an offset. Derandomized, with a deadline per example, so that CI
runs the same few hundred examples every time in bounded time.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xenmig_core

EXAMPLES = sorted(p for p in (Path(__file__).resolve().parent.parent / "examples").iterdir()
                  if p.is_file() and p.suffix != ".py")
REGISTRY = xenmig_core.open_registry()
#: Each example's bytes and its record offsets (where length fields stand).
STREAMS = [(p.read_bytes(), [r.offset for r in xenmig_core.records(p, registry=REGISTRY)])
           for p in EXAMPLES]
LARGE = [0xFFFFFFFF, 0x7FFFFFFF, 0x8000000, 0x7FFFFF8, 1 << 31, (1 << 63) - 1, (1 << 64) - 1]


class Unseekable(io.RawIOBase):
    """A buffer read as a pipe is: no seeking, short reads."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self._data) - self._pos, 40000)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        return n


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data, offsets = draw(st.sampled_from(STREAMS))
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "run", "length", "truncate"]))
        if kind == "length" and offsets:     # a record's header (or near it): a large value
            at = draw(st.sampled_from(offsets)) + draw(st.integers(0, 15))
            code = draw(st.sampled_from(["<I", "<Q", ">I", ">Q"]))
            value = draw(st.sampled_from(LARGE)) & ((1 << 8 * struct.calcsize(code)) - 1)
            if at + struct.calcsize(code) <= len(out):
                struct.pack_into(code, out, at, value)
        elif kind == "flip" and out:
            at = draw(st.integers(0, len(out) - 1))
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "run" and out:
            at = draw(st.integers(0, len(out) - 1))
            out[at:at + draw(st.integers(1, 64))] = bytes([draw(st.integers(0, 255))]) * 64
        elif kind == "truncate":
            del out[draw(st.integers(0, len(out))):]
    return bytes(out)


def _check(report: xenmig_core.Report) -> None:
    for diagnostic in report.errors:
        assert diagnostic.offset is not None, f"an error without an offset: {diagnostic}"


@settings(max_examples=300, deadline=5000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=mutated(), pipe=st.booleans())
def test_mutated_streams_keep_the_contract(data: bytes, pipe: bool) -> None:
    source = Unseekable(data) if pipe else io.BytesIO(data)
    _check(xenmig_core.verify(source, registry=REGISTRY))


@settings(max_examples=60, deadline=5000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=mutated())
def test_mutated_streams_dump_without_escaping(data: bytes) -> None:
    records = xenmig_core.records(Unseekable(data), registry=REGISTRY, headers=True)
    for _record in records:
        pass
    assert records.report is not None
    _check(records.report)
