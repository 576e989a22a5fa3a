"""The registry: every format of this run, compiled from specs and bound to plugin handlers.

Built once per run from a plugin manager: spec files from ``xenmig_spec_files`` (plus any
given by the user), compiled (or loaded from the compiled-spec cache,
:mod:`xenmig_core.spec.cache`). For each format, the ``xenmig_record_handler``,
``xenmig_record_viewer``, ``xenmig_payload_scanner`` and ``xenmig_walker`` hooks are asked
at most once per record type or header name, when the engine first needs the answer, and
the answer is kept: a run asks only about the units it meets, so a plugin's handler modules
of formats a run does not meet need never be imported. Handlers are wrapped so that an
exception inside a plugin becomes a PluginError naming the plugin.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from types import SimpleNamespace

from xenmig_core.detection import Detection
from xenmig_core.errors import PluginError, UsageError, XenmigError
from xenmig_core.plugins import call_each, first_result
from xenmig_core.spec.cache import load_formats
from xenmig_core.spec.expr import FUNCTIONS
from xenmig_core.spec.model import FormatSpec

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    #: pluggy's manager, or its hook tables replayed (:mod:`xenmig_core.recorded`)
    Plugins = Any


_UNASKED = object()


class Bindings(Mapping[str, Callable[..., "Any"]]):
    """What one hook answers for each unit (header or record type) of a format, by name,
    asked of the plugins on first look-up and kept (the format's own plugins first, then,
    for a variant, its base format's). A mapping of the units that have an answer."""

    def __init__(self, pm: Plugins, hook: str, fmt: FormatSpec) -> None:
        self._pm = pm
        self._hook = hook
        self._spec = fmt
        self._format = fmt.name
        self._lineage = [fmt.name] + ([fmt.base] if fmt.base else [])
        self._found: dict[str, Callable[..., Any] | None] = {}

    @functools.cached_property
    def _units(self) -> dict[str, None]:
        """The format's header and record type names (read when first needed: a format
        restored from the cache restores its records then)."""
        return dict.fromkeys([h.name for h in self._spec.headers] +
                             [r.name for r in self._spec.records.values()])

    def _ask(self, unit: str) -> Callable[..., Any] | None:
        try:
            return self._found[unit]
        except KeyError:
            pass
        bound = None
        if unit in self._units:
            for owner in self._lineage:
                plugin, found = first_result(self._pm, self._hook, format_name=owner,
                                             name=unit)
                if found is not None:
                    bound = _bind(self._hook, plugin, self._format, unit, found)
                    break
        self._found[unit] = bound
        return bound

    def get(self, unit: str, default: Any = None) -> Any:  # type: ignore[override]
        found = self._ask(unit)
        return default if found is None else found

    def __getitem__(self, unit: str) -> Callable[..., Any]:
        found = self._ask(unit)
        if found is None:
            raise KeyError(unit)
        return found

    def __contains__(self, unit: object) -> bool:
        return isinstance(unit, str) and self._ask(unit) is not None

    def __iter__(self) -> Iterator[str]:
        return iter([unit for unit in self._units if self._ask(unit)])

    def __len__(self) -> int:
        return sum(1 for _unit in self)


class Format:
    """A compiled format: its spec, its handlers, viewers and payload scanners by name
    (:class:`Bindings`), and an optional custom walker (asked of the plugins on first use)."""

    def __init__(self, spec: FormatSpec, pm: Plugins) -> None:
        self.spec = spec
        self.name = spec.name
        self._pm = pm
        self.handlers = Bindings(pm, "xenmig_record_handler", spec)
        self.viewers = Bindings(pm, "xenmig_record_viewer", spec)
        self.scanners = Bindings(pm, "xenmig_payload_scanner", spec)
        self._walker: Any = _UNASKED
        self.helpers: dict[str, Any] = dict(FUNCTIONS)
        self.helpers["enum_name"] = self._enum_name
        self.helpers["enum_label"] = self._enum_label
        self.helpers["flag_names"] = self._flag_names
        self._record_headers: dict[str, struct.Struct] = {}
        if spec.framing is not None and not spec.framing.implied:
            codes = spec.framing.header_codes
            self._record_headers = {o: struct.Struct(o + codes) for o in "<>"}

    @property
    def walker(self) -> Callable[..., Any] | None:
        """The plugin's walker of this format (``xenmig_walker``), or None: the engine's."""
        if self._walker is _UNASKED:
            plugin, walker = first_result(self._pm, "xenmig_walker", format_name=self.name)
            self._walker = None if walker is None else _guard(plugin, self.name, "walker",
                                                               walker)
        return self._walker  # type: ignore[no-any-return]

    def record_header(self, order: str) -> struct.Struct:
        """The precompiled struct of this format's record header in byte order *order*."""
        return self._record_headers[order]

    def _enum_name(self, enum: str, value: int) -> str:
        return self.spec.enums[enum].name_of(value)

    def _enum_label(self, enum: str, value: int) -> str:
        return self.spec.enums[enum].label_of(value)

    def _flag_names(self, enum: str, value: int) -> str:
        return ", ".join(self.spec.enums[enum].flag_names(value)) or "none"


def _bind(hook: str, plugin: str, fmt: str, unit: str, found: Callable[..., Any]
          ) -> Callable[..., Any]:
    """What *hook* answered for *unit* of format *fmt*, wrapped so that its failures name
    the plugin (a scanner factory's scanners are wrapped too)."""
    if hook == "xenmig_payload_scanner":
        return _guard_scanner(plugin, fmt, unit, found)
    return _guard(plugin, fmt, f"{unit} viewer" if hook == "xenmig_record_viewer" else unit,
                  found)


#: The exceptions a guarded plugin function lets through as they are: the project's own,
#: and OSError (output I/O, a closed pipe or a full disk, reached through a walker calling
#: back into the engine and its consumer; not the plugin's fault)
PASSED_THROUGH = (XenmigError, OSError)


def _guard(plugin: str, fmt: str, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """*func*, wrapped so that an exception other than :data:`PASSED_THROUGH` becomes a
    PluginError naming the plugin. The wrapper carries *func* (``__wrapped__``) and, as
    ``guard``, the exceptions it passes through and the error it raises for any other,
    for the engine's generated code to call *func* inside the same guard without a second
    call per record."""
    def plugin_error(exc: Exception) -> PluginError:
        return PluginError(f"plugin {plugin!r}: handler for {fmt} {name} raised "
                           f"{type(exc).__name__}: {exc}")

    @functools.wraps(func)
    def call(*args: Any) -> Any:
        try:
            return func(*args)
        except PASSED_THROUGH:
            raise
        except Exception as exc:
            raise plugin_error(exc) from exc
    call.guard = (PASSED_THROUGH, plugin_error)  # type: ignore[attr-defined]
    return call


def _guard_scanner(plugin: str, fmt: str, name: str,
                   factory: Callable[..., Any]) -> Callable[..., Any]:
    """*factory* and the ``feed``/``finish`` of the scanners it makes, each guarded like a
    handler (an exception becomes a PluginError naming the plugin)."""
    make = _guard(plugin, fmt, f"{name} payload scanner", factory)

    def guarded(*args: Any) -> Any:
        scanner = make(*args)
        if scanner is None:
            return None
        return SimpleNamespace(
            feed=_guard(plugin, fmt, f"{name} payload scanner", scanner.feed),
            finish=_guard(plugin, fmt, f"{name} payload scanner", scanner.finish))
    return guarded


class Registry:
    """All formats of a run. ``get(name)`` returns a Format or raises UsageError."""

    def __init__(self, pm: Plugins, extra_specs: Iterable[Path] = ()) -> None:
        self.pm = pm
        sources: list[Any] = []
        for _plugin, files in call_each(pm, "xenmig_spec_files"):
            sources.extend(files)
        sources.extend(extra_specs)
        origins = getattr(pm, "origins", None)
        if origins is None:    # a plain pluggy manager: its plugins' names and modules
            origins = {name: getattr(plugin, "__name__", type(plugin).__qualname__)
                       for name, plugin in pm.list_name_plugin()}
        self.specs = load_formats(sources, origins)
        self.formats = {name: Format(spec, pm) for name, spec in self.specs.items()}

    def get(self, name: str) -> Format:
        try:
            return self.formats[name]
        except KeyError:
            known = ", ".join(sorted(self.formats)) or "none"
            raise UsageError(f"unknown format {name!r} (known: {known})") from None

    def detections(self, head: bytes) -> list[Detection]:
        found: list[Detection] = []
        for _plugin, result in call_each(self.pm, "xenmig_detect_format", head=head,
                                        specs=self.specs):
            found.extend(result if isinstance(result, list) else [result])
        return [d for d in found if d.format in self.formats]

    def converter(self, source_format: str, target: str) -> Callable[..., Any] | None:
        """The ``xenmig_converter`` factory from *source_format* to *target*, or None."""
        return first_result(self.pm, "xenmig_converter", source_format=source_format,
                            target=target)[1]

    def call_stream_end(self, ctx: Any) -> list[str]:
        messages: list[str] = []
        for _plugin, result in call_each(self.pm, "xenmig_stream_end", ctx=ctx):
            messages.extend(result)
        return messages

    def call_stream_eof(self, ctx: Any, partial: bool = False) -> tuple[str, str] | None:
        """The first verdict on an early end of *ctx* (see the hook); implementations that
        do not take *partial* are asked only about clean ends."""
        for _plugin, verdict in call_each(self.pm, "xenmig_stream_eof", ctx=ctx,
                                          partial=partial,
                                          only_with="partial" if partial else None):
            return verdict
        return None

    def describe_trailing(self, ctx: Any, head: bytes) -> str | None:
        return first_result(self.pm, "xenmig_trailing_data", ctx=ctx, head=head)[1]
