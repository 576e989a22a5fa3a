"""Legacy image -> libxc / libxl / xl v2 stream, byte-identical to what Xen's converter
writes apart from the documented differences listed below.

:class:`LegacyConverter` is a :class:`~xenmig_core.engine.Consumer` of one engine walk of
the legacy image (``specs/legacy.yaml`` + the walker): each unit becomes its v2 record(s)
the moment it is read, page contents and other blobs are streamed from the engine's payload
buffer straight to the output, so memory stays bounded whatever the guest's size.

The mapping follows Xen's ``convert-legacy-stream`` (facts: legacy-facts.md section 2),
with these deliberate differences (docs/formats.md, "Legacy images"): the domain header's
``xen_minor`` is this converter's version (:data:`CONVERTER_VERSION`) instead of 1; a batch
made only of filler words writes no PAGE_DATA (upstream writes one with count 0, which its
own verifier rejects); Remus compression (-13, and -12 chunks of FULL or unchanged pages) is
accepted where upstream stops; a repeated -2 chunk is merged into the set of online vcpus
and a repeated parameter chunk keeps its last value at its first position (upstream appends
both); and memory is capped (:data:`MAX_FORMAT_B_PENDING`, :data:`MAX_XENSTORE`). As
upstream, only the first checkpoint of a Remus image is converted.

An xl header in front of the image (read with the layouts, byte order and checks of
``specs/xl.yaml``'s headers, keeping its bytes so that they can be copied exactly) is
dropped for libxc/libxl output and copied with the stream-v2 mandatory flag set for xl
output; xl output of a bare image gets a new header with no config.
"""

from __future__ import annotations

import struct
from collections import deque

from xenmig_core.convert import ConvertOptions
from xenmig_core.diagnostics import ERROR, Diagnostic
from xenmig_core.engine import Consumer, Engine, Record, StreamContext, WalkResult
from xenmig_core.engine.consumer import MultiConsumer
from xenmig_core.errors import StreamError
from xenmig_core.registry import Registry
from xenmig_core.source import ByteSource
from xenmig_core.spec.layout import BytesReader
from xenmig_core.spec.model import FormatSpec, HeaderSpec
from xenmig_core.writer import StreamWriter
from xenmig_legacy.compression import EMPTY, FULL, iter_pages
from xenmig_legacy.detect import FORMAT
from xenmig_legacy.pfnwords import to_v2
from xenmig_legacy.physmap import PhysmapError, iter_physmap, xenstore_data
from xenmig_legacy.walker import FILLER, FIRST_DATALESS_TYPE, TYPE_MASK

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

#: Written as the libxc domain header's xen_minor (xen_major 0 = "converted"); Xen's own
#: converter writes 1.
CONVERTER_VERSION = 2
TARGETS = ("libxc", "libxl", "xl")
XL_STREAM_V2 = 2            # xl mandatory flag bit 1 (specs/xl.yaml enum xl_mandatory)
XL_BYTEORDER = 0x01020304
STRUCT_ORDER = {"little": "<", "big": ">"}
LIBXL_LEGACY_OPTION = 2
#: Format-B pfns whose data have not arrived yet (each batch adds up to 1024): beyond this
#: many (1 GiB of guest pages) the image is refused rather than the queue growing further.
MAX_FORMAT_B_PENDING = 1 << 18
#: libxl physmap data collected from -18 chunks for EMULATOR_XENSTORE_DATA (real ones hold
#: a few hundred bytes).
MAX_XENSTORE = 4 << 20
QEMU_PREFIXED = ("DeviceModelRecord0002", "RemusDeviceModelState")


def convert_word(word: int) -> int:
    """A legacy pfn word as a v2 PAGE_DATA word: type to bits 63-60, pfn bits 27-0 kept."""
    return ((word & TYPE_MASK) << 32) | (word & 0x0FFFFFFF)


