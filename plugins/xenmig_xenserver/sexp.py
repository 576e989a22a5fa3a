"""S-expressions as OCaml's Sexplib writes and reads them, and the Xenops record in one.

:func:`parse` reads one S-expression from bytes: atoms (plain, or double-quoted with OCaml
escapes), lists, ``;`` line comments, ``#| |#`` block comments and ``#;`` expression
comments, as ``Sexp.of_string`` does; whitespace may follow, nothing else. Atoms come back as
``str`` (each byte one character, latin-1, so nothing is lost), lists as ``list``. Nesting is
limited to :data:`MAX_DEPTH`, the number of atoms and lists to :data:`MAX_NODES`, and the
parser is iterative (no recursion on hostile input).

:func:`xenops_record` checks a parsed Xenops record as xenopsd's ``Xenops_record.of_string``
does (a record of ``time``, ``word_size``, optional ``vm_str`` and ``xs_subtree``; unknown or
repeated fields refused) and returns its fields. :func:`dumps` writes the machine form
(``Sexp.to_string``) for the sample builder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MAX_DEPTH = 1000
#: atoms and lists parsed at most: the parse tree's memory stays bounded whatever the text
#: (a Xenops record holds a few hundred; its xenstore subtree, one list per node)
MAX_NODES = 1 << 18
_PLAIN_END = frozenset(b' \t\n\r\x0c()";')
_ESCAPES = {ord("n"): "\n", ord("t"): "\t", ord("b"): "\b", ord("r"): "\r",
            ord("\\"): "\\", ord('"'): '"', ord("'"): "'", ord(" "): " "}
_NEEDS_QUOTES = re.compile(r'[\s()";\\]|^$|#\||\|#|^#;')
_INT = re.compile(r"[+-]?(0[xX][0-9a-fA-F][0-9a-fA-F_]*|0[oO][0-7][0-7_]*|0[bB][01][01_]*"
                  r"|[0-9][0-9_]*)")


class SexpError(ValueError):
    """The text is not one S-expression; ``offset`` is where the problem is."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte {offset}")
        self.offset = offset


Sexp = str | list[Any]


def parse(data: bytes) -> Sexp:
    """The one S-expression in *data* (surrounding whitespace and comments allowed)."""
    pos, n = 0, len(data)
    stack: list[list[Any]] = []
    result: list[Any] = []          # the top level: must end with exactly one element
    skip_next: list[int] = []       # depths at which a #; comment waits for its expression

    nodes = 0

    def emit(value: Sexp) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > MAX_NODES:
            raise SexpError(f"more than {MAX_NODES} atoms and lists (xenmig parses no more)",
                            pos)
        depth = len(stack)
        if skip_next and skip_next[-1] == depth:
            skip_next.pop()
            return
        (stack[-1] if stack else result).append(value)

    while True:
        pos = _skip_space(data, pos)
        if pos >= n:
            break
        c = data[pos]
        if c == 0x28:   # (
            if len(stack) >= MAX_DEPTH:
                raise SexpError(f"nested deeper than {MAX_DEPTH} lists", pos)
            if not stack and result and not skip_next:
                raise SexpError("S-expression followed by data", pos)
            stack.append([])
            pos += 1
        elif c == 0x29:  # )
            if not stack:
                raise SexpError("unexpected ')'", pos)
            emit(stack.pop())
            pos += 1
        elif data.startswith(b"#;", pos):
            skip_next.append(len(stack))
            pos += 2
        else:
            if not stack and result and not skip_next:
                raise SexpError("S-expression followed by data", pos)
            atom, pos = _quoted(data, pos) if c == 0x22 else _plain(data, pos)
            emit(atom)
    if stack:
        raise SexpError(f"{len(stack)} unclosed list(s)", n)
    if skip_next:
        raise SexpError("#; comment without an expression", n)
    if not result:
        raise SexpError("no S-expression", n)
    return result[0]


def _skip_space(data: bytes, pos: int) -> int:
    n = len(data)
    while pos < n:
        c = data[pos]
        if c in b" \t\n\r\x0c":
            pos += 1
        elif c == 0x3B:  # ; to end of line
            end = data.find(b"\n", pos)
            pos = n if end < 0 else end + 1
        elif data.startswith(b"#|", pos):
            depth, start, pos = 1, pos, pos + 2
            while depth:
                if pos >= n:
                    raise SexpError("unterminated #| comment", start)
                if data.startswith(b"#|", pos):
                    depth, pos = depth + 1, pos + 2
                elif data.startswith(b"|#", pos):
                    depth, pos = depth - 1, pos + 2
                else:
                    pos += 1
        else:
            break
    return pos


def _plain(data: bytes, pos: int) -> tuple[str, int]:
    start = pos
    n = len(data)
    while pos < n and data[pos] not in _PLAIN_END:
        if data.startswith(b"#|", pos) or data.startswith(b"|#", pos):
            raise SexpError("comment delimiter inside an atom", pos)
        pos += 1
    return data[start:pos].decode("latin-1"), pos


