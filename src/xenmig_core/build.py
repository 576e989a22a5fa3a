"""``build``: assemble a binary stream from a description shaped like ``dump``'s output.

A description is the YAML or JSON document ``dump -t yaml|json`` writes (a mapping with
``items``), or its JSON Lines form. Items are written in order: ``header`` and ``record``
items through :class:`~xenmig_core.writer.StreamWriter` from their ``fields`` (enum names or
numbers, flag lists, runs ``{first, count}``, bytes as hex or data mappings), ``payload``,
``body`` (raw body bytes), ``padding`` and ``raw``; ``trailing`` and ``raw`` items as bytes.
Other kinds (stream, diagnostic, end) carry no bytes, except that a ``stream`` item starts a
nested format, which inherits the current byte order. Derived values (counts and sizes named
by arrays, record lengths, padding, reserved fields) are computed when omitted and checked
when given. Every error is a :class:`BuildError` naming the description path of the problem,
e.g. ``items[7].fields.count: 3, but pfn has 2 items``.

Data mappings (for bytes fields, ``payload``, ``body``, ``data``), or a list of them
concatenated: ``{hex: ...}``, ``{base64: ...}``, ``{text: ...}`` (UTF-8), ``{zeros: N}``,
``{fill: HEX, length: N}`` (the pattern repeated), ``{ref: FILE, offset: N, length: N}`` (a
relative FILE is relative to the description's folder). A plain string is hex.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import yaml

from xenmig_core.dump import type_length_framing
from xenmig_core.errors import UsageError
from xenmig_core.registry import Registry
from xenmig_core.sink import atomic_output, is_stream_target, open_output
from xenmig_core.source import ByteSource
from xenmig_core.spec.layout import FieldSpec, Layout
from xenmig_core.spec.model import EnumSpec, FormatSpec
from xenmig_core.verifier import VerifyReport, verify_source
from xenmig_core.writer import StreamWriter

#: libyaml's safe loader when available (much faster on large inline hex), else PyYAML's
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_IGNORED_KINDS = {"dump", "stream_end", "diagnostic", "end"}
_INT_BITS = {"u8": 8, "u16": 16, "u32": 32, "u64": 64, "i8": 8, "i16": 16, "i32": 32,
             "i64": 64}


#: The most bytes one field, body or payload may describe: build assembles each record in
#: memory, so a description asking for more is refused before anything is allocated
#: (libxc's REC_LENGTH_MAX; streamed ``raw`` and ``trailing`` data have no such limit).
MAX_IN_MEMORY = 128 << 20
#: ``zeros`` and ``fill`` data are produced in pieces of this size.
PIECE = 1 << 20


class BuildError(UsageError):
    """A description is wrong; the message starts with the path of the problem."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class InvalidBuild(UsageError):
    """The built stream does not verify (and --no-verify was not given)."""

    exit_code = 1


# -- reading descriptions ----------------------------------------------------------------
def load_description(text: str) -> list[Any]:
    """The items of a description (YAML, JSON or JSON Lines)."""
    doc: Any
    try:
        doc = json.loads(text)
    except ValueError:
        lines = [line for line in text.splitlines() if line.strip()]
        try:
            doc = [json.loads(line) for line in lines]
        except ValueError:
            try:
                doc = yaml.load(text, Loader=_YAML_LOADER)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"line {mark.line + 1}" if mark is not None else "description"
                raise BuildError(where, f"not valid YAML or JSON: "
                                 f"{getattr(exc, 'problem', None) or exc}") from None
    if isinstance(doc, dict):
        if "items" not in doc or not isinstance(doc["items"], list):
            raise BuildError("items", "a description needs a list of items")
        return doc["items"]
    if isinstance(doc, list):
        return doc
    raise BuildError("description", "expected a mapping with 'items' or a list of items")


