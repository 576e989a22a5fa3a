"""Compiled body layouts: a spec ``seq`` turned once into fast decoders and encoders.

Consecutive fixed-size integer fields become one precompiled ``struct.Struct`` per byte
order; arrays of integers are read with ``array`` (byteswapped when the stream's order is
not the machine's) and stay ``array.array`` values (8 bytes per u64, not a list of int
objects); arrays of fixed structs use ``Struct.iter_unpack``. Per record there is one
unpack per run of fixed fields, never a loop over field descriptions.

A field that loads more than :data:`~xenmig_core.spec.spill.SPILL_MIN` bytes (an array, a
blob) is not held: it is read in chunks into a temporary file and stands as a spilled value
(:mod:`xenmig_core.spec.spill`), which checks iterate piece by piece.

A layout decodes from a *reader* (anything with ``take(n, what)`` and ``remaining``) and
stops before a ``payload`` field, whose size is left to the engine to skip or deliver.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections import ChainMap
from collections.abc import Iterator, Mapping, Sequence

from xenmig_core.errors import RecordError
from xenmig_core.plain import Plain, factory
from xenmig_core.spec.expr import Names, evaluate, resolve
from xenmig_core.spec.spill import (
    SPILL_MIN,
    Spilled,
    SpilledArray,
    SpilledBytes,
    SpilledRows,
    spill_from,
    unpacker,
)

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any, Protocol
else:
    Protocol = object   # (Reader documents an interface; only type checkers enforce it)

#: Arrays longer than this are allocated up front only when the reader holds their bytes.
GROW_STEP = 1 << 20
#: An array of structs reports at most this many failed item checks (then one summary).
MAX_ITEM_PROBLEMS = 3
#: Integer types of the spec language: name -> struct code.
INT_CODES = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q",
             "i8": "b", "i16": "h", "i32": "i", "i64": "q"}
NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"
#: The spec language's byte orders (but "stream", which a context decides) -> struct prefix.
ORDER_PREFIXES = {"big": ">", "little": "<", "native": NATIVE_ORDER}
_ARRAY_CODES = {"B": "B", "H": "H", "I": "I", "Q": "Q", "b": "b", "h": "h", "i": "i", "q": "q"}


def _array_code(code: str) -> str:
    """array typecode with the same item size as the struct code."""
    size = struct.calcsize(code)
    for candidate in (code, code.upper() if code.isupper() else code, "L", "l"):
        if candidate in "bBhHiIlLqQ" and array(candidate).itemsize == size and \
                candidate.isupper() == code.isupper():
            return candidate
    return _ARRAY_CODES[code]


class Reader(Protocol):
    """What a layout decodes from."""

    remaining: int

    def take(self, n: int, what: str) -> bytes: ...

    def take_into(self, view: memoryview, what: str) -> None:
        """Fill *view* with the next ``len(view)`` bytes (no intermediate copy)."""

    def holds(self, n: int) -> bool:
        """True when the next *n* bytes are known to be there (so a buffer for them may be
        allocated up front); False when they must be gathered as they arrive (a pipe)."""


class BytesReader:
    """A Reader over an in-memory buffer."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self.remaining = len(self._data)

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise RecordError(f"needs {n} bytes, only {self.remaining} left in body",
                              field=what, fatal=False)
        out = self._data[self._pos:self._pos + n].tobytes()
        self._pos += n
        self.remaining -= n
        return out

    def take_into(self, view: memoryview, what: str) -> None:
        n = len(view)
        if n > self.remaining:
            raise RecordError(f"needs {n} bytes, only {self.remaining} left in body",
                              field=what, fatal=False)
        view[:] = self._data[self._pos:self._pos + n]
        self._pos += n
        self.remaining -= n

    def holds(self, n: int) -> bool:
        return n <= self.remaining


class Check(Plain, frozen=True):
    """One field check. ``kind`` is eq, any_of, min, max, reserved, reserved_bits, known, expr.

    For ``known`` the argument is the set of values the field's enum names.
    """

    kind: str
    arg: Any
    severity: str = "error"
    message: str | None = None


