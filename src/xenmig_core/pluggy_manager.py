"""xenmig's pluggy plugin manager (:class:`XenmigPluginManager`), apart from
:mod:`xenmig_core.plugins` so that what plugins import from there (the marker,
``package_file``, ``resolve``) does not import pluggy: a run whose hook tables come from the
cache (:mod:`xenmig_core.recorded`) never does."""

from __future__ import annotations

from types import FunctionType, ModuleType
from typing import Any

import pluggy

from xenmig_core.markers import IMPL_ATTRIBUTE, PROJECT


class XenmigPluginManager(pluggy.PluginManager):
    """pluggy's manager, plus where each plugin came from: ``origins`` maps a plugin's name
    to ``dist==version`` for an entry-point plugin, or to its module for one given directly.
    The compiled-spec cache keys on it."""

    def __init__(self) -> None:
        super().__init__(PROJECT)
        self.origins: dict[str, str] = {}
        self._spec_marker = f"{PROJECT}_spec"

    def parse_hookimpl_opts(self, plugin: Any, name: str) -> Any:
        """pluggy's answer, with short cuts past what pluggy would look up statically one
        by one at every start-up, to find no hook: a module's names that are not functions
        marked as hook implementations (its imports and constants), and an object's
        ``__dunder__`` names (every hook is named ``xenmig_...``)."""
        if isinstance(plugin, ModuleType):
            value = plugin.__dict__.get(name)
            if type(value) is not FunctionType or not hasattr(value, IMPL_ATTRIBUTE):
                return None
        elif name[:2] == "__" == name[-2:]:
            return None
        return super().parse_hookimpl_opts(plugin, name)

    def parse_hookspec_opts(self, module_or_class: Any, name: str) -> Any:
        """pluggy's answer, with the same short cut for the hook specs' module."""
        if isinstance(module_or_class, ModuleType):
            value = module_or_class.__dict__.get(name)
            if type(value) is not FunctionType or not hasattr(value, self._spec_marker):
                return None
        return super().parse_hookspec_opts(module_or_class, name)
