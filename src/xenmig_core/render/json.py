"""JSON and JSON Lines renderers for ``dump`` (schema: ``schemas/dump.schema.json``).

Both write as items arrive. JSON: one document ``{"xenmig_dump": 1, ..., "items": [...]}``
with one item per line; JSON Lines: the metadata on the first line, then one item per line.
Every item is written exactly as ``json.dumps(item)`` writes it; lines are gathered and
written :data:`BATCH` characters at a time (and at the end, or when the dump stops on an error).
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any, TextIO

#: encoded items are written when they add up to this many characters (an item larger than
#: that is written at once: memory stays bounded by one item)
BATCH = 64 << 10


def _make_encoder() -> Callable[[Any], str]:
    """``json.dumps`` with its default options, without its per-call set-up: CPython's C
    encoder made once. Items are trees the dump builds (no cycles), so the circular check
    is off. Used only when it writes what ``json.dumps`` writes (checked here on a sample),
    else ``json.dumps`` itself."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.dumps
    try:
        encode = make(None, json.JSONEncoder().default, json.encoder.encode_basestring_ascii,
                      None, ": ", ", ", False, False, True)
        sample = {"a": [1, -2, {"b": None, "c": True, "é\n": 1.5}], "d": "x\"\\\u2028"}
        if "".join(encode(sample, 0)) != json.dumps(sample):
            return json.dumps
    except (TypeError, ValueError):        # another signature: not this CPython's
        return json.dumps
    join = "".join
    return lambda item: join(encode(item, 0))


#: item -> its JSON text, as json.dumps(item)
encode = _make_encoder()


class _Batched:
    """Gathers text and writes it to *out* about BATCH characters at a time."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._parts: list[str] = []
        self._size = 0

    def _put(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Write what was gathered (the dump calls it when it stops early, too)."""
        if self._parts:
            text = "".join(self._parts)
            self._parts = []
            self._size = 0
            self.out.write(text)


class JsonRenderer(_Batched):
    """A single JSON document, streamed."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self._first = True

    def begin(self, meta: dict[str, Any]) -> None:
        head = {k: v for k, v in meta.items() if k != "kind"}
        self._put(encode(head)[:-1] + ', "items": [\n')

    def item(self, item: dict[str, Any]) -> None:
        if self._first:
            self._first = False
            self._put(encode(item))
        else:
            self._put(",\n" + encode(item))

    def end(self) -> None:
        self._put("\n]}\n")
        self.flush()


class JsonlRenderer(_Batched):
    """One JSON object per line: metadata first, then every item as it is found."""

    def begin(self, meta: dict[str, Any]) -> None:
        self._put(encode(meta) + "\n")

    def item(self, item: dict[str, Any]) -> None:
        self._put(encode(item) + "\n")

    def end(self) -> None:
        self.flush()
        self.out.flush()
