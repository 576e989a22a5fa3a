"""The ``xenmig`` command line: a thin typer app over the library.

Each command parses its options, calls the library, and maps errors to exit codes:
0 success / valid, 1 invalid stream, 2 usage or I/O error, 3 internal error. Data goes to
stdout; messages go to stderr as one line each, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from xenmig_core import __version__
from xenmig_core.errors import UsageError, XenmigError
from xenmig_core.render.verbose import VerboseConsumer
from xenmig_core.session import open_registry
from xenmig_core.sink import text_output
from xenmig_core.source import ByteSource
from xenmig_core.verify import VerifyReport, verify_source

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

app = typer.Typer(
    name="xenmig", add_completion=False, no_args_is_help=True,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Verify, dump and convert Xen save images and migration streams.")
specs_app = typer.Typer(no_args_is_help=True, help="List and check format specs.")
app.add_typer(specs_app, name="specs")

SpecOption = Annotated[list[Path] | None, typer.Option(
    "--spec", help="Extra spec file (YAML); repeatable. Also $XENMIG_SPEC_PATH.",
    show_default=False)]
FromOption = Annotated[str, typer.Option(
    "-f", "--from", help="Input format, or auto to detect it.", show_default=True)]
StreamArgument = Annotated[str, typer.Argument(
    help="Stream to read: a path, - for stdin, or fd:N.", show_default=True)]
WidthOption = Annotated[int | None, typer.Option(
    "--width", help="Toolstack word size of a legacy image (32 or 64); default: detect.",
    show_default=False)]
GuestOption = Annotated[str | None, typer.Option(
    "--guest", help="Guest type of a legacy image (pv or hvm); default: detect.",
    show_default=False)]


def stream_params(width: int | None, guest: str | None) -> dict[str, Any]:
    """The engine's stream parameters from --width/--guest (given values always win over
    what a format would detect); a bad value is a usage error (exit 2)."""
    params: dict[str, Any] = {}
    if width is not None:
        if width not in (32, 64):
            fail(f"--width must be 32 or 64, not {width}", EXIT_USAGE)
        params["width"] = width
    if guest is not None:
        if guest not in ("pv", "hvm"):
            fail(f"--guest must be pv or hvm, not {guest!r}", EXIT_USAGE)
        params["guest"] = guest
    return params


def fail(message: str, code: int) -> NoReturn:
    """Print *message* as one line on stderr and exit with *code*."""
    typer.echo(f"xenmig: {message}", err=True)
    raise typer.Exit(code)


def guarded(body: Callable[[], int]) -> int:
    """Run a command body, turning every failure into a one-line message and exit code."""
    try:
        return body()
    except typer.Exit:
        raise
    except XenmigError as exc:
        fail(f"error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_USAGE)
    except BrokenPipeError:
        sys.stderr.close()
        raise typer.Exit(EXIT_USAGE) from None
    except Exception as exc:  # a bug: say so plainly, still one line
        fail(f"internal error: {type(exc).__name__}: {exc} (please report this)", EXIT_INTERNAL)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"xenmig {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Verify, dump and convert Xen save images and migration streams."""


@app.command()
def verify(
    stream: StreamArgument = "-",
    from_: FromOption = "auto",
    verbose: Annotated[bool, typer.Option("-v", "--verbose",
                                          help="One line per header and record.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing; exit code only.")
                     ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="A machine-readable report on stdout.")
                       ] = False,
    width: WidthOption = None,
    guest: GuestOption = None,
    spec: SpecOption = None,
) -> None:
    """Check that STREAM is a valid save image or migration stream.

    Exit 0 valid, 1 invalid (the first problem is named on stderr with its offset and
    record), 2 usage or I/O error, 3 internal error.
    """
    params = stream_params(width, guest)

    def body() -> int:
        registry = open_registry(spec or [])
        if quiet:
            with ByteSource.open(stream) as source:
                report = verify_source(registry, source, from_, None, params,
                                       account=as_json)
            return _verify_output(report, verbose=verbose, quiet=quiet, as_json=as_json)
        # stdout must be open; a failed write to it is a one-line error (exit 2)
        with text_output("-") as out:
            consumer = VerboseConsumer(out) if verbose and not as_json else None
            with ByteSource.open(stream) as source:
                report = verify_source(registry, source, from_, consumer, params,
                                       account=as_json)
            if consumer is not None:
                consumer.close()
            return _verify_output(report, verbose=verbose, quiet=quiet, as_json=as_json)
    raise typer.Exit(guarded(body))


