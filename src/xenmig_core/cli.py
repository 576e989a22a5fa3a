"""The ``xenmig`` command line: a thin typer app over the library.

Each command parses its options, calls the library, and maps errors to exit codes:
0 success / valid, 1 invalid stream, 2 usage or I/O error, 3 internal error. Data goes to
stdout; messages go to stderr as one line each, never a traceback.

No ``from __future__ import annotations`` here, on purpose: typer reads every command's
parameter annotations when it builds the command line, and string annotations would be
compiled and evaluated then, on every run (about a fifth of what building the app costs).
"""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from xenmig_core.cli_core import (
    EXIT_INVALID,
    EXIT_OK,
    StreamParams,
    guarded,
    run_convert,
    run_verify,
)
from xenmig_core.cli_help import Command, Group, ParamsCommand
from xenmig_core.errors import UsageError, XenmigError
from xenmig_core.version import __version__

# Everything else is imported by the command that needs it: ``--help`` should not pay for
# dump, build, convert, renderers or json. What verify does is in cli_core (the console
# script runs plain verify invocations without typer: see xenmig_core.entry).

app = typer.Typer(
    name="xenmig", add_completion=True, no_args_is_help=True, cls=Group,
    pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Verify, dump and convert Xen save images and migration streams.")
specs_app = typer.Typer(no_args_is_help=True, cls=Group, help="List and check format specs.")
app.add_typer(specs_app, name="specs")

SpecOption = Annotated[list[Path] | None, typer.Option(
    "--spec", help="Extra spec file (YAML); repeatable. Also $XENMIG_SPEC_PATH.",
    show_default=False)]
FromOption = Annotated[str, typer.Option(
    "-f", "--from", help="Input format, or auto to detect it.", show_default=True)]
StreamArgument = Annotated[str, typer.Argument(
    help="Stream to read: a path, - for stdin, or fd:N.", show_default=True)]
TeeOption = Annotated[str | None, typer.Option(
    "--tee", metavar="FILE", help="Also write a copy of every byte read to FILE, as it comes, "
    "whether or not the stream verifies.", show_default=False)]
ParamOption = Annotated[list[str] | None, typer.Option(
    "--param", metavar="NAME=VALUE", help="A stream parameter a plugin declares (listed "
    "below); repeatable.", show_default=False)]
# Aliases kept for scripts and Xen's drop-ins: --width/--guest/--skip-qemu are the legacy
# plugin's stream parameters width/guest/skip_qemu (see --param).
WidthOption = Annotated[str | None, typer.Option(
    "--width", hidden=True, help="Same as --param width=N.", show_default=False)]
GuestOption = Annotated[str | None, typer.Option(
    "--guest", hidden=True, help="Same as --param guest=T.", show_default=False)]


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


@app.command(cls=ParamsCommand)
def verify(
    streams: Annotated[list[str] | None, typer.Argument(
        metavar="STREAM", help="Streams to read: paths, - for stdin, or fd:N "
        "(default: -). gzip, xz, bzip2 and zstd images are decompressed.",
        show_default=False)] = None,
    from_: FromOption = "auto",
    verbose: Annotated[bool, typer.Option("-v", "--verbose",
                                          help="One line per header and record.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print nothing; exit code only.")
                     ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="A machine-readable report on stdout "
                                          "(one JSON document per line for several streams).")
                       ] = False,
    jobs: Annotated[int, typer.Option("-j", "--jobs", help="Verify this many streams at once, "
                                      "in separate processes.")] = 1,
    forward: Annotated[str | None, typer.Option(
        "--forward", metavar="OUT", help="Pass the stream on to OUT (a path, - for stdout, "
        "or fd:N) while verifying it: each record only once its checks passed; on the "
        "first error OUT ends at the record boundary before it.", show_default=False)
    ] = None,
    tee: TeeOption = None,
    param: ParamOption = None,
    width: WidthOption = None,
    guest: GuestOption = None,
    spec: SpecOption = None,
) -> None:
    """Check that each STREAM is a valid save image or migration stream.

    Exit 0 valid, 1 invalid (the first problem is named on stderr with its offset and
    record), 2 usage or I/O error, 3 internal error. With several streams: one line (or
    JSON document) per stream on stdout, a summary on stderr, and the worst exit status.
    """
    raise typer.Exit(run_verify(streams, from_, verbose=verbose, quiet=quiet, as_json=as_json,
                                jobs=jobs, forward=forward, tee=tee, param=param, width=width,
                                guest=guest, spec=spec))


@app.command(cls=ParamsCommand, context_settings={"allow_interspersed_args": False,
                                                  "ignore_unknown_options": True})
