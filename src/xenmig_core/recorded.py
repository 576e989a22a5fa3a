"""pluggy's hook tables, recorded in the cache and replayed: a run whose plugins are as they
were when recorded calls its hooks without importing pluggy.

pluggy decides which function of which plugin implements each hook and in which order
(registration order, ``tryfirst``/``trylast``, wrappers), and which arguments each takes;
:func:`~xenmig_core.plugins.call_each` then reads, per hook, the list (plugin name,
function, argument names) pluggy made. Importing pluggy (which imports ``inspect``, ``ast``,
``dis``, ``tokenize``) and registering the plugins (a signature inspection per hook
implementation) costs a fifth of a short ``verify``. So once pluggy's manager is built,
:func:`record` writes down those lists, naming each function by its plugin and attribute
name, and the next run with the same plugins replays them (:class:`RecordedHooks`): the
same functions, in the same order, with the same arguments. Nothing a hook *returns* is
recorded; every hook is called on every run, as before.

When a recording is used. Its file is found by a key (:func:`table_key`) over everything
pluggy's decision depends on besides the plugins' code: the entry points found
(name, target, distribution and version), whether third-party plugins are loaded, xenmig's
and pluggy's versions, the Python build, and the size and modification time of the modules
that state and apply the hook contract (``hookspecs``, ``plugins``, ``pluggy_manager``,
``markers``, this one). The plugins' code is then checked, after importing them as every
run does: the recording holds, for each plugin, every attribute carrying the hook marker
with the marker's options and the shape of its signature (argument names, defaults,
flags), and the plugins as imported must show exactly that (:func:`marked`), so a plugin
that gains, loses, renames or re-signs a hook implementation, with or without a new
version, gets pluggy's manager again (and a new recording). A marked object that is not a
plain function or method (a ``functools.wraps`` wrapper, an object with a signature of its
own) is never recorded: those plugins always get pluggy's manager. Plugins given by hand
(the Python API's ``plugins=``) always do too.

Files live beside the compiled specs (:mod:`xenmig_core.spec.cache`: same folder, same
rules of trust: a private folder, a private regular file, read without following links);
their contents are :mod:`marshal` data of strings, numbers, tuples, lists and dicts,
checked for shape when read. Failures are silent: no recording means pluggy's manager.
"""

from __future__ import annotations

import marshal
import os
import sys
from types import FunctionType, MethodType, ModuleType

from xenmig_core.markers import IMPL_ATTRIBUTE
from xenmig_core.spec.cache import blake2b, cache_folder, read_private, write_private
from xenmig_core.version import __version__

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

    from xenmig_core.plugins import PluginEntryPoint

#: bump when what is recorded, or how, changes
TABLE_FORMAT = 1
_PREFIX = "hooks-"
_MAGIC = b"xenmig hook tables\n"
#: the modules whose sources key the recordings (beside this one)
_CONTRACT = ("hookspecs.py", "plugins.py", "pluggy_manager.py", "markers.py", "recorded.py")

#: a plugin as the run loads it: (name, plugin object, origin)
Plugin = tuple[str, "Any", str]


class RecordedHooks:
    """The hook tables of a run's plugins, as pluggy made them for the same plugins: what
    :func:`~xenmig_core.plugins.call_each` reads (:meth:`hookimpls`), the plugins' names
    and objects (``list_name_plugin()``) and where each came from (``origins``)."""

    def __init__(self, plugins: list[Plugin],
                 hooks: dict[str, list[tuple[str, Any, tuple[str, ...]]]]) -> None:
        self.origins = {name: origin for name, _plugin, origin in plugins}
        self._plugins = [(name, plugin) for name, plugin, _origin in plugins]
        self._hooks = hooks

    def hookimpls(self, hook_name: str) -> list[tuple[str, Any, tuple[str, ...]]]:
        """(plugin name, function, argument names) of each implementation of *hook_name*,
        in the order they are called; AttributeError for a hook pluggy would not know."""
        try:
            return self._hooks[hook_name]
        except KeyError:
            raise AttributeError(hook_name) from None

    def list_name_plugin(self) -> list[tuple[str, Any]]:
        return list(self._plugins)


def _signature(value: Any, opts: dict[str, Any]) -> tuple[Any, ...] | None:
    """What pluggy reads of a marked *value* (its options, whether it is a bound method,
    its arguments, their defaults, its code flags), or None when *value* is not a plain
    function or method (pluggy may then read more than this: not recorded)."""
    function = value.__func__ if type(value) is MethodType else value
    if type(function) is not FunctionType or "__wrapped__" in function.__dict__ or \
            "__signature__" in function.__dict__:
        return None
    code = function.__code__
    count = code.co_argcount + code.co_kwonlyargcount
    return (tuple(sorted(opts.items())), type(value) is MethodType, code.co_argcount,
            code.co_posonlyargcount, code.co_kwonlyargcount, code.co_varnames[:count],
            code.co_flags, len(function.__defaults__ or ()),
            tuple(sorted(function.__kwdefaults__ or ())))


