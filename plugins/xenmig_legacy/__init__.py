"""Built-in plugin: legacy libxc save images (Xen 4.5 and older) and their conversion.

``specs/legacy.yaml`` names and lays out every unit of a legacy image; this plugin adds the
walker that frames them (their lengths are implied by their types: :mod:`.walker`), the
detector for a format without magic (:mod:`.detect`, which documents the width and guest
rules), the checks the spec cannot express (:mod:`.handlers`), and the conversion to v2
streams (:mod:`.convert`).
"""

from __future__ import annotations

from collections.abc import Mapping

from xenmig_core.detect import Detection
from xenmig_core.engine import StreamContext
from xenmig_core.params import StreamParam
from xenmig_core.plugins import hookimpl, package_file
from xenmig_core.spec.model import FormatSpec
from xenmig_legacy.detect import FORMAT, detect_legacy

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any


@hookimpl
def xenmig_spec_files() -> list[Any]:
    return [package_file("xenmig_specs", "legacy.yaml")]


@hookimpl
def xenmig_record_handler(format_name: str, name: str) -> Any:
    if format_name == FORMAT:
        from xenmig_legacy.handlers import HANDLERS
        return HANDLERS.get(name)
    return None


@hookimpl
def xenmig_stream_params() -> list[StreamParam]:
    """What the caller may know better than a legacy image says (state variables of
    specs/legacy.yaml); the old --width/--guest/--skip-qemu options stay as aliases."""
    return [
        StreamParam("width", "toolstack word size of a legacy image; default: detect",
                    kind="int", choices=("32", "64"), alias="--width"),
        StreamParam("guest", "guest type of a legacy image; default: detect",
                    choices=("pv", "hvm"), alias="--guest"),
        StreamParam("skip_qemu", "libxc output of a legacy image: stop after the HVM "
                    "context (no qemu record)", kind="bool", commands=("convert",),
                    alias="--skip-qemu"),
    ]


@hookimpl
def xenmig_walker(format_name: str) -> Any:
    if format_name != FORMAT:
        return None
    from xenmig_legacy.walker import walk
    return walk


@hookimpl
def xenmig_detect_format(head: bytes, specs: Mapping[str, FormatSpec]) -> Detection | None:
    if FORMAT not in specs:
        return None
    return detect_legacy(head)


@hookimpl
def xenmig_converter(source_format: str, target: str) -> Any:
    """Legacy images (bare, or behind an xl header that says so) convert to libxc/libxl/xl."""
    from xenmig_legacy.convert import TARGETS, factory
    if source_format in (FORMAT, "xl") and target in TARGETS:
        return factory
    return None


@hookimpl
def xenmig_trailing_data(ctx: StreamContext, head: bytes) -> str | None:
    """Qemu data a legacy image or its conversion legitimately carries after its end."""
    from xenmig_legacy.walker import QEMU_SIGNATURES, QEMU_TO_EOF
    if ctx.name == FORMAT and ctx.state.get("qemu") == QEMU_TO_EOF.decode():
        return "the old-style qemu record's data (QemuDeviceModelRecord: to end of file)"
    if ctx.name == "libxc" and any(head.startswith(sig) for sig in QEMU_SIGNATURES):
        return (f"a raw qemu record ({head[:21].decode()}) after the libxc END, as Xen's "
                "legacy converter writes for HVM guests")
    return None
