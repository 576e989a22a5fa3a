"""Built-in plugin: the headers that wrap a libxl stream in a file: xl's save file header
(``specs/xl.yaml``) and libvirt's libxl save header (``specs/libvirt.yaml``).

Both specs hand the rest of the file to the stream format through ``follows``: for xl,
mandatory flag bit 1 chooses libxl v2 or a legacy stream (verified when a plugin provides the
``legacy`` format; until then the engine reports that part as unverified); for libvirt, the
stream's own first bytes decide, since old libvirt wrote version 1 in front of v2 streams.
This plugin decodes the configuration and the XML, compares the configuration's guest type
with the stream, and recognises xl migrate's closing message after a captured stream.
"""

from __future__ import annotations

from xenmig_core.engine import StreamContext
from xenmig_core.plugins import hookimpl, package_file, resolve

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

#: xl migrate's sender writes this after the libxl stream (xl_migrate.c).
CLEARED_TO_UNPAUSE = b"domain is yours, you are cleared to unpause\0"
# imported when first asked for (see resolve): json and XML only for the files that have them
_HANDLERS = {("xl", "optional_data"): "xenmig_xl.config:check_optional_data",
             ("libvirt", "domain_xml"): "xenmig_xl.libvirt:check_domain_xml"}
#: libxc domain types (specs/libxc.yaml) by the guest type names of libxl's JSON.
_LIBXC_TYPES = {"pv": (1,), "hvm": (2,), "pvh": (2, 3)}


@hookimpl
def xenmig_spec_files() -> list[Any]:
    return [package_file("xenmig_specs", "xl.yaml"), package_file("xenmig_specs", "libvirt.yaml")]


@hookimpl
def xenmig_record_handler(format_name: str, name: str) -> Any:
    ref = _HANDLERS.get((format_name, name))
    return resolve(ref) if ref else None


@hookimpl
def xenmig_stream_end(ctx: StreamContext) -> list[str] | None:
    """xl: the configuration's guest type against the stream; libvirt: a version 1 header
    in front of a v2 stream."""
    if ctx.name == "libvirt" and ctx.state["save_version"] == 1 and "libxl" in ctx.children:
        ctx.warning("header version 1 in front of a libxl v2 stream (libvirt before its "
                    "SRM v2 support, on Xen 4.6 or later, wrote this): a libvirt that honours "
                    "the version would run the legacy converter on it", unit="header",
                    offset=0)
    if ctx.name == "xl":
        _v2_without_flag(ctx)
        return _config_against_stream(ctx)
    return None


def _v2_without_flag(ctx: StreamContext) -> None:
    """A v2 stream behind a header without the stream-v2 flag: xl would treat it as legacy."""
    if ctx.state["stream_v2"]:
        return
    inner = next((name for name in ("libxc", "libxl") if name in ctx.children), None)
    if inner is None:
        return
    flags = ctx.format.spec.headers[1]
    ctx.error(f"the header lacks the stream-v2 flag (mandatory flag bit 1) but a v2 {inner} "
              "stream follows (as convert-legacy-stream writes with its xl option and "
              f"{inner} output): xl would take it for a legacy stream and its restore fails; "
              "set the flag (and wrap a bare libxc stream in libxl's) to restore it",
              unit=flags.name, field="mandatory_flags",
              offset=ctx.start_offset + (ctx.format.spec.headers[0].layout.static_size or 0))


def _config_against_stream(ctx: StreamContext) -> list[str] | None:
    from xenmig_xl.config import guest_type
    config = ctx.headers.get("optional_data", {}).get("config")
    kind = guest_type(config) if isinstance(config, dict) else None
    libxl = ctx.children.get("libxl")
    if kind is None or libxl is None:
        return None
    problems = []
    domain_type = libxl.child_state("libxc", "domain_type", 0)
    if kind in _LIBXC_TYPES and domain_type and domain_type not in _LIBXC_TYPES[kind]:
        label = libxl.children["libxc"].format.spec.enums["domain_type"].label_of(domain_type)
        problems.append(f"the configuration's guest type is {kind}, but the stream holds an "
                        f"{label} domain: restore would fail")
    emulator = sum(libxl.counts[n] for n in ("EMULATOR_XENSTORE_DATA", "EMULATOR_CONTEXT"))
    if kind == "pvh" and emulator:
        problems.append(f"{emulator} emulator records for a PVH guest (per the configuration): "
                        "libxl restore rejects them (\"when none was expected\")")
    return problems or None


@hookimpl
def xenmig_trailing_data(ctx: StreamContext, head: bytes) -> str | None:
    if ctx.name in ("xl", "libxl") and head.startswith(CLEARED_TO_UNPAUSE):
        return ("xl migrate's \"cleared to unpause\" message: this is a captured migration "
                "stream")
    return None
