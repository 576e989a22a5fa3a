"""Outputs that never leave partial data: a temporary file beside the target, renamed into
place only when the whole output was written (and, for callers that check, verified)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from xenmig_core.errors import SourceError
from xenmig_core.source import parse_fd


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file; on normal exit it replaces *path*, on any error it vanishes."""
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=directory)
    except OSError as exc:
        raise SourceError(f"{target}: cannot create output: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def text_output(path: str) -> Iterator[TextIO]:
    """A text output: stdout for ``-`` (or ``fd:N``), else an atomic file (UTF-8)."""
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    if path.startswith("fd:"):
        fd = parse_fd(path)
        assert fd is not None
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as out:
            yield out
        return
    with atomic_output(path) as raw:
        out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
        yield out
        out.flush()
        out.detach()  # atomic_output closes the file itself
