"""The marker a plugin decorates its hook implementations with.

``from xenmig_core.plugins import hookimpl`` is the documented spelling (it re-exports this
one); the marker lives here so that modules implementing hooks (the spec detector) need not
import the plugin manager's module, which imports them.

pluggy registers and orders the hooks (:mod:`xenmig_core.plugins`); what it reads of a
marked function is one attribute, ``xenmig_impl``, the dict of the marker's options. The
marker below sets exactly the dict a ``pluggy.HookimplMarker("xenmig")`` sets (a test
compares them for every option), without importing pluggy: loading a plugin then costs no
pluggy (nor ``inspect``, ``ast``, ``dis`` with it), which a run whose hook tables come from
the cache (:mod:`xenmig_core.recorded`) never needs.
"""

from __future__ import annotations

from collections.abc import Callable

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

#: pluggy project name of xenmig's hooks
PROJECT = "xenmig"
#: the attribute a marked hook implementation carries (pluggy's ``<project>_impl``)
IMPL_ATTRIBUTE = f"{PROJECT}_impl"


def hookimpl(function: Callable[..., Any] | None = None, hookwrapper: bool = False,
             optionalhook: bool = False, tryfirst: bool = False, trylast: bool = False,
             specname: str | None = None, wrapper: bool = False) -> Any:
    """``@hookimpl`` or ``@hookimpl(tryfirst=True, ...)``: marks a hook implementation,
    with the options and meaning of pluggy's ``HookimplMarker.__call__``."""
    opts = {"wrapper": wrapper, "hookwrapper": hookwrapper, "optionalhook": optionalhook,
            "tryfirst": tryfirst, "trylast": trylast, "specname": specname}

    def mark(func: Callable[..., Any]) -> Callable[..., Any]:
        setattr(func, IMPL_ATTRIBUTE, dict(opts))
        return func
    return mark if function is None else mark(function)
