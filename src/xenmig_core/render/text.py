"""The text renderer of ``dump``: one line per header and record, decoded fields under it.

Generic over formats: it prints what the items hold. Fields show as ``name=value`` lines
(wrapped), nested structs and arrays of structs on their own lines, integer lists as ranges,
long bytes as a length. A derived (viewer) value whose key is a field's id replaces that
field (a pfn list shown as runs). Mappings with ``first`` and ``last`` print as ranges
``first-last rest (count)``. Payload pages print as a hex dump (``--pages hex``) or digests.
"""

from __future__ import annotations

import base64
from typing import Any, TextIO

from xenmig_core.render.batched import Batched

WIDTH = 100
HEX_LINE = 32
#: a simple list whose text is longer than this gets its own wrapped lines
LONG_LIST = 60


def number(value: int) -> str:
    """Small integers in decimal, others in hex."""
    return str(value) if 0 <= value < 0x10000 else hex(value)


def _range(entry: dict[str, Any]) -> str:
    first, last = entry["first"], entry["last"]
    text = f"{first:#x}" if first == last else f"{first:#x}-{last:#x}"
    rest = [scalar(v) for k, v in entry.items() if k not in ("first", "last", "count")]
    if rest:
        text += " " + " ".join(rest)
    if "count" in entry:
        text += f" ({entry['count']})"
    return text


def _is_range(value: Any) -> bool:
    return isinstance(value, dict) and "first" in value and "last" in value


def _int_list(values: list[Any]) -> str:
    parts = []
    for v in values:
        if isinstance(v, dict) and "first" in v and "count" in v:
            last = v["first"] + v["count"] - 1
            parts.append(f"{v['first']:#x}-{last:#x} ({v['count']})")
        elif isinstance(v, int) and not isinstance(v, bool):
            parts.append(str(v) if 0 <= v < 10 else hex(v))    # list items: pfns, frames
        else:
            parts.append(scalar(v))
    return ", ".join(parts) if parts else "[]"


def scalar(value: Any) -> str:
    """A value that fits on one line."""
    kind = type(value)
    if kind is int:
        return number(value)
    if kind is str:
        return value
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, int):
        return number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "base64" in value:
            return f"<{len(base64.b64decode(value['base64']))} bytes>"
        if set(value) <= {"length", "unavailable"}:
            return f"<{value['length']} bytes>"
        if _is_range(value):
            return _range(value)
        if "ref" in value:
            return f"<{value['length']} bytes at {value['offset']:#x} of {value['ref']}>"
    if isinstance(value, list):
        if all(_is_range(v) for v in value) and value:
            return ", ".join(_range(v) for v in value)
        if all(not isinstance(v, dict | list) or ("first" in v and "count" in v)
               for v in value):
            if all(isinstance(v, str) for v in value):
                return "[" + ", ".join(value) + "]"
            return _int_list(value)
    return str(value)


#: exact types that are always simple (one-line) values
_SCALARS = frozenset({int, str, bool, float, type(None)})


def _is_simple(value: Any) -> bool:
    if type(value) in _SCALARS:
        return True
    if _text_of(value) is not None:
        return False
    if isinstance(value, dict):
        return "base64" in value or _is_range(value) or "ref" in value or \
            set(value) <= {"length", "unavailable"}
    if isinstance(value, list):
        return not value or all(_is_range(v) for v in value) or all(
            not isinstance(v, dict | list) or ("first" in v and "count" in v and
                                               len(v) == 2) for v in value)
    return True


def _text_of(value: Any) -> tuple[str, int] | None:
    """(text, trailing NUL count) of a text bytes value, else None."""
    if isinstance(value, dict) and set(value) == {"text"}:
        return value["text"], 0
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], dict) \
            and set(value[0]) == {"text"} and isinstance(value[1], dict) \
            and set(value[1]) == {"zeros"}:
        return value[0]["text"], value[1]["zeros"]
    return None


