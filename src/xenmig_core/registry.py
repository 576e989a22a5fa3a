"""The registry: every format of this run, compiled from specs and bound to plugin handlers.

Built once per run from a plugin manager: spec files from ``xenmig_spec_files`` (plus any
given by the user), compiled (or loaded from the compiled-spec cache,
:mod:`xenmig_core.spec.cache`); then, for each format and each record type and header name,
the ``xenmig_record_handler`` hook is asked once and the answer cached. Handlers are wrapped
so that an exception inside a plugin becomes a PluginError naming the plugin.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy

from xenmig_core.detection import Detection
from xenmig_core.errors import PluginError, UsageError, XenmigError
from xenmig_core.plugins import call_each, first_result
from xenmig_core.spec.cache import load_formats
from xenmig_core.spec.expr import FUNCTIONS
from xenmig_core.spec.model import FormatSpec


class Format:
    """A compiled format: its spec, its handlers, viewers and payload scanners by name, and
    an optional custom walker."""

    def __init__(self, spec: FormatSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.handlers: dict[str, Callable[..., Any]] = {}
        self.viewers: dict[str, Callable[..., Any]] = {}
        self.scanners: dict[str, Callable[..., Any]] = {}
        self.walker: Callable[..., Any] | None = None
        self.helpers: dict[str, Any] = dict(FUNCTIONS)
        self.helpers["enum_name"] = self._enum_name
        self.helpers["enum_label"] = self._enum_label
        self.helpers["flag_names"] = self._flag_names
        self._record_headers: dict[str, struct.Struct] = {}
        if spec.framing is not None and not spec.framing.implied:
            codes = spec.framing.header_codes
            self._record_headers = {o: struct.Struct(o + codes) for o in "<>"}

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


def _guard(plugin: str, fmt: str, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def call(*args: Any) -> Any:
        try:
            return func(*args)
        except (XenmigError, OSError):
            # OSError: output I/O (a closed pipe, a full disk) reached through a walker
            # calling back into the engine and its consumer; not the plugin's fault
            raise
        except Exception as exc:
            raise PluginError(f"plugin {plugin!r}: handler for {fmt} {name} raised "
                              f"{type(exc).__name__}: {exc}") from exc
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

    def __init__(self, pm: pluggy.PluginManager, extra_specs: Iterable[Path] = ()) -> None:
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
        self.formats: dict[str, Format] = {}
        for name, spec in self.specs.items():
            fmt = Format(spec)
            unit_names = [h.name for h in spec.headers] + [r.name for r in spec.records.values()]
            # A variant (``variant_of``) uses its base format's handlers unless it has its own.
            lineage = [name] + ([spec.base] if spec.base else [])
            for unit in unit_names:
                for hook, table in (("xenmig_record_handler", fmt.handlers),
                                    ("xenmig_record_viewer", fmt.viewers),
                                    ("xenmig_payload_scanner", fmt.scanners)):
                    for owner in lineage:
                        plugin, found = first_result(pm, hook, format_name=owner, name=unit)
                        if found is not None:
                            table[unit] = _bind(hook, plugin, name, unit, found)
                            break
            plugin, walker = first_result(pm, "xenmig_walker", format_name=name)
            if walker is not None:
                fmt.walker = _guard(plugin, name, "walker", walker)
            self.formats[name] = fmt

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
