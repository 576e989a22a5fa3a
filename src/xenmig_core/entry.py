"""The ``xenmig`` console script: plain ``verify`` and ``convert`` run without loading typer.

Importing typer (and click with it) and building the app from the commands' signatures
costs more than verifying a small stream. :func:`main` therefore recognises the common
``verify`` invocations itself and calls :func:`xenmig_core.cli_core.run_verify`, the very
function the typer command calls once it has parsed its options; everything else (help,
completion, other commands, any option or form listed nowhere below) goes to the typer app
(:mod:`xenmig_core.cli`), which parses and reports exactly as it always did.

What :func:`parse_verify` accepts, and means as click means it: ``verify`` followed, in any
order, by stream names (``-`` for stdin; not starting with ``-`` otherwise), the flags
``-q``/``--quiet``, ``-v``/``--verbose`` and ``--json``, ``-f X``/``--from X``/``--from=X``
(X not starting with ``-``; the last one wins), and ``--`` after which every word is a
stream name. Anything else, even what click would accept (``-qv``, ``-fX``, ``--param``),
is left to the typer app: the fast path only ever takes what it is sure of.

Likewise :func:`parse_convert` takes ``convert`` followed, in any order, by one INPUT (``-``,
or a word not starting with ``-``), ``-o X``/``--output X``/``--output=X`` (X ``-`` or not
starting with ``-``), ``--to X``/``--to=X``, ``-f X``/``--from X``/``--from=X`` (X not
starting with ``-``; for each, the last one wins), the flags ``-q``/``--quiet``,
``--no-verify`` and ``--no-sync``, and ``--``; both ``-o`` and ``--to`` must be there. Those
go to :func:`xenmig_core.cli_core.run_convert`.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Sequence

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

_VERIFY_FLAGS = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose",
                 "--json": "as_json"}
_VERIFY_VALUES = {"-f": "from_", "--from": "from_"}
_CONVERT_FLAGS = {"-q": "quiet", "--quiet": "quiet", "--no-verify": "no_verify",
                  "--no-sync": "no_sync"}
_CONVERT_VALUES = {"-o": "output", "--output": "output", "--to": "to", **_VERIFY_VALUES}


def _parse(args: Sequence[str], command: str, flags: dict[str, str],
           values: dict[str, str]) -> tuple[dict[str, Any], list[str]] | None:
    """(options, operands) of *command*'s words in *args*: *flags* and *values* map option
    words to keywords (a value as the next word, or after ``=`` for a long option; never
    starting with ``-`` but for ``-`` as the output), ``--`` ends the options, ``-`` and
    words not starting with ``-`` are operands. None for anything else."""
    if not args or args[0] != command:
        return None
    options: dict[str, Any] = {"from_": "auto"}
    operands: list[str] = []
    words = iter(args[1:])
    for word in words:
        if word == "--":
            operands.extend(words)
            break
        name, equals, value = word.partition("=")
        if word in flags:
            options[flags[word]] = True
        elif word in values or (equals and name.startswith("--") and name in values):
            key = values[name if equals else word]
            given = value if equals else next(words, None)
            if given is None or (given.startswith("-") and
                                 not (given == "-" and key == "output")):
                return None
            options[key] = given
        elif word.startswith("-") and word != "-":
            return None
        else:
            operands.append(word)
    return options, operands


def parse_verify(args: Sequence[str]) -> dict[str, Any] | None:
    """The keyword arguments of :func:`~xenmig_core.cli_core.run_verify` for the command
    line *args* (without the program name), or None when *args* is not a ``verify``
    invocation this module handles (see the module's docstring)."""
    parsed = _parse(args, "verify", _VERIFY_FLAGS, _VERIFY_VALUES)
    if parsed is None:
        return None
    options, streams = parsed
    options["streams"] = streams
    return options


def parse_convert(args: Sequence[str]) -> dict[str, Any] | None:
    """The keyword arguments of :func:`~xenmig_core.cli_core.run_convert` for the command
    line *args* (without the program name), or None when *args* is not a ``convert``
    invocation this module handles (see the module's docstring)."""
    parsed = _parse(args, "convert", _CONVERT_FLAGS, _CONVERT_VALUES)
    if parsed is None:
        return None
    options, inputs = parsed
    if len(inputs) != 1 or "output" not in options or "to" not in options:
        return None
    options["input_"] = inputs[0]
    return options


def _completing() -> bool:
    """True when a shell's completion asks (``_XENMIG_COMPLETE`` and the like)."""
    return any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: exits with the command's status."""
    args = sys.argv[1:] if argv is None else list(argv)
    options = None if _completing() else parse_verify(args)
    converting = None if options is not None or _completing() else parse_convert(args)
    if options is None and converting is None:
        from xenmig_core.cli import app
        if argv is None:
            app()       # click reads sys.argv itself (and names the program from it)
        else:
            app(args, prog_name="xenmig")
        return
    # Start-up makes tens of thousands of objects that live as long as the run (modules,
    # the compiled formats) and next to no garbage: the collector would only walk them, a
    # tenth of a short run. It runs again once they are made (_started).
    gc.disable()
    if converting is not None:
        from xenmig_core.cli_core import run_convert
        sys.exit(run_convert(**converting, started=_started))
    from xenmig_core.cli_core import run_verify
    sys.exit(run_verify(**options, started=_started))


def _started() -> None:
    """Start-up is over: what it made lives as long as the run, so it leaves the collector's
    generations for good (``gc.freeze``), and the collector runs again for the walk."""
    gc.freeze()
    gc.enable()
