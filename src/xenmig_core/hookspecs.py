"""The plugin contract: every hook a xenmig plugin may implement.

A plugin is a module (or object) with functions named like these hooks and decorated with
``xenmig_core.hookimpl``, registered through the ``xenmig.plugins`` entry-point group. The
built-in formats (libxc, ...) are plugins of exactly this kind. The docstring of each hook
below is its contract; ``docs/plugins.md`` summarises them (a test checks it names each).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pathlib import Path

    from xenmig_core.detection import Detection
    from xenmig_core.engine.context import StreamContext
    from xenmig_core.params import StreamParam
    from xenmig_core.spec.model import FormatSpec

hookspec = pluggy.HookspecMarker("xenmig")


# -- Specs -----------------------------------------------------------------------------------
@hookspec
def xenmig_spec_files() -> list[Path | Any]:
    """Return the spec files (``Path`` or ``importlib.resources`` Traversable) this plugin
    contributes. A file either defines a format (``format: NAME``) or adds record types and
    enums to one (``extends: NAME``). Every file is validated when loaded; an invalid one
    stops the run with an error naming the file, line and key."""


# -- Handlers ------------------------------------------------------------------------------
@hookspec(firstresult=True)
def xenmig_record_handler(format_name: str, name: str) -> Callable[..., Any] | None:
    """Return the handler for record type (or header) *name* of format *format_name*, or
    None. Asked at most once per format and name, when the engine first meets that unit
    (the answer is kept), never per record: so import a handler's module in this hook, not
    at the plugin's import, and a run that never meets the unit never loads it.

    A record handler is called as ``handler(record, ctx)`` after the spec's decoding and
    checks ran, with ``record.fields`` holding the decoded non-payload fields; it is not
    called when the body could not be decoded or broke a length rule. It reports
    problems with ``ctx.error(message, field=...)`` / ``ctx.warning(...)``, may update
    ``ctx.state`` and ``ctx.stat(group, key)``, and may return an
    :class:`~xenmig_core.engine.context.Action` (``nested``/``resume``/``yield``/``end``)
    to direct the walk; None means the spec's ``control`` (or continue).
    A header handler is called as ``handler(header, ctx)``; its return value is ignored.
    An exception other than a xenmig error is reported as a failure of the plugin."""


@hookspec(firstresult=True)
def xenmig_record_viewer(format_name: str, name: str) -> Callable[..., Any] | None:
    """Return a viewer for record type (or header) *name* of format *format_name*, or None.
    Asked at most once per format and name, when first needed, like a handler.

    Only presenting consumers (``xenmig dump``) call viewers, never verify. A viewer is called
    as ``viewer(record, ctx)`` (``viewer(header, ctx)`` for a header) from the consumer's
    ``on_record_end``/``on_header``, with ``record.fields`` decoded (and whatever a handler or
    payload scanner added to them), and returns a mapping of
    derived, human-oriented values (or None): plain ints, strings, bools, lists and mappings
    of them. A key equal to a field's id replaces that field in text output (e.g. a pfn list
    shown as runs); ``build`` ignores every derived value. It must not change the record.

    Optionally, for speed, the viewer function may carry a ``json`` attribute: a function
    that a JSON dump calls instead, as ``json(record, ctx, derived)`` (*derived*: the
    record's fields its layout does not declare, in order), returning the JSON text that
    ``json.dumps`` writes of the view the dump would show, ``{**derived, **view}`` (*view*
    what the viewer returns, nothing for None), or None to leave that record to the
    viewer."""


@hookspec(firstresult=True)
def xenmig_payload_scanner(format_name: str, name: str) -> Callable[..., Any] | None:
    """Return a scanner factory for the payload of record type *name* of format
    *format_name* (the ``payload: true`` field's bytes), or None. Asked at most once per
    format and name, when first needed, like a handler.

    For each record of that type whose body decoded, the engine calls
    ``factory(record, ctx)`` when its payload is about to be read; None skips the record.
    Otherwise the engine reads the payload (for verify too, even when no consumer wants
    it), calls ``scanner.feed(chunk)`` with each chunk in order (views of a reusable
    buffer: copy what you keep) and ``scanner.finish()`` after the last one, before the
    consumer's ``on_record_end``; a payload cut short gets no ``finish``. A scanner keeps
    bounded memory whatever the payload's size, reports with ``ctx.error`` /
    ``ctx.warning`` (the record is current), may add derived values to ``record.fields``
    (``xenmig dump`` shows them; ``build`` ignores them) and may update ``ctx.state``
    (which a spec's ``report`` can pass to ``verify --json``). For opaque blobs with a
    structure of their own (a device model's saved state)."""


@hookspec(firstresult=True)
def xenmig_walker(format_name: str) -> Callable[..., Any] | None:
    """Return a walker for a format whose framing the spec language cannot describe (chunks
    whose length is implied by their type), or None. The walker is called as
    ``walker(engine, ctx)`` after the spec's headers were read; it reads one unit from
    ``engine.source`` and returns an Action (``end`` when its stream is over). A spec with
    ``framing: {implied: true}`` lays the units out as record types; the walker peeks, picks
    a type and a length, and hands the bytes to ``engine.walker_record(ctx, type_id,
    length)``, which decodes, checks and delivers them like any record. Fatal problems are
    StreamErrors carrying an offset; the walker's place lives in ``ctx.walker_state``.
    Asked at most once per format, when a stream of it is first walked."""


# -- Stream parameters ---------------------------------------------------------------------
@hookspec
def xenmig_stream_params() -> list[StreamParam] | None:
    """Return the stream parameters this plugin's formats understand, as
    :class:`~xenmig_core.params.StreamParam` objects (name, help, type, choices, the
    commands they apply to), or None. The CLI accepts them as ``--param NAME=VALUE`` and
    lists them in each command's help; the Python API as keyword arguments
    (``xenmig_core.verify(path, width=32)``). A given value is checked and typed here, then
    starts every context whose format declares a ``state`` variable of that name (so an
    explicit value wins over what a walker would detect); a name no plugin declares is a
    usage error."""


# -- Conversion ----------------------------------------------------------------------------
@hookspec(firstresult=True)
def xenmig_converter(source_format: str, target: str) -> Callable[..., Any] | None:
    """Return a converter factory for streams detected as *source_format* into format
    *target*, or None. The factory is called as ``factory(registry, options)`` (*options* a
    :class:`~xenmig_core.convert.ConvertOptions`) and returns an object with
    ``output_format`` (the format name to verify the output as, or None to skip
    verification) and ``run(source, out) -> WalkResult``, which walks *source* once with the
    engine, writes the converted stream to *out* (anything with ``write``) as it goes, and
    reports every problem as a diagnostic of the result (a conversion fails when the result
    has an error). ``xenmig convert`` owns temporary files, verification and progress."""


@hookspec
def xenmig_converter_targets() -> list[str] | None:
    """Return the names of conversion targets this plugin's ``xenmig_converter`` answers
    for that are not stream formats (e.g. memory images: ``raw``, ``elf``), or None.
    ``xenmig convert --to`` accepts them besides the known formats; a stream format
    needs no entry here."""


# -- Reports -------------------------------------------------------------------------------
@hookspec
def xenmig_report_section() -> tuple[str, Any] | None:
    """Return ``(key, consumer)`` to add a section to ``xenmig verify --json``, or None.
    Called once per verify walk: *consumer* (a fresh
    :class:`~xenmig_core.engine.Consumer`) sees the walk alongside verify's own; after it,
    ``consumer.report()`` returns plain data (or None for no section), shown under *key*
    (e.g. ``memory``: what a memory export of the stream would contain)."""


# -- Detection -----------------------------------------------------------------------------
@hookspec
def xenmig_detect_format(head: bytes, specs: Mapping[str, FormatSpec]
                         ) -> Detection | list[Detection] | None:
    """Look at the first bytes of a stream (up to 4096; fewer for a short stream) and return
    a :class:`~xenmig_core.detect.Detection` (format name, confidence 0-100, what it looks
    like) for each format this plugin recognises, or None. *specs* holds every loaded format.
    Every plugin is asked; the most confident answer wins, and the others explain a wrong
    explicit ``--from``. Formats whose spec has a ``detect`` section are recognised by
    xenmig's own spec detector; implement this hook for anything subtler."""


# -- End of stream -------------------------------------------------------------------------
@hookspec
def xenmig_stream_end(ctx: StreamContext) -> list[str] | None:
    """Called when a context of any format ends normally (its END record). Return error
    messages for whole-stream rules the spec's ``end_checks`` cannot express, or None."""


@hookspec(firstresult=True)
def xenmig_stream_eof(ctx: StreamContext, partial: bool) -> tuple[str, str] | None:
    """The source ended at a record boundary while *ctx* (the innermost open context) had
    not ended. Return ``("ok", note)`` when that is a valid ending (a checkpointed stream
    after a complete checkpoint), ``("error", message)`` to explain why it is not, or None
    for the default error ("stream ended before END").

    With *partial* True the source ended inside a header or record instead (the stream is
    invalid in any case): ``("error", context)`` adds *context* (e.g. which checkpoint was
    cut) to the truncation error; anything else is ignored. An implementation may leave
    out the *partial* argument and is then asked only about record boundaries."""


@hookspec(firstresult=True)
def xenmig_trailing_data(ctx: StreamContext, head: bytes) -> str | None:
    """Bytes follow the end of the outermost stream *ctx*; *head* holds up to 64 of them.
    Return a description when they are a known tail (a verify warning), or None (an error)."""
