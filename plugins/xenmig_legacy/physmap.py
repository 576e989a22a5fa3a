"""libxl's toolstack data (chunk -18, version 1): the device model's physmap entries, and
the emulator xenstore data a v2 libxl stream carries instead.

Blob: ``u32 version`` (1), ``u32 count``, then per entry ``u64 phys_offset, u64 start_addr,
u64 size, u32 namelen`` (28 bytes, packed) and ``namelen`` bytes of NUL-terminated name; a
64-bit toolstack's entry occupies 4 more bytes after the name (its C struct's tail padding).
Xenstore data: for each entry, in order, the NUL-terminated strings
``physmap/<phys>/start_addr``, ``<start>``, ``physmap/<phys>/size``, ``<size>``,
``physmap/<phys>/name``, ``<name>``, numbers in lower-case hex without ``0x``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from xenmig_core.plain import Plain

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

ENTRY = struct.Struct("<QQQI")
#: the longest name an entry may have: XENSTORE_PAYLOAD_MAX, the most a xenstore write
#: carries (the name becomes the value of physmap/<phys>/name)
MAX_NAME = 4096


class PhysmapError(ValueError):
    """The blob is not valid version-1 physmap data; the message says why."""


class PhysmapEntry(Plain, frozen=True):
    phys_offset: int
    start_addr: int
    size: int
    name: bytes          # without its NUL


def parse_physmap(blob: Any, width: int) -> list[PhysmapEntry]:
    """Decode a version-1 blob written by a *width*-bit toolstack; PhysmapError if bad.
    Bytes after the announced entries are ignored (as Xen's converter does)."""
    return list(iter_physmap(blob, width))


def iter_physmap(blob: Any, width: int) -> Iterator[PhysmapEntry]:
    """The entries of :func:`parse_physmap`, one at a time (the same PhysmapError when one
    is reached). *blob* may be a spilled value: only an entry's bytes are read at a time."""
    if len(blob) < 8:
        raise PhysmapError("overly short libxl toolstack data")
    version, count = struct.unpack("<II", bytes(blob[:8]))
    if version != 1:
        raise PhysmapError(f"cannot decode libxl toolstack version {version}")
    pos = 8
    tail = 4 if width == 64 else 0
    for i in range(count):
        if len(blob) - pos < ENTRY.size:
            raise PhysmapError(f"physmap entry {i}: remaining data too short for its header")
        phys, start, size, namelen = ENTRY.unpack(bytes(blob[pos:pos + ENTRY.size]))
        pos += ENTRY.size
        if namelen == 0:
            raise PhysmapError(f"physmap entry {i}: no name")
        take = namelen + tail
        if len(blob) - pos < take:
            raise PhysmapError(f"physmap entry {i}: remaining data too short for its name")
        if namelen > MAX_NAME + 1:
            raise PhysmapError(f"physmap entry {i}: a name of {namelen - 1} bytes (a "
                               f"xenstore value holds at most {MAX_NAME})")
        name = bytes(blob[pos:pos + namelen])
        pos += take
        if name[-1] != 0:
            raise PhysmapError(f"physmap entry {i}: name not NUL terminated")
        yield PhysmapEntry(phys, start, size, name[:-1])


def xenstore_data(entries: list[PhysmapEntry]) -> bytes:
    """The EMULATOR_XENSTORE_DATA body (after its 8-byte emulator header) for *entries*."""
    out = bytearray()
    for e in entries:
        base = f"physmap/{e.phys_offset:x}/".encode("ascii")
        for key, value in ((b"start_addr", f"{e.start_addr:x}".encode("ascii")),
                           (b"size", f"{e.size:x}".encode("ascii")),
                           (b"name", e.name)):
            out += base + key + b"\0" + value + b"\0"
    return bytes(out)


def build_physmap(entries: list[PhysmapEntry], width: int) -> bytes:
    """The blob a *width*-bit libxl 4.x toolstack writes for *entries* (for test streams).
    The 64-bit struct tail after the name is written as zeros."""
    out = bytearray(struct.pack("<II", 1, len(entries)))
    for e in entries:
        name = e.name + b"\0"
        out += ENTRY.pack(e.phys_offset, e.start_addr, e.size, len(name)) + name
        if width == 64:
            out += bytes(4)
    return bytes(out)
