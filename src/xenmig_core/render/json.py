"""JSON and JSON Lines renderers for ``dump`` (schema: ``schemas/dump.schema.json``).

Both write as items arrive. JSON: one document ``{"xenmig_dump": 1, ..., "items": [...]}``
with one item per line; JSON Lines: the metadata on the first line, then one item per line.
Every item is written exactly as ``json.dumps(item)`` writes it; lines are gathered and
written in large pieces (:mod:`xenmig_core.render.batched`). A producer that writes an
item's JSON text itself (the dump's usual records, :mod:`xenmig_core.dump_json`) hands it
to ``item_json``.
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable
from typing import Any, TextIO

from xenmig_core.render.batched import Batched


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
#: a str -> its JSON text (quoted, non-ASCII escaped), as json.dumps writes a str
quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


class JsonRenderer(Batched):
    """A single JSON document, streamed."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(out)
        self._first = True

    def begin(self, meta: dict[str, Any]) -> None:
        head = {k: v for k, v in meta.items() if k != "kind"}
        self._put(encode(head)[:-1] + ', "items": [\n')

    def item(self, item: dict[str, Any]) -> None:
        self.item_json(encode(item))

    def item_json(self, text: str) -> None:
        """An item given as its JSON text (``encode(item)``)."""
        if self._first:
            self._first = False
            self._put(text)
        else:
            self._put(",\n" + text)

    def end(self) -> None:
        self._put("\n]}\n")
        self.flush()


class JsonlRenderer(Batched):
    """One JSON object per line: metadata first, then every item as it is found."""

    def begin(self, meta: dict[str, Any]) -> None:
        self._put(encode(meta) + "\n")

    def item(self, item: dict[str, Any]) -> None:
        self._put(encode(item) + "\n")

    def item_json(self, text: str) -> None:
        """An item given as its JSON text (``encode(item)``)."""
        self._put(text + "\n")

    def end(self) -> None:
        self.flush()
        self.out.flush()
