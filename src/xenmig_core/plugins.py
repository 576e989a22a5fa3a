"""Building the plugin manager: hook specs, built-in and third-party plugins.

``get_plugin_manager()`` makes a fresh manager per run (no module-level global), loads every
plugin of the ``xenmig.plugins`` entry-point group, and turns a plugin that fails to import
or register into a :class:`PluginError` naming it. With ``XENMIG_DISABLE_PLUGIN_AUTOLOAD``
set, only xenmig's own built-in plugins are loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from xenmig_core import hookspecs
from xenmig_core.errors import PluginError, XenmigError

ENTRY_POINT_GROUP = "xenmig.plugins"
DISTRIBUTION = "xenmig"
hookimpl = pluggy.HookimplMarker("xenmig")


def _builtin(ep: EntryPoint) -> bool:
    return ep.dist is not None and ep.dist.name == DISTRIBUTION


def get_plugin_manager(extra_plugins: Iterable[Any] = (), *,
                       autoload: bool | None = None) -> pluggy.PluginManager:
    """A new manager with the hook specs, the entry-point plugins and *extra_plugins*."""
    pm = pluggy.PluginManager("xenmig")
    pm.add_hookspecs(hookspecs)
    if autoload is None:
        autoload = not os.environ.get("XENMIG_DISABLE_PLUGIN_AUTOLOAD")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if not autoload and not _builtin(ep):
            continue
        if pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc
        _register(pm, plugin, ep.name)
    from xenmig_core.detect import SpecDetector
    _register(pm, SpecDetector(), "xenmig.spec-detector")
    for plugin in extra_plugins:
        if not pm.is_registered(plugin):   # e.g. an installed plugin, also given by hand
            _register(pm, plugin, getattr(plugin, "__name__", None))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {name!r}: {_one_line(exc)}") from exc
    return pm


def _one_line(exc: BaseException) -> str:
    """pluggy's messages span lines; a xenmig error is one line."""
    return " ".join(str(exc).split())


def _register(pm: pluggy.PluginManager, plugin: Any, name: str | None) -> None:
    try:
        pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"plugin {name!r} cannot be registered: {_one_line(exc)}") from exc


def call_each(pm: pluggy.PluginManager, hook_name: str, *, only_with: str | None = None,
              **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Call every implementation of a hook in pluggy's order, yielding (plugin, result).

    A result of None is skipped. With *only_with*, implementations that do not take that
    argument are skipped. An implementation that raises anything but a xenmig error
    becomes a PluginError naming the plugin and the hook.
    """
    hook = getattr(pm.hook, hook_name)
    for impl in reversed(hook.get_hookimpls()):
        if only_with is not None and only_with not in impl.argnames:
            continue
        try:
            result = impl.function(**{k: kwargs[k] for k in impl.argnames})
        except XenmigError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook_name}: "
                              f"{type(exc).__name__}: {exc}") from exc
        if result is not None:
            yield impl.plugin_name, result


def first_result(pm: pluggy.PluginManager, hook_name: str, **kwargs: Any) -> tuple[str, Any]:
    """(plugin, result) of the first implementation answering non-None, or ("", None)."""
    for found in call_each(pm, hook_name, **kwargs):
        return found
    return "", None


def list_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Name, module and hooks of each registered plugin (for ``xenmig plugins``)."""
    out = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        module = getattr(plugin, "__name__", None) or \
            f"{type(plugin).__module__}.{type(plugin).__qualname__}"
        out.append({"name": name, "module": module,
                    "hooks": hooks})
    return out
