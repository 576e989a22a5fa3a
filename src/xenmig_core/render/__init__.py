"""Renderers: the verify -v account, and the text/json/jsonl/yaml forms of ``dump``.

``RENDERERS`` (``dump --to`` name -> renderer factory taking a text output) is built on first
use: importing this package (as ``verify`` does, for its account) loads no renderer, and so
neither the YAML emitter nor json.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO


def _renderers() -> dict[str, Callable[[TextIO], Any]]:
    from xenmig_core.render.json import JsonlRenderer, JsonRenderer
    from xenmig_core.render.text import TextRenderer
    from xenmig_core.render.yaml import YamlRenderer

    return {"text": TextRenderer, "json": JsonRenderer, "jsonl": JsonlRenderer,
            "yaml": YamlRenderer}


def __getattr__(name: str) -> Any:
    if name == "RENDERERS":
        renderers = _renderers()
        globals()["RENDERERS"] = renderers
        return renderers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
