"""Helpers for the dump/build tests: dump bytes with the library, build descriptions."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from xenmig_core.dump import DumpOptions, DumpResult, dump_source
from xenmig_core.registry import Registry
from xenmig_core.render import RENDERERS
from xenmig_core.source import ByteSource


def dump_text(registry: Registry, source: ByteSource, to: str = "text", fmt: str = "auto",
              **options: Any) -> tuple[str, DumpResult]:
    """Dump *source* in form *to*; returns the output and the verdict."""
    out = io.StringIO()
    if "pages" not in options:
        options["pages"] = "none" if to == "text" else "ref"
    if "squash" not in options:
        options["squash"] = to == "text" and options["pages"] == "none"
    result = dump_source(registry, source, RENDERERS[to](out), DumpOptions(**options), fmt)
    return out.getvalue(), result


def dump_file(registry: Registry, path: Path, to: str = "text", fmt: str = "auto",
              **options: Any
              ) -> tuple[str, DumpResult]:
    with ByteSource.open(str(path)) as source:
        return dump_text(registry, source, to, fmt, **options)
