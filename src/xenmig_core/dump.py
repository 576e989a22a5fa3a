"""``dump``: every header and record of one walk, as a sequence of items for a renderer.

:class:`DumpConsumer` is a :class:`~xenmig_core.engine.Consumer`: as the engine walks, it
turns each context start, header, record, diagnostic and trailing region into a plain
mapping (an *item*, schema in ``schemas/dump.schema.json``) and hands it at once to a
renderer (text, json, jsonl, yaml), so memory stays bounded by one record. Field values come
from the spec (:mod:`xenmig_core.present`); derived values from plugin viewers
(``xenmig_record_viewer``). Items carry what ``build`` needs to write the same bytes again:
fields, payload (a reference into the source, or inline hex), non-zero padding, and the raw
bytes of anything the fields cannot reproduce (unknown or broken records, trailing data, the
rest of a stream whose framing broke).
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from xenmig_core.diagnostics import Diagnostic
from xenmig_core.engine import Consumer, Engine, MultiConsumer, Record, StreamContext
from xenmig_core.engine.context import HeaderValue
from xenmig_core.present import plain, present_fields, presenter
from xenmig_core.registry import Registry
from xenmig_core.source import ByteSource
from xenmig_core.spec.layout import Layout
from xenmig_core.spec.model import FormatSpec
from xenmig_core.spec.spill import SPILL_MIN, Spilled
from xenmig_core.verifier import choose_format

if TYPE_CHECKING:
    from xenmig_core.dump_json import RecordText

#: version of the item schema (schemas/dump.schema.json); bump on incompatible changes
DUMP_SCHEMA_VERSION = 1
#: payload contents are shown (hex) or digested (sha256) per unit of this many bytes
PAGE_SIZE = 4096
#: raw regions are written in parts of at most this many bytes
RAW_PART = 4096
#: inline raw and trailing regions are split into items of at most this many bytes
REGION_ITEM = 1 << 20
PAGES_MODES = ("none", "hex", "sha256", "ref")


@dataclass
class DumpOptions:
    """What to show. ``pages``: none, hex, sha256 or ref (a reference into the source)."""

    pages: str = "none"
    squash: bool = False
    types: frozenset[str] = frozenset()
    limit: int | None = None
    start: int = 0
    end: int | None = None
    #: the engine's stream parameters (--width/--guest of a legacy image)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def filtered(self) -> bool:
        return bool(self.types) or self.limit is not None or self.start > 0 \
            or self.end is not None


class Renderer(Protocol):
    """Receives the dump as it is made: ``begin(meta)``, ``item(item)`` per item, ``end()``.
    A renderer that holds output back has a ``flush()`` too, called when an error stops the
    dump before ``end()``. A JSON renderer may have ``item_json(text)`` too: it is then given
    most records as their JSON text (exactly ``json.dumps(item)``) instead of the mapping."""

    def begin(self, meta: dict[str, Any]) -> None: ...

    def item(self, item: dict[str, Any]) -> None: ...

    def end(self) -> None: ...


class _LimitReached(Exception):
    """--limit items were written: stop the walk."""


class _PayloadView:
    """Accumulates one record's payload as per-page hex strings or sha256 digests."""

    def __init__(self, mode: str) -> None:
        import hashlib  # here: only --pages sha256 needs it (~5 ms of start-up)

        self.mode = mode
        self.parts: list[str] = []
        self._page = bytearray()
        self._new_hash = hashlib.sha256
        self._hash = hashlib.sha256()
        self._filled = 0

    def feed(self, chunk: memoryview) -> None:
        pos = 0
        while pos < len(chunk):
            take = min(PAGE_SIZE - self._filled, len(chunk) - pos)
            piece = chunk[pos:pos + take]
            if self.mode == "hex":
                self._page += piece
            else:
                self._hash.update(piece)
            self._filled += take
            pos += take
            if self._filled == PAGE_SIZE:
                self._close_page()

    def _close_page(self) -> None:
        if self.mode == "hex":
            self.parts.append(bytes(self._page).hex())
            self._page = bytearray()
        else:
            self.parts.append(self._hash.hexdigest())
            self._hash = self._new_hash()
        self._filled = 0

    def finish(self) -> list[str]:
        if self._filled:
            self._close_page()
        return self.parts