def _verify_output(report: VerifyReport, *, verbose: bool, quiet: bool, as_json: bool) -> int:
    code = EXIT_OK if report.valid else EXIT_INVALID
    if quiet:
        return code
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return code
    errors = [d for d in report.diagnostics if d.is_error]
    if not verbose:
        for warning in (d for d in report.diagnostics if not d.is_error):
            typer.echo(f"xenmig: warning: {warning}", err=True)
    if report.valid:
        typer.echo(f"{report.source}: valid: {report.summary()}")
    else:
        count = report.result.error_count
        more = f" ({count - 1} more; -v shows all)" if count > 1 else ""
        typer.echo(f"xenmig: invalid: {errors[0]}{more}", err=True)
        if verbose:
            typer.echo(f"{report.source}: INVALID: {count} error" + ("" if count == 1 else "s"))
    return code


def _offset_range(text: str | None) -> tuple[int, int | None]:
    """``START[:END]`` (decimal or 0x hex) -> (start, end or None)."""
    if not text:
        return 0, None
    start, _, end = text.partition(":")
    try:
        return (int(start, 0) if start else 0), (int(end, 0) if end else None)
    except ValueError:
        raise UsageError(f"--offset {text!r}: expected START[:END], numbers") from None


@app.command()
def dump(
    stream: StreamArgument = "-",
    from_: FromOption = "auto",
    to: Annotated[str, typer.Option("-t", "--to", help="text, json, jsonl or yaml.")
                  ] = "text",
    output: Annotated[str, typer.Option("-o", "--output", help="Output path, - for stdout.")
                      ] = "-",
    pages: Annotated[str | None, typer.Option(
        "--pages", help="Payload contents: none, hex, sha256 or ref (default: none for text, "
        "ref for json/jsonl/yaml when STREAM is a file).", show_default=False)] = None,
    squash: Annotated[bool | None, typer.Option(
        "--squash/--no-squash", help="Fold runs of bulk records (default: on for text).",
        show_default=False)] = None,
    types: Annotated[list[str] | None, typer.Option(
        "--type", help="Only these record types (or header names); repeatable.",
        show_default=False)] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Stop after N items.",
                                              show_default=False)] = None,
    offset: Annotated[str | None, typer.Option(
        "--offset", help="Only items starting in START[:END] (bytes).", show_default=False)
        ] = None,
    width: WidthOption = None,
    guest: GuestOption = None,
    spec: SpecOption = None,
) -> None:
    """Show every header and record of STREAM with its decoded fields.

    Exit 0 when the stream is valid, 1 when it is not (the dump still shows everything the
    walk reached), 2 usage or I/O error, 3 internal error.
    """
    params = stream_params(width, guest)

    def body() -> int:
        from xenmig_core.dump import PAGES_MODES, DumpOptions, dump_source
        from xenmig_core.render import RENDERERS
        if to not in RENDERERS:
            raise UsageError(f"--to {to!r}: expected one of {', '.join(RENDERERS)}")
        if pages is not None and pages not in PAGES_MODES:
            raise UsageError(f"--pages {pages!r}: expected one of {', '.join(PAGES_MODES)}")
        if limit is not None and limit < 1:
            raise UsageError("--limit must be at least 1")
        start, end = _offset_range(offset)
        mode = pages or ("none" if to == "text" else "ref")
        options = DumpOptions(pages=mode, squash=(to == "text" and pages is None)
                              if squash is None else squash,
                              types=frozenset(types or ()), limit=limit, start=start, end=end,
                              params=params)
        registry = open_registry(spec or [])
        with ByteSource.open(stream) as source, text_output(output) as out:
            result = dump_source(registry, source, RENDERERS[to](out), options, from_)
        return EXIT_OK if result.valid else EXIT_INVALID
    raise typer.Exit(guarded(body))


