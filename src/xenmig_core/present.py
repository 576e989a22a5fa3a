"""Turning decoded values into plain data for people and for ``build``, and back.

:func:`present_fields` maps a layout's decoded values to JSON/YAML-ready data: enum fields
by name (an unknown value stays an int), flags as lists of names, integer arrays with runs of
consecutive values folded into ``{first, count}``, nested structs as mappings, bytes as hex
(short) or ``{base64: ...}`` (long). Everything it writes, :mod:`xenmig_core.build` reads back
to the same bytes. :func:`plain` renders derived (viewer) values, where nothing is read back.
"""

from __future__ import annotations

import base64
from array import array
from collections.abc import Sequence
from typing import Any

from xenmig_core.spec.layout import FieldSpec, Layout
from xenmig_core.spec.model import EnumSpec
from xenmig_core.spec.spill import Spilled

#: bytes up to this size are written as a hex string, longer ones as base64 (or a length)
SHORT_BYTES = 64
#: runs of at least this many consecutive integers are folded into {first, count}
MIN_RUN = 3


def fold_runs(values: Sequence[int]) -> list[Any]:
    """[5, 6, 7, 9] -> [{first: 5, count: 3}, 9]: runs of +1 steps of MIN_RUN or more."""
    out: list[Any] = []
    i = 0
    n = len(values)
    while i < n:
        j = i + 1
        while j < n and values[j] == values[j - 1] + 1:
            j += 1
        if j - i >= MIN_RUN:
            out.append({"first": values[i], "count": j - i})
        else:
            out.extend(values[i:j])
        i = j
    return out


def _as_text(data: bytes) -> str | None:
    """*data* as text when it is UTF-8 made of printable characters and line breaks."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(ch.isprintable() or ch in "\n\r\t" for ch in text):
        return text
    return None


def bytes_value(data: bytes) -> Any:
    """Short bytes as a hex string; long text (a configuration, an XML document) as
    ``{text: ...}``, followed by ``{zeros: N}`` for NUL terminators; other long bytes as
    ``{base64: ...}``."""
    if len(data) <= SHORT_BYTES:
        return data.hex()
    body = data.rstrip(b"\0")
    text = _as_text(body) if body else None
    if text is not None:
        nuls = len(data) - len(body)
        return [{"text": text}, {"zeros": nuls}] if nuls else {"text": text}
    return {"base64": base64.b64encode(data).decode("ascii")}


def enum_value(spec: FieldSpec, value: int, enums: dict[str, EnumSpec]) -> Any:
    """An int field's presented value: enum name, flag names, or the int."""
    if spec.enum is not None:
        entry = enums[spec.enum].entries.get(value)
        return entry.name if entry is not None else value
    if spec.flags is not None:
        return enums[spec.flags].flag_names(value)
    return value


def present_fields(layout: Layout, values: dict[str, Any], enums: dict[str, EnumSpec],
                   *, fold: bool = True) -> dict[str, Any]:
    """The layout's fields of *values* (others ignored) as plain, buildable data."""
    out: dict[str, Any] = {}
    for spec in layout.fields:
        if spec.payload or spec.id not in values:
            continue
        value = values[spec.id]
        if isinstance(value, Spilled):      # too large to show: what stands for it
            out[spec.id] = value.summary()
        elif spec.struct is not None:
            if spec.repeat is not None:     # a list, or a lazily decoded sequence of rows
                out[spec.id] = [present_fields(spec.struct, v, enums, fold=fold) for v in value]
            else:
                out[spec.id] = present_fields(spec.struct, value, enums, fold=fold)
        elif spec.type == "bytes":
            out[spec.id] = bytes_value(bytes(value))
        elif spec.repeat is not None:       # a list or an array.array
            if spec.enum is None and spec.flags is None:
                out[spec.id] = fold_runs(value) if fold else list(value)
            else:
                out[spec.id] = [enum_value(spec, v, enums) for v in value]
        else:
            out[spec.id] = enum_value(spec, value, enums)
    return out


def plain(value: Any) -> Any:
    """Derived values as JSON-ready data: bytes as hex (short) or ``{length: N}``."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Spilled):
        return value.summary()
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return data.hex() if len(data) <= SHORT_BYTES else {"length": len(data)}
    if isinstance(value, list | tuple | array | Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return data.hex() if len(data) <= SHORT_BYTES else {"length": len(data)}
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)
