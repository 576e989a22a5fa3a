"""What every command needs first: a plugin manager and a registry of formats."""

from __future__ import annotations

import os
from collections.abc import Iterable

from xenmig_core.plugins import load_plugins
from xenmig_core.registry import Registry

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

SPEC_PATH_ENV = "XENMIG_SPEC_PATH"


def spec_paths(extra: Iterable[str | Path] = ()) -> list[Path]:
    """User spec files in the order they apply: those in ``$XENMIG_SPEC_PATH``
    (os.pathsep-separated files or folders of ``*.yaml``, sorted by name), then those given
    (``--spec``). They come after the plugins' specs, so they extend them."""
    parts = [p for p in os.environ.get(SPEC_PATH_ENV, "").split(os.pathsep) if p]
    extra = list(extra)
    if not parts and not extra:
        return []       # (the usual run: no need to load pathlib)
    from pathlib import Path
    paths: list[Path] = []
    for part in parts:
        path = Path(part)
        paths.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return paths + [Path(p) for p in extra]


def open_registry(extra_specs: Iterable[str | Path] = (), plugins: Iterable[Any] = (),
                  autoload: bool | None = None) -> Registry:
    """A registry with every installed plugin, *plugins*, and the user's spec files."""
    pm = load_plugins(plugins, autoload=autoload)
    return Registry(pm, spec_paths(extra_specs))