class FieldSpec(Plain):
    """One field of a seq, as the spec describes it."""

    id: str
    type: str
    doc: str = ""
    orig_id: str | None = None
    size: int | str | None = None        # bytes: N, a field name, or "rest"
    repeat: int | str | None = None      # arrays: N, a field name, or "rest"
    enum: str | None = None
    flags: str | None = None
    payload: bool = False
    head: int = 0                        # payloads: expose this many first bytes as ID_head
    checks: list[Check] = factory(list)
    struct: Layout | None = None         # nested struct type, when type names one

    @property
    def is_int(self) -> bool:
        return self.type in INT_CODES


def _count(source: int | str | None, values: Mapping[str, Any], reader: Reader,
           item: int, what: str) -> int:
    if isinstance(source, int):
        return source
    if source == "rest":
        if item and reader.remaining % item:
            raise RecordError(f"{reader.remaining} bytes left is not a whole number "
                              f"of {item}-byte items", field=what, fatal=False)
        return reader.remaining // item if item else reader.remaining
    return int(values[source])  # a field decoded earlier (checked when the spec loaded)


class FixedRun:
    """Consecutive fixed integer fields: one struct.Struct per byte order."""

    def __init__(self, fields: list[FieldSpec]) -> None:
        self.fields = fields
        self.names = tuple(f.id for f in fields)
        codes = "".join(INT_CODES[f.type] for f in fields)
        self.structs = {"<": struct.Struct("<" + codes), ">": struct.Struct(">" + codes)}
        self.size = self.structs["<"].size

    def decode(self, reader: Reader, order: str, out: dict[str, Any]) -> None:
        raw = reader.take(self.size, self.names[0])
        out.update(zip(self.names, self.structs[order].unpack(raw), strict=True))

    def encode(self, values: Mapping[str, Any], order: str) -> bytes:
        return self.structs[order].pack(*(values.get(name, 0) for name in self.names))

    def size_of(self, values: Mapping[str, Any], order: str) -> int:
        return len(self.encode(values, order))


class IntArray:
    """One integer field repeated (``repeat``): an ``array`` of *itemsize*-byte items."""

    def __init__(self, spec: FieldSpec) -> None:
        self.spec = spec
        self.code = INT_CODES[spec.type]
        self.itemsize = struct.calcsize(self.code)
        self.array_code = _array_code(self.code)

    def decode(self, reader: Reader, order: str, out: dict[str, Any]) -> None:
        n = _count(self.spec.repeat, out, reader, self.itemsize, self.spec.id)
        need = n * self.itemsize
        if need > reader.remaining:
            raise RecordError(f"{n} items need {need} bytes, body has "
                              f"{reader.remaining} left", field=self.spec.id, fatal=False)
        if need > SPILL_MIN:   # read in chunks into a temporary file, never held
            convert = None if order == NATIVE_ORDER else self._swapped
            out[self.spec.id] = SpilledArray(*spill_from(reader, need, self.spec.id, convert),
                                             self.spec.id, self.array_code, convert is not None)
            return
        if need <= GROW_STEP or reader.holds(need):
            items = array(self.array_code, [0]) * n
            if n:
                reader.take_into(memoryview(items).cast("B"), self.spec.id)
        else:               # a pipe: the array grows with the bytes that arrive
            items = array(self.array_code)
            for done in range(0, need, GROW_STEP):
                items.frombytes(reader.take(min(GROW_STEP, need - done), self.spec.id))
        if order != NATIVE_ORDER:
            items.byteswap()
        out[self.spec.id] = items  # an array: 8 bytes per u64, not a list of int objects

    def _swapped(self, chunk: memoryview) -> array:
        items = array(self.array_code)
        items.frombytes(chunk)
        items.byteswap()
        return items

    def encode(self, values: Mapping[str, Any], order: str) -> bytes:
        _held(values.get(self.spec.id))
        items = array(self.array_code, values.get(self.spec.id, []))
        if order != NATIVE_ORDER:
            items.byteswap()
        return items.tobytes()

    def size_of(self, values: Mapping[str, Any], order: str) -> int:
        value = values.get(self.spec.id)
        if type(value) is array and value.typecode == self.array_code:   # as decoded
            return len(value) * self.itemsize
        return len(self.encode(values, order))