# -- values ------------------------------------------------------------------------------
def int_value(spec: FieldSpec, value: Any, path: str, enums: dict[str, EnumSpec]) -> int:
    """*value* (an int, a 0x string, an enum name or a list of flag names) as an int that
    fits the field's type."""
    if isinstance(value, bool):
        raise BuildError(path, f"expected a number, found {value!r}")
    if isinstance(value, list) and spec.flags is not None:
        total = 0
        for i, name in enumerate(value):
            bit = enums[spec.flags].value_of(name) if isinstance(name, str) else None
            if bit is None and isinstance(name, str) and name.startswith("bit") \
                    and name[3:].isdigit():
                bit = int(name[3:])
            if bit is None:
                known = ", ".join(e.name for e in enums[spec.flags].entries.values())
                raise BuildError(f"{path}[{i}]", f"unknown flag {name!r} (known: {known})")
            total |= 1 << bit
        value = total
    elif isinstance(value, str):
        number = enums[spec.enum].value_of(value) if spec.enum else None
        if number is None:
            try:
                number = int(value, 0)
            except ValueError:
                known = (" (known: " + ", ".join(e.name for e in
                                                 enums[spec.enum].entries.values()) + ")"
                         if spec.enum else "")
                raise BuildError(path, f"{value!r} is not a number"
                                 + (f" nor a {spec.enum} name" if spec.enum else "")
                                 + known) from None
        value = number
    if not isinstance(value, int):
        raise BuildError(path, f"expected a number, found {type(value).__name__}")
    bits = _INT_BITS[spec.type]
    low, high = (0, (1 << bits) - 1) if spec.type[0] == "u" else \
        (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if not low <= value <= high:
        raise BuildError(path, f"{value} is out of range for {spec.type} ({low}..{high})")
    return value


def _expand_runs(spec: FieldSpec, value: Any, path: str,
                 enums: dict[str, EnumSpec]) -> list[int]:
    if not isinstance(value, list):
        raise BuildError(path, "expected a list")
    out: list[int] = []
    for i, item in enumerate(value):
        if isinstance(item, dict):
            extra = set(item) - {"first", "count", "step"}
            if extra or "first" not in item or "count" not in item:
                raise BuildError(f"{path}[{i}]", "a run is {first: N, count: N[, step: N]}")
            first = int_value(spec, item["first"], f"{path}[{i}].first", enums)
            count, step = item["count"], item.get("step", 1)
            if not isinstance(count, int) or count < 0 or not isinstance(step, int):
                raise BuildError(f"{path}[{i}].count", "count and step are integers >= 0")
            out.extend(first + k * step for k in range(count))
            int_value(spec, out[-1] if out else 0, f"{path}[{i}]", enums)
        else:
            out.append(int_value(spec, item, f"{path}[{i}]", enums))
    return out


class DataResolver:
    """Turns data mappings into bytes; ``ref`` paths are relative to *base*."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def data(self, value: Any, path: str) -> bytes:
        """The bytes *value* describes, in memory (a field, a body, a payload): refused
        before anything is allocated when they would exceed :data:`MAX_IN_MEMORY`."""
        size = _declared_size(value)
        if size > MAX_IN_MEMORY:
            raise BuildError(path, f"{size} bytes: more than build assembles in memory for "
                             f"one field, body or payload ({MAX_IN_MEMORY} bytes)")
        return b"".join(self.parts(value, path))

    def parts(self, value: Any, path: str) -> Iterator[bytes]:
        """The bytes of *value* in pieces (a ref is read in bounded chunks)."""
        if isinstance(value, list):
            for i, part in enumerate(value):
                yield from self.parts(part, f"{path}[{i}]")
            return
        if isinstance(value, str):
            yield _hex(value, path)
            return
        if not isinstance(value, dict):
            raise BuildError(path, "expected bytes: a hex string, a data mapping or a list")
        kinds = [k for k in ("hex", "base64", "text", "zeros", "fill", "ref") if k in value]
        if len(kinds) != 1:
            if "sha256" in value or set(value) <= {"length", "unavailable"}:
                raise BuildError(path, "contents not given (only a length or digests): "
                                 "dump with --pages ref or --pages hex")
            raise BuildError(path, "give exactly one of hex, base64, text, zeros, fill, ref")
        kind = kinds[0]
        allowed = {kind, "length"} | ({"offset"} if kind == "ref" else set())
        extra = set(value) - allowed
        if extra:
            raise BuildError(f"{path}.{sorted(extra)[0]}", f"unknown key with {kind}")
        length = value.get("length")
        if length is not None and (not isinstance(length, int) or length < 0):
            raise BuildError(f"{path}.length", "length is an integer >= 0")
        if kind == "ref":
            yield from self._ref(value, path)
            return
        if kind == "hex":
            data = _hex(value["hex"], f"{path}.hex")
        elif kind == "base64":
            try:
                data = base64.b64decode(str(value["base64"]), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BuildError(f"{path}.base64", f"invalid base64: {exc}") from None
        elif kind == "text":
            data = str(value["text"]).encode("utf-8")
        elif kind == "zeros":
            count = value["zeros"]
            if not isinstance(count, int) or count < 0:
                raise BuildError(f"{path}.zeros", "zeros is a byte count >= 0")
            if length is not None and count != length:
                raise BuildError(f"{path}.length", f"given {length}, the data has {count} "
                                 "bytes")
            yield from _repeated(b"\0", count)
            return
        else:
            pattern = _hex(value["fill"], f"{path}.fill")
            if length is None or not pattern:
                raise BuildError(path, "fill needs a non-empty pattern and a length")
            yield from _repeated(pattern, length)
            return
        if length is not None and len(data) != length:
            raise BuildError(f"{path}.length", f"given {length}, the data has {len(data)} bytes")
        yield data

    def _ref(self, value: dict[str, Any], path: str) -> Iterator[bytes]:
        offset, length = value.get("offset", 0), value.get("length")
        if not isinstance(offset, int) or offset < 0 or not isinstance(length, int):
            raise BuildError(path, "a ref needs an offset >= 0 and a length")
        target = Path(str(value["ref"]))
        if not target.is_absolute():
            target = self.base / target
        try:
            handle = open(target, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise BuildError(f"{path}.ref", f"cannot open {target}: "
                             f"{exc.strerror or exc}") from None
        with handle:
            handle.seek(offset)
            left = length
            while left:
                chunk = handle.read(min(left, 1 << 20))
                if not chunk:
                    raise BuildError(f"{path}.length", f"{target} has only "
                                     f"{length - left} bytes at offset {offset}, not {length}")
                left -= len(chunk)
                yield chunk


def _repeated(pattern: bytes, length: int) -> Iterator[bytes]:
    """*pattern* repeated to *length* bytes, in pieces of about :data:`PIECE` bytes (a
    ``zeros`` or ``fill`` of any size costs one piece of memory when it is streamed)."""
    piece = pattern * max(1, PIECE // len(pattern))
    left = length
    while left:
        chunk = piece[:left]
        left -= len(chunk)
        yield chunk


def _declared_size(value: Any) -> int:
    """How many bytes a data description stands for, known without building them (0 for
    a malformed one: building it reports the problem)."""
    if isinstance(value, list):
        return sum(_declared_size(part) for part in value)
    if isinstance(value, str):
        return len(value) // 2
    if not isinstance(value, dict):
        return 0
    for key in ("zeros", "length"):
        size = value.get(key)
        if isinstance(size, int) and not isinstance(size, bool):
            return max(size, 0)
    text = value.get("hex", value.get("base64", value.get("text", "")))
    return len(str(text))


def _hex(text: Any, path: str) -> bytes:
    try:
        return bytes.fromhex("".join(str(text).split()))
    except ValueError:
        raise BuildError(path, "invalid hex") from None


def prepare_fields(layout: Layout, values: Any, path: str, enums: dict[str, EnumSpec],
                   data: DataResolver, prior: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Check *values* against *layout* and return them in decoded form (ints, lists, bytes),
    with counts and sizes named by arrays derived when omitted and checked when given.
    *prior* holds the fields of earlier headers, which a size may name."""
    if not isinstance(values, dict):
        raise BuildError(path, "expected a mapping of fields")
    known = {f.id: f for f in layout.fields if not f.payload}
    for key in values:
        if key not in known:
            raise BuildError(f"{path}.{key}", f"no such field (fields: {', '.join(known)})")
    out: dict[str, Any] = {}
    for spec in known.values():
        if spec.id not in values:
            continue
        where = f"{path}.{spec.id}"
        value = values[spec.id]
        if spec.struct is not None:
            if spec.repeat is not None:
                if not isinstance(value, list):
                    raise BuildError(where, "expected a list")
                out[spec.id] = [prepare_fields(spec.struct, v, f"{where}[{i}]", enums, data,
                                               prior) for i, v in enumerate(value)]
            else:
                out[spec.id] = prepare_fields(spec.struct, value, where, enums, data, prior)
        elif spec.type == "bytes":
            out[spec.id] = data.data(value, where)
        elif spec.repeat is not None:
            out[spec.id] = _expand_runs(spec, value, where, enums)
        else:
            out[spec.id] = int_value(spec, value, where, enums)
    for spec in known.values():
        _derive(spec, out, known, path, enums, prior or {})
    appended = getattr(layout, "appended", frozenset())  # a shorter (older) body lacks them
    for spec in known.values():
        if spec.id not in out and spec.id not in appended:
            if spec.is_int and spec.repeat is None and any(c.kind == "reserved"
                                                           for c in spec.checks):
                out[spec.id] = 0
            else:
                raise BuildError(f"{path}.{spec.id}", "missing")
    return out


def _derive(spec: FieldSpec, out: dict[str, Any], known: dict[str, FieldSpec], path: str,
            enums: dict[str, EnumSpec], prior: Mapping[str, Any]) -> None:
    counter = spec.repeat if spec.repeat is not None else spec.size
    if spec.id not in out or counter is None or counter == "rest":
        return
    n = len(out[spec.id])
    unit = "items" if spec.repeat is not None else "bytes"
    if isinstance(counter, int):
        if n != counter:
            raise BuildError(f"{path}.{spec.id}", f"{n} {unit}, the layout fixes {counter}")
        return
    if counter in out:
        if out[counter] != n:
            raise BuildError(f"{path}.{counter}",
                             f"{out[counter]}, but {spec.id} has {n} {unit}")
    elif counter in known:
        out[counter] = int_value(known[counter], n, f"{path}.{counter}", enums)
    elif counter in prior and prior[counter] != n:
        # the size is a field of an earlier header, which is already written
        raise BuildError(f"{path}.{spec.id}", f"{n} {unit}, but {counter} (an earlier "
                         f"header's field) is {prior[counter]}")


# -- writing -----------------------------------------------------------------------------
class Builder:
    """Writes the items of one description to *out*."""

    def __init__(self, registry: Registry, out: BinaryIO, base: Path) -> None:
        self.registry = registry
        self.out = out
        self.data = DataResolver(base)
        self.writers: dict[str, StreamWriter] = {}
        self.header_values: dict[str, dict[str, Any]] = {}   # per format, for header sizes
        self.current: StreamWriter | None = None

    def _spec(self, item: dict[str, Any], path: str) -> FormatSpec:
        name = item.get("format")
        if not isinstance(name, str) or name not in self.registry.specs:
            known = ", ".join(sorted(self.registry.specs))
            raise BuildError(f"{path}.format", f"unknown format {name!r} (known: {known})")
        return self.registry.specs[name]

    def _writer(self, item: dict[str, Any], path: str, new: bool = False) -> StreamWriter:
        spec = self._spec(item, path)
        writer = self.writers.get(spec.name)
        if writer is None or new:
            self.header_values[spec.name] = {}
            order = "little"
            if self.current is not None:
                order = "big" if self.current.order == ">" else "little"
            writer = StreamWriter(self.out, spec, order, follow_headers=True)
            self.writers[spec.name] = writer
        self.current = writer
        return writer

    def item(self, item: Any, path: str) -> None:
        if not isinstance(item, dict) or "kind" not in item:
            raise BuildError(path, "an item is a mapping with a 'kind'")
        kind = item["kind"]
        if kind in _IGNORED_KINDS:
            return
        if kind == "stream":
            self._writer(item, path, new=True)
        elif kind == "header":
            self._header(item, path)
        elif kind == "record":
            self._record(item, path)
        elif kind in ("trailing", "raw"):
            if "data" not in item:
                raise BuildError(f"{path}.data", "missing")
            for chunk in self.data.parts(item["data"], f"{path}.data"):
                self.out.write(chunk)
        elif kind == "squashed":
            raise BuildError(path, "a squashed run of records cannot be built: dump with "
                             "--no-squash")
        else:
            raise BuildError(f"{path}.kind", f"unknown kind {kind!r}")

    def _header(self, item: dict[str, Any], path: str) -> None:
        writer = self._writer(item, path)
        spec = writer.spec
        header = next((h for h in spec.headers if h.name == item.get("name")), None)
        if header is None:
            names = ", ".join(h.name for h in spec.headers) or "none"
            raise BuildError(f"{path}.name", f"format {spec.name} has no header "
                             f"{item.get('name')!r} (headers: {names})")
        prior = self.header_values[spec.name]
        fields = prepare_fields(header.layout, item.get("fields", {}), f"{path}.fields",
                                spec.enums, self.data, prior)
        prior.update(fields)
        data = writer.header(header.name, fields)
        if "size" in item and item["size"] != len(data):
            raise BuildError(f"{path}.size", f"given {item['size']}, the fields encode to "
                             f"{len(data)} bytes")

    def _record(self, item: dict[str, Any], path: str) -> None:
        writer = self._writer(item, path)
        spec = writer.spec
        if "raw" in item:
            for chunk in self.data.parts(item["raw"], f"{path}.raw"):
                self.out.write(chunk)
            return
        if spec.framing is None:
            raise BuildError(path, f"format {spec.name} has no records: give 'raw'")
        rtype = None
        type_id = item.get("type_id")
        if "type" in item:
            rtype = spec.record_by_name(str(item["type"]))
            if rtype is None:
                raise BuildError(f"{path}.type", f"format {spec.name} has no record type "
                                 f"{item['type']!r}")
            if type_id is not None and type_id != rtype.id:
                raise BuildError(f"{path}.type_id", f"{type_id} is not the id of "
                                 f"{rtype.name} ({rtype.id})")
            type_id = rtype.id
        if not isinstance(type_id, int) or isinstance(type_id, bool):
            raise BuildError(path, "a record needs a 'type' name or an integer 'type_id'")
        body = self._body(item, path, rtype, writer)
        if not type_length_framing(spec):
            # the format's walker implies each unit's type and length: the unit is its body
            if "length" in item and item["length"] != len(body):
                raise BuildError(f"{path}.length", f"given {item['length']}, the unit is "
                                 f"{len(body)} bytes")
            writer.raw(body)
            return
        bits = _INT_BITS[spec.framing.type_code]
        if not 0 <= type_id < 1 << bits:
            raise BuildError(f"{path}.type_id", f"{type_id} does not fit "
                             f"{spec.framing.type_code}")
        length = len(body)
        raw_length = item.get("raw_length")
        if "length" in item and item["length"] != length:
            raise BuildError(f"{path}.length", f"given {item['length']}, the body is "
                             f"{length} bytes (use raw_length to write a wrong length)")
        if raw_length is not None and (not isinstance(raw_length, int) or
                                       not 0 <= raw_length < 1 << _INT_BITS[
                                           spec.framing.length_code]):
            raise BuildError(f"{path}.raw_length", "not a valid length")
        padding = None
        if "padding" in item:
            padding = _hex(item["padding"], f"{path}.padding")
            if len(padding) != -length % spec.framing.align:
                raise BuildError(f"{path}.padding", f"{len(padding)} bytes, the record needs "
                                 f"{-length % spec.framing.align}")
        writer.record(type_id=type_id, body=body, length=raw_length, padding=padding)

    def _body(self, item: dict[str, Any], path: str, rtype: Any, writer: StreamWriter
              ) -> bytes:
        if "body" in item:
            if "fields" in item or "payload" in item:
                raise BuildError(f"{path}.body", "give either body or fields/payload")
            return self.data.data(item["body"], f"{path}.body")
        layout = rtype.layout if rtype is not None else None
        if layout is None:
            if item.get("fields"):
                raise BuildError(f"{path}.fields", "this record type has no fields "
                                 "(give a body)")
            if "payload" in item:
                raise BuildError(f"{path}.payload", "this record type has no payload")
            return b""
        fields = prepare_fields(layout, item.get("fields", {}), f"{path}.fields",
                                writer.spec.enums, self.data)
        payload = b""
        if "payload" in item:
            if layout.payload is None:
                raise BuildError(f"{path}.payload", f"{rtype.name} has no payload field")
            payload = self.data.data(item["payload"], f"{path}.payload")
        try:
            return layout.encode(fields, writer.order) + payload
        except (TypeError, ValueError, OverflowError) as exc:
            raise BuildError(f"{path}.fields", f"cannot encode: {exc}") from None


def build_stream(registry: Registry, description: str, output: str, *,
                 verify: bool = True) -> VerifyReport | None:
    """Build *output* from the description file *description* (``-`` for stdin).

    Writes atomically. With *verify*, the stream is verified before it replaces *output*
    and an invalid one raises :class:`InvalidBuild` (nothing written); without, the report
    is None."""
    if description == "-":
        handle: TextIO = sys.stdin
        base = Path.cwd()
    else:
        try:
            handle = open(description, encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise UsageError(f"{description}: cannot read: {exc.strerror or exc}") from None
        base = Path(description).resolve().parent
    try:
        items, where = read_description(handle)
        if is_stream_target(output):
            # a pipe cannot be taken back: build and verify in memory, then write it out
            buffer = io.BytesIO()
            report = _build_into(registry, items, where, buffer, base, verify)
            with open_output(output) as out:
                out.write(buffer.getvalue())
            return report
        with atomic_output(output) as out:
            return _build_into(registry, items, where, out, base, verify)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{description}: cannot read: {exc}") from None
    finally:
        if handle is not sys.stdin:
            handle.close()


def read_description(handle: TextIO) -> tuple[Iterable[Any], str]:
    """The items of the description in *handle*. A JSON Lines dump (its first line the
    ``kind: dump`` metadata) is read line by line as it is built, so building from a large
    inline dump needs memory for one item only; YAML and JSON are read whole. Returns the
    items and how an error names item N (``items[N]``, or ``line N+1`` for JSON Lines)."""
    first = handle.readline()
    try:
        head = json.loads(first)
    except ValueError:
        head = None
    if isinstance(head, dict) and head.get("kind") == "dump":
        return _json_lines(first, handle), "line {}"
    return load_description(first + handle.read()), "items[{}]"


def _json_lines(first: str, handle: TextIO) -> Iterator[Any]:
    yield json.loads(first)
    for number, line in enumerate(handle, start=2):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except ValueError as exc:
            raise BuildError(f"line {number}", f"not valid JSON: {exc}") from None


def _build_into(registry: Registry, items: Iterable[Any], where: str, out: BinaryIO,
                base: Path, verify: bool) -> VerifyReport | None:
    builder = Builder(registry, out, base)
    jsonl = where.startswith("line")
    for i, item in enumerate(items):
        builder.item(item, where.format(i + 1 if jsonl else i))
    out.flush()
    if not verify:
        return None
    try:
        reader: BinaryIO = os.fdopen(os.dup(out.fileno()), "rb")
    except (OSError, io.UnsupportedOperation):
        reader = out
    reader.seek(0)
    with ByteSource(reader, "<built stream>", owned=reader is not out) as source:
        report = verify_source(registry, source)
    out.seek(0, 2)
    if not report.valid:
        errors = [d for d in report.diagnostics if d.is_error]
        raise InvalidBuild(f"the built stream is invalid: {errors[0]} (--no-verify writes "
                           "it anyway)")
    return report
