"""Deterministic sample XenServer suspend images, for ``examples/`` and the tests.

A :class:`Part` is one header/record (by record name, with field overrides) or raw bytes (a
nested stream); :func:`assemble` writes a list of parts behind a signature with xenmig's
:class:`~xenmig_core.writer.StreamWriter`, so tests can drop, repeat, reorder or corrupt any
part. :func:`hvm_image` / :func:`pv_image` are what xenopsd's ``suspend`` writes for an HVM
(UEFI) or PV guest; :func:`legacy_image` is a pre-structured image.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from xenmig_core.spec.model import FormatSpec
from xenmig_core.writer import StreamWriter
from xenmig_libxc.samples import assemble, hvm_sample, pv_sample
from xenmig_libxl.samples import qemu_blob
from xenmig_xenserver.sexp import dumps
from xenmig_xenserver.walker import LEGACY_QEMU

SIGNATURE = b"XenSavedDomv2-\n"
LEGACY_SIGNATURE = b"XenSavedDomain\n"
UUID = "6a9e4c1f-2b7d-4e35-9c08-d1f2a3b4c5e6"
TIME = "20261201T03:52:22Z"


@dataclass
class Part:
    """One unit: record *name* with *fields* (type and length computed unless given) and
    *payload*; or, with *raw*, bytes written as they are (a nested stream, garbage)."""

    name: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    payload: bytes = b""
    raw: bytes | None = None


def vm_str(name: str = "win-uefi", ty: str = "HVM", vcpus: int = 2) -> str:
    """xenopsd's VM metadata (Vm.t as an S-expression), shortened."""
    kind = [ty, [["hap", "true"], ["shadow_multiplier", "1"], ["video_mib", "8"],
                 ["boot_order", "dc"], ["firmware", ["Uefi", [["on_boot", "Reset"]]]]]]
    return dumps([["id", UUID], ["name", name], ["ssidref", "0"],
                  ["platformdata", [["device-model", "qemu-upstream-uefi"], ["acpi", "1"],
                                    ["vga", "std"]]],
                  ["ty", kind], ["memory_static_max", str(2 << 30)],
                  ["vcpu_max", str(vcpus)], ["vcpus", str(vcpus)]])


def xenops_sexp(*, name: str = "win-uefi", ty: str = "HVM",
                xs_subtree: list[tuple[str, str]] | None = None, word_size: int = 64) -> bytes:
    """The Xenops record as xenopsd writes it (xs_subtree empty since CA-248130)."""
    pairs = [[k, v] for k, v in (xs_subtree or [])]
    return dumps([["time", TIME], ["word_size", str(word_size)],
                  ["vm_str", vm_str(name, ty)], ["xs_subtree", pairs]]).encode()


def varstored_blob() -> bytes:
    """Stand-in for varstored's saved variable store (opaque to xenopsd)."""
    return b"VARS" + bytes((i * 13) & 0xFF for i in range(252))


def swtpm_blob() -> bytes:
    """Stand-in for swtpm's state as xenopsd writes it: base64 text."""
    import base64
    return base64.b64encode(bytes((i * 7) & 0xFF for i in range(96)))


def hvm_parts(specs: Mapping[str, FormatSpec], byte_order: str = "little") -> list[Part]:
    """An HVM UEFI guest: Xenops, Libxc + libxc stream, Varstored, Swtpm, Qemu_trad, end."""
    return [Part("XENOPS", {"sexp": xenops_sexp()}),
            Part("LIBXC"),
            Part(raw=assemble(specs["libxc"], hvm_sample(pages=16), byte_order)),
            Part("VARSTORED", payload=varstored_blob()),
            Part("SWTPM", payload=swtpm_blob()),
            Part("QEMU_TRAD", payload=qemu_blob()),
            Part("END_OF_IMAGE")]


def pv_parts(specs: Mapping[str, FormatSpec]) -> list[Part]:
    """A PV guest: Xenops, Libxc + libxc stream, end."""
    return [Part("XENOPS", {"sexp": xenops_sexp(name="debian-pv", ty="PV")}),
            Part("LIBXC"),
            Part(raw=assemble(specs["libxc"], pv_sample(pages=16))),
            Part("END_OF_IMAGE")]


def assemble_image(spec: FormatSpec, parts: list[Part], signature: bytes = SIGNATURE
                   ) -> bytes:
    """The image: *signature*, then each part."""
    out = io.BytesIO()
    writer = StreamWriter(out, spec)
    writer.header("signature", {"signature": signature})
    for part in parts:
        if part.raw is not None:
            writer.raw(part.raw)
            continue
        rtype = spec.record_by_name(part.name)
        assert rtype is not None, part.name
        fields: dict[str, Any] = {"type": rtype.id}
        if "sexp" in part.fields:
            fields["length"] = len(part.fields["sexp"])
        elif part.payload:
            fields["length"] = len(part.payload)
        else:
            fields["length"] = 0
        fields.update(part.fields)
        writer.raw(writer.encode_body(part.name, fields, part.payload))
    return out.getvalue()


def hvm_image(specs: Mapping[str, FormatSpec]) -> bytes:
    return assemble_image(specs["xenserver"], hvm_parts(specs))


def pv_image(specs: Mapping[str, FormatSpec]) -> bytes:
    return assemble_image(specs["xenserver"], pv_parts(specs))


def legacy_image(hvm: bool = True) -> bytes:
    """A pre-structured image: the legacy signature, a 32-bit toolstack's legacy stream
    (no qemu record in it) and, for HVM, xenopsd's own qemu record."""
    from xenmig_legacy.samples import hvm_image as legacy_hvm
    from xenmig_legacy.samples import pv_image as legacy_pv
    if not hvm:
        return LEGACY_SIGNATURE + legacy_pv(width=32, guest_width=8, pages=8).data
    qemu = qemu_blob()
    return (LEGACY_SIGNATURE + legacy_hvm(width=32, pages=8, qemu=None).data
            + LEGACY_QEMU + struct.pack(">I", len(qemu)) + qemu)
