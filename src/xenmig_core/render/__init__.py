"""Renderers: the verify -v account, and the text/json/jsonl/yaml forms of ``dump``.

``RENDERERS`` maps each ``dump --to`` name to a factory taking a text output; a factory
imports its renderer's module when it is called: importing this package (as ``verify`` does,
for its account) loads no renderer, and a dump loads only the one it writes (``-t jsonl``
does not load the YAML emitter).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any, TextIO


def _factory(module: str, name: str) -> Callable[[TextIO], Any]:
    def make(out: TextIO) -> Any:
        return getattr(importlib.import_module(module), name)(out)
    make.__qualname__ = make.__name__ = name
    return make


RENDERERS: dict[str, Callable[[TextIO], Any]] = {
    "text": _factory("xenmig_core.render.text", "TextRenderer"),
    "json": _factory("xenmig_core.render.json", "JsonRenderer"),
    "jsonl": _factory("xenmig_core.render.json", "JsonlRenderer"),
    "yaml": _factory("xenmig_core.render.yaml", "YamlRenderer"),
}
