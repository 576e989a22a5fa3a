"""Building the plugin manager: hook specs, built-in and third-party plugins.

``get_plugin_manager()`` makes a fresh manager per run (no module-level global), loads every
plugin of the ``xenmig.plugins`` entry-point group, and turns a plugin that fails to import
or register into a :class:`PluginError` naming it. With ``XENMIG_DISABLE_PLUGIN_AUTOLOAD``
set, only xenmig's own built-in plugins are loaded.

Entry points are found by :func:`find_entry_points`, a direct scan of the ``*.dist-info`` and
``*.egg-info`` folders on ``sys.path`` (a few ``listdir`` calls): ``importlib.metadata``
costs tens of milliseconds to import and reads every distribution's metadata, which is most
of a short run's start-up. The scan finds what ``importlib.metadata.entry_points`` finds for
distributions installed in folders; when ``sys.path`` holds an archive (a zip application),
it hands over to ``importlib.metadata``, which can read those.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence

from xenmig_core.detect import SpecDetector
from xenmig_core.errors import PluginError, XenmigError
from xenmig_core.markers import hookimpl as hookimpl  # the documented import of the marker
from xenmig_core.plain import Plain

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

    import pluggy

    from xenmig_core.pluggy_manager import XenmigPluginManager

ENTRY_POINT_GROUP = "xenmig.plugins"
DISTRIBUTION = "xenmig"
_METADATA_SUFFIXES = (".dist-info", ".egg-info")


class PluginEntryPoint(Plain, frozen=True):
    """One ``name = module[:attr]`` line of a distribution's ``entry_points.txt``. (A
    :class:`~xenmig_core.plain.Plain` class: a NamedTuple's class is generated and compiled
    at every start.)"""

    name: str
    value: str
    #: the distribution's normalised name (``xenmig``, ``xenmig_testnote``) and version
    dist: str
    version: str

    def load(self) -> Any:
        """Import the module and return the object the entry point names."""
        return resolve(self.value)


def resolve(ref: str) -> Any:
    """The object a ``module`` or ``module:attr[.attr...]`` reference names, importing the
    module (once: Python keeps it). Plugins name their handlers so, and resolve them in
    the hook that hands them out: a run imports only the handler modules it uses."""
    module, _, attr = ref.partition(":")
    found: Any = importlib.import_module(module.strip())
    for part in filter(None, attr.strip().split(".")):
        found = getattr(found, part)
    return found


class PackageFile:
    """A file in a package's folder on disk, as :func:`package_file` hands it out: the
    part of a ``Path`` (or ``importlib.resources`` Traversable) that spec files are read
    through (``read_bytes``, ``read_text``, ``open``, ``name``, ``is_file``, ``str`` and
    ``os.fspath``: the file's path), without loading pathlib and what it imports."""

    __slots__ = ("_path",)

    def __init__(self, path: str) -> None:
        self._path = path

    @property
    def name(self) -> str:
        return os.path.basename(self._path)

    def read_bytes(self) -> bytes:
        with open(self._path, "rb") as f:
            return f.read()

    def read_text(self, encoding: str | None = None) -> str:
        with open(self._path, encoding=encoding) as f:
            return f.read()

    def open(self, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return open(self._path, mode, *args, **kwargs)

    def is_file(self) -> bool:
        return os.path.isfile(self._path)

    def is_dir(self) -> bool:
        return os.path.isdir(self._path)

    def __fspath__(self) -> str:
        return self._path

    def __str__(self) -> str:
        return self._path

    def __repr__(self) -> str:
        return f"PackageFile({self._path!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PackageFile) and other._path == self._path

    def __hash__(self) -> int:
        return hash(self._path)


_folders: dict[str, str | None] = {}


def package_file(package: str, name: str) -> Any:
    """File *name* shipped in *package* (a spec file beside a plugin): a
    :class:`PackageFile` when the package is a folder on disk, else what
    ``importlib.resources.files(package) / name`` gives (an archive). Either reads, and
    names itself (``str``), as ``files(package) / name`` does."""
    if package not in _folders:
        origin = getattr(importlib.import_module(package), "__file__", None)
        folder = os.path.dirname(origin) if origin else None
        _folders[package] = folder if folder and os.path.isdir(folder) else None
    folder = _folders[package]
    if folder is None:
        from importlib.resources import files
        return files(package) / name
    return PackageFile(os.path.join(folder, name))


def _normalise(name: str) -> str:
    """A distribution's name as compared: runs of ``-``, ``_`` and ``.`` as one ``_``,
    lower case."""
    if "-" not in name and "." not in name and "__" not in name:
        return name.lower()     # (a metadata folder's name: already so, but for the case)
    return re.sub(r"[-_.]+", "_", name).lower()


def _metadata_dir(name: str) -> tuple[str, str] | None:
    """(distribution name, version) of a ``NAME-VERSION[-...].dist-info`` (or ``.egg-info``)
    folder *name*, the version empty when the name has none; None for another name."""
    lowered = name.lower()
    for suffix in _METADATA_SUFFIXES:
        if lowered.endswith(suffix):
            dist, _, rest = name[:-len(suffix)].partition("-")
            return (dist, rest.partition("-")[0]) if dist else None
    return None


def _entry_lines(text: str, group: str) -> Iterator[tuple[str, str]]:
    """(name, value) of each entry of *group* in an ``entry_points.txt`` (INI) text."""
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line[0] == "[" and line[-1] == "]":
            section = line[1:-1].strip()
        elif section == group and "=" in line:
            name, _, value = line.partition("=")
            yield name.strip(), value.split("[", 1)[0].strip()   # drop any ``[extras]``


def _from_importlib(group: str) -> list[PluginEntryPoint]:
    from importlib.metadata import entry_points

    return [PluginEntryPoint(ep.name, ep.value, _normalise(ep.dist.name) if ep.dist else "",
                             ep.dist.version if ep.dist else "")
            for ep in entry_points(group=group)]


def find_entry_points(group: str = ENTRY_POINT_GROUP,
                      path: Sequence[str] | None = None, *,
                      versions: dict[str, str] | None = None) -> list[PluginEntryPoint]:
    """Every entry point of *group* of the distributions on *path* (default ``sys.path``),
    in path order; a distribution found again later on the path is skipped, as Python's
    import system would shadow it. *versions*, when given, gets the (normalised) name and
    version of every distribution found in a folder."""
    found: list[PluginEntryPoint] = []
    seen: set[str] = set()
    for entry in sys.path if path is None else path:
        folder = entry or "."
        try:
            names = sorted(os.listdir(folder))
        except NotADirectoryError:
            return _from_importlib(group)   # an archive on the path: let importlib read it
        except OSError:
            continue
        for name in names:
            if name[-5:].lower() != "-info":
                continue         # (most names)
            parsed = _metadata_dir(name)
            if parsed is None:
                continue
            dist, version = _normalise(parsed[0]), parsed[1]
            if dist in seen:
                continue
            seen.add(dist)
            if versions is not None:
                versions[dist] = version
            try:
                with open(os.path.join(folder, name, "entry_points.txt"), encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError):
                continue
            found.extend(PluginEntryPoint(ep_name, value, dist, version)
                         for ep_name, value in _entry_lines(text, group))
    return found


def _autoload(autoload: bool | None) -> bool:
    """Whether third-party plugins are loaded: *autoload*, else unless
    ``XENMIG_DISABLE_PLUGIN_AUTOLOAD`` is set."""
    return not os.environ.get("XENMIG_DISABLE_PLUGIN_AUTOLOAD") if autoload is None \
        else autoload


def _plugins_of_the_run(autoload: bool | None, entry_points: list[PluginEntryPoint]
                        ) -> list[tuple[str, Any, str]]:
    """(name, plugin, origin) of every plugin a run registers before any given by hand, in
    registration order: the entry-point plugins (imported) of *entry_points* (those of
    xenmig's own distribution only, without *autoload*), then the spec detector."""
    autoload = _autoload(autoload)
    plugins: dict[str, tuple[str, Any, str]] = {}
    for ep in entry_points:
        if (not autoload and ep.dist != DISTRIBUTION) or ep.name in plugins:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} ({ep.value}) failed to load: "
                              f"{type(exc).__name__}: {exc}") from exc
        plugins[ep.name] = (ep.name, plugin, f"{ep.dist}=={ep.version}")
    detector = "xenmig.spec-detector"
    return [*plugins.values(), (detector, SpecDetector(), DISTRIBUTION)]


