"""The compiled form of a spec: formats, headers, record types, rules, enums.

Everything here is built once by :mod:`xenmig_core.spec.loader` and is read-only afterwards.
The classes are :class:`~xenmig_core.plain.Plain` data classes (dataclasses in all but
their cost at import: the compiled-spec cache restores their objects without calling them).
The engine walks streams with these objects; plugins may read them (e.g. to name a value).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

from xenmig_core.plain import Plain, factory
from xenmig_core.spec.expr import Expression, Template
from xenmig_core.spec.layout import INT_CODES, Layout

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any


class Origin(Plain, frozen=True):
    """Where a part of a definition came from: a spec file and a line in it."""

    path: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path


class EnumEntry(Plain, frozen=True):
    """One named value. ``warn`` makes the engine warn when a stream uses it."""

    value: int
    name: str
    label: str
    doc: str = ""
    warn: str | None = None


class EnumSpec(Plain):
    """A named set of values (``kind: enum``) or of bits (``kind: flags``)."""

    name: str
    kind: str
    entries: dict[int, EnumEntry]

    def name_of(self, value: int) -> str:
        """The entry's name, or a hex rendering for an unknown value."""
        entry = self.entries.get(value)
        return entry.name if entry else f"unknown({value:#x})"

    def label_of(self, value: int) -> str:
        entry = self.entries.get(value)
        return entry.label if entry else f"unknown ({value:#x})"

    def value_of(self, name: str) -> int | None:
        """The value (or bit number, for flags) named *name*, or None."""
        for value, entry in self.entries.items():
            if entry.name == name:
                return value
        return None

    def flag_names(self, value: int) -> list[str]:
        """For flags: the names of the set bits (unknown bits as ``bitN``)."""
        names = []
        bit = 0
        while value >> bit:
            if value >> bit & 1:
                entry = self.entries.get(bit)
                names.append(entry.name if entry else f"bit{bit}")
            bit += 1
        return names


class EnumValues:
    """The values an enum names, seen live: a ``known`` check holds one, so values that an
    ``extends`` file adds to the enum later are known too. Supports ``in``, iteration and
    ``len``."""

    __slots__ = ("enum",)

    def __init__(self, enum: EnumSpec) -> None:
        self.enum = enum

    def __contains__(self, value: object) -> bool:
        return value in self.enum.entries

    def __iter__(self) -> Iterator[int]:
        return iter(self.enum.entries)

    def __len__(self) -> int:
        return len(self.enum.entries)

    def __repr__(self) -> str:
        return f"EnumValues({self.enum.name})"


class Condition(Plain, frozen=True):
    """An expression plus the message and severity used when it is false."""

    expr: Expression
    message: Template
    severity: str = "error"
    field: str | None = None
    when: Expression | None = None
    #: stable rule id (``RECORD.check.N``, ``header.check.N``, ``end.check.N`` unless the
    #: spec names it): diagnostics carry it; ``extends`` files replace or disable by it
    id: str | None = None


class LayoutRule(Plain, frozen=True):
    """Where a record may stand: after/before a mark, at most N times.

    ``kind`` is ``after`` (the mark must be set), ``before`` (it must not be) or ``at_most``.
    Marks are record names seen so far in the stream plus names inferred by ``infer``.
    """

    kind: str
    arg: Any
    severity: str = "error"
    when: Expression | None = None
    message: Template | None = None
    line: int | None = None  # where the rule stood in its spec file (for errors)
    id: str | None = None    # stable rule id (``RECORD.rule.N`` unless the spec names it)


class Inference(Plain, frozen=True):
    """Set mark ``mark`` when a record is seen and ``when`` holds (e.g. v2 static data end)."""

    mark: str
    when: Expression | None = None


class LengthRule(Plain, frozen=True):
    """A body length rule: ``exact``, ``min``, ``max``, ``one_of`` (ints or expressions),
    ``multiple_of`` (of the body length less ``after`` bytes)."""

    kind: str
    arg: Any
    after: int = 0
    severity: str = "error"
    when: Expression | None = None
    id: str | None = None    # stable rule id (``RECORD.length.N`` unless the spec names it)

    @property
    def static(self) -> bool:
        """True when the rule needs no decoded field or state (checked before decoding)."""
        args = self.arg if isinstance(self.arg, tuple) else (self.arg,)
        return self.when is None and not any(isinstance(a, Expression) for a in args)


class Control(Plain):
    """What a record does to the walk: ``end``, ``yield`` to the enclosing stream, start a
    ``nested`` stream of another format, or ``resume`` a suspended nested one.

    ``when`` (evaluated after the record and its padding were read; it also sees
    ``next_type``, the type of the next record or None at the end of the source) makes the
    control conditional. ``message`` replaces the engine's error when a ``resume`` finds no
    suspended stream to resume."""

    kind: str
    format: str | None = None
    when: Expression | None = None
    message: Template | None = None
    line: int | None = None