@dataclass
class _Squash:
    """A run of squashable records folded into one item."""

    first: dict[str, Any]
    items: list[dict[str, Any]] = field(default_factory=list)


class _TypePlan:
    """What the dump needs of one record type of one format, worked out once per walk:
    framing, the compiled field presenter, the viewer, the ids of the layout's fields, and
    for a renderer that takes items as JSON text, the function that writes the usual record
    of the type as its text (``text``, see :mod:`xenmig_core.dump_json`), or None."""

    __slots__ = ("format", "framed", "head", "known", "layout", "present", "required",
                 "squash", "static_size", "text", "type", "viewer")

    def __init__(self, ctx: StreamContext, record: Record) -> None:
        spec = ctx.format.spec
        rtype = record.rtype
        self.format = ctx.name
        self.type = record.name if rtype is not None else None
        self.framed = type_length_framing(spec)
        self.head = struct.calcsize("<" + spec.framing.header_codes) \
            if self.framed and spec.framing is not None else 0
        layout = self.layout = rtype.layout if rtype is not None else None
        self.present = presenter(layout, spec.enums) if layout is not None else None
        self.known = _field_ids(layout) if layout is not None else frozenset()
        appended = getattr(layout, "appended", frozenset())  # a shorter body lacks them
        self.required = frozenset(f.id for f in layout.fields
                                  if not f.payload and f.id not in appended) \
            if layout is not None else frozenset()
        self.static_size = layout.static_size if layout is not None else None
        self.viewer = ctx.format.viewers.get(record.name)
        self.squash = rtype is not None and rtype.squash is not None
        self.text: RecordText | None = None


