"""How a checkpointed (Remus/COLO) libxl stream may end.

A checkpointed stream has no END: the sender just stops (failover). Restore then uses the
last complete checkpoint, but only once the first one completed (libxl_stream_read.c,
xg_sr_restore.c). So verify accepts a stream that stops right after a checkpoint closed, and
refuses one that stops inside a checkpoint, naming the last complete one.
"""

from __future__ import annotations

from xenmig_core.engine import StreamContext

LIBXL = "libxl"
LIBXC = "libxc"


def _is_libxl(ctx: StreamContext | None) -> bool:
    return ctx is not None and LIBXL in (ctx.name, ctx.format.spec.base)


def checkpoint_eof(ctx: StreamContext) -> tuple[str, str] | None:
    """The verdict for a source that ended at a record boundary inside *ctx*, or None to
    leave it to the default (or another plugin)."""
    if ctx.name == LIBXC and _is_libxl(ctx.parent):
        assert ctx.parent is not None
        return _in_libxc(ctx, ctx.parent)
    if _is_libxl(ctx):
        if ctx.state.get("back_channel"):
            return _back_channel(ctx)
        return _in_libxl(ctx)
    return None


def checkpoint_truncated(ctx: StreamContext) -> tuple[str, str] | None:
    """Context for an error: the source ended inside a record or header of *ctx*."""
    libxl = ctx.parent if ctx.name == LIBXC else ctx
    if not _is_libxl(libxl) or libxl is None or libxl.state.get("back_channel"):
        return None
    done = libxl.state["checkpoints"]
    started = libxl.child_state(LIBXC, "checkpoints", 0)
    if not started or libxl.child_status(LIBXC) == "finished":
        return None
    if ctx is libxl and started == done:
        return "error", f"after checkpoint {done}, the last complete one"
    current = max(started, done + 1)
    if done == 0:
        return "error", "inside checkpoint 1: the first checkpoint must be complete"
    return "error", f"inside checkpoint {current}: the last complete checkpoint is {done}"


def _in_libxc(libxc: StreamContext, libxl: StreamContext) -> tuple[str, str] | None:
    done = libxl.state["checkpoints"]
    if libxc.state["checkpoints"] == 0:
        return None      # a plain stream, cut short: the default message says where
    last = libxc.last_record
    if last is not None and last.name == "CHECKPOINT" and done == libxc.state["checkpoints"]:
        return "ok", f"ended after checkpoint {done}, as at a failover"
    return "error", (f"stream ended inside checkpoint {done + 1}, in its libxc records: the "
                     f"last complete checkpoint is {done} (a restore would fail over to it)")


def _in_libxl(libxl: StreamContext) -> tuple[str, str] | None:
    done = libxl.state["checkpoints"]
    status = libxl.child_status(LIBXC)
    started = libxl.child_state(LIBXC, "checkpoints", 0)
    if status == "suspended" and started > done:
        if done == 0:
            return "error", ("stream ended inside checkpoint 1, before its CHECKPOINT_END: "
                             "the first checkpoint must be complete (restore has no "
                             "consistent state to fail over to)")
        return "error", (f"stream ended inside checkpoint {started}, before its "
                         f"CHECKPOINT_END: the last complete checkpoint is {done} (a "
                         "restore would fail over to it)")
    if status == "suspended" and done:
        return "ok", f"ended after checkpoint {done}, as at a failover"
    if status == "finished" and done and started == done:
        return "ok", (f"libxc END after checkpoint {done}: restore completes with checkpoint "
                      f"{done}, as at a failover")
    return None


def _back_channel(ctx: StreamContext) -> tuple[str, str] | None:
    if ctx.last_record is None:
        return "error", "empty back channel: not a single record"
    lists = ctx.state.get("dirty_lists", 0)
    return "ok", f"back channel closed after {lists} dirty pfn {'list' if lists == 1 else 'lists'}"
