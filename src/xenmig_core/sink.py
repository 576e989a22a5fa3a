"""Outputs that never leave partial data.

A path output is written to a temporary file beside the target and renamed into place only
when the whole output was written (callers that verify do so inside the block, so a failed
verification leaves nothing); on any error, Ctrl-C included, the temporary file vanishes.
``-`` (stdout) and ``fd:N`` stream as they go: a pipe cannot be taken back.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from xenmig_core.errors import SourceError, UsageError
from xenmig_core.source import parse_fd


def is_stream_target(spec: str | Path) -> bool:
    """True for ``-`` and ``fd:N``: outputs written as they go, never renamed."""
    return isinstance(spec, str) and (spec == "-" or parse_fd(spec) is not None)


@contextlib.contextmanager
def open_output(spec: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file for *spec*: ``-``, ``fd:N``, or a path written atomically."""
    if isinstance(spec, str) and spec == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    fd = parse_fd(spec) if isinstance(spec, str) else None
    if fd is not None:
        try:
            out = os.fdopen(fd, "wb", closefd=False)
        except OSError as exc:
            raise SourceError(f"{spec}: cannot write: {exc.strerror or exc}") from None
        with out:
            yield out
        return
    with atomic_output(spec) as out:
        yield out


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file; on normal exit it replaces *path*, on any error it vanishes."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{target}: is a directory")
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=directory)
    except OSError as exc:
        raise SourceError(f"{target}: cannot create output: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise SourceError(f"{target}: cannot rename the finished output into place: "
                              f"{exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def text_output(path: str) -> Iterator[TextIO]:
    """A UTF-8 text output over :func:`open_output`: ``-``, ``fd:N`` or an atomic path."""
    if path == "-":
        yield sys.stdout          # the caller's stdout as it is (tests capture it)
        sys.stdout.flush()
        return
    with open_output(path) as raw:
        out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
        try:
            yield out
            out.flush()
        finally:
            out.detach()          # open_output owns (and closes) the binary file
