"""JSON and JSON Lines renderers for ``dump`` (schema: ``schemas/dump.schema.json``).

Both write as items arrive. JSON: one document ``{"xenmig_dump": 1, ..., "items": [...]}``
with one item per line; JSON Lines: the metadata on the first line, then one item per line.
"""

from __future__ import annotations

import json
from typing import Any, TextIO


class JsonRenderer:
    """A single JSON document, streamed."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._first = True

    def begin(self, meta: dict[str, Any]) -> None:
        head = {k: v for k, v in meta.items() if k != "kind"}
        self.out.write(json.dumps(head)[:-1] + ', "items": [\n')

    def item(self, item: dict[str, Any]) -> None:
        if not self._first:
            self.out.write(",\n")
        self._first = False
        self.out.write(json.dumps(item))

    def end(self) -> None:
        self.out.write("\n]}\n")


class JsonlRenderer:
    """One JSON object per line: metadata first, then every item as it is found."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def begin(self, meta: dict[str, Any]) -> None:
        self.out.write(json.dumps(meta) + "\n")

    def item(self, item: dict[str, Any]) -> None:
        self.out.write(json.dumps(item) + "\n")

    def end(self) -> None:
        self.out.flush()
