"""Deterministic QEMU device-state streams, for ``examples/`` and the tests.

:func:`device_state` writes QEMU's layout (``QEVM``, version 3, optional configuration,
full sections, optional footers, EOF) around bodies that are a byte pattern: xenmig never
decodes bodies (their layouts are each device's own), so only their lengths matter.
:data:`XEN_HVM_SECTIONS` is shaped like what a qemu-upstream device model of an HVM guest
saves (section names, instances and versions of that kind; lengths made up).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

MAGIC = 0x5145564D
SECTION_FULL, CONFIGURATION, FOOTER, EOF = 0x04, 0x07, 0x7E, 0x00

#: (name, instance, version, body length)
XEN_HVM_SECTIONS: list[tuple[str, int, int, int]] = [
    ("timer", 0, 2, 17),
    ("0000:00:00.0/I440FX", 0, 3, 330),
    ("PCIBUS", 0, 1, 21),
    ("0000:00:01.0/PIIX3-xen", 0, 3, 312),
    ("i8259", 0, 1, 20),
    ("i8259", 1, 1, 20),
    ("0000:00:01.1/ide", 0, 3, 1122),
    ("0000:00:01.3/piix4_pm", 0, 3, 420),
    ("0000:00:02.0/xen-platform", 0, 4, 266),
    ("0000:00:03.0/vga", 0, 2, 1530),
    ("0000:00:04.0/e1000", 0, 2, 580),
    ("ps2kbd", 0, 3, 146),
    ("ps2mouse", 0, 2, 146),
    ("i8042", 0, 3, 12),
    ("serial", 0, 3, 28),
]


def body(index: int, length: int) -> bytes:
    """A section body: a pattern with no byte sequence shaped like a section header."""
    return bytes(0x20 + (index * 11 + i) % 0x50 for i in range(length))


def device_state(sections: Sequence[tuple[str, int, int, int]] = XEN_HVM_SECTIONS, *,
                 footers: bool = False, machine: str | None = None,
                 first_id: int = 0) -> bytes:
    """A device-state stream of *sections*; with *footers* each section ends with
    QEMU's footer (QEMU for Xen turns them off); *machine* adds a configuration section."""
    out = struct.pack(">II", MAGIC, 3)
    if machine is not None:
        name = machine.encode()
        out += struct.pack(">BI", CONFIGURATION, len(name)) + name
    for i, (name, instance, version, length) in enumerate(sections):
        idstr = name.encode()
        section_id = first_id + i
        out += struct.pack(">BIB", SECTION_FULL, section_id, len(idstr)) + idstr
        out += struct.pack(">II", instance, version) + body(i, length)
        if footers:
            out += struct.pack(">BI", FOOTER, section_id)
    return out + bytes([EOF])
