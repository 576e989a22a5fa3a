"""EMULATOR_XENSTORE_DATA: the packed key/value strings after the emulator sub-header.

Restore (libxl_dom_save.c) walks the body as NUL-terminated key, value, key, value... and
writes each pair under the device model's xenstore directory. It refuses an unterminated
string, an empty key and an absolute key. The spec also limits keys to ASCII alphanumerics
and ``-/_@`` and wants values to be human-readable ASCII; xenstore itself refuses a path
with an empty component.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator

from xenmig_core.diagnostics import ERROR, WARNING
from xenmig_core.engine import Record, StreamContext
from xenmig_core.spec.spill import Spilled

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-/_@")
PRINTABLE = frozenset(range(0x20, 0x7F))
MAX_REPORTED = 3
SHOWN_PAIRS = 3
#: ``record.fields['pairs']`` keeps the first this many pairs (real records hold a few)
MAX_KEPT_PAIRS = 4096
#: keys remembered to find repeated ones
MAX_TRACKED = 1 << 16
#: a string longer than this (xenstore's own limits are a few KiB) is checked and kept cut
MAX_STRING = 1 << 16


def iter_strings(data: Any) -> Iterator[tuple[bytes, int, bool]]:
    """The NUL-separated strings of *data* (bytes, or a spilled value read in chunks) as
    (their first :data:`MAX_STRING` bytes, their full length, terminated); the last one is
    unterminated when *data* does not end with a NUL. Memory: a chunk and one string."""
    chunks = data.chunks() if isinstance(data, Spilled) else (data,) if data else ()
    kept = bytearray()
    length = 0
    for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\0", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            if len(kept) < MAX_STRING:
                kept += piece[:MAX_STRING - len(kept)]
            length += len(piece)
            if end < 0:
                break
            yield bytes(kept), length, True
            kept.clear()
            length = 0
            start = end + 1
    if length:
        yield bytes(kept), length, False


def split_pairs(data: Any) -> tuple[Iterator[tuple[bytes, bytes]], list[str]]:
    """Split *data* into (key, value) pairs, lazily; the list of framing problems found (an
    unterminated last string, an odd number of strings) is complete once the pairs are
    consumed. A string longer than :data:`MAX_STRING` is cut to its first bytes."""
    problems: list[str] = []

    def pairs() -> Iterator[tuple[bytes, bytes]]:
        key: bytes | None = None
        strings = 0
        for text, _length, terminated in iter_strings(data):
            if not terminated:
                problems.append(f"data does not end with a NUL: the last string {_show(text)} "
                                "is not terminated (restore: \"not NUL terminated\")")
                return
            strings += 1
            if key is None:
                key = text
                continue
            yield key, text
            key = None
        if key is not None:
            count = f"{strings} string" + ("" if strings == 1 else "s")
            problems.append(f"{count}: key/value pairs need an even number; key "
                            f"{_show(key)} has no value (restore: \"not NUL terminated\")")
    return pairs(), problems


def key_problem(key: bytes) -> str | None:
    """Why restore, xenstore or the spec refuses *key*, or None."""
    if not key:
        return "empty key (restore: \"empty key found\")"
    if key.startswith(b"/"):
        return (f"key {_show(key)} is absolute: keys are relative to the device model's "
                "xenstore directory (restore: \"not relative\")")
    bad = sorted({chr(c) for c in key} - KEY_CHARS)
    if bad:
        return (f"key {_show(key)} has characters outside A-Z a-z 0-9 - / _ @: "
                f"{''.join(bad)!r}")
    if b"//" in key or key.endswith(b"/"):
        return f"key {_show(key)} has an empty path component: xenstore refuses it"
    return None


def check_xenstore_data(record: Record, ctx: StreamContext) -> None:
    """Decode the pairs into ``record.fields['pairs']`` (a list of [key, value] strings, the
    first :data:`MAX_KEPT_PAIRS`; ``pairs_dropped`` counts the rest); report framing and key
    problems as errors, non-printable values and repeated keys as warnings. Reads the data
    once, in chunks when it was spilled (memory: the kept pairs, not the data)."""
    pairs, problems = split_pairs(record.fields["data"])
    kept: list[tuple[bytes, bytes]] = []
    counted = [0]

    def keep() -> Iterator[tuple[bytes, bytes]]:
        for pair in pairs:
            counted[0] += 1
            if len(kept) < MAX_KEPT_PAIRS:
                kept.append(pair)
            yield pair
    # the first few problems only (this record type has never said how many more there are)
    found = list(_pair_problems(keep(), MAX_REPORTED))
    for message in problems:
        ctx.error(message, field="data")
    for severity, message, where in found:
        ctx.diagnose(severity, message, field=where)
    count = counted[0]
    record.fields["pairs"] = [[_text(k), _text(v)] for k, v in kept]
    if count > len(kept):
        record.fields["pairs_dropped"] = count - len(kept)
    emulator = ctx.format.spec.enums["emulator"].name_of(record.fields["emulator_id"])
    shown = ", ".join(f"{k}={v}" for k, v in record.fields["pairs"][:SHOWN_PAIRS])
    more = f", ... ({count - SHOWN_PAIRS} more)" if count > SHOWN_PAIRS else ""
    record.summary = (f"{emulator}, index {record.fields['index']}, "
                      f"{count} {'key' if count == 1 else 'keys'}"
                      f"{': ' + shown + more if count else ''}")


def _pair_problems(pairs: Iterable[tuple[bytes, bytes]], limit: int
                   ) -> Iterator[tuple[str, str, str | None]]:
    """The first *limit* problems of the pairs in order: a refused key (error), a
    non-printable value or a repeated key (warnings). Consumes every pair (the caller counts
    them); repeated keys are found among the first :data:`MAX_TRACKED` keys."""
    seen: set[bytes] = set()
    found = 0
    for i, (key, value) in enumerate(pairs):
        if found >= limit:
            continue
        problems = []
        problem = key_problem(key)
        if problem is not None:
            problems.append((ERROR, problem, f"pairs[{i}].key"))
        if any(c not in PRINTABLE for c in value):
            problems.append((WARNING, f"value of {_show(key)} is not printable ASCII: "
                             f"{_show(value)}", f"pairs[{i}].value"))
        if key in seen:
            problems.append((WARNING, f"key {_show(key)} appears twice: the later value wins",
                             f"pairs[{i}].key"))
        elif len(seen) < MAX_TRACKED:
            seen.add(key)
        for problem_item in problems[:limit - found]:
            found += 1
            yield problem_item


def _text(raw: bytes) -> str:
    return raw.decode("ascii", errors="backslashreplace")


def _show(raw: bytes, limit: int = 40) -> str:
    text = repr(_text(raw[:limit]))
    return text + ("..." if len(raw) > limit else "")
