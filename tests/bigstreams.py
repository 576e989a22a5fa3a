"""Streams whose one record really carries a large body (tens of MiB), written with the
project's writer straight to a file, the large body in pieces: the test process never holds
it. Used by test_large_bodies.py.

:func:`write_libxc` writes a libxc sample whose step *name* is replaced by a record with
*fields* (its leading fields, encoded by the spec) followed by *body* pieces; the libxl,
xenstore and COLO writers do the same for their formats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import xenmig_core
from xenmig_core.writer import StreamWriter
from xenmig_libxc.samples import Sample, Step

MIB = 1 << 20


def repeated(piece: bytes, total: int) -> Iterator[bytes]:
    """*total* bytes made of *piece* repeated, about a MiB at a time."""
    block = piece * max(1, MIB // len(piece))
    done = 0
    while done < total:
        part = block[:total - done]
        yield part
        done += len(part)


def _big(writer: StreamWriter, name: str, fields: dict[str, Any], body: Iterable[bytes],
         length: int) -> None:
    padding = writer.start_record(name, fields, payload_length=length)
    written = 0
    for part in body:
        writer.raw(part)
        written += len(part)
    assert written == length, (written, length)
    writer.finish_record(padding)


def _steps(writer: StreamWriter, steps: list[Step], name: str,
           big: Callable[[StreamWriter], None]) -> None:
    replaced = False
    for step in steps:
        if step.name == name and not replaced:
            big(writer)
            replaced = True
        else:
            step.write(writer, "little")
    assert replaced, name


def write_libxc(path: Path, sample: Sample, name: str, fields: dict[str, Any],
                body: Iterable[bytes], length: int) -> Path:
    """A little-endian libxc stream of *sample* with its first *name* record replaced."""
    spec = xenmig_core.open_registry().specs["libxc"]
    with open(path, "wb") as out:
        write_libxc_to(out, spec, sample, name, fields, body, length)
    return path


def write_libxc_to(out: BinaryIO, spec: Any, sample: Sample, name: str,
                   fields: dict[str, Any], body: Iterable[bytes], length: int) -> None:
    writer = StreamWriter(out, spec)
    writer.header("image_header", sample.image_header)
    writer.header("domain_header", sample.domain_header)
    _steps(writer, sample.steps, name, lambda w: _big(w, name, fields, body, length))


def write_framed(path: Path, fmt: str, headers: list[tuple[str, dict[str, Any]]],
                 steps: list[Step], name: str, fields: dict[str, Any],
                 body: Iterable[bytes], length: int,
                 nested: Callable[[BinaryIO], None] | None = None,
                 nested_before: str | None = None) -> Path:
    """A little-endian stream of format *fmt*: *headers*, then *steps* with the first
    *name* replaced by the large record; *nested* writes a nested stream's bytes just
    before the step named *nested_before*."""
    spec = xenmig_core.open_registry().specs[fmt]
    with open(path, "wb") as out:
        writer = StreamWriter(out, spec)
        for header, values in headers:
            writer.header(header, values)
        replaced = False
        for step in steps:
            if nested is not None and step.name == nested_before:
                out.flush()
                nested(out)
                writer.written = out.tell()
                nested = None
            if step.name == name and not replaced:
                _big(writer, name, fields, body, length)
                replaced = True
            else:
                step.write(writer, "little")
        assert replaced, name
    return path
