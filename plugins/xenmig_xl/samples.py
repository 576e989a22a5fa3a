"""Deterministic sample xl save files and libvirt save files, wrapping libxl samples.

:func:`xl_file` and :func:`libvirt_file` put a header in front of any stream bytes (usually
:func:`xenmig_libxl.samples.assemble_libxl` output); their keyword arguments let tests write
every header field wrong on purpose.
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

from xenmig_core.spec.model import FormatSpec
from xenmig_core.writer import StreamWriter
from xenmig_libxl.samples import LibxlSample, hvm_libxl_sample
from xenmig_qemu.samples import device_state

XL_MAGIC = b"Xen saved domain, xl format\n \0 \r"
LIBVIRT_MAGIC = b"libvirt-xml\n \0 \r"
BYTEORDER = 0x01020304
FLAG_JSON, FLAG_STREAM_V2 = 1, 2
UUID = "5d1e9a3c-7b2f-4c61-9e0a-3f8b2d4c6e10"


def hvm_config(name: str = "hvm-guest", kind: str = "hvm") -> dict[str, Any]:
    """A small libxl domain configuration, shaped like libxl_domain_config_to_json's."""
    return {
        "c_info": {"type": kind, "name": name, "uuid": UUID},
        "b_info": {"max_vcpus": 2, "avail_vcpus": [0, 1], "max_memkb": 262144,
                   "target_memkb": 262144, "device_model_version": "qemu_xen",
                   "type.hvm": {"firmware": "seabios", "acpi": "True", "vga": {"kind": "std"}}},
        "disks": [{"pdev_path": "/var/lib/xen/images/guest.img", "vdev": "xvda",
                   "format": "raw", "readwrite": 1}],
        "nics": [{"devid": 0, "mac": "00:16:3e:12:34:56", "bridge": "xenbr0"}],
        "on_reboot": "restart",
    }


def hvm_guest_sample(*, pages: int = 32) -> LibxlSample:
    """The libxl stream of an HVM guest as ``xl save`` writes it, its emulator context a
    QEMU device state shaped like a Xen HVM guest's (no footers, as QEMU for Xen writes)."""
    sample = hvm_libxl_sample(pages=pages)
    sample.parts[sample.index("libxl", "EMULATOR_CONTEXT")][1].payload = device_state()
    return sample


def json_config_bytes(config: dict[str, Any]) -> bytes:
    """The configuration as xl stores it: JSON text and its NUL."""
    return json.dumps(config, indent=4, sort_keys=True).encode() + b"\0"


def xl_file(spec: FormatSpec, stream: bytes, *, config: bytes | None = None,
            mandatory: int = FLAG_JSON | FLAG_STREAM_V2, optional_flags: int = 0,
            byteorder: int = BYTEORDER, magic: bytes = XL_MAGIC,
            optional_data: bytes | None = None, byte_order: str = "little") -> bytes:
    """An xl save file: header, optional data (``u32 config_len`` + *config*, unless
    *optional_data* gives the bytes), then *stream*."""
    order = "<" if byte_order == "little" else ">"
    if optional_data is None:
        config = config if config is not None else b""
        optional_data = struct.pack(order + "I", len(config)) + config
    out = io.BytesIO()
    writer = StreamWriter(out, spec, byte_order)
    writer.raw(magic + struct.pack(order + "I", byteorder))   # the marker in the file's order
    writer.header("flags", {"mandatory_flags": mandatory, "optional_flags": optional_flags,
                            "optional_data_len": len(optional_data)})
    writer.header("optional_data", {"data": optional_data})
    writer.raw(stream)
    return out.getvalue()


def domain_xml(name: str = "hvm-guest") -> str:
    return (f"<domain type='xen'>\n  <name>{name}</name>\n  <uuid>{UUID}</uuid>\n"
            "  <memory unit='KiB'>262144</memory>\n  <vcpu>2</vcpu>\n"
            "  <os>\n    <type arch='x86_64' machine='xenfv'>hvm</type>\n  </os>\n"
            "</domain>\n")


def libvirt_file(spec: FormatSpec, stream: bytes, *, xml: bytes | None = None,
                 version: int = 2, magic: bytes = LIBVIRT_MAGIC, xml_len: int | None = None,
                 unused: list[int] | None = None) -> bytes:
    """A libvirt libxl save file: header, the XML (with its NUL), then *stream*."""
    xml = xml if xml is not None else domain_xml().encode() + b"\0"
    out = io.BytesIO()
    writer = StreamWriter(out, spec)
    writer.header("header", {"magic": magic, "version": version,
                             "xml_len": len(xml) if xml_len is None else xml_len,
                             "unused": unused or [0] * 10})
    writer.raw(xml)
    writer.raw(stream)
    return out.getvalue()
