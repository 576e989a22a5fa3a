"""The JSON text of a dump's usual record item, written by one function generated per record
type (for the json and jsonl renderers, which take items as their text).

The usual record is one whose fields rebuild its body: decoded, none of them spilled, the
values encode to exactly the body's length (with the payload), no non-zero padding. For a
record type, :func:`record_text` generates, once per walk, a function that checks that
without building anything and writes the item's text in one f-string: the item's constant
parts (kind, format, type, type_id, key names) as literal text, the fields through the
layout's generated JSON code (:func:`xenmig_core.present.json_code`), the payload reference,
the summary, and the view (the viewer's mapping, encoded). It returns None for any other
record: the dump then makes the item's mapping and encodes it. Either way the text is what
``json.dumps`` writes of the item, byte for byte.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable

from xenmig_core.engine import Record
from xenmig_core.present import fstring_text, json_code
from xenmig_core.spec.layout import ByteField, FixedRun, IntArray, Layout
from xenmig_core.spec.spill import SPILL_MIN

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

#: A record's item as JSON text, or None when it is not the usual record (see the module)
RecordText = Callable[[Record, int], "str | None"]
#: what measuring the encoded size of values raises when they cannot be encoded (a value a
#: handler replaced by one of another type or out of range): the fields do not rebuild
SIZE_ERRORS = (struct.error, TypeError, ValueError, OverflowError, KeyError)


def record_text(plan: Any, record: Record, *, quote: Callable[[str], str],
                encode: Callable[[Any], str], payload: str | Callable[[Record], str],
                view_of: Callable[..., Any], has_spilled: Callable[[Record], bool]
                ) -> RecordText | None:
    """The function that writes the JSON text of *plan*'s records (a dump's ``_TypePlan``
    of *record*'s type), or None when that type has no usual record (a walker's unit
    the fields do not describe, a body without layout). *payload*: how a payload is shown,
    the text before its offset for a reference into the source (``{"ref": ..., "offset": ``),
    "" for its length only, or a function that writes it. *view_of* and *has_spilled* are
    the dump's."""
    layout: Layout | None = plan.layout
    if layout is None and not plan.framed:
        return None         # a walker's unit: its bytes are kept ("raw")
    scope: dict[str, Any] = {"_quote": quote, "_encode": encode, "_view_of": view_of,
                             "_VIEWER": plan.viewer, "_KNOWN": plan.known, "_str": str,
                             "_any": any}
    head = f'{{"kind": "record", "format": {quote(plan.format)}, "index": '
    typed = f', "type": {quote(plan.type)}' if plan.type is not None else ""
    text = [fstring_text(head), "{record.index}", fstring_text(', "offset": '),
            "{record.offset}",
            fstring_text(f'{typed}, "type_id": {int(record.type_id)}, "length": '), "{length}",
            "{summary}"]
    lines = ["length = record.length"]
    if layout is None:          # framed, no fields: only an empty body is the usual one
        lines += ["if length:", "    return None", "fields = record.fields"]
        shown = 0               # (fields: none of the layout's)
    else:
        lines += ["if not record.decoded:", "    return None", "fields = record.fields",
                  "pl = record.payload_length"]
        if layout.variable:     # an array or bytes field may be spilled (too large to hold)
            scope["_has_spilled"] = has_spilled
            lines += [f"if length > {SPILL_MIN} and _has_spilled(record):", "    return None"]
        # every field there (all decoded: a length rule may stop decoding), of the type
        # decoding gives
        code = json_code(layout, record.context.format.spec.enums, "fields", "v")
        scope.update(code.scope)
        shown = len(code.fetch)
        if code.fetch:
            lines += ["try:", *(f"    {line}" for line in code.fetch),
                      "except KeyError:", "    return None"]
        if code.odd:
            lines += [f"if {code.odd}:", "    return None"]
        lines += _size_check(plan, layout, code.locals, scope)
        if not plan.framed:     # a walker's unit whose fields are all of it
            lines += ["if end - record.offset != length:", "    return None"]
        text += [fstring_text(', "fields": '), code.text]
        if layout.payload is not None:
            lines += _payload_lines(payload, scope)
            text.append("{payload}")
    if _may_pad(plan, layout, record):
        lines += ["padding = record.padding", "if padding and _any(padding):", "    return None"]
    lines += ["summary = record.summary",
              "if summary:",
              "    summary = ', \"summary\": ' + (_quote(summary) if type(summary) is _str "
              "else _encode(summary))",
              "else:",
              "    summary = ''"]
    lines += _view_lines(plan, layout, shown, scope)
    text += ["{viewed}", "}}"]
    source = "def record_text(record, end):\n" + \
        "".join(f"    {line}\n" for line in lines) + \
        f"    return f'{''.join(text)}'\n"
    scope["__builtins__"] = {"type": type, "len": len, "KeyError": KeyError}
    exec(compile(source, f"<dump text of {plan.format}.{plan.type or record.type_id}>",
                 "exec"), scope)
    function: RecordText = scope["record_text"]
    function.source = source     # type: ignore[attr-defined]   # (for debugging)
    return function


def _may_pad(plan: Any, layout: Layout | None, record: Record) -> bool:
    """Whether a usual record of *plan*'s type may have padding after its body (not when
    its body's length, fixed, is already aligned: no padding is read then)."""
    if not plan.framed:
        return False
    align = record.context.format.spec.framing.align
    if layout is None:      # (an empty body)
        return False
    fixed = plan.static_size if layout.payload is None else None
    return align > 1 and (fixed is None or fixed % align != 0)


def _view_lines(plan: Any, layout: Layout | None, shown: int, scope: dict[str, Any]
                ) -> list[str]:
    """Generated: ``viewed``, the item's view part: the viewer's values and the fields a
    handler added (see dump._view_of), as the viewer's ``json`` writes them when it has
    one (see the ``xenmig_record_viewer`` hook), else encoded. *shown*: how many fields
    the item shows (all there: more are fields the layout does not declare)."""
    general = ["view = _view_of(record, _VIEWER, _KNOWN)",
               "viewed = ', \"view\": ' + _encode(view) if view else ''"]
    if plan.viewer is None:
        return [f"if len(fields) == {shown}:", "    viewed = ''", "else:",
                *(f"    {line}" for line in general)]
    as_json = getattr(plan.viewer, "json", None)
    if as_json is None or layout is None:
        return general
    scope["_VIEW_JSON"] = as_json
    call = "text = _VIEW_JSON(record, record.context, derived)"
    guard = getattr(plan.viewer, "guard", None)      # (the registry's, see registry._guard)
    if guard is not None:
        scope.update(_PASSED=guard[0], _PLUGIN_ERROR=guard[1], _Exception=Exception)
        call_lines = ["try:", f"    {call}", "except _PASSED:", "    raise",
                      "except _Exception as exc:", "    raise _PLUGIN_ERROR(exc) from exc"]
    else:
        call_lines = [call]
    return [f"derived = {{}} if len(fields) == {shown} else "
            "{k: v for k, v in fields.items() if k not in _KNOWN}",
            *call_lines,
            "if text is None:", *(f"    {line}" for line in general),
            "else:", "    viewed = ', \"view\": ' + text if text != '{}' else ''"]


def _size_check(plan: Any, layout: Layout, values: dict[str, str], scope: dict[str, Any]
                ) -> list[str]:
    """Generated: return None unless the fields (all there, each in the local *values*
    names) and the payload make exactly the body's length, as ``Layout.encoded_size``
    measures them (see dump._rebuildable)."""
    if plan.static_size is not None:     # decoded values of fixed sizes encode to them
        return [f"if length != {plan.static_size} + pl:", "    return None"]
    if type(layout).encode is not Layout.encode:      # (a layout that encodes otherwise)
        scope["_LAYOUT"] = layout
        lines = ["size = _LAYOUT.encoded_size(fields, record.context.byte_order)"]
    else:
        scope["_array"] = array
        lines, fixed, sizes = [], 0, []
        for i, segment in enumerate(layout.segments):
            scope[f"_SEG{i}"] = segment
            general = f"_SEG{i}.size_of(fields, record.context.byte_order)"
            if isinstance(segment, FixedRun):   # the values pack, to the run's size
                scope[f"_ST{i}"] = segment.structs["<"]
                lines.append(f"_ST{i}.pack({', '.join(values[n] for n in segment.names)})")
                fixed += segment.size
            elif isinstance(segment, IntArray):   # an array as decoded: its length
                value = values[segment.spec.id]
                sizes.append(f"(len({value}) * {segment.itemsize} if type({value}) is _array "
                             f"and {value}.typecode == {segment.array_code!r} else {general})")
            elif isinstance(segment, ByteField):
                value = values[segment.spec.id]
                sizes.append(f"(len({value}) if type({value}) is bytes else {general})")
            else:
                sizes.append(general)
        if not lines and not sizes:      # (no field but the payload)
            return [f"if length != {fixed} + pl:", "    return None"]
        lines.append(f"size = {' + '.join([str(fixed), *sizes])}")
    scope["_SIZE_ERRORS"] = SIZE_ERRORS
    scope["bytes"] = bytes
    return ["try:", *(f"    {line}" for line in lines), "except _SIZE_ERRORS:",
            "    return None", "if size + pl != length:", "    return None"]


def _payload_lines(payload: str | Callable[[Record], str], scope: dict[str, Any]
                   ) -> list[str]:
    """Generated: ``payload``, the item's payload part (empty without a payload)."""
    if callable(payload):
        scope["_payload"] = payload
        shown = "', \"payload\": ' + _payload(record)"
    elif payload:
        shown = "f'" + fstring_text(', "payload": ' + payload) + \
            "{record.payload_offset}" + fstring_text(', "length": ') + "{pl}}}'"
    else:
        shown = "f'" + fstring_text(', "payload": {"length": ') + "{pl}}}'"
    return [f"payload = {shown} if pl else ''"]