def get_plugin_manager(extra_plugins: Iterable[Any] = (), *,
                       autoload: bool | None = None) -> XenmigPluginManager:
    """A new manager with the hook specs, the entry-point plugins and *extra_plugins*."""
    return _pluggy_manager(_plugins_of_the_run(autoload, find_entry_points()), extra_plugins)


def _pluggy_manager(plugins: list[tuple[str, Any, str]], extra_plugins: Iterable[Any] = ()
                    ) -> XenmigPluginManager:
    """pluggy's manager with the hook specs, *plugins* ((name, plugin, origin) in order) and
    *extra_plugins*; a plugin pluggy refuses is a PluginError naming it."""
    import pluggy

    import xenmig_core.hookspecs as hookspecs
    from xenmig_core.pluggy_manager import XenmigPluginManager

    pm = XenmigPluginManager()
    pm.add_hookspecs(hookspecs)
    for name, plugin, origin in plugins:
        _register(pm, plugin, name, origin)
    for plugin in extra_plugins:
        if not pm.is_registered(plugin):   # e.g. an installed plugin, also given by hand
            _register(pm, plugin, getattr(plugin, "__name__", None),
                      getattr(plugin, "__name__", type(plugin).__qualname__))
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise PluginError(f"plugin {name!r}: {_one_line(exc)}") from exc
    return pm


