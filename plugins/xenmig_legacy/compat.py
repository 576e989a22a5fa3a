"""Drop-in replacements for Xen's ``verify-stream-v2`` and ``convert-legacy-stream``.

Installed as ``xenmig-verify-stream-v2`` and ``xenmig-convert-legacy-stream``. They accept
the upstream options exactly as libxl and XenServer's xenopsd pass them (facts:
legacy-facts.md section 3-4, formats.md section 9) and call the same library functions as
``xenmig verify`` and ``xenmig convert``; only the option parsing and the messages differ.

- ``-i``/``-o`` values: a string that ``int(value, 10)`` accepts (other than ``-1``) is a file
  descriptor, anything else a path: upstream's rule.
- argparse's prefix matching (``allow_abbrev``) accepts ``--guest`` for ``--guest-type``, as
  optparse does for libxl; ambiguous prefixes (``--s``) are usage errors (exit 2).
- ``--syslog``: errors go to syslog and stderr, ``--verbose`` information to syslog instead
  of stdout (idents ``verify-stream-v2`` / ``convert-legacy-stream``, as upstream).

Differences from upstream, all on the safe side: a path output appears only once the
conversion succeeded and verified (upstream truncates it at once); the output is verified
(exit 1 when it does not verify): a file once written, before its rename, a pipe as it is
written; unsupported content (tmem, unknown qemu
signatures) exits 1 with a one-line message where upstream exits 2 with a traceback.
Exit codes otherwise as upstream: option errors 2 (optparse's); an input or output that
cannot be opened 1 for both scripts (upstream does not catch open errors); missing
-i/-o/-w/-g 1; Ctrl-C 1 (convert) / 2 (verify). As
upstream, an xl header needs ``-x`` (without it the input is not a legacy image: exit 1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from xenmig_core.convert import ConvertOptions, convert
from xenmig_core.errors import StreamError, UsageError, XenmigError
from xenmig_core.render.verbose import VerboseConsumer
from xenmig_core.session import open_registry
from xenmig_core.source import ByteSource
from xenmig_core.verifier import verify_source

EXIT_OK, EXIT_STREAM, EXIT_SCRIPT = 0, 1, 2


def fd_or_file(value: str) -> str:
    """Upstream's rule: a decimal string (as ``int(value, 10)`` reads it) other than "-1"
    names a file descriptor (returned as ``fd:N``); anything else is a path."""
    try:
        number = int(value, 10)
    except ValueError:
        return value
    if number == -1:
        return value
    if number < 0:
        raise UsageError(f"{value!r}: not a valid file descriptor")
    return f"fd:{number}"


class _Log:
    """Messages of a compatibility script: info to stdout (or syslog), errors to stderr
    (and syslog)."""

    def __init__(self, ident: str, *, verbose: bool, quiet: bool = False,
                 use_syslog: bool = False, out: TextIO | None = None) -> None:
        self.verbose = verbose and not quiet
        self.quiet = quiet
        self.syslog: Any = None
        self.out = out if out is not None else sys.stdout
        if use_syslog:
            import syslog
            syslog.openlog(ident, syslog.LOG_PID)
            self.syslog = syslog

    def info(self, text: str) -> None:
        if not self.verbose:
            return
        if self.syslog is not None:
            for line in text.splitlines():
                self.syslog.syslog(self.syslog.LOG_INFO, line)
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def error(self, text: str) -> None:
        if self.quiet:
            return
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        if self.syslog is not None:
            for line in text.splitlines():
                self.syslog.syslog(self.syslog.LOG_ERR, line)


class _LineSink:
    """A text file for VerboseConsumer that hands each complete line to a _Log."""

    def __init__(self, log: _Log) -> None:
        self.log = log
        self.buffer = ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            self.log.info(line)
        return len(text)

    def flush(self) -> None:
        pass


# -- verify-stream-v2 --------------------------------------------------------------------------
def verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xenmig-verify-stream-v2", description="Verify a stream according to the v2 spec")
    p.add_argument("-i", "--in", dest="fin", metavar="<FD or FILE>", default="0",
                   help="Stream to verify (defaults to stdin)")
    p.add_argument("-v", "--verbose", action="store_true", help="Summarise stream contents")
    p.add_argument("-q", "--quiet", action="store_true", help="Suppress all logging/errors")
    p.add_argument("-f", "--format", dest="format", choices=("libxc", "libxl", "xl"),
                   default="libxc", metavar="<libxc|libxl|xl>",
                   help="Format of the incoming stream (defaults to libxc)")
    p.add_argument("--syslog", action="store_true", help="Log to syslog instead of stdout")
    return p


def verify_main(argv: Sequence[str] | None = None) -> int:
    """``xenmig-verify-stream-v2``: exit 0 valid, 1 stream error, 2 anything else."""
    args = verify_parser().parse_args(argv)
    log = _Log("verify-stream-v2", verbose=args.verbose, quiet=args.quiet,
               use_syslog=args.syslog)
    try:
        registry = open_registry()
        sink = _LineSink(log)
        consumer = VerboseConsumer(sink) if log.verbose else None
        with ByteSource.open(fd_or_file(args.fin)) as source:
            try:
                report = verify_source(registry, source, args.format, consumer)
            except UsageError as exc:  # detection contradicts -f: a stream problem here
                log.error(f"Stream Error: {exc}")
                return EXIT_STREAM
        if consumer is not None:
            consumer.close()
    except (KeyboardInterrupt, BrokenPipeError):
        return EXIT_SCRIPT
    except XenmigError as exc:
        log.error(f"Stream Error: {exc}" if exc.exit_code in (1, 2) else f"Script Error: {exc}")
        return EXIT_STREAM if exc.exit_code in (1, 2) else EXIT_SCRIPT
    except Exception as exc:
        log.error(f"Script Error: {type(exc).__name__}: {exc}\nPlease fix me")
        return EXIT_SCRIPT
    if not report.valid:
        log.error(f"Stream Error: {report.result.errors[0]}")
        return EXIT_STREAM
    log.info(f"{report.source}: valid: {report.summary()}")
    return EXIT_OK


# -- convert-legacy-stream ---------------------------------------------------------------------
def convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xenmig-convert-legacy-stream",
        usage="%(prog)s [options] -i INPUT -o OUTPUT -w WIDTH -g GUEST",
        description="Convert a legacy stream to a v2 (or later) stream")
    p.add_argument("-i", "--in", dest="fin", metavar="<FD or FILE>",
                   help="Legacy input to convert")
    p.add_argument("-o", "--out", dest="fout", metavar="<FD or FILE>",
                   help="v2 (or later) format output")
    p.add_argument("-w", "--width", choices=("32", "64"), metavar="<32/64>",
                   help="Legacy toolstack bitness")
    p.add_argument("-g", "--guest-type", dest="gtype", choices=("pv", "hvm"),
                   metavar="<pv/hvm>", help="Type of guest in stream")
    p.add_argument("-f", "--format", dest="format", choices=("libxc", "libxl"),
                   default="libxc", metavar="<libxc|libxl>",
                   help="Desired format of the outgoing stream (defaults to libxc)")
    p.add_argument("-v", "--verbose", action="store_true", help="Summarise stream contents")
    p.add_argument("-x", "--xl", action="store_true",
                   help="Is an `xl` header present in the stream? (default no)")
    p.add_argument("--skip-qemu", action="store_true",
                   help="Skip processing of the qemu tail? (default no)")
    p.add_argument("--syslog", action="store_true", help="Log to syslog instead of stdout")
    return p


def _missing_options(parser: argparse.ArgumentParser) -> NoReturn:
    parser.print_help(sys.stderr)
    sys.exit(EXIT_STREAM)


def convert_main(argv: Sequence[str] | None = None) -> int:
    """``xenmig-convert-legacy-stream``: exit 0 converted, 1 stream error (nothing left at a
    path output), 2 usage error or a bug."""
    parser = convert_parser()
    args = parser.parse_args(argv)
    if None in (args.fin, args.fout, args.width, args.gtype):
        _missing_options(parser)
    log = _Log("convert-legacy-stream", verbose=args.verbose, use_syslog=args.syslog)
    target = args.format
    extra: dict[str, Any] = {}
    if args.xl:
        extra.update(require_xl_header=True, xl_header="copy")
        if target == "libxl":
            target = "xl"
    if log.verbose:
        extra["observer"] = VerboseConsumer(_LineSink(log))
    options = ConvertOptions(target, params={"width": int(args.width), "guest": args.gtype,
                                             "skip_qemu": args.skip_qemu}, extra=extra)
    try:
        registry = open_registry()
        result = convert(registry, fd_or_file(args.fin), fd_or_file(args.fout), options,
                         source_format="auto" if args.xl else "legacy")
    except KeyboardInterrupt:
        return EXIT_STREAM
    except (StreamError, UsageError) as exc:
        log.error(f"Stream Error: {exc}")
        return EXIT_STREAM
    except XenmigError as exc:
        log.error(f"Stream Error: {exc}" if exc.exit_code == 2 else f"Script Error: {exc}")
        return EXIT_STREAM if exc.exit_code == 2 else EXIT_SCRIPT
    except Exception as exc:
        log.error(f"Script Error: {type(exc).__name__}: {exc}\nPlease fix me")
        return EXIT_SCRIPT
    finally:
        observer = extra.get("observer")
        if observer is not None:
            observer.close()
    log.info(f"converted {result.source_format} to {result.target}: "
             f"{result.bytes_written} bytes")
    return EXIT_OK


def verify_entry() -> None:
    """Console script ``xenmig-verify-stream-v2``."""
    sys.exit(verify_main())


def convert_entry() -> None:
    """Console script ``xenmig-convert-legacy-stream``."""
    sys.exit(convert_main())