class DumpConsumer(Consumer):
    """Builds dump items during a walk and passes them to *renderer* in stream order."""

    wants_summaries = True

    def __init__(self, registry: Registry, source: ByteSource, renderer: Renderer,
                 options: DumpOptions) -> None:
        self.registry = registry
        self.source = source
        self.renderer = renderer
        self._render = renderer.item
        self.options = options
        self.covered = source.offset       # end of the last byte accounted for in items
        #: the items counted towards --limit (counted only with a limit)
        self.emitted = 0
        self.records_seen = 0
        self._pending: list[Diagnostic] = []
        self._payload: _PayloadView | None = None
        self._squashing = options.squash
        #: the number of items after which the walk stops (--limit), or None
        self._limit = options.limit
        if options.pages in ("hex", "sha256"):
            self.wants_payload = self._wants_payload    # type: ignore[method-assign]
        self._squash: _Squash | None = None
        #: (id of the format, type id) -> what the dump needs of that record type
        self._plans: dict[tuple[int, int], _TypePlan] = {}
        #: no --type nor --offset: every item is selected
        self._everything = not options.types and options.start <= 0 and options.end is None
        # references point into the file: not for a decompressed one (offsets differ)
        self.path = os.path.abspath(source.name) \
            if os.path.isfile(source.name) and source.compression is None else None
        #: a renderer that shows no bytes (text) spares reading raw regions back
        self.shows_data: bool = getattr(renderer, "shows_data", True)
        #: a renderer that takes items as their JSON text (json, jsonl): a record whose
        #: fields rebuild it is written as text directly (each type's plan.text)
        self._render_json: Callable[[str], None] | None = getattr(renderer, "item_json", None)

    # -- filters -------------------------------------------------------------------------
    def _in_range(self, offset: int) -> bool:
        o = self.options
        return offset >= o.start and (o.end is None or offset < o.end)

    def _selected(self, name: str, offset: int) -> bool:
        return (not self.options.types or name in self.options.types) and \
            self._in_range(offset)

    # -- output --------------------------------------------------------------------------
    def _emit(self, item: dict[str, Any], counted: bool = False) -> None:
        if item["kind"] != "diagnostic":
            self._flush_diagnostics()
        self.renderer.item(item)
        if counted and self._limit is not None:
            self.emitted += 1
            if self.emitted >= self._limit:
                raise _LimitReached

    def _flush_diagnostics(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        for diag in pending:
            if diag.offset is None or self._in_range(diag.offset):
                self.renderer.item({"kind": "diagnostic", **diag.to_dict()})

    def _flush_squash(self) -> None:
        run, self._squash = self._squash, None
        if run is None:
            return
        if len(run.items) == 1:
            self._emit(run.items[0], counted=True)
            return
        self._emit(squashed(run.items), counted=True)

    # -- data ----------------------------------------------------------------------------
    def _data(self, offset: int, length: int) -> Any:
        """Bytes of the source at *offset*: a reference, inline hex parts, or a length."""
        if not self.shows_data:
            return {"length": length}
        if self.options.pages == "ref" and self.path is not None:
            return {"ref": self.path, "offset": offset, "length": length}
        parts = []
        position = offset
        while position < offset + length:
            step = min(RAW_PART, offset + length - position)
            data = self.source.read_at(position, step)
            if data is None or len(data) != step:
                return {"length": length, "unavailable": "the source cannot be re-read"}
            parts.append({"hex": data.hex()})
            position += step
        return parts

    # -- consumer callbacks --------------------------------------------------------------
    def on_context_start(self, ctx: StreamContext) -> None:
        self._flush_squash()
        self._emit({"kind": "stream", "format": ctx.name, "title": ctx.format.spec.title,
                    "offset": ctx.start_offset, "depth": ctx.depth,
                    "parent": ctx.parent.name if ctx.parent else None})

    def _gap(self, offset: int) -> None:
        """Bytes between the last item and *offset* that no item covers (a walker that
        reports less than it reads): a raw item, so that build still gives them back."""
        if offset > self.covered:
            start, self.covered = self.covered, offset
            if not self.options.types and self._in_range(start):
                self._emit({"kind": "raw", "offset": start, "length": offset - start,
                            "note": "bytes no header or record covers",
                            "data": self._data(start, offset - start)})

    def on_header(self, header: HeaderValue) -> None:
        self._flush_squash()
        self._gap(header.offset)
        ctx = header.context
        self.covered = header.offset + header.size
        if not self._selected(header.name, header.offset):
            return
        fields, view = present_header(header)
        item: dict[str, Any] = {
            "kind": "header", "format": ctx.name, "name": header.name, "title": header.title,
            "offset": header.offset, "size": header.size, "fields": fields}
        if header.summary:
            item["summary"] = header.summary
        if view:
            item["view"] = view
        self._emit(item, counted=True)

    def _plan(self, record: Record) -> _TypePlan:
        ctx = record.context
        key = (id(ctx.format), record.type_id)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _TypePlan(ctx, record)
            if self._render_json is not None and not (self._squashing and plan.squash):
                plan.text = self._text_of(plan, record)
        return plan

    def _text_of(self, plan: _TypePlan, record: Record) -> RecordText | None:
        """The function that writes the usual record of *plan*'s type as JSON text."""
        from xenmig_core.dump_json import record_text
        from xenmig_core.render.json import encode, quote

        payload: str | Callable[[Record], str] = ""        # its length only
        if self.options.pages in ("hex", "sha256"):
            payload = self._payload_json
        elif self.options.pages == "ref" and self.path is not None:
            payload = f'{{"ref": {quote(self.path)}, "offset": '
        return record_text(plan, record, quote=quote, encode=encode, payload=payload,
                           view_of=_view_of, has_spilled=has_spilled)

    def _wants_payload(self, record: Record) -> bool:
        """``wants_payload`` when payloads are shown (--pages hex or sha256): set on the
        instance then, so that a dump that shows none is not asked for each record."""
        self._payload = None
        if not self._selected(record.name, record.offset):
            return False
        self._payload = _PayloadView(self.options.pages)
        return True

    def on_payload(self, record: Record, offset: int, chunk: memoryview) -> None:
        if self._payload is not None:
            self._payload.feed(chunk)

    def on_record_end(self, record: Record) -> None:
        self.records_seen += 1
        if record.offset > self.covered:
            self._flush_squash_if_gap(record.offset)
        end = self.source.offset
        start, self.covered = self.covered, end
        if not self._everything and not self._selected(record.name, record.offset):
            self._payload = None
            return
        plan = self._plans.get((id(record.context.format), record.type_id)) \
            or self._plan(record)
        text_of = plan.text
        if text_of is not None and self._squash is None and not self._pending and \
                (text := text_of(record, end)) is not None:
            # the usual record of a JSON dump, as its text: what _record_item would make
            self._payload = None
            self._render_json(text)    # type: ignore[misc]   # (set when plan.text is)
        else:
            shape = self._shape(record, plan, end)
            item = self._record_item(record, plan, shape, start, end)
            self._payload = None
            if self.options.squash and plan.squash \
                    and "diagnostics" not in item and "body" not in item:
                run = self._squash
                if run is None or run.first["type"] != item["type"] \
                        or run.first["format"] != item["format"]:
                    self._flush_squash()
                    run = self._squash = _Squash(item)
                run.items.append(item)
                return
            if self._squash is not None:
                self._flush_squash()
            if self._pending:       # (_emit, inlined: the path every record takes)
                self._flush_diagnostics()
            self._render(item)
        if self._limit is not None:
            self.emitted += 1
            if self.emitted >= self._limit:
                raise _LimitReached

    def _flush_squash_if_gap(self, offset: int) -> None:
        if offset > self.covered:
            self._flush_squash()
            self._gap(offset)

    def _shape(self, record: Record, plan: _TypePlan, end: int) -> str:
        """How a record item keeps its bytes: ``large`` (a spilled field: _large_record),
        ``fields`` (its fields, and payload, rebuild its body), ``body`` (the body's bytes),
        ``raw`` (a walker's unit, as bytes), ``bare`` (nothing to keep: an empty body of a
        type without fields)."""
        if plan.present is not None and record.decoded:
            if has_spilled(record):
                return "large"
            if self._rebuildable(record, plan) and \
                    (plan.framed or end - record.offset == record.length):
                return "fields"
        if plan.framed:
            return "body" if record.length or plan.layout is not None else "bare"
        return "raw"

    def _record_item(self, record: Record, plan: _TypePlan, shape: str, start: int, end: int
                     ) -> dict[str, Any]:
        view = _view_of(record, plan.viewer, plan.known)
        item: dict[str, Any] = {
            "kind": "record", "format": plan.format, "index": record.index,
            "offset": record.offset, "type": plan.type, "type_id": record.type_id,
            "length": record.length} if plan.type is not None else {
            "kind": "record", "format": plan.format, "index": record.index,
            "offset": record.offset, "type_id": record.type_id, "length": record.length}
        if record.summary:
            item["summary"] = record.summary
        framed = plan.framed
        if shape == "large":
            item.update(self._large_record(record, plan, end))
        elif shape == "fields":
            assert plan.present is not None
            item["fields"] = plan.present(record.fields)
            if record.payload_length:
                item["payload"] = self._payload_item(record)
        elif framed:
            if record.length:
                item["body"] = self._data(record.offset + plan.head, record.length)
            elif plan.layout is not None:
                item["body"] = ""    # an empty body its fields cannot describe

        else:
            # a walker's unit that its fields cannot rebuild: keep its bytes
            item["raw"] = self._data(record.offset, end - record.offset)
        if framed and record.padding and any(record.padding):
            item["padding"] = record.padding.hex()
        if view:
            item["view"] = view
        if self._pending:
            diags = [d for d in self._pending if d.record_index == record.index]
            if diags:
                self._pending = [d for d in self._pending if d.record_index != record.index]
                item["diagnostics"] = [d.to_dict() for d in diags]
        return item

    def _large_record(self, record: Record, plan: _TypePlan, end: int) -> dict[str, Any]:
        """A record with a field too large to hold (spilled, see xenmig_core.spec.spill):
        with ``--pages ref`` its body (or unit) as a reference into the source, which build
        reads back; else its fields, a spilled one as {length, sha256}. Bounded memory."""
        if self.options.pages == "ref" and self.path is not None:
            if plan.framed:
                return {"body": self._data(record.offset + plan.head, record.length)}
            return {"raw": self._data(record.offset, end - record.offset)}
        assert plan.present is not None
        out: dict[str, Any] = {"fields": plan.present(record.fields)}
        if record.payload_length:
            out["payload"] = self._payload_item(record)
        return out

    @staticmethod
    def _rebuildable(record: Record, plan: _TypePlan) -> bool:
        """True when every field was decoded and the fields (plus the payload) encode to
        exactly the body."""
        assert plan.layout is not None
        fields = record.fields
        if not fields.keys() >= plan.required:
            return False  # not (fully) decoded: e.g. a length rule stopped the decoding
        if plan.static_size is not None:  # decoded values of fixed sizes encode to them
            return plan.static_size + record.payload_length == record.length
        try:
            size = plan.layout.encoded_size(fields, record.context.byte_order)
        except (struct.error, TypeError, ValueError, OverflowError):
            return False
        return size + record.payload_length == record.length

    def _payload_json(self, record: Record) -> str:
        """The JSON text of :meth:`_payload_item`."""
        from xenmig_core.render.json import encode
        return encode(self._payload_item(record))

    def _payload_item(self, record: Record) -> Any:
        mode = self.options.pages
        if self._payload is not None:
            parts = self._payload.finish()
            if mode == "hex":
                return [{"hex": p} for p in parts]
            return {"length": record.payload_length, "sha256": parts}
        assert record.payload_offset is not None
        if mode == "ref" and self.path is not None:
            return {"ref": self.path, "offset": record.payload_offset,
                    "length": record.payload_length}
        return {"length": record.payload_length}

    def on_diagnostic(self, diagnostic: Diagnostic) -> None:
        self._pending.append(diagnostic)

    def on_context_end(self, ctx: StreamContext) -> None:
        self._flush_squash()

    def on_trailing(self, offset: int, length: int, description: str | None) -> None:
        self._flush_squash()
        self._gap(offset)
        self.covered = offset + length
        if self.options.types or not self._in_range(offset):
            return
        self._region("trailing", offset, length, {"description": description})

    def _region(self, kind: str, offset: int, length: int, extra: dict[str, Any]) -> None:
        """Emit bytes of the source as *kind* items: one (a reference, or a length when the
        renderer shows no data), or one per REGION_ITEM bytes of inline hex, so that memory
        stays bounded however long the region is."""
        if not self.shows_data or (self.options.pages == "ref" and self.path is not None):
            self._emit({"kind": kind, "offset": offset, "length": length, **extra,
                        "data": self._data(offset, length)})
            return
        position = offset
        while position < offset + length:
            step = min(REGION_ITEM, offset + length - position)
            self._emit({"kind": kind, "offset": position, "length": step, **extra,
                        "data": self._data(position, step)})
            position += step

    def finish_unwalked(self) -> None:
        """After a walk that stopped early (broken framing, truncation): the bytes from the
        last complete item to the end of the source, as raw items. Bytes the walk already
        read are re-read (a pipe cannot: they show as unavailable); the rest is read on."""
        self._flush_squash()
        start = self.covered
        read_to = self.source.offset
        keep = not self.options.types and self._in_range(start)
        note = {"note": "bytes the walk could not frame"}
        if keep and read_to > start:
            self._region("raw", start, read_to - start, note)
        if self.path is not None and (not self.shows_data or self.options.pages == "ref"):
            self.source.skip_to_eof()
            if keep and self.source.offset > read_to:
                self._region("raw", read_to, self.source.offset - read_to, note)
            return
        while chunk := self.source.read_upto(REGION_ITEM):
            if keep:
                data: Any = {"length": len(chunk)} if not self.shows_data else [
                    {"hex": chunk[i:i + RAW_PART].hex()} for i in range(0, len(chunk),
                                                                        RAW_PART)]
                self._emit({"kind": "raw", "offset": self.source.offset - len(chunk),
                            "length": len(chunk), **note, "data": data})


def present_header(header: HeaderValue) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A header's fields as plain data (enum names, folded runs: see
    :func:`~xenmig_core.present.present_fields`) and its derived view (values the layout
    does not declare, and what a plugin viewer adds), or None when there is none."""
    ctx = header.context
    spec = next(h for h in ctx.format.spec.headers if h.name == header.name)
    fields = present_fields(spec.layout, header.fields, ctx.format.spec.enums)
    viewer = ctx.format.viewers.get(header.name)
    view = viewer(header, ctx) if viewer is not None else None
    known = {f.id for f in spec.layout.fields}
    merged = {**{k: v for k, v in header.fields.items() if k not in known}, **(view or {})}
    return fields, (plain(merged) if merged else None)


def present_record(record: Record) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A record's decoded fields as plain data (None when its body was not decoded, or its
    type has no layout) and its derived view, as for :func:`present_header`."""
    return present_record_fields(record), derived_view(record)


