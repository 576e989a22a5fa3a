"""The legacy walker: frames a legacy image unit by unit (the framing is implied by types).

Called by the engine as ``walk(engine, ctx)`` once per step; each call peeks at what comes
next, works out the unit's record type and length, and hands it to
``engine.walker_record`` (which decodes it with ``specs/legacy.yaml``, runs the checks and
handlers and feeds the consumer). Everything the walker needs to remember lives in
``ctx.walker_state`` (its phase) and ``ctx.state`` (what the spec declares).

Order: p2m_size; PV: extended info, its blocks, the p2m frame list; chunks up to the 0
chunk; PV tail (unmapped pfns, per online vcpu basic/extended/xsave, shared info) or HVM
tail (magic pfns, HVM context, qemu record). Remus streams (no -9 "last checkpoint" chunk)
repeat chunks and tail per checkpoint until the stream ends.

Peeks never exceed 4 + 1024 * 8 bytes, so a pipe is never buffered beyond one batch's pfns.
"""

from __future__ import annotations

import struct
import sys
from array import array

from xenmig_core.engine import Action, Record, StreamContext
from xenmig_core.errors import StreamError, TruncatedError
from xenmig_legacy.detect import MAX_BATCH, decide
from xenmig_legacy.pfnwords import FILLER, FIRST_DATALESS_TYPE, TYPE_MASK, data_pages

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["FILLER", "FIRST_DATALESS_TYPE", "TYPE_MASK", "data_pages", "walk"]

PAGE = 4096
INVALID_TYPES = frozenset({5, 6, 7, 8})  # type nibbles no saver writes (between L4 and pinned)
MAX_VCPUS = 4096             # vcpu ids 0..4095 (max id above that: refused, as upstream)
MAX_BLOB = 64 << 20          # toolstack data and compressed-data chunks are read whole
QEMU_SIGNATURES = (b"DeviceModelRecord0002", b"RemusDeviceModelState")
QEMU_TO_EOF = b"QemuDeviceModelRecord"
SIG_LEN = 21
CONTINUE = Action("continue")
END = Action("end")


def fixed_chunks(spec: Any) -> dict[int, tuple[str, int]]:
    """marker -> (record name, unit length) for every chunk whose length the spec fixes: the
    record types with a marker id (<= 0) and a static ``exact`` length rule. The others (-2,
    -12, -18, tmem) need the walker to read a size first."""
    table: dict[int, tuple[str, int]] = {}
    for rtype in spec.records.values():
        if rtype.id > 0:
            continue
        for rule in rtype.static_length:
            if rule.kind == "exact" and isinstance(rule.arg, int):
                table[rtype.id] = (rtype.name, rule.arg)
    return table


