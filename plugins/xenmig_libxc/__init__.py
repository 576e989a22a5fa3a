"""Built-in plugin: the libxc migration stream (v2 and v3).

The layout, enums and most rules live in ``specs/libxc.yaml``. This plugin adds only what the
spec language cannot say: PAGE_DATA's per-pfn checks (types, reserved bits, the domain's
maximum pfn) and its exact length from the count of pages that carry data; the walk of the
HVM save records inside HVM_CONTEXT (their layouts, enums and checks live in
``specs/hvm_context.yaml``); how a checkpointed stream may end; and the dump views of
PAGE_DATA (pfn runs) and HVM_CONTEXT (entries decoded with the spec's ``types``).
"""

from __future__ import annotations

from xenmig_core.engine import Record, StreamContext
from xenmig_core.plugins import hookimpl, package_file, resolve

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

FORMAT = "libxc"


@hookimpl
def xenmig_spec_files() -> list[Any]:
    return [package_file("xenmig_specs", "libxc.yaml"),
            package_file("xenmig_specs", "hvm_context.yaml")]


# handlers and viewers by name, imported when first asked for (see resolve)
_HANDLERS = {
    "PAGE_DATA": "xenmig_libxc.page_data:check_page_data",
    "HVM_CONTEXT": "xenmig_libxc.hvm_context:check_hvm_context",
}


@hookimpl
def xenmig_record_handler(format_name: str, name: str) -> Any:
    ref = _HANDLERS.get(name) if format_name == FORMAT else None
    return resolve(ref) if ref else None


_VIEWERS = {
    "PAGE_DATA": "xenmig_libxc.views:view_page_data",
    "HVM_CONTEXT": "xenmig_libxc.views:view_hvm_context",
}


@hookimpl
def xenmig_record_viewer(format_name: str, name: str) -> Any:
    ref = _VIEWERS.get(name) if format_name == FORMAT else None
    return resolve(ref) if ref else None


@hookimpl
def xenmig_stream_eof(ctx: StreamContext) -> tuple[str, str] | None:
    """A bare libxc stream may stop after a CHECKPOINT, as a Remus stream at failover."""
    if ctx.name != FORMAT or ctx.parent is not None:
        return None
    last: Record | None = ctx.last_record
    if last is not None and last.name == "CHECKPOINT":
        return "ok", (f"stream ended after checkpoint {ctx.state['checkpoints']}, "
                      "as at a failover")
    return None
