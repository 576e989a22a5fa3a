"""PAGE_DATA checks the spec language cannot express: one pass over the pfn words (and a
second, to say which words are wrong, only when the first found a problem).

The first pass works on the whole batch at once, in C: the words' raw bytes are sliced into
the byte holding each word's type and the byte holding the rest of the reserved bits, and
those are translated and counted (``bytes.translate``/``count``), so a 1024-pfn batch costs
a few microseconds, not a Python loop per pfn. The second pass, per word, runs only for a bad
record and names what is wrong where.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterator, Sequence

from xenmig_core.diagnostics import ERROR
from xenmig_core.engine import Record, StreamContext, Tally
from xenmig_core.spec.spill import SpilledArray, pieces

PAGE_SIZE = 4096
TYPE_SHIFT = 60
PFN_MASK = (1 << 52) - 1
RESERVED_SHIFT = 52
INVALID_TYPES = frozenset({5, 6, 7, 8})
DATA_TYPES = frozenset({0, 1, 2, 3, 4, 9, 10, 11, 12})
RESERVED_MASK = 0xFF << RESERVED_SHIFT
MAX_REPORTED = 3
#: A batch of at most this many pfns is scanned word by word in C (min and max), not
#: through its bytes (see _uniform)
SMALL_BATCH = 64

#: In a native-order u64's bytes: the byte of bits 63-56 (type, reserved 59-56) and the
#: byte of bits 55-48 (reserved 55-52, pfn 51-48).
_TOP, _NEXT = (7, 6) if sys.byteorder == "little" else (0, 1)
#: top byte -> page type (bits 63-60)
_TYPE_OF = bytes(b >> 4 for b in range(256))
#: the top bytes whose reserved bits 59-56 are clear, and the next bytes whose 55-52 are
_TOP_CLEAN = bytes(t << 4 for t in range(16))
_NEXT_CLEAN = bytes(range(16))
#: next byte -> its pfn bits only (51-48)
_NEXT_PFN = bytes(b & 0x0F for b in range(256))


def check_page_data(record: Record, ctx: StreamContext) -> None:
    """Check each pfn word (page type known, reserved bits zero, pfn within the PV guest's
    announced maximum), count the pages that carry data, and require the body length to be
    exactly 8 + 8 * count + 4096 * pages_with_data. Adds per-type page counts to ``pages``;
    writes the record's summary when the walk shows summaries (``ctx.summaries``)."""
    fields = record.fields
    words = fields["pfn"]
    n = len(words)
    state = ctx.state
    max_pfn = state["max_pfn"] if state["domain_type"] == 1 else None
    if max_pfn is not None and max_pfn < 0:
        max_pfn = None
    uniform = _uniform(words, max_pfn) if 0 < n <= SMALL_BATCH else None
    if uniform is not None:     # a short batch of one type: usual (a checkpoint's pages)
        ptype, suspect = uniform
        with_data = n if ptype in DATA_TYPES else 0
        by_type = ((ptype, n),)
    else:
        types, suspect = _scan(words, max_pfn)
        with_data = sum(count for ptype, count in types.items() if ptype in DATA_TYPES)
        by_type = types.items()
    if suspect:    # a second pass, only for a bad record: say what is wrong where
        ctx.report_capped(_pfn_problems(words, max_pfn), MAX_REPORTED,
                          more="pfn problems in this record", field="pfn")
    expected = 8 + 8 * n + PAGE_SIZE * with_data
    if record.length != expected:
        ctx.error(f"body length {record.length}, expected {expected} "
                  f"(8 + 8 * {n} pfns + 4096 * {with_data} pages with data)",
                  field="length")
    pages = ctx.stats.get("pages")        # (ctx.stat's counter, looked up once a record)
    if pages is None:
        pages = ctx.stats["pages"] = Tally()
    label_of = ctx.format.spec.enums["page_type"].label_of
    for ptype, count in by_type:
        pages[label_of(ptype)] += count
    pages["with data"] += with_data
    fields["pages_with_data"] = with_data
    if not ctx.summaries:       # (nobody shows it: not worth formatting, record by record)
        return
    if n:
        record.summary = f"{n} pfns ({words[0] & PFN_MASK:#x}..{words[-1] & PFN_MASK:#x}), " \
            f"{with_data} pages with data"
    else:
        record.summary = f"0 pfns (0x0..0x0), {with_data} pages with data"