def load_plugins(extra_plugins: Iterable[Any] = (), *, autoload: bool | None = None) -> Any:
    """The plugins of a run, for :func:`call_each` and :func:`first_result`: pluggy's hook
    tables replayed from the cache (:class:`~xenmig_core.recorded.RecordedHooks`, without
    importing pluggy) when a recording of them is there and the plugins are as recorded,
    else :func:`get_plugin_manager`'s manager (whose tables are then recorded). Plugins
    given by hand (*extra_plugins*) always get pluggy's manager."""
    extra_plugins = list(extra_plugins)
    if extra_plugins:
        return get_plugin_manager(extra_plugins, autoload=autoload)
    from xenmig_core.recorded import read_table, record, replay, table_key, write_table

    versions: dict[str, str] = {}
    entry_points = find_entry_points(versions=versions)
    key = table_key(entry_points, _autoload(autoload), versions)
    table = read_table(key)
    plugins = _plugins_of_the_run(autoload, entry_points)
    replayed = None if table is None else replay(table, plugins)
    if replayed is not None:
        return replayed
    pm = _pluggy_manager(plugins)
    write_table(key, record(pm, plugins))
    return pm


def _one_line(exc: BaseException) -> str:
    """pluggy's messages span lines; a xenmig error is one line."""
    return " ".join(str(exc).split())


def _register(pm: XenmigPluginManager, plugin: Any, name: str | None, origin: str) -> None:
    import pluggy

    try:
        registered = pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"plugin {name!r} cannot be registered: {_one_line(exc)}") from exc
    if registered is not None:
        pm.origins[registered] = origin


def call_each(pm: Any, hook_name: str, *, only_with: str | None = None,
              **kwargs: Any) -> Iterator[tuple[str, Any]]:
    """Call every implementation of a hook in pluggy's order, yielding (plugin, result).

    A result of None is skipped. With *only_with*, implementations that do not take that
    argument are skipped. An implementation that raises anything but a xenmig error
    becomes a PluginError naming the plugin and the hook.
    """
    replayed = getattr(pm, "hookimpls", None)
    impls = replayed(hook_name) if replayed is not None else \
        [(i.plugin_name, i.function, i.argnames)
         for i in reversed(getattr(pm.hook, hook_name).get_hookimpls())]
    for plugin, function, argnames in impls:
        if only_with is not None and only_with not in argnames:
            continue
        try:
            result = function(**{k: kwargs[k] for k in argnames})
        except XenmigError:
            raise
        except Exception as exc:
            raise PluginError(f"plugin {plugin!r} failed in {hook_name}: "
                              f"{type(exc).__name__}: {exc}") from exc
        if result is not None:
            yield plugin, result


def first_result(pm: Any, hook_name: str, **kwargs: Any) -> tuple[str, Any]:
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
