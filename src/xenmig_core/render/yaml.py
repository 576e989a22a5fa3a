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


def _scalar(value: Any) -> bool:
    return not isinstance(value, dict | list | tuple)


class _EventWriter:
    """Writes documents as PyYAML events: what ``yaml.dump`` writes, without building the
    whole item's node graph first (an item of many entries would cost many times its text).

    Each document is a stream of its own, as one ``yaml.dump`` call per item writes it.
    Scalars are represented by the dumper itself; a collection whose members are all
    scalars is in flow style, as ``default_flow_style=None`` chooses."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.dumper: Any = None

    def document(self, data: Any, flow: bool | None = None) -> None:
        self.dumper = _Dumper(self.out, sort_keys=False, default_flow_style=None,
                              width=1 << 30, allow_unicode=True)
        emit = self.dumper.emit
        emit(yaml.StreamStartEvent())
        emit(yaml.DocumentStartEvent())
        self._node(data, flow)
        emit(yaml.DocumentEndEvent())
        emit(yaml.StreamEndEvent())
        self.dumper.dispose()

    def _node(self, data: Any, flow: bool | None = None) -> None:
        emit = self.dumper.emit
        if isinstance(data, dict):
            style = all(_scalar(v) for v in data.values()) if flow is None else flow
            emit(yaml.MappingStartEvent(None, None, True, flow_style=style))
            for key, value in data.items():
                self._node(key)
                self._node(value)
            emit(yaml.MappingEndEvent())
        elif isinstance(data, list | tuple):
            style = all(_scalar(v) for v in data) if flow is None else flow
            emit(yaml.SequenceStartEvent(None, None, True, flow_style=style))
            for value in data:
                self._node(value)
            emit(yaml.SequenceEndEvent())
        else:
            node = self.dumper.represent_data(data)
            detected = self.dumper.resolve(yaml.ScalarNode, node.value, (True, False))
            default = self.dumper.resolve(yaml.ScalarNode, node.value, (False, True))
            emit(yaml.ScalarEvent(None, node.tag, (node.tag == detected, node.tag == default),
                                  node.value, style=node.style))


class YamlRenderer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.events = _EventWriter(out)

    def begin(self, meta: dict[str, Any]) -> None:
        head = {k: v for k, v in meta.items() if k != "kind"}
        self.events.document(head, flow=False)
        self.out.write("items:\n")

    def item(self, item: dict[str, Any]) -> None:
        self.events.document([item])

    def end(self) -> None:
        self.out.flush()
