"""Diagnostics: what the engine found wrong (or worth a warning), and exactly where.

Every diagnostic carries the absolute byte offset, the record index and name (or the header
name), the field path and a message, and renders as one line:
``record 12 (PAGE_DATA) @0x3a0: pfn[3]: type 0x6 is invalid``.
"""

from __future__ import annotations

from xenmig_core.plain import Plain

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

ERROR = "error"
WARNING = "warning"


class Diagnostic(Plain, frozen=True):
    """One finding (a frozen :class:`~xenmig_core.plain.Plain` class: equal, hashable and
    shown by its fields, as the dataclass it was). Its ``__init__`` is written out, not
    Plain's generic one: a stream can make thousands of diagnostics."""

    severity: str
    message: str
    offset: int | None = None
    record_index: int | None = None
    record_type: str | None = None
    field: str | None = None
    format: str | None = None
    unit: str | None = None          # a header's name, when the problem is in a header
    rule: str | None = None          # the spec rule's stable id, when a spec rule found it

    def __init__(self, severity: str, message: str, offset: int | None = None,
                 record_index: int | None = None, record_type: str | None = None,
                 field: str | None = None, format: str | None = None,
                 unit: str | None = None, rule: str | None = None) -> None:
        self.__dict__.update(severity=severity, message=message, offset=offset,
                             record_index=record_index, record_type=record_type, field=field,
                             format=format, unit=unit, rule=rule)

    @property
    def record(self) -> str | None:
        """The name of the record type (or header) the problem is in, or None."""
        return self.record_type if self.record_index is not None else self.unit

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def where(self) -> str:
        """``record 12 (PAGE_DATA) @0x3a0`` or ``libxc image_header @0x0`` or ``@0x10``."""
        parts = []
        if self.record_index is not None:
            parts.append(f"record {self.record_index}" +
                         (f" ({self.record_type})" if self.record_type else ""))
        elif self.unit:
            parts.append(f"{self.format + ' ' if self.format else ''}{self.unit}")
        elif self.format:
            parts.append(self.format)
        if self.offset is not None:
            parts.append(f"@{self.offset:#x}")
        return " ".join(parts)

    def __str__(self) -> str:
        where = self.where()
        text = f"{self.field}: {self.message}" if self.field else self.message
        return f"{where}: {text}" if where else text

    def tagged(self) -> str:
        """The one-line text plus the rule id (``... [X86_PV_INFO.rule.1]``), when known."""
        return f"{self} [{self.rule}]" if self.rule else str(self)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        out["text"] = str(self)
        return out
