"""Streams whose one record really carries a large body (tens of MiB), written with the
project's writer straight to a file, the large body in pieces: the test process never holds
it. Used by test_large_bodies.py.

A stream is a list of items, each ``("header", format, name, fields)`` or
``("record", format, Step)``; :func:`write_stream` writes them, the first record named
*name* replaced by one whose leading *fields* are encoded by the spec and whose *body*
pieces follow. :func:`libxc_items`, :func:`libxl_items` turn the project's samples into items.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import xenmig_core
from xenmig_core.writer import StreamWriter
from xenmig_libxc.samples import Sample
from xenmig_libxl.samples import LIBXC_HEADERS, LibxlSample

MIB = 1 << 20
Item = tuple[Any, ...]


def repeated(piece: bytes, total: int) -> Iterator[bytes]:
    """*total* bytes made of *piece* repeated, about a MiB at a time."""
    block = piece * max(1, MIB // len(piece))
    done = 0
    while done < total:
        part = block[:total - done]
        yield part
        done += len(part)


def libxc_items(sample: Sample) -> list[Item]:
    return [("header", "libxc", "image_header", sample.image_header),
            ("header", "libxc", "domain_header", sample.domain_header),
            *(("record", "libxc", step) for step in sample.steps)]


def libxl_items(sample: LibxlSample) -> list[Item]:
    items: list[Item] = [("header", "libxl", "header", sample.header)]
    for fmt, step in sample.parts:
        if step.name == LIBXC_HEADERS:
            items += libxc_items(Sample(sample.libxc.image_header,
                                        sample.libxc.domain_header, []))
        else:
            items.append(("record", fmt, step))
    return items


def write_stream(path: Path, items: list[Item], name: str, fields: dict[str, Any],
                 body: Iterable[bytes], length: int) -> str:
    """Write *items* (little-endian) to *path*, the first record *name* carrying *fields*
    and then the *length* bytes of *body*; returns the sha256 of those bytes."""
    specs = xenmig_core.open_registry().specs
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        writers: dict[str, StreamWriter] = {}
        replaced = False
        for item in items:
            fmt = item[1]
            writer = writers.get(fmt) or writers.setdefault(fmt, StreamWriter(out, specs[fmt]))
            if item[0] == "header":
                writer.header(item[2], item[3])
            elif item[2].name == name and not replaced:
                padding = writer.start_record(name, fields, payload_length=length)
                written = 0
                for part in body:
                    writer.raw(part)
                    digest.update(part)
                    written += len(part)
                assert written == length, (written, length)
                writer.finish_record(padding)
                replaced = True
            else:
                item[2].write(writer, "little")
        assert replaced, name
    return digest.hexdigest()
