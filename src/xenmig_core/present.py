"""Turning decoded values into plain data for people and for ``build``, and back.

:func:`present_fields` maps a layout's decoded values to JSON/YAML-ready data: enum fields
by name (an unknown value stays an int), flags as lists of names, integer arrays with runs of
consecutive values folded into ``{first, count}``, nested structs as mappings, bytes as hex
(short) or ``{base64: ...}`` (long). Everything it writes, :mod:`xenmig_core.build` reads back
to the same bytes. :func:`plain` renders derived (viewer) values, where nothing is read back.
"""

from __future__ import annotations

import base64
import functools
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from xenmig_core.spec.layout import FieldSpec, Layout
from xenmig_core.spec.model import EnumSpec
from xenmig_core.spec.spill import Spilled

#: bytes up to this size are written as a hex string, longer ones as base64 (or a length)
SHORT_BYTES = 64
#: a compiled present_fields of one layout: decoded values -> plain data
Presenter = Callable[[dict[str, Any]], dict[str, Any]]
#: runs of at least this many consecutive integers are folded into {first, count}
MIN_RUN = 3


def fold_runs(values: Sequence[int]) -> list[Any]:
    """[5, 6, 7, 9] -> [{first: 5, count: 3}, 9]: runs of +1 steps of MIN_RUN or more."""
    if _one_run(values):
        return [{"first": values[0], "count": len(values)}]
    n = len(values)
    out: list[Any] = []
    i = 0
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


def _one_run(values: Sequence[int]) -> bool:
    """True when *values* is an int array (as decoded) of one run to fold: MIN_RUN or more
    values of +1 steps (checked at once, not value by value)."""
    return type(values) is array and len(values) >= MIN_RUN and is_run(values)


def is_run(values: array[int]) -> bool:
    """True when the non-empty int array *values* is ``values[0], values[0] + 1, ...``:
    compared at once with that run, made as an array; up to 4 values (a checkpoint's few
    dirty pages), the middle ones compared one by one, which costs less than making it."""
    n = len(values)
    first = values[0]
    if values[-1] - first != n - 1:
        return False
    if n <= 4:
        return n < 3 or (values[1] == first + 1 and (n == 3 or values[2] == first + 2))
    return values == array(values.typecode, range(first, first + n))


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
    return presenter(layout, enums, fold=fold)(values)


#: (id(layout), id(enums), fold) -> (layout, enums, presenter); the layout and enums are kept
#: so that their ids stay theirs while the entry lives
_PRESENTERS: dict[tuple[int, int, bool], tuple[Layout, dict[str, EnumSpec], Presenter]] = {}


def presenter(layout: Layout, enums: dict[str, EnumSpec], *, fold: bool = True) -> Presenter:
    """:func:`present_fields` for one layout, compiled once (a layout and its enums never
    change once loaded): one function that builds the whole mapping in one expression when
    every field is there, and falls back to a field-by-field walk when some are not."""
    key = (id(layout), id(enums), fold)
    entry = _PRESENTERS.get(key)
    if entry is None or entry[0] is not layout or entry[1] is not enums:
        entry = _PRESENTERS[key] = (layout, enums, _compile(layout, enums, fold))
    return entry[2]