def _quoted(data: bytes, pos: int) -> tuple[str, int]:
    start = pos
    pos += 1
    out: list[str] = []
    n = len(data)
    while True:
        end = data.find(b'"', pos)
        slash = data.find(b"\\", pos, end if end >= 0 else n)
        if end < 0 and slash < 0:
            raise SexpError("unterminated string", start)
        if slash < 0:
            out.append(data[pos:end].decode("latin-1"))
            return "".join(out), end + 1
        out.append(data[pos:slash].decode("latin-1"))
        pos = slash + 1
        if pos >= n:
            raise SexpError("unterminated string", start)
        c = data[pos]
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
            pos += 1
        elif c in b"\r\n":        # backslash-newline: the line break and leading blanks vanish
            pos += 2 if data.startswith(b"\r\n", pos) else 1
            while pos < n and data[pos] in b" \t":
                pos += 1
        elif data[pos:pos + 3].isdigit() and len(data[pos:pos + 3]) == 3:
            value = int(data[pos:pos + 3])
            if value > 255:
                raise SexpError(f"escape \\{value} out of range", pos - 1)
            out.append(chr(value))
            pos += 3
        elif c == ord("x") and re.fullmatch(rb"[0-9a-fA-F]{2}", data[pos + 1:pos + 3]):
            out.append(chr(int(data[pos + 1:pos + 3], 16)))
            pos += 3
        else:
            out.append("\\")       # OCaml keeps an unknown escape as it is


def dumps(value: Sexp) -> str:
    """The compact form of *value*, as in xenopsd's own test data: no blanks around
    parentheses, one space between neighbouring atoms."""
    if isinstance(value, str):
        return _atom(value)
    out = []
    for i, item in enumerate(value):
        if i and isinstance(item, str) and isinstance(value[i - 1], str):
            out.append(" ")
        out.append(dumps(item))
    return "(" + "".join(out) + ")"


def _atom(text: str) -> str:
    if not _NEEDS_QUOTES.search(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
        .replace("\t", "\\t").replace("\r", "\\r").replace("\b", "\\b")
    return f'"{escaped}"'


def ocaml_int(text: str) -> int | None:
    """OCaml's ``int_of_string`` (decimal, 0x/0o/0b, underscores), or None."""
    if not _INT.fullmatch(text):
        return None
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-").replace("_", "")
    base = {"x": 16, "o": 8, "b": 2}.get(body[1:2].lower(), 10) if len(body) > 1 else 10
    return sign * int(body[2:] if base != 10 else body, base)


@dataclass
class XenopsRecord:
    """The decoded Xenops record."""

    time: str
    word_size: int
    vm_str: str | None = None
    xs_subtree: list[tuple[str, str]] | None = None
    vm: dict[str, Any] = field(default_factory=dict)


def xenops_record(value: Sexp) -> XenopsRecord:
    """Check *value* as ``Xenops_record.t_of_sexp`` does; ValueError says what is wrong."""
    if not isinstance(value, list):
        raise ValueError("the record is an atom, not a list of fields")
    fields: dict[str, Sexp] = {}
    for i, item in enumerate(value):
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str):
            raise ValueError(f"field {i + 1} is not a (name value) pair: {_short(item)}")
        name, field_value = item
        if name in fields:
            raise ValueError(f"field {name!r} appears twice")
        fields[name] = field_value
    extra = sorted(set(fields) - {"time", "word_size", "vm_str", "xs_subtree"})
    if extra:
        raise ValueError(f"unknown field(s) {', '.join(extra)} (the reader refuses extra "
                         "fields)")
    for required in ("time", "word_size"):
        if required not in fields:
            raise ValueError(f"no {required} field")
    time = fields["time"]
    if not isinstance(time, str):
        raise ValueError(f"time is a list, not a string: {_short(time)}")
    word = fields["word_size"]
    word_size = ocaml_int(word) if isinstance(word, str) else None
    if word_size is None:
        raise ValueError(f"word_size is not an integer: {_short(word)}")
    record = XenopsRecord(time=time, word_size=word_size)
    if "vm_str" in fields:
        vm_str = fields["vm_str"]
        if not isinstance(vm_str, str):
            raise ValueError("vm_str is a list, not a string")
        record.vm_str = vm_str
        record.vm = vm_summary(vm_str)
    if "xs_subtree" in fields:
        subtree = fields["xs_subtree"]
        if not isinstance(subtree, list):
            raise ValueError("xs_subtree is an atom, not a list of (key value) pairs")
        pairs = []
        for i, pair in enumerate(subtree):
            if not (isinstance(pair, list) and len(pair) == 2
                    and all(isinstance(p, str) for p in pair)):
                raise ValueError(f"xs_subtree entry {i + 1} is not a (key value) pair of "
                                 f"strings: {_short(pair)}")
            pairs.append((pair[0], pair[1]))
        record.xs_subtree = pairs
    return record


def vm_summary(vm_str: str) -> dict[str, Any]:
    """A few facts from ``vm_str`` (xenopsd's VM metadata, itself an S-expression): id,
    name, ty (HVM, PV, PVH...), vcpus, memory_static_max. Empty when it does not parse
    (restore never parses it)."""
    try:
        vm = parse(vm_str.encode("latin-1"))
    except SexpError:
        return {}
    if not isinstance(vm, list):
        return {}
    out: dict[str, Any] = {}
    for item in vm:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            continue
        key, val = item
        if key in ("id", "name") and isinstance(val, str):
            out[key] = text(val)
        elif key in ("vcpus", "vcpu_max", "memory_static_max") and isinstance(val, str):
            number = ocaml_int(val)
            if number is not None:
                out[key] = number
        elif key == "ty" and isinstance(val, list) and val and isinstance(val[0], str):
            out["ty"] = val[0]
    return out


def text(atom: str) -> str:
    """An atom's bytes as UTF-8 text for people (bad bytes replaced)."""
    return atom.encode("latin-1").decode("utf-8", errors="replace")


def _short(value: Sexp, limit: int = 60) -> str:
    shown = dumps(value)
    return shown if len(shown) <= limit else shown[:limit] + "..."
