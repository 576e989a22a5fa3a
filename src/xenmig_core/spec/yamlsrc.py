"""Reading YAML spec files with line numbers, through PyYAML's safe loader only.

Mappings come back as :class:`Located` dicts that remember the line of each key, so that
spec errors can name ``file:line: key``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from xenmig_core.errors import SpecError


class Located(dict):
    """A dict that remembers where it and each of its keys stood in the source file."""

    path: str = "<spec>"
    line: int | None = None
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int | None:
        return self.key_lines.get(key, self.line)


# libyaml's parser when PyYAML was built with it (several times faster), else pure Python;
# either way only the safe constructor runs.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_BaseLoader):  # type: ignore[misc, valid-type]
    """Safe loader that builds Located mappings."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> Located:
    loader.flatten_mapping(node)
    result = Located()
    result.path = loader.name
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise SpecError(f"duplicate key {key!r}", path=loader.name,
                            line=key_node.start_mark.line + 1)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[str(key)] = key_node.start_mark.line + 1
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str, path: str) -> Any:
    """Parse *text* (the contents of *path*) safely; SpecError on bad YAML."""
    loader = _LineLoader(text)
    loader.name = path
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"invalid YAML: {problem}", path=path, line=line) from None
    finally:
        loader.dispose()


def read_spec_text(source: Path | Any) -> tuple[str, str]:
    """Return (text, display path) for a Path or an importlib Traversable."""
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read spec: {exc}", path=str(source)) from None
    return text, str(source)
