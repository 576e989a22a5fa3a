"""YAML renderer for ``dump``: the same document as JSON, in block style, streamed.

Small leaf mappings and lists are written inline (``{first: 0, count: 32}``), so a record
stays a few lines. The output is ``build`` input.
"""

from __future__ import annotations

from typing import Any, TextIO

import yaml


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """SafeDumper (libyaml's when available) that never emits aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


class YamlRenderer:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def _dump(self, data: Any, flow: bool | None = None) -> str:
        return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=flow,
                         width=1 << 30, allow_unicode=True)

    def begin(self, meta: dict[str, Any]) -> None:
        head = {k: v for k, v in meta.items() if k != "kind"}
        self.out.write(self._dump(head, flow=False))
        self.out.write("items:\n")

    def item(self, item: dict[str, Any]) -> None:
        self.out.write(self._dump([item]))

    def end(self) -> None:
        self.out.flush()
