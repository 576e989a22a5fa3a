"""The xenserver walker: frames a XenServer suspend image header by header.

A header is two little-endian u64, type and length. For most types the record's length
follows; for Libxc, Libxc_legacy, Libxl, Demu and End_of_image xenopsd writes 0 and restore
ignores the field, because another stream follows (or nothing). So each unit is the 16-byte
header, plus ``length`` bytes only for the types that have a record; Libxc then nests the
libxc stream (Libxc_legacy a legacy one, Libxl a libxl one), and the walk goes on with the
next header after its END. The walker, not the spec's ``control``, starts them, so that a
missing plugin for one of them is a warning ("not verified"), not a spec that fails to load.
An unknown type stops the walk, as it stops xenopsd's restore.

A legacy image (signature "XenSavedDomain\\n") is one nested ``legacy`` stream, read as
xenopsd has convert-legacy-stream read it (``--skip-qemu``: the walk parameter
``skip_qemu``, so it stops after the HVM context), then for HVM the qemu record xenopsd reads
itself: "QemuDeviceModelRecord\\n", big-endian u32 length, data. Without a plugin for the
format ``legacy``, the rest is skipped with a warning.
"""

from __future__ import annotations

import struct

from xenmig_core.engine import Action, StreamContext
from xenmig_core.errors import StreamError, TruncatedError
from xenmig_core.spec.spill import SPILL_MIN

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

HEADER = struct.Struct("<QQ")
#: Types written with length 0 whose data, if any, is another stream that follows.
NO_RECORD = frozenset({"LIBXC", "LIBXC_LEGACY", "LIBXL", "DEMU", "END_OF_IMAGE"})
#: xenmig loads the Xenops S-expression whole (its parse tree is limited by the parser's
#: MAX_NODES); xenopsd writes a few KiB. The largest a field is held in memory.
MAX_XENOPS = SPILL_MIN
LEGACY_FORMAT = "legacy"
LEGACY_QEMU = b"QemuDeviceModelRecord\n"
LEGACY_QEMU_ID = 0x10000
#: record name -> the format of the stream that follows it
NESTED = {"LIBXC": "libxc", "LIBXC_LEGACY": "legacy", "LIBXL": "libxl"}
END = Action("end")
_UNSET = object()


def walk(engine: Any, ctx: StreamContext) -> Action:
    """The ``xenmig_walker`` for format xenserver: read one unit (or start the legacy
    stream)."""
    ws = ctx.walker_state
    phase = ws.setdefault("phase", "start")
    if phase == "start":
        if not ctx.state["structured"]:
            return _legacy(engine, ctx)
        ws["phase"] = "records"
    elif phase == "legacy_qemu":
        ws["phase"] = "done"
        _restore_param(engine, ws)
        return _legacy_qemu(engine, ctx)
    elif phase == "done":
        return END
    return _record(engine, ctx)


def _need(engine: Any, ctx: StreamContext, n: int, what: str) -> bytes:
    source = engine.source
    head = source.peek(n)
    if len(head) < n:
        ctx.walker_state["unit"] = what
        where = source.offset
        if not head:
            raise StreamError(f"stream ended before the {what}", offset=where)
        raise TruncatedError(f"stream truncated: the {what} needs {n} bytes at offset "
                             f"{where:#x}, only {len(head)} left", offset=where)
    return head


def _record(engine: Any, ctx: StreamContext) -> Action:
    source = engine.source
    offset = source.offset
    if not source.peek(1):
        ctx.walker_state["unit"] = "header"
        last = ctx.last_record
        after = f" (last record {last.index}, {last.name})" if last else ""
        raise StreamError(f"stream ended before End_of_image{after}: xenopsd's restore fails "
                          "reading the next header", offset=offset)
    type_id, length = HEADER.unpack(_need(engine, ctx, HEADER.size, "header"))
    rtype = ctx.format.spec.records.get(type_id)
    if rtype is None or type_id == LEGACY_QEMU_ID:
        ctx.walker_state["unit"] = "header"
        raise StreamError(f"unknown header type {type_id:#x}: xenopsd refuses the image "
                          "(Invalid_header_type)", offset=offset, field="type")
    if rtype.name == "XENOPS" and length > MAX_XENOPS:
        ctx.walker_state["unit"] = "Xenops header"
        raise StreamError(f"Xenops record of {length} bytes: xenmig does not load more than "
                          f"{MAX_XENOPS >> 20} MiB (xenopsd writes a few KiB)", offset=offset,
                          field="length")
    unit = HEADER.size if rtype.name in NO_RECORD else HEADER.size + length
    _unit, action = engine.walker_record(ctx, type_id, unit)
    nested = NESTED.get(rtype.name)
    if nested is not None:
        if nested in engine.registry.formats:
            return Action("nested", nested)
        _unverified_rest(engine, ctx, f"is a {nested} stream, which no loaded plugin provides")
        return END
    if rtype.name == "END_OF_IMAGE":
        ctx.walker_state["phase"] = "done"
        return END
    if rtype.name == "DEMU":
        # the vGPU emulator's own state follows, and nothing records its length
        _unverified_rest(engine, ctx, "follows a Demu (vGPU) header: the vGPU state has no "
                         "recorded length, so xenmig cannot find the records after it")
        return END
    return action


def _unverified_rest(engine: Any, ctx: StreamContext, why: str) -> None:
    """Skip the rest of the source with a warning saying *why* it is not verified."""
    source = engine.source
    start = source.offset
    source.skip_to_eof()
    ctx.state["unverified"] = source.offset - start
    ctx.walker_state["phase"] = "done"
    ctx.warning(f"the rest of the image ({source.offset - start} bytes) {why}: not verified",
                offset=start, record=None, unit="rest of image")


def _legacy(engine: Any, ctx: StreamContext) -> Action:
    """Start the legacy stream with ``skip_qemu`` (a walk parameter: every context whose
    format declares it starts with it; set only until that stream ends)."""
    ws = ctx.walker_state
    if LEGACY_FORMAT not in engine.registry.formats:
        _unverified_rest(engine, ctx, "is a legacy libxc stream, which no loaded plugin "
                         "provides")
        return END
    ws["phase"] = "legacy_qemu"
    ws["skip_qemu_before"] = engine.params.get("skip_qemu", _UNSET)
    engine.params["skip_qemu"] = True
    return Action("nested", LEGACY_FORMAT)


def _restore_param(engine: Any, ws: dict[str, Any]) -> None:
    before = ws.pop("skip_qemu_before", _UNSET)
    if before is _UNSET:
        engine.params.pop("skip_qemu", None)
    else:
        engine.params["skip_qemu"] = before


def _legacy_qemu(engine: Any, ctx: StreamContext) -> Action:
    """The qemu record after a legacy image's libxc stream (HVM guests only)."""
    if ctx.child_state(LEGACY_FORMAT, "guest") != "hvm":
        return END
    head = _need(engine, ctx, len(LEGACY_QEMU) + 4, "legacy qemu record")
    if head[:len(LEGACY_QEMU)] != LEGACY_QEMU:
        ctx.walker_state["unit"] = "legacy qemu record"
        raise StreamError(f"expected the qemu record signature \"QemuDeviceModelRecord\\n\" "
                          f"after the HVM guest's legacy stream, found {head[:22]!r} "
                          "(xenopsd: \"Read invalid legacy qemu save signature\")",
                          offset=engine.source.offset)
    (length,) = struct.unpack_from(">I", head, len(LEGACY_QEMU))
    engine.walker_record(ctx, LEGACY_QEMU_ID, len(head) + length)
    return END