def guard(
    command: Annotated[list[str], typer.Argument(
        metavar="-- COMMAND [ARG...]", help="The receiver to run, e.g. xl migrate-receive.",
        show_default=False)],
    from_: FromOption = "auto",
    tee: TeeOption = None,
    param: ParamOption = None,
    spec: SpecOption = None,
) -> None:
    """Run COMMAND with its stdin fed from xenmig's stdin, record by record as they verify.

    COMMAND's stdout and stderr are xenmig's. On an invalid stream COMMAND's stdin is closed
    at the record boundary before the first bad record and the exit is 1 once COMMAND has
    exited; otherwise the exit is COMMAND's (128+N for a signal N). SIGINT, SIGTERM and
    SIGHUP are passed on to COMMAND.
    """
    def body() -> int:
        from xenmig_core.guard import run_guard
        from xenmig_core.session import open_registry
        given = StreamParams(param)
        registry = open_registry(spec or [])
        params = given.check(registry, "verify")
        outcome = run_guard(registry, command, from_, tee_path=tee, params=params)
        if outcome.message:
            typer.echo(f"xenmig: guard: {outcome.message}", err=True)
        return outcome.code
    raise typer.Exit(guarded(body))


def _offset_range(text: str | None) -> tuple[int, int | None]:
    """``START[:END]`` (decimal or 0x hex) -> (start, end or None)."""
    if not text:
        return 0, None
    start, _, end = text.partition(":")
    try:
        return (int(start, 0) if start else 0), (int(end, 0) if end else None)
    except ValueError:
        raise UsageError(f"--offset {text!r}: expected START[:END], numbers") from None


@app.command(cls=ParamsCommand)
def dump(
    streams: Annotated[list[str] | None, typer.Argument(
        metavar="STREAM", help="Streams to read: paths, - for stdin, or fd:N (default: "
        "-); several only with -t jsonl. Compressed images are decompressed.",
        show_default=False)] = None,
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
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress, no summary.")
                     ] = False,
    param: ParamOption = None,
    width: WidthOption = None,
    guest: GuestOption = None,
    spec: SpecOption = None,
) -> None:
    """Show every header and record of STREAM with its decoded fields.

    Exit 0 when the stream is valid, 1 when it is not (the dump still shows everything the
    walk reached), 2 usage or I/O error, 3 internal error. Several streams (-t jsonl) are
    dumped one after the other, each from its own "dump" line to its "end" line; the exit
    status is the worst.
    """
    names = streams or ["-"]

    def body() -> int:
        given = StreamParams(param, width=width, guest=guest)
        from xenmig_core.api import open_source
        from xenmig_core.dump import PAGES_MODES, DumpOptions, dump_source
        from xenmig_core.progress import progress_for
        from xenmig_core.render import RENDERERS
        from xenmig_core.session import open_registry
        from xenmig_core.sink import text_output
        if to not in RENDERERS:
            raise UsageError(f"--to {to!r}: expected one of {', '.join(RENDERERS)}")
        if len(names) > 1 and to != "jsonl":
            raise UsageError("several streams are dumped with -t jsonl only")
        if pages is not None and pages not in PAGES_MODES:
            raise UsageError(f"--pages {pages!r}: expected one of {', '.join(PAGES_MODES)}")
        if limit is not None and limit < 1:
            raise UsageError("--limit must be at least 1")
        start, end = _offset_range(offset)
        mode = pages or ("none" if to == "text" else "ref")
        registry = open_registry(spec or [])
        options = DumpOptions(pages=mode, squash=(to == "text" and pages is None)
                              if squash is None else squash,
                              types=frozenset(types or ()), limit=limit, start=start, end=end,
                              params=given.check(registry, "dump"))
        codes = []
        with text_output(output) as out:
            for name in names:
                try:
                    with open_source(name) as source:
                        # progress only when the dump does not go to the same terminal
                        shown = progress_for(source, "dumping", enabled=not quiet and not (
                            output == "-" and sys.stdout.isatty()))
                        try:
                            result = dump_source(registry, source, RENDERERS[to](out), options,
                                                 from_, shown)
                        finally:
                            if shown is not None:
                                shown.finish()
                    codes.append(EXIT_OK if result.valid else EXIT_INVALID)
                except XenmigError as exc:
                    if len(names) == 1:
                        raise
                    typer.echo(f"xenmig: error: {exc}", err=True)
                    codes.append(exc.exit_code)
        if len(names) > 1 and not quiet:
            from xenmig_core.batch import summary_line
            typer.echo(f"xenmig: {summary_line(codes)}", err=True)
        return max(codes)
    raise typer.Exit(guarded(body))


@app.command(cls=Command)
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
        from xenmig_core.session import open_registry
        registry = open_registry(spec or [])
        build_stream(registry, description, output, verify=not no_verify)
        return EXIT_OK
    raise typer.Exit(guarded(body))