class RecordType(Plain):
    """A record type: its id and name, layout, length rules, placement rules, checks, what
    it sets and infers, and what it does to the walk."""

    id: int
    name: str
    title: str
    doc: str = ""
    orig_id: str | None = None
    layout: Layout | None = None
    versions: tuple[int, ...] | None = None
    length: list[LengthRule] = factory(list)
    rules: list[LayoutRule] = factory(list)
    checks: list[Condition] = factory(list)
    infer: list[Inference] = factory(list)
    set: dict[str, Expression] = factory(dict)
    summary: Template | None = None
    control: Control | None = None
    reject: Template | None = None
    #: verbose output folds runs of this record into one line, adding up these fields
    #: (label -> field name); None when the record is never folded
    squash: dict[str, str] | None = None
    spec_path: str = ""
    spec_line: int | None = None
    #: rules that ``extends`` files turned off (kept for ``specs show``), in order
    disabled: list[Any] = factory(list)

    @functools.cached_property
    def static_length(self) -> list[LengthRule]:
        """Length rules checked from the record header alone, before the body is decoded."""
        return [r for r in self.length if r.static]

    @functools.cached_property
    def field_length(self) -> list[LengthRule]:
        """Length rules that need the decoded fields or the stream state."""
        return [r for r in self.length if not r.static]


class Framing(Plain):
    """Type-length record framing, or (``implied``) framing a plugin walker determines:
    each unit's length follows from its type and contents, so the spec only names and lays
    out the units and a ``xenmig_walker`` reads them."""

    type_code: str           # integer type of the type field (u32)
    length_code: str         # integer type of the length field (u32)
    align: int               # records end on this boundary; padding bytes follow the body
    max_length: int          # bodies longer than this are refused before reading them
    optional_mask: int       # type bits that mark an optional record
    padding_must_be_zero: bool = True
    skip_optional: bool = True  # False: an unknown optional record is an error all the same
    implied: bool = False    # no type-length header: a plugin walker frames the units

    @property
    def header_codes(self) -> str:
        """struct codes of the record header (type, then length), without byte order."""
        return INT_CODES[self.type_code] + INT_CODES[self.length_code]


class HeaderSpec(Plain):
    """A fixed header read at the start of a stream (before any record)."""

    name: str
    title: str
    layout: Layout
    byte_order: str          # "big", "little", "native" or "stream"
    set: dict[str, Expression] = factory(dict)
    byte_order_from: Expression | None = None
    checks: list[Condition] = factory(list)
    summary: Template | None = None
    fatal_fields: frozenset[str] = frozenset()
    doc: str = ""


class Magic(Plain):
    """Detection: these bytes at this offset identify the format."""

    offset: int
    data: bytes
    description: str = ""


#: What :class:`FormatSpec` keeps at hand when restored from the compiled-spec cache: what
#: detection and the registry read of every format. The rest is restored on first use.
LIGHT_FIELDS = ("name", "title", "doc", "paths", "framing", "magic", "base", "end_record")


class FormatSpec(Plain):
    """A format: its headers, its framing and record types, its state and end checks.

    Restored from the compiled-spec cache, a format's fields but :data:`LIGHT_FIELDS` are
    restored when one of them is first read (``_deferred``: an object whose ``load()``
    returns them), so a run pays only for the formats it walks."""

    def __getattr__(self, name: str) -> Any:
        # called only for an attribute not (yet) there
        if "_deferred" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.restore(), name)

    def restore(self) -> FormatSpec:
        """Every field restored now (see the class docstring); the format itself. A field
        given a value before keeps it."""
        deferred = self.__dict__.pop("_deferred", None)
        if deferred is not None:
            for field_name, value in deferred.load().items():
                self.__dict__.setdefault(field_name, value)
        return self

    name: str
    title: str
    doc: str = ""
    paths: list[str] = factory(list)
    enums: dict[str, EnumSpec] = factory(dict)
    #: compiled ``types:`` of every spec file of the format (plugins decode blobs with them)
    types: dict[str, Layout] = factory(dict)
    state: dict[str, Any] = factory(dict)
    headers: list[HeaderSpec] = factory(list)
    framing: Framing | None = None
    records: dict[int, RecordType] = factory(dict)
    follows: Expression | None = None
    end_checks: list[Condition] = factory(list)
    report: dict[str, Expression] = factory(dict)
    magic: list[Magic] = factory(list)
    end_record: str | None = None
    summary: Template | None = None     # one line describing a walked stream of this format
    base: str | None = None             # the format this one is a ``variant_of``
    #: where each part of the effective definition came from, for ``specs show`` and
    #: error messages. Keys: ``record:NAME``, ``field:RECORD.FIELD``, ``rule:ID``,
    #: ``enum:ENUM``, ``enum:ENUM:VALUE``, ``type:NAME``, ``summary:RECORD``,
    #: ``disabled:ID``, ``replaced:ID`` (where the rule a replacement replaced stood)
    provenance: dict[str, Origin] = factory(dict)

    def rule_ids(self) -> dict[str, Any]:
        """Every active rule of the format by id: record length rules, rules and checks,
        header checks and end checks."""
        found: dict[str, Any] = {}
        for rtype in self.records.values():
            for rule in (*rtype.length, *rtype.rules, *rtype.checks):
                if rule.id:
                    found[rule.id] = rule
        for header in self.headers:
            for cond in header.checks:
                if cond.id:
                    found[cond.id] = cond
        for cond in self.end_checks:
            if cond.id:
                found[cond.id] = cond
        return found

    def record_by_name(self, name: str) -> RecordType | None:
        for rtype in self.records.values():
            if rtype.name == name:
                return rtype
        return None
