"""What ``xenmig dump`` shows for xenstore records beyond their fields: conn-specs decoded by
connection type, paths and values as text, permissions as xenstore-ls writes them."""

from __future__ import annotations

import struct

from xenmig_core.engine import Record, StreamContext
from xenmig_core.spec.spill import head
from xenmig_xenstore.checks import check_names, ring_or_socket, text

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

VALUE_SHOWN = 256


def perm_text(perm: dict[str, Any]) -> str:
    """``b0``, ``r5``, ``n7 (stale)``: the permission letter and domain."""
    letter = chr(perm["perm"]) if 0x20 < perm["perm"] < 0x7F else f"{perm['perm']:#x}"
    return f"{letter}{perm['domid']}" + (" (stale)" if perm["flags"] & 1 else "")


def view_connection(record: Record, ctx: StreamContext) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    decoded = ring_or_socket(record, ctx)
    if decoded is not None:
        out["conn_spec"] = {"kind": decoded[0], **decoded[1]}
    f = record.fields
    tail = f["tail"]          # bytes, or a spilled value: only its last 8 bytes are read
    if f["fields"] & 1 and len(tail) >= 8:
        (out["unique_id"],) = struct.unpack(ctx.byte_order + "Q", bytes(tail[-8:]))
    return out


def view_node(record: Record, ctx: StreamContext) -> dict[str, Any] | None:
    f = record.fields
    value = head(f["value"], VALUE_SHOWN + 1)
    try:
        shown: Any = value.decode("utf-8")
        if "\0" in shown:
            raise UnicodeDecodeError("utf-8", value, 0, 1, "NUL")
        if len(shown) > VALUE_SHOWN:
            shown = shown[:VALUE_SHOWN] + "..."
    except UnicodeDecodeError:
        shown = value[:VALUE_SHOWN].hex() + ("..." if len(value) > VALUE_SHOWN else "")
    return {"path": text(f["path"]), "value": shown,
            "perms": [perm_text(p) for p in f["perms"]]}


def view_watch(record: Record, ctx: StreamContext) -> dict[str, Any] | None:
    return {"wpath": text(record.fields["wpath"]), "token": text(record.fields["token"])}


class _Quiet:
    """A stand-in context for viewers: check_names reports nothing from dump's side."""

    def error(self, *args: Any, **kwargs: Any) -> None:
        pass

    warning = error


def view_quotas(record: Record, ctx: StreamContext) -> dict[str, Any] | None:
    f = record.fields
    count = f["n_quota"] if "n_quota" in f else f["n_dom_quota"] + f["n_glob_quota"]
    quotas = check_names(record, _Quiet(), count)  # type: ignore[arg-type]
    return {"quotas": quotas} if quotas is not None else None


VIEWERS = {"CONNECTION_DATA": view_connection, "NODE_DATA": view_node,
           "WATCH_DATA": view_watch, "WATCH_DATA_EXTENDED": view_watch,
           "GLOBAL_QUOTA_DATA": view_quotas, "DOMAIN_DATA": view_quotas}
