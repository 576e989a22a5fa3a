"""A walk of QEMU's device-state stream, fed in chunks as the payload goes by.

The stream (QEMU's ``qemu_save_device_state``, behind ``xen-save-devices-state``): a file
header (``QEVM``, version 3), an optional configuration section naming the machine type,
device sections (a header: type, section id, name, instance, version; then a body in the
device's own layout; then, when QEMU's ``send-section-footer`` is on, a footer), and an EOF
byte. Layouts and type codes come from ``specs/qemu.yaml``.

A body's length is written nowhere: only the device's own load code knows where it ends.
QEMU for Xen turns section footers off, so nothing marks the end of a body either. The walk
therefore reads the first section header at its known place and finds every later one by
scanning for bytes shaped like a section header (type, id, printable name, instance and
version of plausible size, an id not seen before); where a footer with the previous
section's id sits just before, the boundary is confirmed. A body that happens to contain
such bytes would be split in two: the result says how each boundary was found.

Memory and time are bounded: a window of at most the bytes not yet scanned plus one header's
worth, at most :data:`MAX_SECTIONS` sections kept, nothing past :data:`MAX_SCAN` bytes
scanned, and at most :data:`MAX_REJECTED` header-shaped byte runs examined in vain.
"""

from __future__ import annotations

import re

from xenmig_core.engine import Record, StreamContext
from xenmig_core.errors import RecordError
from xenmig_core.spec.layout import BytesReader, Layout

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

MAGIC = 0x5145564D                  # "QEVM"
#: the longest section header: type, id, name length, 255 name bytes, instance, version
MAX_HEADER = 1 + 4 + 1 + 255 + 4 + 4
FOOTER_SIZE = 5
MAX_SECTIONS = 4096
#: bytes scanned at most (real device states are tens to hundreds of KiB)
MAX_SCAN = 64 << 20
MAX_MACHINE_NAME = 1024
#: header-shaped byte runs examined and rejected at most (real bodies hold a handful)
MAX_REJECTED = 1 << 16
#: a section header candidate: START or FULL, an id below 65536, a non-empty name
_CANDIDATE = re.compile(rb"[\x01\x04]\x00\x00..[\x01-\xff]", re.DOTALL)
_NAME = re.compile(rb"[A-Za-z0-9_.:/@+\-]+\Z")
_FOOTER = 0x7E

NOTE = ("section bodies have per-device layouts xenmig does not know, and QEMU for Xen "
        "writes no section footers: after the first, each section is where a section "
        "header was found by scanning (a body holding such bytes would look like two "
        "sections)")
FOOTER_NOTE = ("section bodies have per-device layouts xenmig does not know; every section "
               "found by scanning for headers ends with its footer, which confirms it")


class Layouts:
    """The layouts and section type codes of specs/qemu.yaml, from a format's spec."""

    def __init__(self, types: dict[str, Layout], codes: dict[str, int]) -> None:
        self.header = types["qemu_file_header"]
        self.configuration = types["qemu_configuration"]
        self.section = types["qemu_section_header"]
        self.codes = codes

    @classmethod
    def of(cls, ctx: StreamContext) -> Layouts | None:
        spec = ctx.format.spec
        if "qemu_section_header" not in spec.types or "qemu_section_type" not in spec.enums:
            return None                 # a variant without the types (a COLO back channel)
        codes = {e.name: v for v, e in spec.enums["qemu_section_type"].entries.items()}
        return cls(spec.types, codes)


