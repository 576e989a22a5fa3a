"""Plugin: xenstore migration / live-update streams (Xen's docs/designs/xenstore-migration.md).

``specs/xenstore.yaml`` lays out the header and every record and states the rules a record
can check alone; this plugin adds the rules across records (:mod:`.checks`: connections,
transactions, nodes' parents, domains, quota names) and what dump shows (:mod:`.views`).
"""

from __future__ import annotations

from xenmig_core.engine import StreamContext
from xenmig_core.plugins import hookimpl, package_file

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

FORMAT = "xenstore"
_NAMES = ("END", "GLOBAL_DATA", "CONNECTION_DATA", "WATCH_DATA", "TRANSACTION_DATA",
          "NODE_DATA", "GLOBAL_QUOTA_DATA", "DOMAIN_DATA", "WATCH_DATA_EXTENDED")


@hookimpl
def xenmig_spec_files() -> list[Any]:
    return [package_file("xenmig_specs", "xenstore.yaml")]


@hookimpl
def xenmig_record_handler(format_name: str, name: str) -> Any:
    if format_name != FORMAT or name not in _NAMES:
        return None
    from xenmig_xenstore.checks import handler
    return handler(name)


@hookimpl
def xenmig_record_viewer(format_name: str, name: str) -> Any:
    if format_name != FORMAT:
        return None
    from xenmig_xenstore.views import VIEWERS
    return VIEWERS.get(name)


@hookimpl
def xenmig_trailing_data(ctx: StreamContext, head: bytes) -> str | None:
    """xenstored's reader stops at END and never reads further."""
    if ctx.name == FORMAT:
        return ("after END, which the design makes the last record (xenstored's reader "
                "stops at END and ignores them)")
    return None