def present_record_fields(record: Record) -> dict[str, Any] | None:
    """A record's decoded layout fields as plain data, or None (body not decoded, no layout)."""
    if record.rtype is not None and record.rtype.layout is not None and record.decoded:
        return present_fields(record.rtype.layout, record.fields,
                              record.context.format.spec.enums)
    return None


def derived_view(record: Record) -> dict[str, Any] | None:
    """The viewer's values and the fields a handler or payload scanner added; complete once
    the whole record (payload included) has been read."""
    layout = record.rtype.layout if record.rtype is not None else None
    return _view_of(record, record.context.format.viewers.get(record.name),
                    _field_ids(layout) if layout is not None else frozenset())


def _view_of(record: Record, viewer: Any, known: frozenset[str]) -> dict[str, Any] | None:
    """:func:`derived_view` with the record type's *viewer* and layout field ids *known*."""
    view = viewer(record, record.context) if viewer is not None and record.decoded else None
    fields = record.fields
    if view is None and fields.keys() <= known:
        return None
    derived = {k: v for k, v in fields.items() if k not in known}
    merged = {**derived, **view} if view else derived
    return plain(merged) if merged else None


def has_spilled(record: Record) -> bool:
    """True when one of *record*'s fields was spilled (too large to hold in memory)."""
    return record.length > SPILL_MIN and any(isinstance(value, Spilled)
                                             for value in record.fields.values())


