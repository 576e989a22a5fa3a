"""Renderers: the verify -v account, and the text/json/jsonl/yaml forms of ``dump``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TextIO

from xenmig_core.render.json import JsonlRenderer, JsonRenderer
from xenmig_core.render.text import TextRenderer
from xenmig_core.render.yaml import YamlRenderer

#: ``dump --to`` name -> renderer factory taking a text output
RENDERERS: dict[str, Callable[[TextIO], Any]] = {
    "text": TextRenderer, "json": JsonRenderer, "jsonl": JsonlRenderer, "yaml": YamlRenderer}