class XlHeader:
    """The xl save-file header as ``specs/xl.yaml`` lays it out (headers ``header``,
    ``flags``, ``optional_data``), read and rewritten with the spec's layouts, byte order
    and checks (so its 16 MiB cap on optional data applies here too)."""

    def __init__(self, spec: FormatSpec) -> None:
        self.spec = spec
        self.magic = spec.magic[0].data
        heads = {h.name: h for h in spec.headers}
        self.header, self.flags = heads["header"], heads["flags"]
        size = self.header.layout.static_size
        flags_size = self.flags.layout.static_size
        if size is None or flags_size is None or not self.magic:
            raise StreamError("the xl spec's header is not of fixed size")
        self.size = size + flags_size

    def order(self, values: dict[str, Any]) -> str:
        """The struct prefix ("<" or ">") of the stream's byte order, by the spec's rule."""
        rule = self.header.byte_order_from
        name = str(rule.evaluate(values)) if rule is not None else self.header.byte_order
        return STRUCT_ORDER[name]

    def read(self, source: ByteSource) -> tuple[bytes, dict[str, Any]] | None:
        """If *source* starts with an xl header, consume it (header + optional data) and
        return its bytes and decoded fields; else consume nothing and return None.
        StreamError when a check the spec marks fatal fails."""
        if source.peek(len(self.magic)) != self.magic:
            return None
        head = source.read_exact(self.size, "xl header")
        reader = BytesReader(head)
        values = self.header.layout.decode(reader, STRUCT_ORDER[self.header.byte_order])
        self._fatal(self.header, values, 0)
        order = self.order(values)
        values.update(self.flags.layout.decode(reader, order))
        self._fatal(self.flags, values, len(self.magic))
        optional = source.read_exact(values["optional_data_len"], "xl header optional data")
        values["order"] = order
        return head + optional, values

    def _fatal(self, header: HeaderSpec, values: dict[str, Any], offset: int) -> None:
        for fieldname, message, severity in header.layout.check(values, values):
            if severity == ERROR and fieldname in header.fatal_fields:
                raise StreamError(f"xl header: {fieldname}: {message}", offset=offset)

    def rewrite(self, original: tuple[bytes, dict[str, Any]] | None, stream_v2: bool) -> bytes:
        """The xl header to write: *original* with the stream-v2 flag set (or left alone),
        or a new little-endian one with no config (optional data: a zero config length)."""
        if original is None:
            values = {"magic": self.magic, "byteorder": XL_BYTEORDER,
                      "mandatory_flags": XL_STREAM_V2, "optional_flags": 0,
                      "optional_data_len": 4}
            return self._encode(values, "<") + bytes(4)
        raw, values = original
        values = dict(values)
        if stream_v2:
            values["mandatory_flags"] |= XL_STREAM_V2
        return self._encode(values, values["order"]) + raw[self.size:]

    def _encode(self, values: dict[str, Any], order: str) -> bytes:
        return self.header.layout.encode(values, STRUCT_ORDER[self.header.byte_order]) + \
            self.flags.layout.encode(values, order)