class _Walk:
    """One step of the walk over *ctx*."""

    def __init__(self, engine: Any, ctx: StreamContext) -> None:
        self.engine = engine
        self.source = engine.source
        self.ctx = ctx
        self.ws = ctx.walker_state
        self.state = ctx.state

    # -- helpers ---------------------------------------------------------------------------
    def need(self, n: int, what: str) -> bytes:
        self.ws["unit"] = what
        head = self.source.peek(n)
        if len(head) < n:
            where = self.source.offset
            if not head:
                raise TruncatedError(f"stream ended before the {what} at offset {where:#x}",
                                     offset=where)
            raise TruncatedError(f"stream truncated: {what} needs {n} bytes at offset "
                                 f"{where:#x}, only {len(head)} left", offset=where)
        return head

    def unit(self, name: str, length: int) -> Record:
        ids = self.ws.get("ids")
        if ids is None:
            ids = self.ws["ids"] = {r.name: r.id for r in self.ctx.format.spec.records.values()}
        self.ws.pop("unit", None)
        record, _action = self.engine.walker_record(self.ctx, ids[name], length)
        return record

    def fail(self, message: str) -> StreamError:
        return StreamError(message, offset=self.source.offset)

    @property
    def w(self) -> int:
        return self.state["width"] // 8

    # -- phases ----------------------------------------------------------------------------
    def step(self) -> Action:
        phase = self.ws.setdefault("phase", "start")
        return getattr(self, "phase_" + phase)()

    def phase_start(self) -> Action:
        self.need(8, "p2m size")
        head = self.source.peek(64)
        layout = decide(head)
        if self.state["width"]:
            self.state["width_from"] = "option"
            if self.state["width"] != layout.width:
                self.ctx.warning(f"toolstack width {self.state['width']} given, but the stream "
                                 f"looks like a {layout.width}-bit toolstack's "
                                 f"({layout.width_reason.split(': ', 1)[1]})",
                                 offset=self.source.offset, unit="p2m size")
        else:
            self.state["width"], self.state["width_from"] = layout.width, layout.width_reason
        if layout.width != self.state["width"]:
            layout = decide(head, self.state["width"])
        if self.state["guest"]:
            self.state["guest_from"] = "option"
            if self.state["guest"] != layout.guest:
                why = layout.guest_reason.split(": ", 1)[1]
                self.ctx.warning(f"guest type {self.state['guest']} given, but the stream looks "
                                 f"{layout.guest.upper()} ({why})",
                                 offset=self.source.offset, unit="p2m size")
        else:
            self.state["guest"], self.state["guest_from"] = layout.guest, layout.guest_reason
        self.ws["phase"] = "p2m_size"
        return CONTINUE

    def phase_p2m_size(self) -> Action:
        self.need(self.w, "p2m size")
        self.unit(f"P2M_SIZE_{self.state['width']}", self.w)
        self.ws["phase"] = "ext_info" if self.state["guest"] == "pv" else "chunks"
        return CONTINUE

    def phase_ext_info(self) -> Action:
        w = self.w
        head = self.need(w + 4, "PV extended info")
        if head[:w] != b"\xff" * w:
            raise self.fail(f"no PV extended info (expected the signature {'ff' * w}, found "
                            f"{head[:w].hex()}): Xen's 4.x saver always writes it; is this an "
                            "HVM image (--guest hvm)?")
        record = self.unit(f"EXT_INFO_{self.state['width']}", w + 4)
        self.ws["ext_left"] = record.fields["total_len"]
        self.ws["phase"] = "ext_blocks"
        return CONTINUE

    def phase_ext_blocks(self) -> Action:
        left = self.ws["ext_left"]
        if left == 0:
            if not self.state["guest_width"]:
                raise self.fail("the PV extended info has no valid \"vcpu\" block: the guest "
                                "width and vcpu context size are unknown")
            self.ws["phase"] = "p2m_frames"
            return CONTINUE
        if left < 8:
            raise self.fail(f"{left} bytes of PV extended info left, too few for a block "
                            "header (8 bytes): its total length is wrong")
        head = self.need(8, "extended-info block header")
        block_id, size = head[:4], struct.unpack_from("<I", head, 4)[0]
        if 8 + size > left:
            raise self.fail(f"extended-info block {block_id!r} of {size} bytes overruns the "
                            f"extended info by {8 + size - left} bytes")
        name = {b"vcpu": "EXT_VCPU", b"extv": "EXT_EXTV", b"xcnt": "EXT_XCNT"}.get(
            block_id, "EXT_UNKNOWN")
        self.unit(name, 8 + size)
        self.ws["ext_left"] = left - 8 - size
        return CONTINUE

    def phase_p2m_frames(self) -> Action:
        fpp = PAGE // self.state["guest_width"]
        entries = (self.state["p2m_size"] - 1) // fpp + 1
        self.unit(f"P2M_FRAMES_{self.state['width']}", entries * self.w)
        self.ws["phase"] = "chunks"
        return CONTINUE

    def phase_chunks(self) -> Action:
        marker = struct.unpack("<i", self.need(4, "chunk marker"))[0]
        width = self.state["width"]
        if marker > 0:
            if marker > MAX_BATCH:
                raise self.fail(f"page batch of {marker} pages exceeds MAX_BATCH "
                                f"({MAX_BATCH})")
            head = self.need(4 + marker * self.w, f"pfn list of a {marker}-page batch")
            words = array("Q" if width == 64 else "I")
            words.frombytes(head[4:])
            if sys.byteorder != "little":
                words.byteswap()
            pages = data_pages(words, self.state["compressed"])
            self.unit(f"PAGE_BATCH_{width}", 4 + marker * self.w + PAGE * pages)
            return CONTINUE
        fixed = self.ws.get("fixed_chunks")
        if fixed is None:
            fixed = self.ws["fixed_chunks"] = fixed_chunks(self.ctx.format.spec)
        if marker in fixed:
            name, length = fixed[marker]
            self.unit(name, length)
            if marker == 0:
                self.ws["phase"] = "pv_unmapped" if self.state["guest"] == "pv" \
                    else "hvm_magic"
            return CONTINUE
        if marker == -2:
            max_id = struct.unpack_from("<i", self.need(8, "vcpu info"), 4)[0]
            if not 0 <= max_id < MAX_VCPUS:
                raise self.fail(f"vcpu info chunk (-2): max vcpu id {max_id} out of range "
                                "0..4095")
            self.unit("VCPU_INFO", 8 + 8 * (max_id // 64 + 1))
            return CONTINUE
        if marker in (-5, -6):
            name = "tmem" if marker == -5 else "tmem extra"
            raise self.fail(f"{name} chunk ({marker}) at offset {self.source.offset:#x}: tmem "
                            "data is not supported (its layout belongs to the hypervisor's "
                            "tmem; Xen's converter refuses it too)")
        if marker == -12:
            size_len = self.w
            head = self.need(4 + size_len, "compressed data chunk")
            size = int.from_bytes(head[4:4 + size_len], "little")
            self._blob_limit(size, "compressed data chunk (-12)")
            self.unit(f"COMPRESSED_DATA_{width}", 4 + size_len + size)
            return CONTINUE
        if marker == -18:
            size = struct.unpack_from("<I", self.need(8, "toolstack chunk"), 4)[0]
            self._blob_limit(size, "toolstack chunk (-18)")
            self.unit("TOOLSTACK", 8 + size)
            return CONTINUE
        raise self.fail(f"unrecognised chunk {marker} (known: page batches 1..{MAX_BATCH}, "
                        "0, -1..-20)")

    def _blob_limit(self, size: int, what: str) -> None:
        if size > MAX_BLOB:
            raise self.fail(f"{what} of {size} bytes: more than the {MAX_BLOB >> 20} MiB "
                            "xenmig accepts for it")

    # -- PV tail ---------------------------------------------------------------------------
    def phase_pv_unmapped(self) -> Action:
        count = struct.unpack("<I", self.need(4, "PV tail (unmapped pfns)"))[0]
        if count > self.state["p2m_size"]:
            raise self.fail(f"PV tail: {count} unmapped pfns, more than the p2m size "
                            f"{self.state['p2m_size']:#x}")
        self.unit(f"UNMAPPED_PFNS_{self.state['width']}", 4 + count * self.w)
        self.ws["vcpu_queue"] = list(self.state["vcpus"])
        if not self.ws["vcpu_queue"]:
            self.ctx.warning("no vcpu info chunk (-2): no vcpu context follows (Xen's 4.x "
                             "saver always lists vcpu 0)", offset=self.source.offset,
                             unit="PV tail")
        self.ws["phase"] = "pv_vcpu"
        self.ws["part"] = "basic"
        return CONTINUE

    def phase_pv_vcpu(self) -> Action:
        queue = self.ws["vcpu_queue"]
        if not queue:
            self.ws["phase"] = "pv_shinfo"
            return CONTINUE
        vcpu = self.state["vcpu"] = queue[0]
        part = self.ws["part"]
        if part == "basic":
            self.need(1, f"vcpu{vcpu} basic context")
            self.unit("VCPU_BASIC", self.state["vcpu_size"])
            self.ws["part"] = "extended"
            return CONTINUE
        if part == "extended":
            self.ws["part"] = "xsave"
            if self.state["extv"]:
                self.need(1, f"vcpu{vcpu} extended context")
                self.unit("VCPU_EXTENDED", 128)
                return CONTINUE
        if self.state["xcnt"]:
            head = self.need(16, f"vcpu{vcpu} xsave state")
            size = struct.unpack_from("<Q", head, 8)[0]
            if size + 16 != self.state["xcnt"]:
                raise self.fail(f"vcpu{vcpu} xsave state of {size:#x} bytes, but the xcnt "
                                f"block announced {self.state['xcnt'] - 16:#x}")
            self.unit("VCPU_XSAVE", 16 + size)
        queue.pop(0)
        self.ws["part"] = "basic"
        return CONTINUE

    def phase_pv_shinfo(self) -> Action:
        self.need(1, "shared info page")
        self.unit("SHARED_INFO", PAGE)
        return self.end_of_checkpoint()

    # -- HVM tail --------------------------------------------------------------------------
    def phase_hvm_magic(self) -> Action:
        self.need(24, "HVM tail (magic pfns)")
        self.unit("HVM_MAGIC_PFNS", 24)
        self.ws["phase"] = "hvm_context"
        return CONTINUE

    def phase_hvm_context(self) -> Action:
        size = struct.unpack("<I", self.need(4, "HVM context"))[0]
        self.unit("HVM_CONTEXT", 4 + size)
        if self.state["skip_qemu"]:
            self.ws["phase"] = "done"
            return END
        self.ws["phase"] = "qemu"
        return CONTINUE

    def phase_qemu(self) -> Action:
        if self.source.at_eof():
            self.ctx.warning("no qemu record after the HVM context: libxl cannot restore "
                             "this image (xenopsd keeps its qemu record separately)",
                             offset=self.source.offset, unit="qemu record")
            self.ws["phase"] = "done"
            return END
        sig = self.need(SIG_LEN, "qemu record signature")[:SIG_LEN]
        if sig in QEMU_SIGNATURES:
            size = struct.unpack_from("<I", self.need(SIG_LEN + 4, "qemu record"), SIG_LEN)[0]
            self.unit("QEMU_RECORD", SIG_LEN + 4 + size)
            return self.end_of_checkpoint()
        if sig == QEMU_TO_EOF:
            self.unit("QEMU_RECORD_TO_EOF", SIG_LEN)
            self.ws["phase"] = "done"
            return END
        raise self.fail(f"unrecognised qemu record signature {sig!r} (expected "
                        "'DeviceModelRecord0002', 'RemusDeviceModelState' or "
                        "'QemuDeviceModelRecord')")

    def end_of_checkpoint(self) -> Action:
        wanted = self.state["max_checkpoints"]
        if self.state["last_checkpoint"] or (wanted and self.state["checkpoint"] >= wanted) \
                or self.source.at_eof():
            self.ws["phase"] = "done"
            return END
        self.state["checkpoint"] += 1
        self.state["vcpus"] = []
        self.state["vcpu_chunks"] = 0
        self.ws["phase"] = "chunks"
        return CONTINUE

    def phase_done(self) -> Action:
        return END


def walk(engine: Any, ctx: StreamContext) -> Action:
    """The ``xenmig_walker`` for format legacy: read one unit (or change phase)."""
    return _Walk(engine, ctx).step()