class DeviceStateScanner:
    """Fed the payload of one EMULATOR_CONTEXT record; :meth:`finish` stores the result in
    ``record.fields['device_state']`` and ``ctx.state['qemu_device_state']``."""

    def __init__(self, record: Record, ctx: StreamContext, layouts: Layouts) -> None:
        self.record = record
        self.ctx = ctx
        self.layouts = layouts
        self.window = bytearray()
        self.base = 0                   # payload offset of window[0]
        self.total = 0                  # payload bytes fed
        self.scan_from = 0              # payload offset where the next search starts
        self.phase = "header"           # header, first, body, eof, done
        self.result: dict[str, Any] = {"format_version": None, "machine": None,
                                       "sections": []}
        self.current: dict[str, Any] | None = None
        self.body_start = 0
        self.ids: set[int] = set()
        self.dropped = 0
        self.rejected = 0
        self.walk: str | None = None

    # -- feeding -----------------------------------------------------------------------
    def feed(self, chunk: memoryview) -> None:
        start = self.total
        self.total += len(chunk)
        if self.phase in ("done", "eof"):     # nothing more to find: only count the bytes
            return
        if start >= MAX_SCAN:
            self._stop(f"not scanned beyond {MAX_SCAN} bytes", start)
            return
        self.window += chunk
        self._advance(final=False)
        self._trim()

    def finish(self) -> None:
        if self.phase != "done":
            self._advance(final=True)
        if self.phase == "body":
            self._close_at_end()
        elif self.phase == "eof":
            self._after_eof(self.scan_from)
        elif self.phase in ("header", "first"):
            self._stop("the device state ends before its first section or EOF",
                       self.total, warn=True)
        result = self.result
        if any(s.get("footer") for s in result["sections"]):
            self.ctx.warning("QEMU device state has section footers: QEMU for Xen writes "
                             "none and, unless told to expect them (migration property "
                             "send-section-footer), refuses the first one (\"Unknown savevm "
                             "section type 126\")", field="blob")
        if self.dropped:
            result["sections_dropped"] = self.dropped
        result["walk"] = self.walk or "complete"
        if len(result["sections"]) > 1:
            confirmed = all(s.get("footer") for s in result["sections"])
            result["note"] = FOOTER_NOTE if confirmed else NOTE
        self.record.fields["device_state"] = result
        self.ctx.state["qemu_device_state"] = result

    # -- the walk ----------------------------------------------------------------------
    def _at(self, offset: int, size: int) -> bytes | None:
        """*size* bytes at payload *offset*, or None when not all are in the window."""
        lo = offset - self.base
        if lo < 0 or lo + size > len(self.window):
            return None
        return bytes(self.window[lo:lo + size])

    def _decode(self, layout: Layout, offset: int, final: bool) -> dict[str, Any] | None:
        """*layout* decoded at *offset*; None when more bytes may come; raises RecordError
        when the data cannot hold it."""
        data = bytes(self.window[offset - self.base:offset - self.base + MAX_HEADER])
        try:
            reader = BytesReader(data)
            fields = layout.decode(reader, ">")
        except RecordError:
            if final or len(data) >= MAX_HEADER:
                raise
            return None
        fields["_size"] = len(data) - reader.remaining
        return fields

    def _advance(self, final: bool) -> None:
        while self.phase not in ("done", "eof"):
            progressed = {"header": self._header, "first": self._first,
                          "body": self._body}[self.phase](final)
            if not progressed:
                return

    def _header(self, final: bool) -> bool:
        head = self._at(0, 8)
        if head is None:
            return False
        fields = self.layouts.header.decode(BytesReader(head), ">")
        if fields["magic"] != MAGIC:
            self._stop("not a QEMU device state (no QEVM magic): not walked", 0)
            return False
        self.result["format_version"] = fields["version"]
        if fields["version"] != 3:
            self._stop(f"QEMU format version {fields['version']}: only version 3 is walked", 4)
            return False
        self.phase, self.scan_from = "first", 8
        return True

    def _first(self, final: bool) -> bool:
        """The unit right after the header (or the configuration): its place is certain."""
        offset = self.scan_from
        kind = self._at(offset, 1)
        if kind is None:
            return False
        code = kind[0]
        codes = self.layouts.codes
        if code == codes["EOF"]:
            self.phase = "eof"
            return False
        try:
            if code == codes["CONFIGURATION"] and self.result["machine"] is None:
                length = self._at(offset + 1, 4)
                if length is None:
                    return False
                if int.from_bytes(length, "big") > MAX_MACHINE_NAME:
                    self._stop("configuration section with a machine type name of "
                               f"{int.from_bytes(length, 'big')} bytes", offset, warn=True)
                    return False
                config = self._decode(self.layouts.configuration, offset, final)
                if config is None:
                    return False
                self.result["machine"] = bytes(config["name"]).decode("latin-1")
                self.scan_from = offset + config["_size"]
                self.ctx.warning(
                    f"QEMU device state has a configuration section (machine type "
                    f"{self.result['machine']!r}): QEMU for Xen sends none and, unless "
                    "told to expect one (migration property send-configuration), refuses "
                    "it (\"Unknown savevm section type 7\")", field="blob")
                return True
            if code in (codes["SECTION_FULL"], codes["SECTION_START"]):
                header = self._decode(self.layouts.section, offset, final)
                if header is None:
                    return False
                self._open(header, offset, "header")
                return True
        except RecordError:
            self._stop("the device state ends inside its first section header", offset,
                       warn=True)
            return False
        name = self.ctx.format.spec.enums["qemu_section_type"].name_of(code)
        if code in (codes["SECTION_PART"], codes["SECTION_END"]):
            self.ctx.error(f"QEMU device state: a {name} section at device-state offset "
                           f"{offset:#x}, continuing a section never started: QEMU's load "
                           "refuses it (\"Unknown savevm section\")", field="blob")
            self._stop(f"a {name} section first", offset)
            return False
        if code == codes["COMMAND"]:
            self._stop("a migration command where a device section was expected", offset,
                       warn=True)
            return False
        self.ctx.error(f"QEMU device state: section type {code:#x} ({name}) at device-state "
                       f"offset {offset:#x}, where QEMU expects a device section or EOF: "
                       "QEMU's load refuses it (\"Unknown savevm section type\")",
                       field="blob")
        self._stop(f"unknown section type {code:#x}", offset)
        return False

    def _body(self, final: bool) -> bool:
        """Search the current body for the next section header."""
        while True:
            lo = self.scan_from - self.base
            match = _CANDIDATE.search(self.window, max(lo, 0))
            if match is None:
                break
            offset = self.base + match.start()
            try:
                header = self._decode(self.layouts.section, offset, final)
            except RecordError:
                header = {}
            if header is None:                  # more bytes needed to judge it
                self.scan_from = offset
                return False
            if header and self._plausible(header):
                self._close(offset)
                self._open(header, offset, "scan")
                continue
            self.rejected += 1
            if self.rejected > MAX_REJECTED:
                self._stop(f"more than {MAX_REJECTED} header-shaped byte runs that are not "
                           "section headers: scan abandoned", offset, warn=True)
                return False
            self.scan_from = offset + 1
        # nothing here; the last bytes may start a header that the next chunk completes
        self.scan_from = max(self.scan_from, self.base + len(self.window) - MAX_HEADER)
        return False

    def _plausible(self, header: dict[str, Any]) -> bool:
        return (header["section_id"] not in self.ids and header["instance"] < 0x10000
                and header["version"] < 0x10000
                and _NAME.match(bytes(header["name"])) is not None)

    def _open(self, header: dict[str, Any], offset: int, found: str) -> None:
        self.ids.add(header["section_id"])
        section = {"id": header["section_id"],
                   "name": bytes(header["name"]).decode("latin-1"),
                   "instance": header["instance"], "version": header["version"],
                   "offset": offset, "found_by": found}
        if header["type"] != self.layouts.codes["SECTION_FULL"]:
            section["type"] = self.ctx.format.spec.enums["qemu_section_type"].name_of(
                header["type"])
        if len(self.result["sections"]) < MAX_SECTIONS:
            self.result["sections"].append(section)
        else:
            self.dropped += 1
        self.current = section
        self.body_start = offset + header["_size"]
        self.scan_from = self.body_start
        self.phase = "body"

    def _close(self, end: int) -> None:
        """The current section's body ends at payload offset *end* (a footer before it, with
        the section's id, is not part of the body)."""
        assert self.current is not None
        footer = self._at(end - FOOTER_SIZE, FOOTER_SIZE)
        if footer is not None and end - FOOTER_SIZE >= self.body_start and \
                footer[0] == _FOOTER and int.from_bytes(footer[1:], "big") == \
                self.current["id"]:
            self.current["footer"] = True
            end -= FOOTER_SIZE
        self.current["length"] = end - self.body_start

    def _close_at_end(self) -> None:
        """At the end of the payload: the last section runs up to the EOF byte."""
        last = self._at(self.total - 1, 1)
        if last is not None and last[0] == self.layouts.codes["EOF"] \
                and self.total - 1 >= self.body_start:
            self._close(self.total - 1)
            return
        self._close(self.total)
        self.ctx.warning("QEMU device state does not end with QEMU's EOF marker (0x00): cut "
                         "short, or followed by other bytes; QEMU's load fails if it is cut",
                         field="blob")
        self.walk = "complete up to the end, but no EOF marker at the end"

    def _after_eof(self, offset: int) -> None:
        extra = self.total - offset - 1
        if extra > 0:
            self.ctx.warning(f"{extra} bytes after QEMU's EOF marker in the device state "
                             "(QEMU stops reading at EOF)", field="blob")

    def _stop(self, why: str, offset: int, warn: bool = False) -> None:
        self.phase = "done"
        self.window = bytearray()
        self.walk = f"stopped at device-state offset {offset:#x}: {why}"
        if warn:
            self.ctx.warning(f"QEMU device state: {why} (device-state offset {offset:#x})",
                             field="blob")

    def _trim(self) -> None:
        """Drop what no later step needs: bytes before the search point, keeping a footer's
        worth before it (a boundary's footer check)."""
        if self.phase != "body":
            return
        keep = self.scan_from - FOOTER_SIZE
        drop = keep - self.base
        if drop > 0:
            del self.window[:drop]
            self.base += drop


def scanner_for(record: Record, ctx: StreamContext) -> DeviceStateScanner | None:
    """The ``xenmig_payload_scanner`` factory: a scanner when the format has the layouts."""
    layouts = Layouts.of(ctx)
    return DeviceStateScanner(record, ctx, layouts) if layouts is not None else None