def _uniform(words: Sequence[int], max_pfn: int | None) -> tuple[int, bool] | None:
    """For a short batch (a checkpoint's few dirty pages) whose smallest and largest words
    agree on their top 12 bits (type and reserved bits), so that every word does: its page
    type and whether any word has a problem (see :func:`_scan`), from those two words
    alone. None for a batch whose words differ there (then :func:`_scan` it)."""
    high = max(words)
    top = high >> RESERVED_SHIFT
    if min(words) >> RESERVED_SHIFT != top:
        return None
    ptype = top >> (TYPE_SHIFT - RESERVED_SHIFT)
    return ptype, ptype in INVALID_TYPES or bool(top & 0xFF) or (
        max_pfn is not None and high & PFN_MASK > max_pfn)


def _scan(words: Sequence[int], max_pfn: int | None) -> tuple[dict[int, int], bool]:
    """Count the words of each page type (in the order types first appear) and say whether
    any word has a problem: an invalid type, reserved bits set, a pfn above *max_pfn*.
    A spilled array is scanned piece by piece."""
    by_type: dict[int, int] = {}
    suspect = False
    for piece in pieces(words):
        counts, bad = _scan_piece(piece, max_pfn)
        for ptype, count in counts.items():
            by_type[ptype] = by_type.get(ptype, 0) + count
        suspect = suspect or bad
    return by_type, suspect


def _scan_piece(words: Sequence[int], max_pfn: int | None) -> tuple[dict[int, int], bool]:
    raw = words.tobytes() if isinstance(words, array) and words.itemsize == 8 \
        else array("Q", words).tobytes()
    top = raw[_TOP::8]
    types = top.translate(_TYPE_OF)
    n = len(types)
    if not n or types.count(types[0]) == n:       # one type for the whole batch: usual
        by_type = {types[0]: n} if n else {}
    else:
        by_type = {t: types.count(t) for t in sorted(set(types), key=types.index)}
    nxt = raw[_NEXT::8]
    suspect = bool(top.translate(None, _TOP_CLEAN) or nxt.translate(None, _NEXT_CLEAN)
                   or not INVALID_TYPES.isdisjoint(by_type))
    if max_pfn is not None and n and not suspect and len(by_type) == 1:
        # one type and no reserved bit: the top 12 bits are the same in every word
        suspect = max(words) & PFN_MASK > max_pfn
    elif max_pfn is not None and n and not suspect:
        pfns = bytearray(raw)          # each word with its top 12 bits cleared
        pfns[_TOP::8] = bytes(n)
        pfns[_NEXT::8] = nxt.translate(_NEXT_PFN)
        suspect = max(memoryview(pfns).cast("Q")) > max_pfn
    return by_type, suspect


def _pfn_problems(words: Sequence[int], max_pfn: int | None
                  ) -> Iterator[tuple[str, str, str | None]]:
    """Each problem of each pfn word, lazily (the caller keeps only the first few). Of a
    spilled array, the pieces the first pass finds clean are skipped."""
    spilled = isinstance(words, SpilledArray)
    at = 0
    for piece in pieces(words):
        if spilled and not _scan_piece(piece, max_pfn)[1]:
            at += len(piece)
            continue
        yield from _piece_problems(piece, at, max_pfn)
        at += len(piece)


def _piece_problems(words: Sequence[int], at: int, max_pfn: int | None
                    ) -> Iterator[tuple[str, str, str | None]]:
    for i, word in enumerate(words, at):
        ptype = word >> TYPE_SHIFT
        if ptype in INVALID_TYPES:
            yield ERROR, f"page type {ptype:#x} is invalid ({word:#018x})", f"pfn[{i}]"
        reserved = (word >> RESERVED_SHIFT) & 0xFF
        if reserved:
            yield ERROR, f"reserved bits 59-52 set: {reserved:#x} ({word:#018x})", f"pfn[{i}]"
        if max_pfn is not None and (word & PFN_MASK) > max_pfn:
            yield ERROR, (f"pfn {word & PFN_MASK:#x} exceeds the domain's maximum "
                          f"{max_pfn:#x} (from X86_PV_P2M_FRAMES)"), f"pfn[{i}]"