def marked(plugin: Any) -> dict[str, tuple[Any, tuple[Any, ...]]] | None:
    """Every attribute of *plugin* carrying the hook marker, by name: (the attribute, its
    :func:`_signature`); None when one cannot be recorded. For a module, its functions
    (pluggy's manager looks at nothing else there); for another object, every attribute
    but ``__dunder__`` ones (the manager skips those)."""
    found: dict[str, tuple[Any, tuple[Any, ...]]] = {}
    try:
        if isinstance(plugin, ModuleType):
            items = [(n, v) for n, v in vars(plugin).items() if type(v) is FunctionType]
        else:
            items = [(n, getattr(plugin, n, None)) for n in dir(plugin)
                     if not n[:2] == "__" == n[-2:]]
        for name, value in items:
            opts = getattr(value, IMPL_ATTRIBUTE, None)
            if opts is None:
                continue
            signature = _signature(value, opts) if type(opts) is dict else None
            if signature is None:
                return None
            found[name] = (value, signature)
    except Exception:     # an odd object's attributes: leave it all to pluggy
        return None
    return found


def _contract_stamp() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    parts = []
    for name in _CONTRACT:
        try:
            st = os.stat(os.path.join(here, name))
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:?")
    return ",".join(parts)


def table_key(entry_points: list[PluginEntryPoint], autoload: bool,
              versions: dict[str, str]) -> str:
    """The key of the recording for these *entry_points* (as found on the path), *autoload*
    and the distributions' *versions* (pluggy's is used)."""
    digest = blake2b(digest_size=20)
    head = (f"{TABLE_FORMAT}\0{__version__}\0{sys.implementation.cache_tag}\0{sys.version}\0"
            f"pluggy=={versions.get('pluggy', '?')}\0{autoload}\0{_contract_stamp()}\0")
    digest.update(head.encode())
    for ep in entry_points:
        digest.update(f"{ep.name}\0{ep.value}\0{ep.dist}\0{ep.version}\0".encode())
    return digest.hexdigest()


def record(pm: Any, plugins: list[Plugin]) -> dict[str, Any] | None:
    """What :func:`replay` needs of pluggy's manager *pm*, built from exactly *plugins*;
    None when a plugin cannot be recorded (see :func:`marked`)."""
    names = {}
    for name, plugin, _origin in plugins:
        found = marked(plugin)
        if found is None:
            return None
        names[name] = found
    hooks: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}
    for hook_name, caller in vars(pm.hook).items():
        impls = []
        for impl in reversed(caller.get_hookimpls()):
            attribute = next((attr for attr, (value, _sig) in names.get(impl.plugin_name, {})
                              .items() if value is impl.function or value == impl.function),
                             None)
            if attribute is None:
                return None
            impls.append((impl.plugin_name, attribute, tuple(impl.argnames)))
        hooks[hook_name] = impls
    return {"plugins": [(name, origin) for name, _plugin, origin in plugins],
            "marked": {name: {attr: sig for attr, (_value, sig) in found.items()}
                       for name, found in names.items()},
            "hooks": hooks}


def replay(table: dict[str, Any], plugins: list[Plugin]) -> RecordedHooks | None:
    """The recorded hook tables of *plugins* (as loaded by this run), or None when they are
    not the plugins recorded or their marked attributes are not as recorded."""
    if table["plugins"] != [(name, origin) for name, _plugin, origin in plugins]:
        return None
    objects: dict[str, dict[str, Any]] = {}
    for name, plugin, _origin in plugins:
        found = marked(plugin)
        if found is None or {attr: sig for attr, (_v, sig) in found.items()} != \
                table["marked"].get(name):
            return None
        objects[name] = {attr: value for attr, (value, _sig) in found.items()}
    try:
        hooks = {hook: [(plugin, objects[plugin][attr], argnames)
                        for plugin, attr, argnames in impls]
                 for hook, impls in table["hooks"].items()}
    except KeyError:
        return None
    return RecordedHooks(plugins, hooks)


def read_table(key: str) -> dict[str, Any] | None:
    """The recording stored under *key*, or None (none, untrusted, unreadable, malformed)."""
    folder = cache_folder()
    data = None if folder is None else read_private(folder, key, _PREFIX)
    header = _MAGIC + key.encode() + b"\n"
    if data is None or not data.startswith(header):
        return None
    try:
        table = marshal.loads(memoryview(data)[len(header):])
        hooks = table["hooks"]
        if not (isinstance(table["plugins"], list) and isinstance(table["marked"], dict) and
                isinstance(hooks, dict) and all(
                    isinstance(impls, list) and all(
                        type(impl) is tuple and len(impl) == 3 and type(impl[0]) is str and
                        type(impl[1]) is str and type(impl[2]) is tuple and
                        all(type(a) is str for a in impl[2]) for impl in impls)
                    for impls in hooks.values())):
            return None
    except Exception:    # damaged data can fail in many ways; it is only a cache
        return None
    return table


def write_table(key: str, table: dict[str, Any] | None) -> bool:
    """Store *table* under *key* (nothing when it is None); False when not stored."""
    folder = cache_folder()
    if table is None or folder is None:
        return False
    try:
        data = marshal.dumps(table)
    except ValueError:
        return False
    return write_private(folder, key, _MAGIC + key.encode() + b"\n" + data, _PREFIX)
