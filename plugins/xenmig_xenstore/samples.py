"""Deterministic sample xenstore migration streams, for ``examples/`` and the tests.

:func:`live_update_records` is what xenstored's live update writes for a small host (global
data, a socket connection, a guest's ring connection with its watches and a pending
transaction, the node tree, quotas); :func:`assemble_xenstore` writes a list of
:class:`~xenmig_libxc.samples.Step` with xenmig's writer in either byte order and either
length style: ``xenstored`` (the length counts the padding, which is part of the body) or
``design`` (the exact length, padding after the body).
"""

from __future__ import annotations

import io
import struct
from typing import Any

from xenmig_core.spec.model import FormatSpec
from xenmig_core.writer import StreamWriter
from xenmig_libxc.samples import Step

IDENT = 0x78656E73746F7265
DOMID_INVALID = 0x7FF4
ORDERS = {"little": "<", "big": ">"}


def perm(letter: str, domid: int, flags: int = 0) -> dict[str, int]:
    return {"perm": ord(letter), "flags": flags, "domid": domid}


def node(path: str, value: bytes = b"", perms: list[dict[str, int]] | None = None, *,
         conn_id: int = 0, tx_id: int = 0, access: int = 0) -> Step:
    raw = path.encode() + b"\0"
    perms = perms if perms is not None else [perm("n", 0)]
    return Step("NODE_DATA", {"conn_id": conn_id, "tx_id": tx_id, "path_len": len(raw),
                              "value_len": len(value), "access": access,
                              "perm_count": len(perms), "perms": perms, "path": raw,
                              "value": value})


def watch(conn_id: int, wpath: str, token: str, depth: int | None = None) -> Step:
    fields: dict[str, Any] = {"conn_id": conn_id, "wpath": wpath.encode() + b"\0",
                              "token": token.encode() + b"\0"}
    fields["wpath_len"], fields["token_len"] = len(fields["wpath"]), len(fields["token"])
    if depth is None:
        return Step("WATCH_DATA", fields)
    return Step("WATCH_DATA_EXTENDED", {**fields, "depth": depth, "reserved": 0})


def ring_spec(domid: int, evtchn: int, order: str, tdomid: int = DOMID_INVALID) -> bytes:
    return struct.pack(ORDERS[order] + "HHI", domid, tdomid, evtchn)


def connection(conn_id: int, conn_spec: bytes, *, conn_type: int = 0,
               in_data: bytes = b"", out_data: bytes = b"", out_resp_len: int = 0,
               unique_id: int | None = None, order: str = "little") -> Step:
    """CONNECTION_DATA; with *unique_id*, fields bit 0 and the id after padding to 8."""
    tail = b""
    if unique_id is not None:
        tail = bytes(-(24 + len(in_data) + len(out_data)) % 8) + \
            struct.pack(ORDERS[order] + "Q", unique_id)
    return Step("CONNECTION_DATA", {
        "conn_id": conn_id, "conn_type": conn_type, "fields": 1 if unique_id is not None else 0,
        "conn_spec": conn_spec, "in_data_len": len(in_data), "out_resp_len": out_resp_len,
        "out_data_len": len(out_data), "in_data": in_data, "out_data": out_data,
        "tail": tail})


def names_blob(names: list[str]) -> bytes:
    return b"".join(n.encode() + b"\0" for n in names)


def xs_message(kind: int, req_id: int, tx_id: int, payload: bytes, order: str) -> bytes:
    """A xenstore wire message (struct xsd_sockmsg + payload), as pending data."""
    return struct.pack(ORDERS[order] + "IIII", kind, req_id, tx_id, len(payload)) + payload


def live_update_records(order: str = "little", version: int = 2) -> list[Step]:
    """A small host's live-update state in xenstored's order (version 2: extended watches,
    domain features), plus a pending transaction as a migration stream would carry."""
    quota_names = ["nodes", "watches", "transactions", "memory"]
    steps = [
        Step("GLOBAL_DATA", {"rw_socket_fd": 3, "evtchn_fd": 4}),
        Step("GLOBAL_QUOTA_DATA", {"n_dom_quota": 4, "n_glob_quota": 0,
                                   "dom_quota": [1000, 128, 10, 2 << 20], "glob_quota": [],
                                   "names": names_blob(quota_names)}),
        connection(1, struct.pack(ORDERS[order] + "iI", 9, 0), conn_type=1,
                   in_data=xs_message(2, 41, 0, b"/local/domain/5/name\0", order),
                   order=order),
        watch(1, "@releaseDomain", "release-watch"),
        connection(2, ring_spec(5, 11, order), unique_id=0x5A17_0000_0000_0005,
                   out_data=xs_message(15, 7, 0, b"/local/domain/5/device\0token-5\0", order),
                   order=order),
        watch(2, "/local/domain/5/device", "token-5", depth=1 if version >= 2 else None),
        watch(2, "control/shutdown", "ctl"),
        Step("TRANSACTION_DATA", {"conn_id": 2, "tx_id": 7}),
        node("/", perms=[perm("r", 0)]),
        node("/local", perms=[perm("r", 0)]),
        node("/local/domain", perms=[perm("r", 0)]),
        node("/local/domain/5", perms=[perm("n", 0), perm("r", 5)]),
        node("/local/domain/5/name", b"guest-5", [perm("n", 5), perm("r", 0, flags=1)]),
        node("/local/domain/5/control", perms=[perm("n", 5)]),
        node("/local/domain/5/control/shutdown", b"", [perm("n", 5)]),
        node("/local/domain/5/data", perms=[perm("b", 5)]),
        node("/local/domain/5/data/pending", b"written in a transaction", [perm("n", 5)],
             conn_id=2, tx_id=7, access=2),
        node("@releaseDomain", perms=[perm("n", 0)]),
        node("@introduceDomain", perms=[perm("n", 0)]),
        Step("DOMAIN_DATA", {"domain_id": 5, "n_quota": 2,
                             "features": 1 if version >= 2 else 0, "quota": [2000, 256],
                             "names": names_blob(["nodes", "watches"])}),
        Step("END"),
    ]
    return steps


def assemble_xenstore(spec: FormatSpec, steps: list[Step], *, byte_order: str = "little",
                      version: int = 2, flags: int | None = None, style: str = "xenstored",
                      ident: int = IDENT) -> bytes:
    """The stream: header (flags from *byte_order* unless given), then *steps*."""
    out = io.BytesIO()
    writer = StreamWriter(out, spec, byte_order)
    writer.header("header", {"ident": ident, "version": version,
                             "flags": (1 if byte_order == "big" else 0) if flags is None
                             else flags})
    for step in steps:
        if style == "xenstored":
            step = _padded_inside(writer, step, byte_order)
        step.write(writer, byte_order)
    return out.getvalue()


def _padded_inside(writer: StreamWriter, step: Step, byte_order: str) -> Step:
    """xenstored's style: zero bytes appended to the body's last field (``bytes`` of size
    ``rest``: pad, tail or names) so that the length is a multiple of 8."""
    rtype = writer.spec.record_by_name(step.name)
    if rtype is None or rtype.layout is None or not rtype.layout.fields:
        return step
    last = rtype.layout.fields[-1]
    if last.size != "rest" or last.payload:
        return step
    fields = {k: v(byte_order) if callable(v) else v for k, v in step.fields.items()}
    fields.setdefault(last.id, b"")
    size = len(writer.encode_body(step.name, fields))
    fields[last.id] = bytes(fields[last.id]) + bytes(-size % 8)
    return Step(step.name, fields, step.payload, step.overrides)
