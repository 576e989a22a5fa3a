"""Writing streams: headers and records with correct framing and padding, either byte order.

A :class:`StreamWriter` writes one format described by a spec: ``header(name, fields)``
encodes a header with its spec layout; ``record(name, fields=..., payload=...)`` encodes a
record body from fields (or takes raw ``body`` bytes), frames it with the type and length in
the stream's byte order, and pads it with zeros to the format's alignment. Overrides
(``length``, ``padding``, ``type_id``) exist so that tests can write deliberately broken
streams. With ``follow_headers=True``, a header whose spec has ``byte_order_from`` switches the
records that follow to the byte order its fields announce, exactly as the reader does (the
default keeps the order given, so that a test can write a stream whose header lies).
"""

from __future__ import annotations

import struct
from collections import ChainMap

from xenmig_core.errors import UsageError
from xenmig_core.spec.expr import FUNCTIONS
from xenmig_core.spec.layout import ORDER_PREFIXES
from xenmig_core.spec.model import FormatSpec

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

_ORDERS = ORDER_PREFIXES


class StreamWriter:
    """Writes headers and records of format *spec* to *out* (a binary file)."""

    def __init__(self, out: BinaryIO, spec: FormatSpec, byte_order: str = "little", *,
                 follow_headers: bool = False) -> None:
        self.out = out
        self.spec = spec
        self.order = _ORDERS[byte_order]
        self.follow_headers = follow_headers
        self.written = 0

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.written += len(data)

    def raw(self, data: bytes) -> None:
        """Write bytes as they are (a nested stream's bytes, deliberate garbage)."""
        self._write(data)

    def header(self, name: str, fields: dict[str, Any]) -> bytes:
        """Encode and write header *name*; returns the bytes written."""
        for header in self.spec.headers:
            if header.name == name:
                order = self.order if header.byte_order == "stream" else \
                    _ORDERS[header.byte_order]
                data = header.layout.encode(fields, order)
                self._write(data)
                if self.follow_headers and header.byte_order_from is not None:
                    # records follow the byte order the header announces, as when reading
                    defaults = {f.id: 0 for f in header.layout.fields if f.is_int}
                    names = ChainMap(dict(fields), defaults, dict(FUNCTIONS))
                    self.order = _ORDERS[str(header.byte_order_from.evaluate(names))]
                return data
        raise UsageError(f"format {self.spec.name} has no header {name!r}")

    def encode_body(self, name: str, fields: dict[str, Any] | None = None,
                    payload: bytes = b"") -> bytes:
        """The body of record *name* encoded from *fields*, followed by *payload*."""
        rtype = self.spec.record_by_name(name)
        if rtype is None:
            raise UsageError(f"format {self.spec.name} has no record {name!r}")
        body = rtype.layout.encode(fields or {}, self.order) if rtype.layout else b""
        return body + payload

    def start_record(self, name: str, fields: dict[str, Any] | None = None, *,
                     payload_length: int) -> int:
        """Write the header and encoded fields of record *name* whose payload (*payload_length*
        bytes) the caller streams next with :meth:`raw`; returns the padding length to pass
        to :meth:`finish_record` once the payload is written. Never holds the payload."""
        framing = self.spec.framing
        if framing is None or framing.implied:
            raise UsageError(f"format {self.spec.name} has no type-length records")
        rtype = self.spec.record_by_name(name)
        if rtype is None:
            raise UsageError(f"format {self.spec.name} has no record {name!r}")
        body = rtype.layout.encode(fields or {}, self.order) if rtype.layout else b""
        length = len(body) + payload_length
        self._write(struct.pack(self.order + framing.header_codes, rtype.id, length) + body)
        return -length % framing.align

    def finish_record(self, padding: int) -> None:
        """Write the zero padding that :meth:`start_record` announced."""
        self._write(bytes(padding))

    def record(self, name: str | None = None, fields: dict[str, Any] | None = None, *,
               payload: bytes = b"", body: bytes | None = None, type_id: int | None = None,
               length: int | None = None, padding: bytes | None = None) -> int:
        """Write one framed record; returns its offset in the output.

        Give the record by *name* (its spec id) or by raw *type_id*; its body by *fields*
        (+ *payload*) or as raw *body* bytes. *length* and *padding* override the computed
        ones (for writing invalid streams on purpose).
        """
        framing = self.spec.framing
        if framing is None or framing.implied:
            raise UsageError(f"format {self.spec.name} has no type-length records")
        if type_id is None:
            if name is None:
                raise UsageError("a record needs a name or a type id")
            rtype = self.spec.record_by_name(name)
            if rtype is None:
                raise UsageError(f"format {self.spec.name} has no record {name!r}")
            type_id = rtype.id
        if body is None:
            body = self.encode_body(name, fields, payload) if name else payload
        offset = self.written
        head = struct.pack(self.order + framing.header_codes, type_id,
                           len(body) if length is None else length)
        if padding is None:
            padding = bytes(-len(body) % framing.align)
        self._write(head + body + padding)
        return offset