def _compile(layout: Layout, enums: dict[str, EnumSpec], fold: bool) -> Presenter:
    fields = [f for f in layout.fields if not f.payload]
    steps = [(f.id, _converter(f, enums, fold)) for f in fields]

    def field_by_field(values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field_id, convert in steps:
            if field_id in values:
                value = values[field_id]
                out[field_id] = value if convert is None else convert(value)
        return out

    # the generated function: {'a': values['a'], 'b': _c1(values['b']), ...}; a KeyError (a
    # field not decoded) takes the field-by-field walk, which skips what is missing
    namespace: dict[str, Any] = {"_walk": field_by_field}
    parts = []
    for i, (field_id, convert) in enumerate(steps):
        value = f"values[{field_id!r}]"
        if convert is not None:
            namespace[f"_c{i}"] = convert
            value = f"_c{i}({value})"
        parts.append(f"{field_id!r}: {value}")
    source = ("def present(values):\n"
              "    try:\n"
              f"        return {{{', '.join(parts)}}}\n"
              "    except KeyError:\n"
              "        return _walk(values)\n")
    exec(compile(source, f"<presenter of {layout.name}>", "exec"), namespace)
    present: Presenter = namespace["present"]
    return present


#: (id(layout), id(enums)) -> (layout, enums, JSON presenter), kept as _PRESENTERS keeps its
_JSON_PRESENTERS: dict[tuple[int, int], tuple[Layout, dict[str, EnumSpec],
                                              Callable[[dict[str, Any]], str]]] = {}


def json_presenter(layout: Layout, enums: dict[str, EnumSpec]
                   ) -> Callable[[dict[str, Any]], str]:
    """The JSON text of ``presenter(layout, enums)(values)``, exactly as ``json.dumps`` writes
    that mapping, for a dump that writes JSON: compiled once per layout into one f-string
    that writes an int field's value as it is and an enum field's name as text, without
    making the mapping; other fields go through their converter and the JSON encoder. Values
    of another type than decoding gives (an int field that holds no int), or a field not
    decoded, take the general way: the mapping, encoded."""
    key = (id(layout), id(enums))
    entry = _JSON_PRESENTERS.get(key)
    if entry is None or entry[0] is not layout or entry[1] is not enums:
        entry = _JSON_PRESENTERS[key] = (layout, enums, _compile_json(layout, enums))
    return entry[2]


class JsonCode:
    """Generated code that writes ``presenter(layout, enums)(values)`` as the JSON text
    ``json.dumps`` writes of it, in pieces that a generated function embeds: ``fetch``,
    statements that bind each field's value to a local (raising KeyError for a field not
    there), ``locals`` the local of each field id; ``odd``, an expression (or "") that is
    true when a value is not of the type the text writes as it is (an int field that holds
    no int); ``text``, the mapping's text as the inside of an ``f'...'`` string over those
    locals; ``scope``, the names they use. When a field is missing or ``odd`` is true, the
    general way (the mapping, encoded) gives the text."""

    __slots__ = ("fetch", "locals", "odd", "scope", "text")

    def __init__(self, fetch: list[str], locals_: dict[str, str], odd: str, text: str,
                 scope: dict[str, Any]) -> None:
        self.fetch = fetch
        self.locals = locals_
        self.odd = odd
        self.text = text
        self.scope = scope


def json_code(layout: Layout, enums: dict[str, EnumSpec], values: str = "values",
              prefix: str = "v") -> JsonCode:
    """The :class:`JsonCode` of *layout*'s fields read from the mapping named *values*, its
    locals and names starting with *prefix* (and ``_`` + *prefix*)."""
    from xenmig_core.render.json import encode, quote  # (only a JSON dump needs them)

    scope: dict[str, Any] = {"_int": int}
    fetch, ints, parts = [], [], []
    locals_: dict[str, str] = {}
    for i, spec in enumerate(f for f in layout.fields if not f.payload):
        local = locals_[spec.id] = f"{prefix}{i}"
        fetch.append(f"{local} = {values}[{spec.id!r}]")
        convert = _converter(spec, enums, True)
        if convert is None and spec.is_int:
            ints.append(f"type({local}) is not _int")
            value = f"{{{local}}}"
        else:
            name = f"_{prefix}j{i}"
            scope[name] = _enum_json(spec, enums, encode, quote) or \
                _runs_json(spec, convert, encode) or (
                lambda value, convert=convert: encode(value if convert is None
                                                      else convert(value)))
            value = f"{{{name}({local})}}"
        parts.append(fstring_text(quote(spec.id) + ": ") + value)
    return JsonCode(fetch, locals_, " or ".join(ints), "{{" + fstring_text(", ").join(parts) + "}}",
                    scope)


def _compile_json(layout: Layout, enums: dict[str, EnumSpec]
                  ) -> Callable[[dict[str, Any]], str]:
    from xenmig_core.render.json import encode

    present = presenter(layout, enums)
    code = json_code(layout, enums)
    namespace: dict[str, Any] = {"_general": lambda values: encode(present(values)),
                                 **code.scope}
    source = "def present_json(values):\n"
    if code.fetch:
        source += ("    try:\n" + "".join(f"        {line}\n" for line in code.fetch) +
                   "    except KeyError:\n        return _general(values)\n")
    if code.odd:
        source += f"    if {code.odd}:\n        return _general(values)\n"
    source += f"    return f'{code.text}'\n"
    exec(compile(source, f"<JSON presenter of {layout.name}>", "exec"), namespace)
    present_json: Callable[[dict[str, Any]], str] = namespace["present_json"]
    return present_json


def _enum_json(spec: FieldSpec, enums: dict[str, EnumSpec], encode: Callable[[Any], str],
               quote: Callable[[str], str]) -> Callable[[Any], str] | None:
    """An enum field's JSON text: its entry's name, else the value encoded (None: not an
    enum field the spec has)."""
    table = enums.get(spec.enum) if spec.enum is not None and spec.repeat is None else None
    if table is None:
        return None
    entries = table.entries     # (read at each call: a spec extension may add some)

    def enum_json(value: Any) -> str:
        entry = entries.get(value)
        return quote(entry.name) if entry is not None else encode(value)
    return enum_json


def _runs_json(spec: FieldSpec, convert: Callable[[Any], Any] | None,
               encode: Callable[[Any], str]) -> Callable[[Any], str] | None:
    """An int array field's JSON text: one run (the usual pfn batch) written at once, other
    values as their folded runs encoded (None: not an int array field)."""
    if not spec.is_int or spec.repeat is None or spec.enum is not None \
            or spec.flags is not None or convert is None:
        return None

    def runs_json(value: Any) -> str:
        if _one_run(value):
            return f'[{{"first": {value[0]}, "count": {len(value)}}}]'
        return encode(convert(value))
    return runs_json


def fstring_text(text: str) -> str:
    """*text* as it is written inside a generated f'...' string."""
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("{", "{{") \
        .replace("}", "}}")


def _converter(spec: FieldSpec, enums: dict[str, EnumSpec], fold: bool
               ) -> Callable[[Any], Any] | None:
    """How one field's decoded value is presented (None: as it is). A field that may be
    spilled (an array, bytes: see xenmig_core.spec.spill) shows a spilled value as what
    stands for it (its length and sha256)."""
    convert = _value_converter(spec, enums, fold)
    if convert is None or (spec.repeat is None and spec.type != "bytes"):
        return convert

    def spillable(value: Any) -> Any:
        return value.summary() if isinstance(value, Spilled) else convert(value)
    return spillable


def _value_converter(spec: FieldSpec, enums: dict[str, EnumSpec], fold: bool
                     ) -> Callable[[Any], Any] | None:
    if spec.struct is not None:
        inner = presenter(spec.struct, enums, fold=fold)
        if spec.repeat is not None:     # a list, or a lazily decoded sequence of rows
            return lambda value: [inner(v) for v in value]
        return inner
    if spec.type == "bytes":
        return lambda value: bytes_value(bytes(value))
    if spec.enum is None and spec.flags is None:
        if spec.repeat is not None:      # a list or an array.array
            return fold_runs if fold else list
        return None
    table = enums.get(spec.enum) if spec.enum is not None else None
    if table is not None:
        entries = table.entries     # (read at each call: a spec extension may add some)

        def one(value: Any) -> Any:
            entry = entries.get(value)
            return entry.name if entry is not None else value
    else:      # flags (or an enum the spec lacks: enum_value says so when it is used)
        one = functools.partial(enum_value, spec, enums=enums)
    if spec.repeat is not None:
        return lambda value: [one(v) for v in value]
    return one


#: exact types plain() returns as they are
_SCALARS = frozenset({int, str, float, bool, type(None)})


def plain(value: Any) -> Any:
    """Derived values as JSON-ready data: bytes as hex (short) or ``{length: N}``."""
    kind = type(value)
    if kind in _SCALARS:            # the common cases first, by exact type
        return value
    if kind is dict:                # (scalars inside are taken as they are, without a call)
        return {k if type(k) is str else str(k): v if type(v) in _SCALARS else plain(v)
                for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _SCALARS else plain(v) for v in value]
    return _plain_other(value)


def _plain_other(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Spilled):
        return value.summary()
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        return data.hex() if len(data) <= SHORT_BYTES else {"length": len(data)}
    if isinstance(value, list | tuple | array | Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    return str(value)