@app.command(cls=ParamsCommand)
def convert(
    input_: Annotated[str, typer.Argument(
        metavar="INPUT", help="Stream to convert: a path, - for stdin, or fd:N.")],
    output: Annotated[str, typer.Option(
        "-o", "--output", help="Where to write: a path (replaced atomically), - or fd:N.")],
    to: Annotated[str, typer.Option(
        "--to", help="Output format: one an installed plugin converts to (a bad value "
        "lists them).")],
    from_: FromOption = "auto",
    param: ParamOption = None,
    width: WidthOption = None,
    guest: GuestOption = None,
    skip_qemu: Annotated[bool, typer.Option(
        "--skip-qemu", hidden=True, help="Same as --param skip_qemu=true.")] = False,
    no_verify: Annotated[bool, typer.Option(
        "--no-verify", help="Do not verify the output while writing it.")] = False,
    no_sync: Annotated[bool, typer.Option(
        "--no-sync", help="Rename a path OUTPUT into place without waiting for it to reach "
        "the disk, as cp does (faster on a slow disk; a crash soon after may leave it "
        "empty or partial).")] = False,
    checkpoint: Annotated[int | None, typer.Option(
        "--checkpoint", min=1, help="Memory exports: the state at the end of checkpoint N "
        "(default: the end of the stream, or its last complete checkpoint).")] = None,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="No progress, no summary line.")
                     ] = False,
    spec: SpecOption = None,
) -> None:
    """Convert INPUT into another format (e.g. a legacy Xen <= 4.5 image into a v2 stream,
    or any stream into a memory image).

    A path OUTPUT appears only once the conversion succeeded and the result verified;
    exit 0 done, 1 the input cannot be converted, 2 usage or I/O error, 3 internal error.
    """
    raise typer.Exit(run_convert(
        input_, output, to, from_, param=param, width=width, guest=guest,
        skip_qemu=skip_qemu, no_verify=no_verify, no_sync=no_sync, checkpoint=checkpoint,
        quiet=quiet, spec=spec))


@specs_app.command("list", cls=Command)
def specs_list(spec: SpecOption = None) -> None:
    """List every format and its record types."""
    def body() -> int:
        from xenmig_core.session import open_registry
        registry = open_registry(spec or [])
        for name, fmt in sorted(registry.specs.items()):
            typer.echo(f"{name}: {fmt.title}  ({', '.join(fmt.paths)})")
            for rtype in sorted(fmt.records.values(), key=lambda r: r.id):
                typer.echo(f"  {rtype.id:#010x}  {rtype.name:<28} {rtype.title}")
        return EXIT_OK
    raise typer.Exit(guarded(body))


@specs_app.command("show", cls=Command)
def specs_show(
    format_name: Annotated[str, typer.Argument(metavar="FORMAT", help="A format's name.")],
    record: Annotated[str | None, typer.Argument(
        metavar="[RECORD]", help="A record type's name or id (0x...).", show_default=False)
        ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="As JSON.")] = False,
    spec: SpecOption = None,
) -> None:
    """Show a format's (or one record type's) effective definition: fields, rules with their
    ids, enums, and the spec file and line each part came from."""
    from xenmig_core.spec.show import describe_format, describe_record, text_lines

    def body() -> int:
        import json

        from xenmig_core.session import open_registry
        fmt = open_registry(spec or []).get(format_name).spec
        if record is None:
            desc = describe_format(fmt)
        else:
            rtype = fmt.record_by_name(record)
            if rtype is None and record.lower().startswith("0x"):
                rtype = fmt.records.get(int(record, 16)) if all(
                    c in "0123456789abcdefABCDEF" for c in record[2:]) and record[2:] else None
            if rtype is None:
                raise UsageError(f"format {format_name} has no record type {record!r} "
                                 f"(`xenmig specs list` shows them)")
            desc = describe_record(fmt, rtype)
        typer.echo(json.dumps(desc, indent=2) if as_json else "\n".join(text_lines(desc)))
        return EXIT_OK
    raise typer.Exit(guarded(body))


@specs_app.command("check", cls=Command)
def specs_check(files: Annotated[list[Path], typer.Argument(help="Spec files to validate.")]
                ) -> None:
    """Validate spec files (with the installed ones they extend); exit 2 on the first error."""
    def body() -> int:
        from xenmig_core.session import open_registry
        registry = open_registry(files)
        typer.echo(f"ok: {len(files)} spec files, {len(registry.specs)} formats")
        return EXIT_OK
    raise typer.Exit(guarded(body))


@app.command("plugins", cls=Command)
def plugins_list(as_json: Annotated[bool, typer.Option(
        "--json", help="A machine-readable list on stdout.")] = False) -> None:
    """List the loaded plugins, the hooks each implements and the stream parameters each
    declares."""
    from xenmig_core.params import declared_params
    from xenmig_core.plugins import get_plugin_manager, list_plugins

    def body() -> int:
        pm = get_plugin_manager()
        found: list[dict[str, Any]] = list_plugins(pm)
        declared = declared_params(pm)
        for plugin in found:
            plugin["params"] = [p.name for p in declared.values() if p.plugin == plugin["name"]]
        if as_json:
            import json
            typer.echo(json.dumps(found, indent=2))
            return EXIT_OK
        for plugin in found:
            typer.echo(f"{plugin['name']}: {plugin['module']} ({', '.join(plugin['hooks'])})")
            for name in plugin["params"]:
                typer.echo(f"  --param {declared[name].describe()}")
        return EXIT_OK
    raise typer.Exit(guarded(body))


def main() -> None:
    """Console-script entry point."""
    app()
