"""Remus "format B" page data: the delta encoding of -12 (compressed data) chunks.

Facts (legacy-facts.md 1.5, from xc_compression.c's behaviour): the concatenated -12 data
decode to one entry per data-carrying pfn of the format-B batches, in order. Each page entry
starts with a byte that decides its form:

- ``0x00``: EMPTY, the page is unchanged (1 byte in all);
- ``0x80``: FULL, 4096 raw bytes follow (4097 in all);
- otherwise a sequence of markers covering exactly 4096 bytes: bit 7 clear = RUN (copy the
  ``count * 4`` bytes that follow to the current offset), bit 7 set = SKIP (leave
  ``count * 4`` bytes unchanged); ``count`` (bits 6-0) counts 4-byte words and is never 0.

Deltas and EMPTY pages are relative to the receiver's previous copy of the page.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from xenmig_core.spec.spill import SpilledBytes

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

PAGE = 4096
WORD = 4
#: the longest entry: a delta of 1024 one-word runs (1024 markers, 4096 bytes)
MAX_ENTRY = PAGE + PAGE // WORD
#: a spilled chunk's data are walked this many bytes at a time
BLOCK = 1 << 20
EMPTY, FULL, DELTA = "empty", "full", "delta"


class DeltaError(ValueError):
    """The compressed data are malformed; the message says where (offset in the data)."""


class PageEntry:
    """One page's entry: its *kind*, and where it lies in the data (``start``..``end``).
    Read-only by convention; compared and hashed by value. (A hand-written class: one is
    made per page, and a dataclass would load ``dataclasses`` into every legacy run.)"""

    __slots__ = ("end", "kind", "start")

    def __init__(self, kind: str, start: int, end: int) -> None:
        self.kind = kind
        self.start = start
        self.end = end

    def _key(self) -> tuple[str, int, int]:
        return (self.kind, self.start, self.end)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"PageEntry(kind={self.kind!r}, start={self.start!r}, end={self.end!r})"


def iter_pages(data: Any) -> Iterator[PageEntry]:
    """Walk *data* page entry by page entry; DeltaError on a malformed or cut entry. *data*
    may be a spilled value (too large to hold): it is then read a block at a time."""
    for entry, _count in _entries(data, zero_runs=False):
        yield entry


def count_kinds(data: Any) -> dict[str, int]:
    """How many entries of each kind *data* holds (as :func:`iter_pages` yields them; the
    same DeltaError), in memory independent of the count: a run of EMPTY entries (zero
    bytes) is counted in one step."""
    kinds: dict[str, int] = {}
    for entry, count in _entries(data, zero_runs=True):
        kinds[entry.kind] = kinds.get(entry.kind, 0) + count
    return kinds


_ZEROS = re.compile(rb"\x00+")


def _entries(data: Any, zero_runs: bool) -> Iterator[tuple[PageEntry, int]]:
    """(entry, how many entries it stands for): with *zero_runs*, a run of EMPTY entries is
    one item. In-memory data is walked in place; a spilled value in blocks of
    :data:`BLOCK` bytes plus :data:`MAX_ENTRY`, so that every entry that starts in a block
    lies whole in what was read (offsets stay those of the whole data)."""
    spilled = isinstance(data, SpilledBytes)
    size = len(data)
    base = 0
    while base < size:
        view = memoryview(b"".join(data.chunks(base, base + BLOCK + MAX_ENTRY))) if spilled \
            else memoryview(data)
        limit = len(view) if base + len(view) >= size else len(view) - MAX_ENTRY
        pos = 0
        while pos < limit:
            if zero_runs and view[pos] == 0x00:
                match = _ZEROS.match(view, pos)
                end = match.end() if match else pos + 1
                yield PageEntry(EMPTY, base + pos, base + end), end - pos
                pos = end
                continue
            entry = _entry_at(view, pos, base)
            pos = entry.end - base
            yield entry, 1
        base += pos


def _entry_at(view: memoryview, start: int, base: int = 0) -> PageEntry:
    """The entry starting at offset *start* of *view*, which holds the data from offset
    *base* (entries and messages give offsets in the data)."""
    size = len(view)
    pos = start
    first = view[pos]
    if first == 0x00:
        return PageEntry(EMPTY, base + start, base + pos + 1)
    if first == 0x80:
        if pos + 1 + PAGE > size:
            raise DeltaError(f"full page at data offset {base + start} is cut: "
                             f"{size - pos - 1} of {PAGE} bytes")
        return PageEntry(FULL, base + start, base + pos + 1 + PAGE)
    covered = 0
    while covered < PAGE:
        if pos >= size:
            raise DeltaError(f"page delta at data offset {base + start} is cut after "
                             f"{covered} of {PAGE} bytes")
        marker = view[pos]
        count = marker & 0x7F
        if count == 0:
            raise DeltaError(f"zero-length {'skip' if marker & 0x80 else 'run'} marker at "
                             f"data offset {base + pos}")
        length = count * WORD
        if covered + length > PAGE:
            raise DeltaError(f"page delta at data offset {base + start} covers more than "
                             f"{PAGE} bytes (marker at offset {base + pos})")
        pos += 1
        if not marker & 0x80:
            if pos + length > size:
                raise DeltaError(f"run at data offset {base + pos - 1} is cut: "
                                 f"{size - pos} of {length} bytes")
            pos += length
        covered += length
    return PageEntry(DELTA, base + start, base + pos)


def apply_entry(entry: PageEntry, data: bytes | memoryview, base: bytearray) -> None:
    """Update *base* (a 4096-byte page, the receiver's previous copy) with *entry*."""
    view = memoryview(data)
    if entry.kind == EMPTY:
        return
    if entry.kind == FULL:
        base[:] = view[entry.start + 1:entry.end]
        return
    pos, covered = entry.start, 0
    while pos < entry.end:
        marker = view[pos]
        length = (marker & 0x7F) * WORD
        pos += 1
        if not marker & 0x80:
            base[covered:covered + length] = view[pos:pos + length]
            pos += length
        covered += length


def encode_full(page: bytes) -> bytes:
    """A FULL entry for *page* (for writing test streams)."""
    return b"\x80" + page


def encode_delta(old: bytes, new: bytes) -> bytes:
    """A delta entry taking *old* to *new* (EMPTY when equal), for writing test streams."""
    if old == new:
        return b"\x00"
    out = bytearray()
    pos = 0
    while pos < PAGE:
        same = old[pos:pos + WORD] == new[pos:pos + WORD]
        end = pos
        while end < PAGE and end - pos < 127 * WORD and \
                (old[end:end + WORD] == new[end:end + WORD]) == same:
            end += WORD
        count = (end - pos) // WORD
        if same:
            out.append(0x80 | count)
        else:
            out.append(count)
            out += new[pos:end]
        pos = end
    if out[0] in (0x00, 0x80):  # never: count >= 1; kept as a guard for the format's rule
        raise AssertionError("delta starts with a reserved byte")
    return bytes(out)
