"""Built-in plugin: the libxl migration stream (v2) and the COLO back channel.

Layouts and most rules live in ``specs/libxl.yaml`` and ``specs/colo.yaml`` (a variant of
libxl). The engine nests the libxc stream at LIBXC_CONTEXT and interleaves it with libxl at
checkpoints, as the specs' ``control`` entries say. This plugin adds what the spec language
cannot: decoding EMULATOR_XENSTORE_DATA into key/value pairs, and how a checkpointed stream
may end.
"""

from __future__ import annotations

from xenmig_core.engine import StreamContext
from xenmig_core.plugins import hookimpl, package_file
from xenmig_libxl.checkpoints import checkpoint_eof, checkpoint_truncated

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

FORMAT = "libxl"


@hookimpl
def xenmig_spec_files() -> list[Any]:
    return [package_file("xenmig_specs", "libxl.yaml"), package_file("xenmig_specs", "colo.yaml")]


@hookimpl
def xenmig_record_handler(format_name: str, name: str) -> Any:
    if format_name == FORMAT and name == "EMULATOR_XENSTORE_DATA":
        from xenmig_libxl.xenstore import check_xenstore_data
        return check_xenstore_data
    return None


@hookimpl
def xenmig_stream_eof(ctx: StreamContext, partial: bool) -> tuple[str, str] | None:
    """A checkpointed stream may stop after a complete checkpoint, never inside one; a
    truncated one is told which checkpoint was cut."""
    return checkpoint_truncated(ctx) if partial else checkpoint_eof(ctx)
