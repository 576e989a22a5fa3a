"""What the command line does once a command's options are parsed, without typer.

Messages, exit codes and error handling shared by every command (:func:`echo`,
:func:`fail`, :func:`guarded`), and the whole of ``xenmig verify`` (:func:`run_verify`).
The typer app (:mod:`xenmig_core.cli`) parses options and calls these; so does the
console script's fast path (:mod:`xenmig_core.entry`) for the plain ``verify`` invocations
and the plain ``convert`` ones (:func:`run_convert`), which then never import typer. Both
therefore print the same bytes and exit alike.

Exit codes: 0 success / valid, 1 invalid stream, 2 usage or I/O error, 3 internal error.
Data goes to stdout; messages go to stderr as one line each, never a traceback.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence

from xenmig_core.errors import UsageError, XenmigError

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from xenmig_core.verifying import Report

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3
#: what click strips from a message written to something that is not a terminal (a pattern
#: compiled by ``re`` when first used: not at every start)
_ANSI = r"\033\[[;?0-9]*[a-zA-Z]"


def echo(message: str, *, err: bool = False) -> None:
    """Write *message* and a newline to stdout (stderr with *err*) and flush, as
    ``typer.echo`` does (ANSI styles dropped when the stream is not a terminal)."""
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        return
    text = message + "\n"
    if "\033" in text and not stream.isatty():
        text = re.sub(_ANSI, "", text)
    stream.write(text)
    stream.flush()


class CommandExit(Exception):
    """Ends a command with an exit code (what ``typer.Exit`` is to the typer app)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def fail(message: str, code: int) -> NoReturn:
    """Print *message* as one line on stderr and end the command with *code*."""
    echo(f"xenmig: {message}", err=True)
    raise CommandExit(code)


def guarded(body: Callable[[], int]) -> int:
    """Run a command body; its exit code, every failure turned into a one-line message and
    its exit code."""
    try:
        try:
            return body()
        except XenmigError as exc:
            fail(f"error: {exc}", exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_USAGE)
        except BrokenPipeError:
            sys.stderr.close()
            return EXIT_USAGE
        except CommandExit:
            raise
        except Exception as exc:  # a bug: say so plainly, still one line
            fail(f"internal error: {type(exc).__name__}: {exc} (please report this)",
                 EXIT_INTERNAL)
    except CommandExit as done:
        return done.code


class StreamParams:
    """The stream parameters given on the command line: ``--param NAME=VALUE`` and the
    alias options (which win); checked against what the plugins declare once a registry is
    open (a bad one is a usage error, exit 2)."""

    def __init__(self, param: Sequence[str] | None, **aliases: Any) -> None:
        from xenmig_core.params import parse_assignments
        self.given: dict[str, Any] = parse_assignments(param or [])
        used = {k: v for k, v in aliases.items() if v is not None and v is not False}
        self.given.update(used)
        self.aliased = set(used)     # messages name them by the alias the plugin declares

    def check(self, registry: Any, command: str) -> dict[str, Any]:
        from xenmig_core.params import stream_params
        return stream_params(registry, self.given, command, self.aliased)


def run_verify(streams: Sequence[str] | None = None, from_: str = "auto", *,
               verbose: bool = False, quiet: bool = False, as_json: bool = False,
               jobs: int = 1, forward: str | None = None, tee: str | None = None,
               param: Sequence[str] | None = None, width: str | None = None,
               guest: str | None = None, spec: Sequence[Any] | None = None,
               started: Callable[[], None] | None = None) -> int:
    """``xenmig verify``: check each of *streams* (default ``-``); the exit code. The
    arguments are the command's options, named as in ``xenmig verify --help``; *started*
    is called once the plugins and formats are loaded, before the first stream is read."""
    names = list(streams or ["-"])

    def body() -> int:
        given = StreamParams(param, width=width, guest=guest)
        from xenmig_core.session import open_registry
        from xenmig_core.verifying import open_source, verify_opened
        if jobs < 1:
            raise UsageError("--jobs must be at least 1")
        registry = open_registry(spec or [])
        params = given.check(registry, "verify")
        if started is not None:
            started()
        if forward is not None or tee is not None:
            if forward is None or len(names) > 1 or as_json or verbose:
                raise UsageError("--forward (and --tee) take one stream, without -v or --json")
            return _forward(registry, names[0], from_, forward, tee, params, quiet=quiet)
        if len(names) > 1:
            if verbose:
                raise UsageError("-v shows one stream at a time")
            return _verify_many(registry, names, from_, params, quiet=quiet, as_json=as_json,
                                jobs=jobs, specs=[str(p) for p in spec or []])
        if quiet:
            with open_source(names[0]) as source:
                report = verify_opened(registry, source, from_, None, params,
                                       account=as_json)
            return _verify_output(report, verbose=verbose, quiet=quiet, as_json=as_json)
        # stdout must be open; a failed write to it is a one-line error (exit 2)
        from xenmig_core.engine import MultiConsumer
        from xenmig_core.progress import progress_for
        from xenmig_core.sink import text_output
        with text_output("-") as out:
            consumer = None
            if verbose and not as_json:
                from xenmig_core.render.verbose import VerboseConsumer
                consumer = VerboseConsumer(out)
            with open_source(names[0]) as source:
                shown = None if consumer is not None and sys.stdout.isatty() else \
                    progress_for(source, "verifying")
                watchers = [c for c in (consumer, shown) if c is not None]
                try:
                    report = verify_opened(registry, source, from_, MultiConsumer(*watchers)
                                           if watchers else None, params, account=as_json)
                finally:
                    if shown is not None:
                        shown.finish()
            if consumer is not None:
                consumer.close()
            return _verify_output(report, verbose=verbose, quiet=quiet, as_json=as_json)
    return guarded(body)