@app.command()
def build(
    description: Annotated[str, typer.Argument(
        help="YAML or JSON description (as dump -t yaml|json|jsonl writes), - for stdin.")],
    output: Annotated[str, typer.Option("-o", "--output", help="Stream to write.")],
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Write the stream even when it does not verify.")] = False,
    spec: SpecOption = None,
) -> None:
    """Assemble a binary stream from a description, then verify it.

    Exit 0 on success, 1 when the built stream does not verify (nothing is written unless
    --no-verify), 2 for a bad description (the message names its path) or I/O error.
    """
    def body() -> int:
        from xenmig_core.build import build_stream
        registry = open_registry(spec or [])
        build_stream(registry, description, output, verify=not no_verify)
        return EXIT_OK
    raise typer.Exit(guarded(body))


@app.command()
def convert(
    input_: Annotated[str, typer.Argument(
        metavar="INPUT", help="Stream to convert: a path, - for stdin, or fd:N.")],
    output: Annotated[str, typer.Option(
        "-o", "--output", help="Where to write: a path (replaced atomically), - or fd:N.")],
    to: Annotated[str, typer.Option(
        "--to", help="Output format: one an installed plugin converts to (a bad value "
        "lists them).")],
    from_: FromOption = "auto",
    width: WidthOption = None,
    guest: GuestOption = None,
    skip_qemu: Annotated[bool, typer.Option(
        "--skip-qemu", help="libxc output: stop after the HVM context (no qemu record).")
                         ] = False,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Do not verify the output while writing it.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No summary line.")] = False,
    spec: SpecOption = None,
) -> None:
    """Convert INPUT (e.g. a legacy Xen <= 4.5 image) into a v2 stream.

    A path OUTPUT appears only once the conversion succeeded and the result verified;
    exit 0 done, 1 the input cannot be converted, 2 usage or I/O error, 3 internal error.
    """
    from xenmig_core.convert import ConvertOptions, converter_targets, summary
    from xenmig_core.convert import convert as run_convert

    params = stream_params(width, guest)

    def body() -> int:
        registry = open_registry(spec or [])
        targets = converter_targets(registry)
        if to not in targets:
            raise UsageError(f"--to {to!r}: no converter to it; expected one of "
                             f"{', '.join(targets) or '(none installed)'}")
        options = ConvertOptions(target=to, params=params, skip_qemu=skip_qemu)
        result = run_convert(registry, input_, output, options, source_format=from_,
                             verify=not no_verify)
        if not quiet:
            typer.echo(f"xenmig: {summary(result)}", err=True)
        return EXIT_OK
    raise typer.Exit(guarded(body))


@specs_app.command("list")
def specs_list(spec: SpecOption = None) -> None:
    """List every format and its record types."""
    def body() -> int:
        registry = open_registry(spec or [])
        for name, fmt in sorted(registry.specs.items()):
            typer.echo(f"{name}: {fmt.title}  ({', '.join(fmt.paths)})")
            for rtype in sorted(fmt.records.values(), key=lambda r: r.id):
                typer.echo(f"  {rtype.id:#010x}  {rtype.name:<28} {rtype.title}")
        return EXIT_OK
    raise typer.Exit(guarded(body))


@specs_app.command("check")
def specs_check(files: Annotated[list[Path], typer.Argument(help="Spec files to validate.")]
                ) -> None:
    """Validate spec files (with the installed ones they extend); exit 2 on the first error."""
    def body() -> int:
        registry = open_registry(files)
        typer.echo(f"ok: {len(files)} spec files, {len(registry.specs)} formats")
        return EXIT_OK
    raise typer.Exit(guarded(body))


@app.command("plugins")
def plugins_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the loaded plugins and the hooks each implements."""
    from xenmig_core.plugins import get_plugin_manager, list_plugins

    def body() -> int:
        found: list[dict[str, Any]] = list_plugins(get_plugin_manager())
        if as_json:
            typer.echo(json.dumps(found, indent=2))
        else:
            for plugin in found:
                typer.echo(f"{plugin['name']}: {plugin['module']} ({', '.join(plugin['hooks'])})")
        return EXIT_OK
    raise typer.Exit(guarded(body))


def main() -> None:
    """Console-script entry point."""
    app()
