"""Built-in plugin: the libxc migration stream (v2 and v3).

The layout, enums and most rules live in ``specs/libxc.yaml``. This plugin adds only what the
spec language cannot say: PAGE_DATA's per-pfn checks (types, reserved bits, the domain's
maximum pfn) and its exact length from the count of pages that carry data; the walk of the
HVM save records inside HVM_CONTEXT (their layouts, enums and checks live in
``specs/hvm_context.yaml``); how a checkpointed stream may end; and the dump views of
PAGE_DATA (pfn runs) and HVM_CONTEXT (entries decoded with the spec's ``types``).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from xenmig_core.engine import Record, StreamContext
from xenmig_core.plugins import hookimpl
from xenmig_libxc.hvm_context import check_hvm_context
from xenmig_libxc.page_data import check_page_data
from xenmig_libxc.views import view_hvm_context, view_page_data

FORMAT = "libxc"


@hookimpl
def xenmig_spec_files() -> list[Any]:
    return [files("xenmig_specs") / "libxc.yaml", files("xenmig_specs") / "hvm_context.yaml"]


_HANDLERS = {
    "PAGE_DATA": check_page_data,
    "HVM_CONTEXT": check_hvm_context,
}


@hookimpl
def xenmig_record_handler(format_name: str, name: str) -> Any:
    if format_name == FORMAT:
        return _HANDLERS.get(name)
    return None


_VIEWERS = {
    "PAGE_DATA": view_page_data,
    "HVM_CONTEXT": view_hvm_context,
}


@hookimpl
def xenmig_record_viewer(format_name: str, name: str) -> Any:
    if format_name == FORMAT:
        return _VIEWERS.get(name)
    return None


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
