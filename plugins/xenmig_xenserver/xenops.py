"""The Xenops record: xenopsd's S-expression metadata at the start of a suspend image.

:func:`check_xenops` (the record handler) parses it as restore does: an S-expression that
does not parse, or that is not a Xenops record, makes xenopsd refuse the image. It sets the
state values the summary and ``verify --json`` report (VM name, uuid, type, word size).
:func:`view_xenops` (the viewer) shows the decoded fields and the xenstore subtree in dump.
"""

from __future__ import annotations

from xenmig_core.engine import Record, StreamContext
from xenmig_xenserver.sexp import SexpError, XenopsRecord, parse, text, xenops_record

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any


def decode(record: Record) -> XenopsRecord:
    """The decoded record; ValueError (SexpError included) says why it is not one."""
    return xenops_record(parse(bytes(record.fields["sexp"])))


def check_xenops(record: Record, ctx: StreamContext) -> None:
    try:
        xenops = decode(record)
    except SexpError as exc:
        ctx.error(f"the Xenops record is not an S-expression: {exc} (xenopsd refuses the "
                  "image)", field="sexp")
        return
    except ValueError as exc:
        ctx.error(f"the Xenops record is not one xenopsd reads: {exc} (xenopsd refuses the "
                  "image)", field="sexp")
        return
    state = ctx.state
    state["word_size"] = xenops.word_size
    state["vm_name"] = xenops.vm.get("name", "")
    state["vm_uuid"] = xenops.vm.get("id", "")
    state["vm_type"] = xenops.vm.get("ty", "")
    state["xs_nodes"] = len(xenops.xs_subtree or [])
    if xenops.word_size not in (32, 64):
        ctx.warning(f"word_size {xenops.word_size}: xenopsd writes its OCaml word size, 64 "
                    "(32 on old 32-bit dom0s); restore does not look at it", field="sexp")
    what = [f"saved {text(xenops.time)}", f"word size {xenops.word_size}"]
    if xenops.vm.get("name"):
        what.append(f"VM {xenops.vm['name']!r}" + (f" ({xenops.vm['ty']})"
                                                  if "ty" in xenops.vm else ""))
    if xenops.xs_subtree is not None:
        what.append(f"{len(xenops.xs_subtree)} xenstore entries")
    record.summary = ", ".join(what)


def view_xenops(record: Record, ctx: StreamContext) -> dict[str, Any] | None:
    view: dict[str, Any] = {}
    try:
        xenops = decode(record)
    except ValueError:
        return None
    view["time"] = text(xenops.time)
    view["word_size"] = xenops.word_size
    if xenops.vm:
        view["vm"] = dict(xenops.vm)
    if xenops.vm_str is not None:
        view["vm_str_bytes"] = len(xenops.vm_str)
    if xenops.xs_subtree is not None:
        view["xs_subtree"] = [f"{text(k)} = {text(v)!r}" for k, v in xenops.xs_subtree]
    return view
