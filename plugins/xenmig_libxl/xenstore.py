"""EMULATOR_XENSTORE_DATA: the packed key/value strings after the emulator sub-header.

Restore (libxl_dom_save.c) walks the body as NUL-terminated key, value, key, value... and
writes each pair under the device model's xenstore directory. It refuses an unterminated
string, an empty key and an absolute key. The spec also limits keys to ASCII alphanumerics
and ``-/_@`` and wants values to be human-readable ASCII; xenstore itself refuses a path
with an empty component.
"""

from __future__ import annotations

import string
from collections.abc import Iterator

from xenmig_core.diagnostics import ERROR, WARNING
from xenmig_core.engine import Record, StreamContext

KEY_CHARS = frozenset(string.ascii_letters + string.digits + "-/_@")
PRINTABLE = frozenset(range(0x20, 0x7F))
MAX_REPORTED = 3
SHOWN_PAIRS = 3


def split_pairs(data: bytes) -> tuple[list[tuple[bytes, bytes]], list[str]]:
    """Split *data* into (key, value) pairs; return them with the framing problems found
    (an unterminated last string, an odd number of strings)."""
    problems: list[str] = []
    if not data:
        return [], problems
    strings = data.split(b"\0")
    tail = strings.pop()          # what follows the last NUL: empty when terminated
    if tail:
        problems.append(f"data does not end with a NUL: the last string {_show(tail)} is not "
                        "terminated (restore: \"not NUL terminated\")")
    elif len(strings) % 2:
        count = f"{len(strings)} string" + ("" if len(strings) == 1 else "s")
        problems.append(f"{count}: key/value pairs need an even number; key "
                        f"{_show(strings[-1])} has no value (restore: \"not NUL terminated\")")
    pairs = [(strings[i], strings[i + 1]) for i in range(0, len(strings) - 1, 2)]
    return pairs, problems


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
    """Decode the pairs into ``record.fields['pairs']`` (a list of [key, value] strings);
    report framing and key problems as errors, non-printable values and repeated keys as
    warnings."""
    data = bytes(record.fields["data"])
    pairs, problems = split_pairs(data)
    for message in problems:
        ctx.error(message, field="data")
    # the first few problems only (this record type has never said how many more there are)
    ctx.report_capped(_pair_problems(pairs), MAX_REPORTED, more=None)
    record.fields["pairs"] = [[_text(k), _text(v)] for k, v in pairs]
    emulator = ctx.format.spec.enums["emulator"].name_of(record.fields["emulator_id"])
    shown = ", ".join(f"{k}={v}" for k, v in record.fields["pairs"][:SHOWN_PAIRS])
    more = f", ... ({len(pairs) - SHOWN_PAIRS} more)" if len(pairs) > SHOWN_PAIRS else ""
    record.summary = (f"{emulator}, index {record.fields['index']}, "
                      f"{len(pairs)} {'key' if len(pairs) == 1 else 'keys'}"
                      f"{': ' + shown + more if pairs else ''}")


def _pair_problems(pairs: list[tuple[bytes, bytes]]
                   ) -> Iterator[tuple[str, str, str | None]]:
    """Each pair's problems in order, lazily: a refused key (error), a non-printable value
    or a repeated key (warnings)."""
    seen: set[bytes] = set()
    for i, (key, value) in enumerate(pairs):
        problem = key_problem(key)
        if problem is not None:
            yield ERROR, problem, f"pairs[{i}].key"
        if any(c not in PRINTABLE for c in value):
            yield (WARNING, f"value of {_show(key)} is not printable ASCII: {_show(value)}",
                   f"pairs[{i}].value")
        if key in seen:
            yield WARNING, f"key {_show(key)} appears twice: the later value wins", \
                f"pairs[{i}].key"
        seen.add(key)


def _text(raw: bytes) -> str:
    return raw.decode("ascii", errors="backslashreplace")


def _show(raw: bytes, limit: int = 40) -> str:
    text = repr(_text(raw[:limit]))
    return text + ("..." if len(raw) > limit else "")