def run_convert(input_: str, output: str, to: str, from_: str = "auto", *,
                param: Sequence[str] | None = None, width: str | None = None,
                guest: str | None = None, skip_qemu: bool = False, no_verify: bool = False,
                no_sync: bool = False, checkpoint: int | None = None, quiet: bool = False,
                spec: Sequence[Any] | None = None,
                started: Callable[[], None] | None = None) -> int:
    """``xenmig convert``: convert *input_* into *output* as *to*; the exit code. The
    arguments are the command's options, named as in ``xenmig convert --help``; *started*
    is called once the plugins and formats are loaded, before the input is opened."""
    def body() -> int:
        given = StreamParams(param, width=width, guest=guest, skip_qemu=skip_qemu)
        from xenmig_core.convert import ConvertOptions, converter_targets, converts_to, summary
        from xenmig_core.convert import convert as convert_stream
        from xenmig_core.session import open_registry
        registry = open_registry(spec or [])
        params = given.check(registry, "convert")
        if not converts_to(registry, to):
            targets = converter_targets(registry)
            raise UsageError(f"--to {to!r}: no converter to it; expected one of "
                             f"{', '.join(targets) or '(none installed)'}")
        options = ConvertOptions(target=to, params=params,
                                 extra={} if checkpoint is None else {"checkpoint": checkpoint})
        if started is not None:
            started()
        result = convert_stream(registry, input_, output, options, source_format=from_,
                                verify=not no_verify, sync=not no_sync, progress=not quiet)
        if not quiet:
            echo(f"xenmig: {summary(result)}", err=True)
        return EXIT_OK
    return guarded(body)


def _forward(registry: Any, name: str, fmt: str, target: str, tee: str | None,
             params: dict[str, Any], *, quiet: bool) -> int:
    """``verify --forward``: the verdict goes to stderr (stdout may be the target)."""
    from xenmig_core.forward import ForwardClosed, forward_to_fd, open_target
    out_fd, owned = open_target(target)
    try:
        report, sent = forward_to_fd(registry, name, fmt, out_fd, tee_path=tee, params=params)
    except ForwardClosed as exc:
        fail(f"error: {exc}", EXIT_USAGE)
    finally:
        if owned:
            os.close(out_fd)
    return _forward_verdict(report, sent, quiet=quiet)


def _forward_verdict(report: Any, sent: int, *, quiet: bool) -> int:
    if report.valid:
        if not quiet:
            echo(f"xenmig: {report.source}: valid, {sent} bytes forwarded: "
                 f"{report.summary()}", err=True)
        return EXIT_OK
    if not quiet:
        # (forwarding stops at the first error: there is no count of more)
        echo(f"xenmig: invalid: {report.result.errors[0]}; forwarded {sent} bytes, "
             "up to the record before it", err=True)
    return EXIT_INVALID


def _verify_many(registry: Any, names: list[str], fmt: str, params: dict[str, Any], *,
                 quiet: bool, as_json: bool, jobs: int, specs: list[str]) -> int:
    """One line (or JSON document) per stream, a summary line, the worst status."""
    import json

    from xenmig_core.batch import summary_line, verify_many
    from xenmig_core.sink import text_output
    codes = []
    with text_output("-") as out:
        for outcome in verify_many(registry, names, fmt, params, jobs=jobs, specs=specs):
            codes.append(outcome.code)
            if quiet:
                continue
            out.write((json.dumps(outcome.doc) if as_json else outcome.line) + "\n")
            out.flush()
    if not quiet:
        echo(f"xenmig: {summary_line(codes)}", err=True)
    return max(codes)


def _verify_output(report: Report, *, verbose: bool, quiet: bool, as_json: bool) -> int:
    code = EXIT_OK if report.valid else EXIT_INVALID
    if quiet:
        return code
    if as_json:
        import json
        echo(json.dumps(report.to_dict(), indent=2))
        return code
    note = report.offsets_note()
    if not verbose:
        groups, others = _alike_warnings(report)
        for warning, more in groups:
            echo(f"xenmig: warning: {warning}{note}", err=True)
            if more:
                echo(f"xenmig: warning: ... and {more} more like it", err=True)
        if others:
            echo(f"xenmig: warning: ... and {others} more warnings", err=True)
    if report.valid:
        echo(f"{report.source}: valid: {report.summary()}")
    else:
        count = report.error_count
        more = f" ({count - 1} more; -v shows all)" if count > 1 else ""
        echo(f"xenmig: invalid: {report.errors[0]}{more}{note}", err=True)
        if verbose:
            echo(f"{report.source}: INVALID: {count} error" + ("" if count == 1 else "s"))
    return code


def _alike_warnings(report: Report) -> tuple[list[tuple[Any, int]], int]:
    """The first warning of each kind (alike as the engine's caps see them: the same message
    but for numbers, at the same record type and field), in order, each with how many more
    of its kind there were, kept or dropped by the caps; and how many dropped warnings are
    of no kind shown (the caps' overall limit mixes kinds)."""
    from xenmig_core.engine.walk import diagnostic_kind

    firsts: dict[Any, list[Any]] = {}
    for warning in (d for d in report.diagnostics if not d.is_error):
        entry = firsts.setdefault(diagnostic_kind(warning), [warning, -1])
        entry[1] += 1
    others = report.result.dropped["warning"]
    for sample, count in report.result.dropped_like:
        entry = None if sample.is_error else firsts.get(diagnostic_kind(sample))
        if entry is not None:
            count = min(count, others)
            entry[1] += count
            others -= count
    return [(warning, more) for warning, more in firsts.values()], others