class LegacyConverter(Consumer):
    """Writes the v2 stream for one walk of a legacy image (see the module docstring).

    ``options.target``: libxc, libxl or xl. ``options.extra``: ``"xl_header"`` is ``"auto"``
    (default: copy with the v2 flag for xl output, drop otherwise) or ``"copy"`` (copy it,
    unchanged for libxc output: what Xen's converter does with ``-x -f libxc``);
    ``"require_xl_header"`` makes a missing xl header an error (``-x``); ``"observer"`` is a
    Consumer that sees the same walk (``-v``)."""

    def __init__(self, registry: Registry, options: ConvertOptions) -> None:
        if options.target not in TARGETS:
            raise StreamError(f"cannot convert a legacy image to {options.target}")
        self.registry = registry
        self.options = options
        self.target = options.target
        self.libxl_out = options.target in ("libxl", "xl")
        self.xl_mode = options.extra.get("xl_header", "auto")
        self.output_format: str | None = self.target
        if self.xl_mode == "copy" and self.target == "libxc":
            self.output_format = None  # xl header + libxc stream: no format describes that
        self.out: Any = None
        self.libxc_spec: FormatSpec = registry.specs["libxc"]
        self.libxl_spec: FormatSpec | None = registry.specs.get("libxl")
        params = registry.specs["libxc"].enums["hvm_param"].entries.values()
        self.param_index = {e.name: e.value for e in params}
        self.param_names = registry.specs[FORMAT].enums["param_chunk"]
        self.params: dict[int, int] = {}  # v2 index -> last value, in first-seen order
        self.xenstore = bytearray()
        self.padding = 0          # of the record whose payload is being streamed
        self.streaming = False
        self.done = False
        self.libxc_ended = False
        self.format_b_words: deque[int] = deque()
        self.widen = False        # stream u32 words as u64 (32-bit p2m frame list)
        #: with a regular input file and an output that copies from one (see run): page
        #: contents and other verbatim payloads are copied by the kernel, never read here
        #: (copy_later: in the background, where the output can)
        self.copy_from: Any = None
        self.copy_later: Any = None
        self.input_fd: int | None = None
        self.source: ByteSource | None = None
        self.copied = False       # the current record's payload was copied already
        self.carry = b""
        self.legacy: StreamContext | None = None
        self.source_label = "legacy image"

    # -- the whole run ---------------------------------------------------------------------
    def run(self, source: ByteSource, out: Any) -> WalkResult:
        """Walk *source* (an optional xl header, then a legacy image) once, writing to *out*."""
        self.out = out
        self.source = source
        self.input_fd = source.file_fd()
        if self.input_fd is not None:
            self.copy_from = getattr(out, "copy_from", None)
            self.copy_later = getattr(out, "copy_later", None)
        self.libxc = StreamWriter(out, self.libxc_spec)
        if self.libxl_out:
            if self.libxl_spec is None:
                raise StreamError("no libxl format is loaded: cannot write libxl output")
            self.libxl = StreamWriter(out, self.libxl_spec)
        xl_spec = self.registry.specs.get("xl")
        xl_format = XlHeader(xl_spec) if xl_spec is not None else None
        xl = xl_format.read(source) if xl_format is not None else None
        self.source_label = "legacy image behind an xl header" if xl else "legacy image"
        if xl is None and self.options.extra.get("require_xl_header"):
            raise StreamError("no xl header at the start of the input", offset=0)
        if xl is not None and xl[1]["mandatory_flags"] & XL_STREAM_V2:
            raise StreamError("the xl header says a v2 (libxl) stream follows: "
                              "nothing to convert", offset=len(xl_format.magic) + 4)
        if self.target == "xl" or (xl is not None and self.xl_mode == "copy"):
            if xl_format is None:
                raise StreamError("no xl format is loaded: cannot write an xl header")
            self.out.write(xl_format.rewrite(xl, stream_v2=self.target != "libxc"))
        params = dict(self.options.params)
        params["skip_qemu"] = bool(params.get("skip_qemu")) and self.target == "libxc"
        params["max_checkpoints"] = 1
        observer = self.options.extra.get("observer")
        consumer = self if observer is None else MultiConsumer(self, observer)
        engine = Engine(self.registry, source, consumer, params=params,
                        examine_trailing=False)
        result = engine.run(FORMAT)
        if result.valid and not self.done:
            self._fail_late(result, "the image ended before its conversion was complete")
        return result

    def _fail_late(self, result: WalkResult, message: str) -> None:
        result.diagnostics.append(Diagnostic(ERROR, message, offset=result.end_offset,
                                             format=FORMAT))

    # -- consumer callbacks ----------------------------------------------------------------
    def on_context_start(self, ctx: StreamContext) -> None:
        self.legacy = ctx

    def on_diagnostic(self, diagnostic: Any) -> None:
        if diagnostic.is_error:
            self.done = True  # write nothing more: the conversion has failed

    def wants_payload(self, record: Record) -> bool:
        return self.streaming and not self.copied

    def on_payload(self, record: Record, offset: int, chunk: memoryview) -> None:
        if self.widen:
            self._widen(chunk)
        else:
            self.out.write(chunk)

    def _widen(self, chunk: memoryview) -> None:
        """Write u32 words as u64 (zero-extended), whatever the chunk boundaries."""
        data = self.carry + bytes(chunk)
        whole = len(data) - len(data) % 4
        self.carry = data[whole:]
        out = bytearray(2 * whole)
        for i in range(4):
            out[i::8] = data[i:whole:4]
        self.out.write(out)

    def on_record(self, record: Record) -> None:
        self.streaming = False
        if self.done:
            return
        handler = getattr(self, "unit_" + record.name.removesuffix("_32").removesuffix("_64"),
                          None)
        if handler is not None:
            handler(record, record.context.state)
            if self.streaming and not self.widen and self.copy_from is not None:
                self._copy_payload(record)
        elif record.type_id in self.param_names.entries:
            index = self.param_index[self.param_names.name_of(record.type_id)]
            self.params[index] = record.fields["value"]

    def _copy_payload(self, record: Record) -> None:
        """Copy the payload that follows *record*'s fields in the input file straight to
        the output (the engine then seeks past it), in the background where the output
        can (``copy_later``: the walk goes on while the kernel copies). A payload the
        file does not hold whole is left to the engine, which reports the truncation as
        it always does."""
        assert self.source is not None and self.input_fd is not None
        offset, length = self.source.offset, record.payload_length
        if not length or not self.source.holds(length):
            return
        if self.copy_later is not None:
            self.copy_later(self.input_fd, offset, length)
        elif self.copy_from(self.input_fd, offset, length) != length:
            raise StreamError(f"the input file shrank while it was read: {length} bytes "
                              f"expected at offset {offset:#x}", offset=offset)
        self.copied = True

    def on_record_end(self, record: Record) -> None:
        self.widen = False
        self.copied = False
        if self.streaming:
            self.out.write(bytes(self.padding))
            self.streaming = False
            after = getattr(self, "after_" + record.name, None)
            if after is not None and not self.done:
                after(record.context.state)

    # -- helpers ---------------------------------------------------------------------------
    def stream(self, writer: StreamWriter, name: str, fields: dict[str, Any], length: int
               ) -> None:
        """Start record *name*; its payload (*length* bytes) follows from the engine."""
        self.padding = writer.start_record(name, fields, payload_length=length)
        self.streaming = True

    def libxc_end(self) -> None:
        self.libxc.record("END")
        self.libxc_ended = True
        if self.libxl_out and self.xenstore:
            self.libxl.record("EMULATOR_XENSTORE_DATA", {"emulator_id": 0, "index": 0},
                              payload=bytes(self.xenstore))

    def finish(self) -> None:
        if self.libxl_out:
            self.libxl.record("END")
        self.done = True

    # -- units -----------------------------------------------------------------------------
    def unit_P2M_SIZE(self, record: Record, state: dict[str, Any]) -> None:
        if self.libxl_out:
            self.libxl.header("header", {"ident": 0x4C6962786C466D74, "version": 2,
                                         "options": LIBXL_LEGACY_OPTION})
            self.libxl.record("LIBXC_CONTEXT")
        self.libxc.header("image_header", {"marker": 0xFFFFFFFFFFFFFFFF, "id": 0x58454E46,
                                           "version": 3, "options": 0})
        pv = state["guest"] == "pv"
        self.libxc.header("domain_header", {"type": 1 if pv else 2, "page_shift": 12,
                                            "xen_major": 0, "xen_minor": CONVERTER_VERSION})
        if not pv:
            self.libxc.record("STATIC_DATA_END")

    def unit_EXT_VCPU(self, record: Record, state: dict[str, Any]) -> None:
        if not state["guest_width"]:
            raise StreamError("unable to determine the guest width and page-table levels "
                              f"from a vcpu block of {record.fields['size']:#x} bytes")
        self.libxc.record("X86_PV_INFO", {"guest_width": state["guest_width"],
                                          "pt_levels": state["pt_levels"]})

    def unit_EXT_UNKNOWN(self, record: Record, state: dict[str, Any]) -> None:
        raise StreamError(f"unrecognised extended-info block {record.fields['block_id']!r}: "
                          "Xen's converter refuses it, and so does this one")

    def unit_P2M_FRAMES(self, record: Record, state: dict[str, Any]) -> None:
        """Frames are streamed: u64 entries as they are, u32 ones zero-extended on the way."""
        self.libxc.record("STATIC_DATA_END")
        entries = record.payload_length // (state["width"] // 8)
        self.widen = state["width"] == 32
        self.stream(self.libxc, "X86_PV_P2M_FRAMES",
                    {"p2m_start_pfn": 0, "p2m_end_pfn": state["p2m_size"] - 1}, 8 * entries)

    def unit_PAGE_BATCH(self, record: Record, state: dict[str, Any]) -> None:
        words = record.fields["pfn"]
        if FILLER in words:
            words = [w for w in words if w != FILLER]
        if state["compressed"]:
            self._format_b_batch(words)
            return
        if not len(words):
            return  # all fillers: upstream writes a count-0 PAGE_DATA that nothing accepts
        pages = record.fields["data_pages"]
        self.stream(self.libxc, "PAGE_DATA", {"count": len(words), "pfn": to_v2(words)},
                    4096 * pages)

    def _format_b_batch(self, words: Any) -> None:
        carrying = [w for w in words if (w & TYPE_MASK) < FIRST_DATALESS_TYPE]
        dataless = [w for w in words if (w & TYPE_MASK) >= FIRST_DATALESS_TYPE]
        if len(self.format_b_words) + len(carrying) > MAX_FORMAT_B_PENDING:
            raise StreamError(f"more than {MAX_FORMAT_B_PENDING} format-B pages announced "
                              "whose data have not arrived in -12 chunks")
        self.format_b_words.extend(carrying)
        if dataless:
            self.libxc.record("PAGE_DATA", {"count": len(dataless),
                                            "pfn": [convert_word(w) for w in dataless]})

    def unit_COMPRESSED_DATA(self, record: Record, state: dict[str, Any]) -> None:
        data = record.fields["data"]
        for entry in iter_pages(data):  # lazily: a chunk can hold millions of 1-byte entries
            if not self.format_b_words:
                raise StreamError("compressed page without an announced pfn")
            word = self.format_b_words.popleft()
            if entry.kind == EMPTY:
                continue  # unchanged since it was sent: nothing to write
            if entry.kind != FULL:
                raise StreamError(f"pfn {word & 0x0FFFFFFF:#x}: a page delta can only be "
                                  "applied to the previous checkpoint's copy, which a "
                                  "single-checkpoint conversion does not keep")
            self.libxc.record("PAGE_DATA", {"count": 1, "pfn": [convert_word(word)]},
                              payload=bytes(data[entry.start + 1:entry.end]))

    def unit_TSC_INFO(self, record: Record, state: dict[str, Any]) -> None:
        f = record.fields
        self.libxc.record("X86_TSC_INFO", {"mode": f["mode"], "khz": f["khz"],
                                           "nsec": f["nsec"],
                                           "incarnation": f["incarnation"]})

    def unit_TOOLSTACK(self, record: Record, state: dict[str, Any]) -> None:
        data = record.fields["data"]
        if not self.libxl_out or not data:
            return
        more = bytearray()
        try:
            for entry in iter_physmap(data, state["width"]):   # one entry held at a time
                more += xenstore_data([entry])
                if len(self.xenstore) + len(more) > MAX_XENSTORE:
                    raise StreamError(f"libxl toolstack data: more than "
                                      f"{MAX_XENSTORE >> 20} MiB of physmap entries in all")
        except PhysmapError as exc:
            raise StreamError(f"libxl toolstack data: {exc}") from None
        self.xenstore += more

    def unit_END(self, record: Record, state: dict[str, Any]) -> None:
        if self.params:
            if state["guest"] == "pv":
                raise StreamError("HVM-only param in PV stream")
            self.libxc.record("HVM_PARAMS", {"count": len(self.params), "params": [
                {"index": i, "value": v} for i, v in self.params.items()]})
        if self.format_b_words:
            raise StreamError(f"{len(self.format_b_words)} pages announced in format B "
                              "never arrived")

    def unit_VCPU_BASIC(self, record: Record, state: dict[str, Any]) -> None:
        self.stream(self.libxc, "X86_PV_VCPU_BASIC", {"vcpu_id": state["vcpu"]},
                    record.payload_length)

    def unit_VCPU_EXTENDED(self, record: Record, state: dict[str, Any]) -> None:
        self.stream(self.libxc, "X86_PV_VCPU_EXTENDED", {"vcpu_id": state["vcpu"]},
                    record.payload_length)

    def unit_VCPU_XSAVE(self, record: Record, state: dict[str, Any]) -> None:
        self.stream(self.libxc, "X86_PV_VCPU_XSAVE", {"vcpu_id": state["vcpu"]},
                    record.payload_length)

    def unit_SHARED_INFO(self, record: Record, state: dict[str, Any]) -> None:
        self.stream(self.libxc, "SHARED_INFO", {}, record.payload_length)

    def after_SHARED_INFO(self, state: dict[str, Any]) -> None:
        self.libxc_end()
        self.finish()

    def unit_HVM_MAGIC_PFNS(self, record: Record, state: dict[str, Any]) -> None:
        f = record.fields
        self.libxc.record("HVM_PARAMS", {"count": 3, "params": [
            {"index": 5, "value": f["ioreq_pfn"]}, {"index": 6, "value": f["bufioreq_pfn"]},
            {"index": 1, "value": f["store_pfn"]}]})

    def unit_HVM_CONTEXT(self, record: Record, state: dict[str, Any]) -> None:
        self.stream(self.libxc, "HVM_CONTEXT", {}, record.payload_length)

    def after_HVM_CONTEXT(self, state: dict[str, Any]) -> None:
        self.libxc_end()
        if state["skip_qemu"]:
            self.done = True

    def unit_QEMU_RECORD(self, record: Record, state: dict[str, Any]) -> None:
        if self.libxl_out:
            self.stream(self.libxl, "EMULATOR_CONTEXT", {"emulator_id": 0, "index": 0},
                        record.payload_length)
            return
        self.out.write(bytes(record.fields["signature"]) +
                       struct.pack("<I", record.fields["size"]))
        self.streaming = True
        self.padding = 0

    def after_QEMU_RECORD(self, state: dict[str, Any]) -> None:
        self.finish()

    def unit_QEMU_RECORD_TO_EOF(self, record: Record, state: dict[str, Any]) -> None:
        raise StreamError("unrecognised qemu signature 'QemuDeviceModelRecord' (an old-style "
                          "record without a length): Xen's converter refuses it too")

    def on_context_end(self, ctx: StreamContext) -> None:
        if ctx is not self.legacy or self.done:
            return
        if ctx.state["guest"] == "hvm" and self.libxc_ended and not ctx.state["qemu"]:
            what = "libxl output" if self.libxl_out else "libxc output without --skip-qemu"
            ctx.error(f"no qemu record after the HVM context: {what} needs one",
                      record=None, offset=None, unit="qemu record")


def factory(registry: Registry, options: ConvertOptions) -> LegacyConverter:
    """The ``xenmig_converter`` factory for legacy sources."""
    return LegacyConverter(registry, options)
