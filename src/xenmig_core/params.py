"""Stream parameters: values a caller knows better than the stream (``--param width=32``).

A plugin declares the parameters its formats understand through the ``xenmig_stream_params``
hook, as :class:`StreamParam` objects; the engine hands each given value to every context
whose format declares a ``state`` variable of that name (see :class:`~xenmig_core.engine.
Engine`). This module turns ``NAME=VALUE`` text (the CLI) or keyword arguments (the Python
API) into checked, typed values, and refuses names no plugin declares.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from xenmig_core.errors import UsageError
from xenmig_core.plain import Plain, replace

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

    import pluggy

#: the commands a parameter applies to unless its plugin says otherwise
ALL_COMMANDS = ("verify", "dump", "convert")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class StreamParam(Plain, frozen=True):
    """One stream parameter a plugin declares.

    *kind* is ``int``, ``str`` or ``bool``; *choices* (as text) limit the values when given;
    *commands* are those it applies to (``verify``, ``dump``, ``convert``); *alias* is an
    option the CLI keeps for it (``--width``), for compatibility with existing scripts.
    """

    name: str
    help: str
    kind: str = "str"
    choices: tuple[str, ...] = ()
    commands: tuple[str, ...] = ALL_COMMANDS
    alias: str | None = None
    plugin: str = ""

    def convert(self, value: Any, label: str | None = None) -> Any:
        """*value* (text, or already typed) as this parameter's type; UsageError if bad.
        *label* names where the value came from in the message (default ``--param NAME``)."""
        label = label or f"--param {self.name}"
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if self.choices and text not in self.choices:
            raise UsageError(f"{label} must be {' or '.join(self.choices)}, not {value!r}")
        if self.kind == "int":
            try:
                return int(text, 0)
            except ValueError:
                raise UsageError(f"{label} must be a number, not {value!r}") from None
        if self.kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise UsageError(f"{label} must be true or false, not {value!r}")
        return text

    def describe(self) -> str:
        """``width=32|64: Toolstack word size ...`` for help texts."""
        values = "|".join(self.choices) if self.choices else self.kind.upper()
        return f"{self.name}={values}: {self.help}"


def declared_params(pm: pluggy.PluginManager) -> dict[str, StreamParam]:
    """Every parameter the loaded plugins declare, by name (the first declaration wins)."""
    from xenmig_core.plugins import call_each
    found: dict[str, StreamParam] = {}
    for plugin, params in call_each(pm, "xenmig_stream_params"):
        for param in params:
            found.setdefault(param.name, replace(param, plugin=plugin))
    return found


def check_params(declared: Mapping[str, StreamParam], given: Mapping[str, Any],
                 command: str, aliased: Collection[str] = ()) -> dict[str, Any]:
    """*given* values, typed and checked against *declared* for *command*; UsageError for
    a name no plugin declares for it (the message lists those that are). Messages name
    the values of *aliased* parameters by their alias option (``--width``), as given."""
    out: dict[str, Any] = {}
    for name, value in given.items():
        param = declared.get(name)
        if param is None or command not in param.commands:
            known = [p.name for p in declared.values() if command in p.commands]
            raise UsageError(f"unknown stream parameter {name!r} for {command} (known: "
                             f"{', '.join(sorted(known)) or 'none'})")
        out[name] = param.convert(value, param.alias if name in aliased else None)
    return out


def stream_params(registry: Any, given: Mapping[str, Any], command: str,
                  aliased: Collection[str] = ()) -> dict[str, Any]:
    """*given* checked and typed against the parameters the plugins of *registry* declare
    (see :func:`check_params`); nothing is asked of the plugins when nothing is given."""
    return check_params(declared_params(registry.pm), given, command, aliased) \
        if given else {}


def parse_assignments(texts: Iterable[str]) -> dict[str, str]:
    """``["width=32", "guest=pv"]`` -> ``{"width": "32", "guest": "pv"}``."""
    out: dict[str, str] = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--param {text!r}: expected NAME=VALUE")
        out[name.strip()] = value.strip()
    return out