class TextRenderer(Batched):
    """Writes the text account to *out* as items arrive."""

    #: raw and trailing bytes are never printed, so dump need not read them back
    shows_data = False

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self.depth = 0
        self._depths: dict[str, int] = {}   # format -> depth of its (latest) context

    def _line(self, offset: int | None, text: str, depth: int | None = None) -> None:
        where = f"@{offset:#010x}" if offset is not None else " " * 11
        pad = "  " * (self.depth if depth is None else depth)
        self._put(f"{where}  {pad}{text}\n")

    def _detail(self, text: str, level: int = 1) -> None:
        self._line(None, "  " * level + text)

    def _wrapped(self, pairs: list[str], level: int, lead: str = "") -> None:
        indent = 13 + 2 * self.depth + 2 * level
        line = lead
        for pair in pairs:
            if line and indent + len(line) + 1 + len(pair) > WIDTH:
                self._detail(line, level)
                line = "  " + pair if lead else pair
                continue
            line = f"{line} {pair}" if line else pair
        if line:
            self._detail(line, level)

    def mapping(self, values: dict[str, Any], level: int = 1) -> None:
        """Scalars as one wrapped ``k=v`` line, then nested values each on their own; a long
        list (ranges, numbers) gets its own wrapped lines."""
        flat = []
        rest: list[tuple[str, Any, str | None]] = []   # (key, value, text of a long list)
        for key, value in values.items():
            if not _is_simple(value):
                rest.append((key, value, None))
                continue
            text = scalar(value)
            if isinstance(value, list) and len(text) > LONG_LIST:
                rest.append((key, value, text))
            else:
                flat.append(f"{key}={text}")
        self._wrapped(flat, level)
        for key, value, text in rest:
            if text is not None:
                items = text.split(", ")
                self._wrapped([i + "," for i in items[:-1]] + items[-1:], level,
                              lead=f"{key}:")
            else:
                self.nested(key, value, level)

    def nested(self, key: str, value: Any, level: int) -> None:
        text = _text_of(value)
        if text is not None:
            body, nuls = text
            size = len(body.encode("utf-8")) + nuls
            self._detail(f"{key}: {size} bytes of text" + (f" + {nuls} NUL" if nuls else ""),
                         level)
            for line in body.splitlines():
                self._detail(f"| {line}", level + 1)
            return
        if isinstance(value, dict):
            if all(_is_simple(v) for v in value.values()):
                self._wrapped([f"{k}={scalar(v)}" for k, v in value.items()], level,
                              lead=f"{key}:")
            else:
                self._detail(f"{key}:", level)
                self.mapping(value, level + 1)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    simple = {k: v for k, v in item.items() if _is_simple(v)}
                    self._wrapped([f"{k}={scalar(v)}" for k, v in simple.items()], level,
                                  lead=f"{key}[{i}]:")
                    for k, v in item.items():
                        if not _is_simple(v):
                            self.nested(k, v, level + 1)
                else:
                    self._detail(f"{key}[{i}]: {scalar(item)}", level)
        else:
            self._detail(f"{key}: {scalar(value)}", level)

    def _fields_and_view(self, item: dict[str, Any]) -> None:
        fields = item.get("fields")
        view = item.get("view")
        if not view:                # the common cases: no merging to do
            if fields:
                self.mapping(fields)
            return
        if not fields:
            self.mapping(view)
            return
        rest = dict(view)
        shown: dict[str, Any] = {}
        for key, value in fields.items():
            shown[key] = rest.pop(key, value)
        shown.update(rest)
        self.mapping(shown)

    def _payload(self, payload: Any) -> None:
        if isinstance(payload, list):
            for page, part in enumerate(payload):
                self._detail(f"page {page} (payload +{page * 4096:#x}):")
                self._hexdump(bytes.fromhex(part["hex"]))
        elif isinstance(payload, dict) and "sha256" in payload:
            for page, digest in enumerate(payload["sha256"]):
                self._detail(f"page {page} sha256 {digest}")
        elif isinstance(payload, dict) and "ref" in payload:
            self._detail(f"payload: {scalar(payload)}")

    def _hexdump(self, data: bytes) -> None:
        previous = None
        starred = False
        for pos in range(0, len(data), HEX_LINE):
            row = data[pos:pos + HEX_LINE]
            if row == previous and pos + HEX_LINE < len(data):
                if not starred:
                    self._detail("*", 2)
                    starred = True
                continue
            starred = False
            previous = row
            self._detail(f"{pos:04x}: {row.hex(' ')}", 2)

    def _diagnostics(self, item: dict[str, Any]) -> None:
        for diag in item.get("diagnostics") or []:
            text = f"{diag['field']}: {diag['message']}" if diag.get("field") else \
                diag["message"]
            self._detail(f"{diag['severity'].upper()}: {text}")

    # -- renderer protocol ---------------------------------------------------------------
    def begin(self, meta: dict[str, Any]) -> None:
        extra = " (filtered)" if meta.get("filtered") else ""
        if meta.get("compression"):
            extra += f" ({meta['compression']}-compressed: offsets in the decompressed stream)"
        self._put(f"xenmig dump of {meta['source']}: {meta['format']}{extra}\n")

    def item(self, item: dict[str, Any]) -> None:
        getattr(self, "_" + item["kind"])(item)

    def end(self) -> None:
        self.flush()
        self.out.flush()

    def _at(self, item: dict[str, Any]) -> None:
        self.depth = self._depths.get(item.get("format", ""), self.depth)

    def _stream(self, item: dict[str, Any]) -> None:
        self.depth = self._depths[item["format"]] = item["depth"]
        self._line(item["offset"], f"{item['title']} ({item['format']})"
                   + (f", inside {item['parent']}" if item.get("parent") else ""))

    def _header(self, item: dict[str, Any]) -> None:
        self._at(item)
        text = f"{item['name']} ({item['size']} bytes)"
        if item.get("summary"):
            text += f": {item['summary']}"
        self._line(item["offset"], text)
        self._fields_and_view(item)

    def _record(self, item: dict[str, Any]) -> None:
        self._at(item)
        name = item.get("type") or f"{item['type_id']:#010x} (unknown)"
        text = f"record {item['index']}  {name} ({item['length']} bytes)"
        if item.get("summary"):
            text += f": {item['summary']}"
        self._line(item["offset"], text)
        self._fields_and_view(item)
        if "body" in item:
            self._detail(f"body: {item['length']} bytes, not decoded" if item["length"]
                         else "body: empty, not decoded")
        if "raw" in item:
            self._detail("raw: not decoded")
        if "padding" in item:
            self._detail(f"padding: {item['padding']}")
        if "payload" in item:
            self._payload(item["payload"])
        self._diagnostics(item)

    def _squashed(self, item: dict[str, Any]) -> None:
        self._at(item)
        self._line(item["offset"], f"records {item['first_index']}-{item['last_index']}  "
                   f"{item['type']} x{item['count']} ({item['length']} bytes)")
        if item.get("view"):
            self.mapping(item["view"])

    def _diagnostic(self, item: dict[str, Any]) -> None:
        self._line(item.get("offset"), f"{item['severity'].upper()}: {item['text']}", 0)

    def _trailing(self, item: dict[str, Any]) -> None:
        what = f": {item['description']}" if item.get("description") else ""
        self._line(item["offset"], f"{item['length']} trailing bytes{what}", 0)

    def _raw(self, item: dict[str, Any]) -> None:
        self._line(item["offset"], f"{item['length']} bytes not walked ({item['note']})", 0)

    def _end(self, item: dict[str, Any]) -> None:
        errors = item["errors"]
        verdict = "valid" if item["valid"] else \
            f"INVALID ({errors} error{'' if errors == 1 else 's'})"
        text = f"end: {verdict}, {item['records']} records, {item['size']} bytes"
        if item.get("warnings"):
            text += f", {item['warnings']} warning{'' if item['warnings'] == 1 else 's'}"
        if item.get("diagnostics_dropped"):
            text += f" ({item['diagnostics_dropped']} of them not shown: too many alike)"
        if item.get("note"):
            text += f"; {item['note']}"
        if item.get("stopped"):
            text += f"; {item['stopped']}"
        self._put(text + "\n")
