"""What the xenstore spec cannot say: which connections, transactions, nodes and domains a
record may refer to, and the quota names.

A :class:`Book` (one per stream, in ``ctx.walker_state``) remembers the connection ids,
transactions, ring domains and committed node paths declared so far. Memory is bounded:
past :data:`MAX_IDS` ids or :data:`MAX_PATH_BYTES` of paths the book stops growing, says so
once, and the checks that need the forgotten part are skipped (never reported wrongly).

Severities (docs/formats.md, "xenstore migration streams"): a watch of an undeclared
connection is an error (xenstored: "connection not found for read watch"); references that
xenstored's reader ignores (transactions) or that the receiver's own database may satisfy
(a node's parent, a domain) are warnings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xenmig_core.engine import Record, StreamContext
from xenmig_core.spec.layout import BytesReader
from xenmig_core.spec.spill import head

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

MAX_IDS = 1 << 16
MAX_PATH_BYTES = 8 << 20     # with MAX_IDS: the book stays far below the 64 MiB bound
#: a string field is shown (and a quota name kept) up to this many bytes: xenstore's own
#: limits are far lower, and a field too large to hold in memory is not read further
MAX_TEXT = 1 << 16
DOMID_INVALID = 0x7FF4
PERM_LETTERS = frozenset(b"wrbn")


@dataclass
class Book:
    """What the stream declared so far."""

    conns: set[int] = field(default_factory=set)
    transactions: set[tuple[int, int]] = field(default_factory=set)
    ring_domains: set[int] = field(default_factory=set)
    domain_records: set[int] = field(default_factory=set)
    paths: set[bytes] = field(default_factory=set)
    path_bytes: int = 0
    unpadded_seen: bool = False
    full: bool = False       # something was not remembered: skip checks that need it

    def remember(self, ctx: StreamContext, kind: set[Any], value: Any, size: int = 0) -> None:
        if self.full:
            return
        if len(kind) >= MAX_IDS or self.path_bytes + size > MAX_PATH_BYTES:
            self.full = True
            ctx.warning("the stream declares more connections, transactions or nodes than "
                        "xenmig keeps track of: later references are not checked")
            return
        kind.add(value)
        self.path_bytes += size


def book(ctx: StreamContext) -> Book:
    found = ctx.walker_state.get("xenstore")
    if found is None:
        found = ctx.walker_state["xenstore"] = Book()
    return found


def text(data: Any) -> str:
    """A NUL-terminated string field as text (without its NUL); of a field longer than
    :data:`MAX_TEXT`, its start and its length."""
    if len(data) > MAX_TEXT:
        shown = head(data, MAX_TEXT).decode("utf-8", errors="replace")
        return f"{shown}... ({len(data)} bytes)"
    return bytes(data).rstrip(b"\0").decode("utf-8", errors="replace")


def ring_or_socket(record: Record, ctx: StreamContext) -> tuple[str, dict[str, Any]] | None:
    """The connection's conn-spec decoded with the spec's ``ring_spec``/``socket_spec``."""
    kind = {0: "ring", 1: "socket"}.get(record.fields["conn_type"])
    if kind is None:
        return None
    layout = ctx.format.spec.types[f"{kind}_spec"]
    return kind, layout.decode(BytesReader(bytes(record.fields["conn_spec"])), ctx.byte_order)


def check_connection(record: Record, ctx: StreamContext) -> None:
    f = record.fields
    b = book(ctx)
    if f["conn_id"] in b.conns:
        ctx.warning(f"conn-id {f['conn_id']} declared twice (watches and transactions "
                    "would refer to either)", field="conn_id")
    b.remember(ctx, b.conns, f["conn_id"])
    decoded = ring_or_socket(record, ctx)
    if decoded is None:
        return
    kind, spec = decoded
    if kind == "socket":
        if spec["pad"]:
            ctx.warning("the socket conn-spec's pad is not zero (the design: written as zero)",
                        field="conn_spec")
        record.summary = (f"conn {f['conn_id']}, socket fd {spec['socket_fd']}, "
                          f"{f['in_data_len']} bytes in, {f['out_data_len']} bytes out")
        return
    b.remember(ctx, b.ring_domains, spec["domid"])
    if spec["tdomid"] != DOMID_INVALID:
        b.remember(ctx, b.ring_domains, spec["tdomid"])
    target = "" if spec["tdomid"] == DOMID_INVALID else f" for domain {spec['tdomid']}"
    record.summary = (f"conn {f['conn_id']}, domain {spec['domid']}{target}, event channel "
                      f"{spec['evtchn']}, {f['in_data_len']} bytes in, "
                      f"{f['out_data_len']} bytes out")


def check_watch(record: Record, ctx: StreamContext) -> None:
    f = record.fields
    b = book(ctx)
    if not b.full and f["conn_id"] not in b.conns:
        ctx.error(f"watch of conn-id {f['conn_id']}, which no earlier CONNECTION_DATA "
                  "declared (xenstored: \"connection not found for read watch\")",
                  field="conn_id")
    depth = f.get("depth")
    shown = "" if depth is None else (", any depth" if depth == 0xFFFF else f", depth {depth}")
    record.summary = (f"conn {f['conn_id']}: {text(f['wpath'])!r} token "
                      f"{text(f['token'])!r}{shown}")


def check_transaction(record: Record, ctx: StreamContext) -> None:
    f = record.fields
    b = book(ctx)
    if not b.full and f["conn_id"] not in b.conns:
        ctx.warning(f"transaction of conn-id {f['conn_id']}, which no earlier CONNECTION_DATA "
                    "declared (the design requires it; xenstored ignores transaction records)",
                    field="conn_id")
    key = (f["conn_id"], f["tx_id"])
    if key in b.transactions:
        ctx.warning(f"transaction {f['tx_id']} of conn-id {f['conn_id']} declared twice",
                    field="tx_id")
    b.remember(ctx, b.transactions, key)


def check_node(record: Record, ctx: StreamContext) -> None:
    f = record.fields
    b = book(ctx)
    path = bytes(f["path"]).rstrip(b"\0")
    owner = f["perms"][0]["domid"] if f["perms"] else None
    where = f" (transaction {f['tx_id']} of conn {f['conn_id']})" if f["conn_id"] else ""
    record.summary = (f"{text(path)}{where}" + (f", owner {owner}" if owner is not None else "")
                      + f", {f['value_len']} bytes")
    for i, p in enumerate(f["perms"]):
        if p["perm"] not in PERM_LETTERS:
            ctx.warning(f"permission {i + 1} is {p['perm']:#x}, none of w, r, b, n "
                        "(xenstored reads it as n)", field=f"perms[{i}].perm")
        if p["flags"] & 0xFE:
            ctx.warning(f"permission {i + 1} has reserved flag bits {p['flags'] & 0xFE:#x} "
                        "(xenstored ignores them)", field=f"perms[{i}].flags")
    if f["conn_id"]:
        if not b.full and (f["conn_id"], f["tx_id"]) not in b.transactions:
            ctx.warning(f"node of transaction {f['tx_id']} of conn-id {f['conn_id']}, which no "
                        "earlier TRANSACTION_DATA declared (the design requires it; xenstored "
                        "ignores the transaction and commits the node)", field="tx_id")
        return
    if path.startswith(b"/") and path != b"/":
        parent = path.rsplit(b"/", 1)[0] or b"/"
        if not b.full and parent != b"/" and parent not in b.paths:
            ctx.warning(f"parent {text(parent)!r} is not in the stream before this node: "
                        "restore needs it in the receiver's database already",
                        field="path")
    b.remember(ctx, b.paths, path, len(path) + 64)


def check_names(record: Record, ctx: StreamContext, count: int) -> dict[str, int] | None:
    """The quota names (one non-empty NUL-terminated name per value, then 0-7 zero bytes)
    with their values, or None after reporting why they do not add up."""
    names = record.fields["names"]    # bytes, or a spilled value (searched in chunks)
    found: list[bytes] = []
    pos = 0
    while len(found) < count:
        end = names.find(b"\0", pos)
        if end <= pos:      # no terminator left, or an empty name (padding)
            ctx.error(f"{count} quota values but {len(found)} names: the design pairs each "
                      "value with a NUL-terminated name (xenstored would take padding, or "
                      "bytes beyond the record, for the missing names)", field="names")
            return None
        found.append(bytes(names[pos:min(end, pos + MAX_TEXT)]))
        pos = end + 1
    left = len(names) - pos
    if left >= 8:
        ctx.error(f"{left} bytes after the {count} quota names: the lengths do not add "
                  "up", field="names")
    elif any(rest := bytes(names[pos:])):
        ctx.warning(f"non-zero padding after the quota names: {rest.hex()}", field="names")
    values = list(record.fields.get("quota", [])) or (
        list(record.fields.get("dom_quota", [])) + list(record.fields.get("glob_quota", [])))
    return {text(n): v for n, v in zip(found, values, strict=True)}


def check_global_quota(record: Record, ctx: StreamContext) -> None:
    f = record.fields
    check_names(record, ctx, f["n_dom_quota"] + f["n_glob_quota"])


def check_domain(record: Record, ctx: StreamContext) -> None:
    f = record.fields
    b = book(ctx)
    check_names(record, ctx, f["n_quota"])
    if f["domain_id"] in b.domain_records:
        ctx.warning(f"a second DOMAIN_DATA for domain {f['domain_id']} (the design: at most "
                    "one per domain)", field="domain_id")
    b.remember(ctx, b.domain_records, f["domain_id"])
    if not b.full and f["domain_id"] not in b.ring_domains:
        ctx.warning(f"domain {f['domain_id']} has no shared-ring CONNECTION_DATA before it: "
                    "xenstored refuses it unless the domain is known to the receiver "
                    "(\"referenced domain not found\")", field="domain_id")


def padded_length(record: Record, ctx: StreamContext) -> None:
    """Every record: a length that is not a multiple of 8 is what the design asks for, but
    xenstored's reader reads no padding after a body."""
    b = book(ctx)
    if record.length % 8 and not b.unpadded_seen:
        b.unpadded_seen = True
        ctx.warning(f"body length {record.length} is not a multiple of 8: right by the design "
                    "(padding follows the body), but xenstored's live-update reader counts "
                    "on lengths that include the padding and would lose its place (reported "
                    "for the first such record only)", field="length")


CHECKS = {"CONNECTION_DATA": check_connection, "WATCH_DATA": check_watch,
          "WATCH_DATA_EXTENDED": check_watch, "TRANSACTION_DATA": check_transaction,
          "NODE_DATA": check_node, "GLOBAL_QUOTA_DATA": check_global_quota,
          "DOMAIN_DATA": check_domain}


def handler(name: str) -> Any:
    """The handler for record type *name*: its own check (if any) and the length check."""
    check = CHECKS.get(name)

    def handle(record: Record, ctx: StreamContext) -> None:
        padded_length(record, ctx)
        if check is not None:
            check(record, ctx)
    return handle