class StructRows(Sequence[dict[str, "Any"]]):
    """An array of fixed structs, decoded lazily: the raw bytes are kept and each item is
    unpacked into a dict when accessed. A 4 MiB body of 16-byte entries costs 4 MiB,
    not a quarter of a million dicts (larger ones are spilled). Compares equal to a list
    of the same dicts."""

    __slots__ = ("_names", "_raw", "_struct")

    def __init__(self, raw: bytes, struct_: struct.Struct, names: tuple[str, ...]) -> None:
        self._raw = raw
        self._struct = struct_
        self._names = names

    def __len__(self) -> int:
        return len(self._raw) // self._struct.size

    def _row(self, values: tuple[Any, ...]) -> dict[str, Any]:
        return dict(zip(self._names, values, strict=True))

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("struct array index out of range")
        return self._row(self._struct.unpack_from(self._raw, index * self._struct.size))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for values in self._struct.iter_unpack(self._raw):
            yield self._row(values)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StructRows | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other,
                                                                           strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"StructRows({len(self)} items of {', '.join(self._names)})"


class StructArray:
    """One struct field repeated (``repeat``): a list of the struct's field dicts."""

    def __init__(self, spec: FieldSpec) -> None:
        assert spec.struct is not None
        self.spec = spec
        self.layout = spec.struct

    def decode(self, reader: Reader, order: str, out: dict[str, Any]) -> None:
        size = self.layout.fixed_size
        if size is None:  # variable-size elements: decode one by one
            items = []
            n = None if self.spec.repeat == "rest" else _count(self.spec.repeat, out, reader,
                                                                0, self.spec.id)
            while (reader.remaining if n is None else len(items) < n):
                items.append(self.layout.decode(reader, order))
            out[self.spec.id] = items
            return
        n = _count(self.spec.repeat, out, reader, size, self.spec.id)
        need = n * size
        if need > reader.remaining:
            raise RecordError(f"{n} items need {need} bytes, body has "
                              f"{reader.remaining} left", field=self.spec.id, fatal=False)
        run = self.layout.single_run
        if need > SPILL_MIN:   # read in chunks into a temporary file, never held
            unpack = unpacker(run.structs[order], run.names) if run is not None else \
                self._unpacker(size, order)
            out[self.spec.id] = SpilledRows(*spill_from(reader, need, self.spec.id),
                                            self.spec.id, size, unpack)
            return
        raw = reader.take(need, self.spec.id)
        if run is not None:
            out[self.spec.id] = StructRows(raw, run.structs[order], run.names)
        else:
            sub = BytesReader(raw)
            out[self.spec.id] = [self.layout.decode(sub, order) for _ in range(n)]

    def _unpacker(self, size: int, order: str) -> Any:
        def unpack(data: bytes) -> list[dict[str, Any]]:
            sub = BytesReader(data)
            return [self.layout.decode(sub, order) for _ in range(len(data) // size)]
        return unpack

    def encode(self, values: Mapping[str, Any], order: str) -> bytes:
        _held(values.get(self.spec.id))
        return b"".join(self.layout.encode(item, order) for item in values.get(self.spec.id, []))

    def size_of(self, values: Mapping[str, Any], order: str) -> int:
        value = values.get(self.spec.id)
        if type(value) is StructRows and self.layout.fixed_size is not None:   # as decoded
            return len(value) * self.layout.fixed_size
        return len(self.encode(values, order))


def _held(value: Any) -> None:
    """Encoding builds the body in memory: a spilled value is refused (TooLarge)."""
    if isinstance(value, Spilled):
        bytes(value)


class StructField:
    """One struct field: a dict of the struct's fields."""

    def __init__(self, spec: FieldSpec) -> None:
        assert spec.struct is not None
        self.spec = spec

    def decode(self, reader: Reader, order: str, out: dict[str, Any]) -> None:
        assert self.spec.struct is not None
        out[self.spec.id] = self.spec.struct.decode(reader, order)

    def encode(self, values: Mapping[str, Any], order: str) -> bytes:
        assert self.spec.struct is not None
        return self.spec.struct.encode(values.get(self.spec.id, {}), order)

    def size_of(self, values: Mapping[str, Any], order: str) -> int:
        return len(self.encode(values, order))


class ByteField:
    """One field of raw bytes (``size``)."""

    def __init__(self, spec: FieldSpec) -> None:
        self.spec = spec

    def decode(self, reader: Reader, order: str, out: dict[str, Any]) -> None:
        n = _count(self.spec.size, out, reader, 1, self.spec.id)
        if n > SPILL_MIN and n <= reader.remaining:   # chunks into a temporary file
            out[self.spec.id] = SpilledBytes(*spill_from(reader, n, self.spec.id), self.spec.id)
            return
        out[self.spec.id] = reader.take(n, self.spec.id)

    def encode(self, values: Mapping[str, Any], order: str) -> bytes:
        return bytes(values.get(self.spec.id, b""))

    def size_of(self, values: Mapping[str, Any], order: str) -> int:
        value = values.get(self.spec.id, b"")
        return len(value) if type(value) is bytes else len(self.encode(values, order))


class Layout:
    """A compiled seq. ``decode`` returns a dict of field values; ``encode`` the bytes.

    Contract: ``decode`` raises RecordError(fatal=False) when the body is too short for the
    fields; it stops before a ``payload`` field (always the last one) and leaves its bytes
    unread. ``check`` returns (field path, message, severity) for every failed field check.
    """

    def __init__(self, name: str, fields: list[FieldSpec]) -> None:
        self.name = name
        self.fields = fields
        self.payload: FieldSpec | None = fields[-1] if fields and fields[-1].payload else None
        #: the fields before any payload in decoding order, as segments (FixedRun,
        #: IntArray, StructArray, StructField, ByteField: each decodes, encodes and sizes
        #: its part); the engine's generated record functions read them too
        self.segments: list[Any] = []
        run: list[FieldSpec] = []
        for spec in fields:
            if spec.payload:
                break
            if spec.is_int and spec.repeat is None:
                run.append(spec)
                continue
            if run:
                self.segments.append(FixedRun(run))
                run = []
            if spec.is_int:
                self.segments.append(IntArray(spec))
            elif spec.struct is not None and spec.repeat is not None:
                self.segments.append(StructArray(spec))
            elif spec.struct is not None:
                self.segments.append(StructField(spec))
            else:
                self.segments.append(ByteField(spec))
        if run:
            self.segments.append(FixedRun(run))
        self.single_run: FixedRun | None = (
            self.segments[0] if len(self.segments) == 1 and isinstance(self.segments[0],
                                                                        FixedRun) else None)
        self.fixed_size: int | None = self.single_run.size if self.single_run else (
            0 if not self.segments and self.payload is None else None)
        self.min_size = sum(seg.size for seg in self.segments if isinstance(seg, FixedRun))
        self.static_size: int | None = _static_size(fields)
        #: decoding loads a body-dependent amount (arrays, bytes) besides any payload
        self.variable = any(not isinstance(seg, FixedRun) for seg in self.segments)
        self._checked = [f for f in fields if f.checks or (f.struct and f.struct.has_checks)]
        self.has_checks = bool(self._checked)
        #: the leading fixed fields when something variable follows them: a record's
        #: length rules over these are checked before the rest is read (decode_lead)
        self.lead: tuple[str, ...] = self.segments[0].names if len(self.segments) > 1 \
            and isinstance(self.segments[0], FixedRun) else ()

    def decode(self, reader: Reader, order: str,
               outer: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Decode the fields; sizes and counts may also name fields of *outer* (values
        decoded earlier, e.g. an earlier header's). Returns this layout's fields only."""
        out: dict[str, Any] = {}
        values: Any = ChainMap(out, dict(outer)) if outer else out
        for segment in self.segments:
            segment.decode(reader, order, values)
        return out

    def decode_lead(self, reader: Reader, order: str) -> dict[str, Any]:
        """Decode only the :attr:`lead` fields (the rest follows with :meth:`decode_rest`)."""
        out: dict[str, Any] = {}
        self.segments[0].decode(reader, order, out)
        return out

    def decode_rest(self, reader: Reader, order: str, out: dict[str, Any],
                    outer: Mapping[str, Any] | None = None) -> None:
        """Decode the fields after the :attr:`lead` into *out* (sizes may name *outer*'s
        fields, as in :meth:`decode`)."""
        values: Any = ChainMap(out, dict(outer)) if outer else out
        for segment in self.segments[1:]:
            segment.decode(reader, order, values)

    def encode(self, values: Mapping[str, Any], order: str) -> bytes:
        """Encode the non-payload fields (a payload is appended by the writer)."""
        return b"".join(segment.encode(values, order) for segment in self.segments)

    def encoded_size(self, values: Mapping[str, Any], order: str) -> int:
        """``len(self.encode(values, order))``, raising what it raises, without building
        the bytes of values as decoding made them (an int array, struct rows, bytes). A
        subclass that encodes otherwise (appended fields: spec.extend) is measured by its
        encode."""
        if type(self).encode is not Layout.encode:
            return len(self.encode(values, order))
        size = 0
        for segment in self.segments:
            size += segment.size_of(values, order)
        return size

    def check(self, values: Mapping[str, Any], names: Mapping[str, Any],
              prefix: str = "") -> list[tuple[str, str, str]]:
        problems: list[tuple[str, str, str]] = []
        for spec in self._checked:
            if spec.id not in values:
                continue
            value = values[spec.id]
            path = prefix + spec.id
            if spec.struct is not None:
                many = isinstance(value, list | StructRows | SpilledRows)
                found: list[tuple[str, str, str]] = []
                for i, item in enumerate(value if many else [value]):
                    found.extend(spec.struct.check(item, names, f"{path}[{i}]." if many
                                                   else path + "."))
                    if len(found) > MAX_ITEM_PROBLEMS:
                        break
                problems.extend(found[:MAX_ITEM_PROBLEMS])
                if len(found) > MAX_ITEM_PROBLEMS:
                    problems.append((path, f"more items fail their checks (the first "
                                           f"{MAX_ITEM_PROBLEMS} are shown)", found[-1][2]))
                continue
            for chk in spec.checks:
                message = _run_check(chk, value, spec, names)
                if message is not None:
                    problems.append((path, f"{chk.message} (found {_show(value)})"
                                     if chk.message else message, chk.severity))
        return problems


def _static_size(fields: list[FieldSpec]) -> int | None:
    """The encoded size when every field has a size fixed by the spec (no counts, no rest,
    no payload), else None."""
    total = 0
    for spec in fields:
        if spec.payload:
            return None
        if spec.type == "bytes":
            item = spec.size if isinstance(spec.size, int) else None
        elif spec.struct is not None:
            item = spec.struct.static_size
        else:
            item = struct.calcsize(INT_CODES[spec.type])
        if item is None:
            return None
        if spec.repeat is not None:
            if not isinstance(spec.repeat, int):
                return None
            item *= spec.repeat
        total += item
    return total


def _run_check(chk: Check, value: Any, spec: FieldSpec, names: Mapping[str, Any]) -> str | None:
    """Return a message when *value* fails *chk*, else None."""
    kind, arg = chk.kind, chk.arg
    if isinstance(value, list | array | SpilledArray):
        for i, item in enumerate(value):
            msg = _run_check(chk, item, spec, names)
            if msg is not None:
                return f"[{i}] {msg}"
        return None
    if kind == "eq":
        expected = resolve(arg, names, context=f"check of {spec.id}")
        return None if value == expected else f"expected {_show(expected)}, found {_show(value)}"
    if kind == "any_of":
        return None if value in arg else \
            f"expected one of {', '.join(_show(a) for a in arg)}, found {_show(value)}"
    if kind == "min":
        low = resolve(arg, names, context=f"check of {spec.id}")
        return None if value >= low else f"must be at least {low}, found {value}"
    if kind == "max":
        high = resolve(arg, names, context=f"check of {spec.id}")
        return None if value <= high else f"must be at most {high}, found {value}"
    if kind == "reserved":
        if isinstance(value, SpilledBytes):
            return "reserved bytes are not zero" if value.any_set() else None
        if isinstance(value, bytes | bytearray | memoryview):
            return None if not any(value) else "reserved bytes are not zero"
        return None if value == 0 else f"reserved field is not zero: {value:#x}"
    if kind == "reserved_bits":
        bad = value & arg
        return None if not bad else f"reserved bits set: {bad:#x}"
    if kind == "known":
        return None if value in arg else f"unknown {spec.enum or 'value'} {_show(value)}"
    if kind == "expr":
        env = names.with_value(value=value) if isinstance(names, Names) else \
            {**names, "value": value}
        if evaluate(arg, env, context=f"check of {spec.id}"):
            return None
        return f"check failed: {arg.source} (value {_show(value)})"
    raise AssertionError(f"unknown check kind {kind}")


def _show(value: Any) -> str:
    if isinstance(value, Spilled):
        return f"{value.nbytes} bytes"
    if isinstance(value, int) and not isinstance(value, bool) and value > 9:
        return f"{value:#x}"
    return repr(value) if isinstance(value, str | bytes) else str(value)