@functools.lru_cache(maxsize=256)
def _field_ids(layout: Layout) -> frozenset[str]:
    """The ids of *layout*'s fields (a layout never changes once compiled)."""
    return frozenset(f.id for f in layout.fields)


def type_length_framing(spec: FormatSpec) -> bool:
    """True when the format's records carry a type and length header in the stream (False
    for formats without records, or whose walker implies each unit's type and length)."""
    return spec.framing is not None and not spec.framing.implied


def squashed(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold record items of one type into one ``squashed`` item (not buildable)."""
    first = items[0]
    out: dict[str, Any] = {"kind": "squashed", "format": first["format"], "type": first["type"],
                           "first_index": first["index"], "last_index": items[-1]["index"],
                           "count": len(items), "offset": first["offset"],
                           "length": sum(i["length"] for i in items)}
    view: dict[str, Any] = {}
    for item in items:
        merge_view(view, item.get("view") or {})
    if view:
        out["view"] = view
    return out


def merge_view(total: dict[str, Any], view: dict[str, Any]) -> None:
    """Add *view* into *total*: ints summed, counters (mappings of ints) summed key by key,
    range lists (mappings with first/last) concatenated with adjacent equal ranges joined."""
    for key, value in view.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            total[key] = total.get(key, 0) + value
        elif isinstance(value, dict) and all(isinstance(v, int) for v in value.values()):
            counter = total.setdefault(key, {})
            for k, v in value.items():
                counter[k] = counter.get(k, 0) + v
        elif isinstance(value, list) and value and all(
                isinstance(v, dict) and "first" in v and "last" in v for v in value):
            ranges = total.setdefault(key, [])
            for entry in value:
                if ranges and _joinable(ranges[-1], entry):
                    ranges[-1] = {**ranges[-1], "last": entry["last"],
                                  "count": ranges[-1].get("count", 0) + entry.get("count", 0)}
                else:
                    ranges.append(dict(entry))


def _joinable(left: dict[str, Any], right: dict[str, Any]) -> bool:
    others = {k for k in left if k not in ("first", "last", "count")} | \
        {k for k in right if k not in ("first", "last", "count")}
    return left["last"] + 1 == right["first"] and all(left.get(k) == right.get(k)
                                                       for k in others)


@dataclass
class DumpResult:
    """What a dump walk found (for the exit code)."""

    format: str
    valid: bool
    errors: int
    warnings: int


def dump_source(registry: Registry, source: ByteSource, renderer: Renderer,
                options: DumpOptions, fmt: str = "auto",
                observer: Consumer | None = None) -> DumpResult:
    """Walk *source* once and render every item; returns the verdict. Raises StreamError
    when no format recognises the stream, UsageError for a contradicted ``--from``.
    *observer* (e.g. a progress display) sees the walk too."""
    chosen = choose_format(registry, source, fmt)
    renderer.begin({"kind": "dump", "xenmig_dump": DUMP_SCHEMA_VERSION, "source": source.name,
                    "format": chosen, "pages": options.pages, "filtered": options.filtered,
                    **({"compression": source.compression} if source.compression else {})})
    consumer = DumpConsumer(registry, source, renderer, options)
    engine = Engine(registry, source, consumer if observer is None
                    else MultiConsumer(consumer, observer), params=options.params)
    stopped = False
    try:
        try:
            result = engine.run(chosen)
        except _LimitReached:
            stopped = True
            result = engine.result
        if not stopped:
            consumer.finish_unwalked()
            consumer._flush_diagnostics()
    except BaseException:
        # a renderer that gathers its output writes what it holds: the items before an
        # error that stops the dump are shown, as they would be unbuffered
        flush = getattr(renderer, "flush", None)
        if flush is not None:
            with contextlib.suppress(OSError):
                flush()
        raise
    errors = result.error_count
    warnings = result.warning_count
    end: dict[str, Any] = {"kind": "end", "valid": not errors, "errors": errors,
                           "warnings": warnings,
                           "records": consumer.records_seen if stopped else result.records,
                           "size": source.offset}
    if result.diagnostics_dropped:
        end["diagnostics_dropped"] = result.diagnostics_dropped
    if stopped:
        end["stopped"] = f"--limit {options.limit} reached"
    if result.eof_note:
        end["note"] = result.eof_note
    renderer.item(end)
    renderer.end()
    return DumpResult(chosen, not errors, errors, warnings)
