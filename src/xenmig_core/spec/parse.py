"""Parsing one spec node at a time: fields, layouts, enums, headers, records, rules.

Every key is checked: unknown keys, wrong types, undefined names raise :class:`SpecError`
naming file, line and key (through :class:`_Ctx`). :mod:`~xenmig_core.spec.loader` builds
formats from whole files with these parsers, and :mod:`~xenmig_core.spec.extend` applies
extension files' changes with them; the names are private to the ``spec`` package.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from xenmig_core.errors import SpecError
from xenmig_core.spec.expr import Expression, Template, compile_value
from xenmig_core.spec.layout import INT_CODES, Check, FieldSpec, Layout
from xenmig_core.spec.model import (
    Condition,
    Control,
    EnumEntry,
    EnumSpec,
    EnumValues,
    FormatSpec,
    Framing,
    HeaderSpec,
    Inference,
    LayoutRule,
    LengthRule,
    Origin,
    RecordType,
)
from xenmig_core.spec.yamlsrc import Located

SPEC_VERSION = 1
IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
RECORD_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
SEVERITIES = ("error", "warning")
BYTE_ORDERS = ("big", "little", "native", "stream")

TOP_KEYS = {"xenmig_spec", "format", "extends", "title", "doc", "enums", "types", "state",
            "headers", "records", "follows", "end_checks", "report", "detect", "summary",
            "variant_of", "disable"}
FIELD_KEYS = {"id", "type", "doc", "orig_id", "size", "repeat", "enum", "flags", "valid",
              "reserved", "reserved_bits", "payload", "head"}
VALID_KEYS = {"eq", "any_of", "min", "max", "known", "expr", "message", "severity"}
HEADER_KEYS = {"name", "title", "doc", "orig_id", "byte_order", "seq", "set", "byte_order_from",
               "checks", "summary", "fatal"}
RECORD_KEYS = {"id", "name", "title", "doc", "orig_id", "body", "versions", "length", "rules",
               "checks", "infer", "set", "summary", "control", "reject", "squash"}
FRAMING_KEYS = {"type", "length", "align", "max_length", "optional_mask", "padding", "end",
                "skip_optional", "implied"}
CONTROL_KEYS = {"nested", "resume", "when", "message"}
CHECK_KEYS = {"id", "expr", "message", "severity", "field", "when"}
RULE_KEYS = {"id", "after", "before", "at_most", "when", "severity", "message"}
LENGTH_KEYS = {"id", "exact", "min", "max", "one_of", "multiple_of", "after", "severity", "when"}
RULE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class _Ctx:
    """Where we are in a spec file, for error messages."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node: Any, key: str | None, message: str) -> SpecError:
        line = None
        if isinstance(node, Located):
            line = node.line_of(key) if key is not None else node.line
        return SpecError(message, path=self.path, line=line, key=key)

    def mapping(self, node: Any, what: str, allowed: set[str], required: Iterable[str] = (),
                parent: Any = None, parent_key: str | None = None) -> Located:
        if not isinstance(node, dict):
            raise self.fail(parent, parent_key, f"{what} must be a mapping")
        for key in node:
            if key not in allowed:
                raise self.fail(node, str(key), f"unknown key in {what} "
                                f"(allowed: {', '.join(sorted(allowed))})")
        for key in required:
            if key not in node:
                raise self.fail(node, None, f"{what} needs the key {key!r}")
        return node  # type: ignore[return-value]

    def expr(self, node: Any, key: str, value: Any) -> Expression:
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise self.fail(node, key, "expected an expression (a string)")
        try:
            return Expression(str(value), where=self.path)
        except SpecError as exc:
            raise self.fail(node, key, str(exc).split(": ", 1)[-1]) from None

    def template(self, node: Any, key: str, value: Any) -> Template:
        if not isinstance(value, str):
            raise self.fail(node, key, "expected a text template (a string)")
        try:
            return Template(value, where=self.path)
        except SpecError as exc:
            raise self.fail(node, key, str(exc).split(": ", 1)[-1]) from None

    def origin(self, node: Any, key: str | None = None) -> Origin:
        """Where *node* (or its *key*) stands in this file."""
        if isinstance(node, Located):
            return Origin(self.path, node.line_of(key) if key is not None else node.line)
        return Origin(self.path)

    def rule_id(self, node: Any, default: str) -> str:
        """The rule's ``id`` key, checked, or *default* (the derived ``SCOPE.KIND.N``)."""
        value = node.get("id", default) if isinstance(node, dict) else default
        if not isinstance(value, str) or not RULE_ID.match(value):
            raise self.fail(node, "id", "a rule id is a word of letters, digits, '_', '.' "
                            "and '-'")
        return value

    def severity(self, node: Any) -> str:
        value = node.get("severity", "error")
        if value not in SEVERITIES:
            raise self.fail(node, "severity", f"severity must be one of {SEVERITIES}")
        return value



def _enum(ctx: _Ctx, parent: Any, name: str, node: Any) -> EnumSpec:
    if not IDENT.match(str(name)):
        raise ctx.fail(parent, name, "enum names are lower_case identifiers")
    if not isinstance(node, dict):
        raise ctx.fail(parent, name, "an enum maps values to names")
    kind = "enum"
    entries: dict[int, EnumEntry] = {}
    for value, entry in node.items():
        if value == "kind":
            if entry not in ("enum", "flags"):
                raise ctx.fail(node, "kind", "kind is 'enum' or 'flags'")
            kind = entry
            continue
        if not isinstance(value, int):
            raise ctx.fail(node, str(value), "enum keys are integers (bit numbers for flags)")
        if isinstance(entry, str):
            entries[value] = EnumEntry(value, entry, entry)
        else:
            e = ctx.mapping(entry, f"enum {name} value", {"name", "label", "doc", "warn"},
                            required=("name",), parent=node, parent_key=str(value))
            entries[value] = EnumEntry(value, str(e["name"]), str(e.get("label", e["name"])),
                                       str(e.get("doc", "")), e.get("warn"))
    return EnumSpec(name, kind, entries)


def _layout(ctx: _Ctx, parent: Any, key: str, node: Any, fmt: FormatSpec,
            types: dict[str, Layout], outer: frozenset[str] = frozenset()) -> Layout:
    """Compile a seq. *outer* names integer fields decoded before this seq (an earlier
    header's) that ``size`` and ``repeat`` may refer to as well as earlier fields."""
    if not isinstance(node, list):
        raise ctx.fail(parent, key, "a seq is a list of fields")
    fields: list[FieldSpec] = []
    seen: set[str] = set()
    for i, fnode in enumerate(node):
        f = ctx.mapping(fnode, f"{key}[{i}]", FIELD_KEYS, required=("id", "type"),
                        parent=parent, parent_key=key)
        fid = f["id"]
        if not isinstance(fid, str) or not IDENT.match(fid):
            raise ctx.fail(f, "id", "field ids are lower_case identifiers")
        if fid in seen:
            raise ctx.fail(f, "id", f"field {fid!r} appears twice")
        seen.add(fid)
        ftype = f["type"]
        spec = FieldSpec(id=fid, type=str(ftype), doc=str(f.get("doc", "")),
                         orig_id=f.get("orig_id"), payload=bool(f.get("payload", False)))
        if ftype not in INT_CODES and ftype != "bytes":
            if ftype not in types:
                raise ctx.fail(f, "type", f"unknown type {ftype!r} (integers u8..u64, i8..i64, "
                               "bytes, or a name from 'types' defined above)")
            spec.struct = types[ftype]
        for size_key in ("size", "repeat"):
            if size_key not in f:
                continue
            value = f[size_key]
            if isinstance(value, str) and value != "rest" and value not in seen - {fid} \
                    and value not in outer:
                raise ctx.fail(f, size_key, f"{size_key} {value!r} must be a number, 'rest' "
                               "or the id of an earlier field")
            if isinstance(value, str) and value != "rest" and value in seen:
                counter = next(x for x in fields if x.id == value)
                if not counter.is_int or counter.repeat is not None:
                    raise ctx.fail(f, size_key, f"{value!r} is not an integer field")
            if not isinstance(value, int | str) or isinstance(value, bool):
                raise ctx.fail(f, size_key, f"{size_key} must be a number, 'rest' or a field")
            setattr(spec, size_key, value)
        if ftype == "bytes" and spec.size is None:
            raise ctx.fail(f, "type", "a bytes field needs a size (a number, a field or 'rest')")
        if ftype != "bytes" and spec.size is not None:
            raise ctx.fail(f, "size", "size is for bytes fields; arrays use repeat")
        if spec.payload and i != len(node) - 1:
            raise ctx.fail(f, "payload", "only the last field of a body can be a payload")
        if spec.payload and (ftype != "bytes" or spec.size != "rest"):
            raise ctx.fail(f, "payload", "a payload is a bytes field of size 'rest'")
        if "head" in f:
            head = f["head"]
            if not spec.payload or not isinstance(head, int) or isinstance(head, bool) \
                    or not 0 < head <= 4096:
                raise ctx.fail(f, "head", "head is a number of bytes (1-4096) of a payload")
            spec.head = head
        for attr in ("enum", "flags"):
            if attr in f:
                if f[attr] not in fmt.enums:
                    raise ctx.fail(f, attr, f"unknown enum {f[attr]!r}")
                setattr(spec, attr, f[attr])
        if f.get("reserved"):
            spec.checks.append(Check("reserved", None))
        if "reserved_bits" in f:
            spec.checks.append(Check("reserved_bits", int(f["reserved_bits"])))
        if "valid" in f:
            spec.checks.extend(_valid(ctx, f, spec, fmt))
        fields.append(spec)
    return Layout(key, fields)


def _valid(ctx: _Ctx, f: Located, spec: FieldSpec, fmt: FormatSpec) -> list[Check]:
    v = ctx.mapping(f["valid"], "valid", VALID_KEYS, parent=f, parent_key="valid")
    severity = ctx.severity(v)
    message = v.get("message")
    checks = []
    for kind in ("eq", "min", "max"):
        if kind in v:
            checks.append(Check(kind, compile_value(v[kind], where=ctx.path), severity, message))
    if "any_of" in v:
        if not isinstance(v["any_of"], list):
            raise ctx.fail(v, "any_of", "any_of is a list of values")
        checks.append(Check("any_of", tuple(v["any_of"]), severity, message))
    if v.get("known"):
        enum = spec.enum or spec.flags
        if enum is None:
            raise ctx.fail(v, "known", "known needs the field to name an enum")
        checks.append(Check("known", EnumValues(fmt.enums[enum]), severity, message))
    if "expr" in v:
        checks.append(Check("expr", ctx.expr(v, "expr", v["expr"]), severity, message))
    return checks


def _condition(ctx: _Ctx, node: Any, what: str, rid: str | None = None,
               extra: frozenset[str] = frozenset()) -> Condition:
    """A check. *rid* is its derived id (an ``id`` key overrides it); *extra* keys are
    allowed besides the check's own (``replace`` in an extension)."""
    c = ctx.mapping(node, what, CHECK_KEYS | extra, required=("expr", "message"))
    return Condition(ctx.expr(c, "expr", c["expr"]), ctx.template(c, "message", c["message"]),
                     ctx.severity(c), c.get("field"),
                     ctx.expr(c, "when", c["when"]) if "when" in c else None,
                     id=ctx.rule_id(c, rid) if rid is not None else None)


def _sets(ctx: _Ctx, node: Located, key: str) -> dict[str, Expression]:
    value = node.get(key) or {}
    if not isinstance(value, dict):
        raise ctx.fail(node, key, "set maps state names to expressions")
    return {k: ctx.expr(value, k, v) for k, v in value.items()}


def _header(ctx: _Ctx, node: Any, what: str, fmt: FormatSpec,
            types: dict[str, Layout], earlier: frozenset[str] = frozenset()) -> HeaderSpec:
    h = ctx.mapping(node, what, HEADER_KEYS, required=("name", "seq", "byte_order"))
    if h["byte_order"] not in BYTE_ORDERS:
        raise ctx.fail(h, "byte_order", f"byte_order is one of {', '.join(BYTE_ORDERS)}")
    layout = _layout(ctx, h, "seq", h["seq"], fmt, types, earlier)
    fatal = h.get("fatal") or []
    unknown = set(fatal) - {f.id for f in layout.fields}
    if unknown:
        raise ctx.fail(h, "fatal", f"fatal names unknown fields: {', '.join(sorted(unknown))}")
    return HeaderSpec(
        name=str(h["name"]), title=str(h.get("title", h["name"])), layout=layout,
        byte_order=h["byte_order"], set=_sets(ctx, h, "set"),
        byte_order_from=ctx.expr(h, "byte_order_from", h["byte_order_from"])
        if "byte_order_from" in h else None,
        checks=[_condition(ctx, c, f"{what}.checks", f"{h['name']}.check.{n}")
                for n, c in enumerate(h.get("checks") or [], 1)],
        summary=ctx.template(h, "summary", h["summary"]) if "summary" in h else None,
        fatal_fields=frozenset(fatal), doc=str(h.get("doc", "")))


def _framing(ctx: _Ctx, node: Any) -> tuple[Framing, str | None]:
    if isinstance(node, dict) and node.get("implied"):
        f = ctx.mapping(node, "framing", {"implied", "max_length", "end"})
        return Framing(type_code="", length_code="", align=1,
                       max_length=int(f.get("max_length", 1 << 62)), optional_mask=0,
                       implied=True), f.get("end")
    f = ctx.mapping(node, "framing", FRAMING_KEYS - {"implied"},
                    required=("type", "length", "max_length"))
    for key in ("type", "length"):
        if f[key] not in INT_CODES:
            raise ctx.fail(f, key, "an integer type (u8..u64)")
    align = int(f.get("align", 1))
    if align < 1 or align & (align - 1):
        raise ctx.fail(f, "align", "align must be a power of two")
    return Framing(type_code=f["type"], length_code=f["length"], align=align,
                   max_length=int(f["max_length"]), optional_mask=int(f.get("optional_mask", 0)),
                   padding_must_be_zero=f.get("padding", "zero") == "zero",
                   skip_optional=bool(f.get("skip_optional", True))), f.get("end")


def _record(ctx: _Ctx, node: Any, what: str, fmt: FormatSpec,
            types: dict[str, Layout]) -> RecordType:
    r = ctx.mapping(node, what, RECORD_KEYS, required=("id", "name"))
    if not isinstance(r["id"], int) or isinstance(r["id"], bool):
        raise ctx.fail(r, "id", "a record id is an integer")
    if not isinstance(r["name"], str) or not RECORD_NAME.match(r["name"]):
        raise ctx.fail(r, "name", "record names are UPPER_CASE identifiers")
    rtype = RecordType(id=r["id"], name=r["name"], title=str(r.get("title", r["name"])),
                       doc=str(r.get("doc", "")), orig_id=r.get("orig_id"), spec_path=ctx.path,
                       spec_line=r.line)
    if "body" in r:
        rtype.layout = _layout(ctx, r, "body", r["body"], fmt, types)
    if "versions" in r:
        if not isinstance(r["versions"], list) or not all(isinstance(v, int)
                                                           for v in r["versions"]):
            raise ctx.fail(r, "versions", "versions is a list of integers")
        rtype.versions = tuple(r["versions"])
    name = rtype.name
    for n, lnode in enumerate(_as_list(r.get("length")), 1):
        rtype.length.append(_length(ctx, lnode, f"{name}.length.{n}"))
    for n, rnode in enumerate(r.get("rules") or [], 1):
        rtype.rules.append(_rule(ctx, rnode, f"{name}.rule.{n}"))
    for n, cnode in enumerate(r.get("checks") or [], 1):
        rtype.checks.append(_condition(ctx, cnode, f"{what}.checks", f"{name}.check.{n}"))
    for inode in r.get("infer") or []:
        i = ctx.mapping(inode, "infer", {"mark", "when"}, required=("mark",))
        rtype.infer.append(Inference(str(i["mark"]),
                                     ctx.expr(i, "when", i["when"]) if "when" in i else None))
    rtype.set = _sets(ctx, r, "set")
    squash = r.get("squash", False)
    if squash is True or isinstance(squash, dict):
        rtype.squash = dict(squash) if isinstance(squash, dict) else {}
    elif squash is not False:
        raise ctx.fail(r, "squash", "squash is true or maps labels to fields to add up")
    if "summary" in r:
        rtype.summary = ctx.template(r, "summary", r["summary"])
    if "reject" in r:
        rtype.reject = ctx.template(r, "reject", r["reject"])
    if "control" in r:
        rtype.control = _control(ctx, r)
    return rtype


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _length(ctx: _Ctx, node: Any, rid: str, extra: frozenset[str] = frozenset()
            ) -> LengthRule:
    n = ctx.mapping(node, "length", LENGTH_KEYS | extra)
    kinds = [k for k in ("exact", "min", "max", "one_of", "multiple_of") if k in n]
    if len(kinds) != 1:
        raise ctx.fail(n, None, "a length rule has exactly one of exact, min, max, one_of, "
                       "multiple_of (give a list for several)")
    kind = kinds[0]
    value = n[kind]
    if kind == "one_of":
        if not isinstance(value, list):
            raise ctx.fail(n, kind, "one_of is a list")
        arg: Any = tuple(compile_value(v, where=ctx.path) for v in value)
    elif kind == "multiple_of":
        if not isinstance(value, int) or value < 1:
            raise ctx.fail(n, kind, "multiple_of is a positive integer")
        arg = value
    else:
        try:
            arg = compile_value(value, where=ctx.path)
        except SpecError as exc:
            raise ctx.fail(n, kind, str(exc).split(": ", 1)[-1]) from None
    return LengthRule(kind, arg, int(n.get("after", 0)), ctx.severity(n),
                      ctx.expr(n, "when", n["when"]) if "when" in n else None,
                      id=ctx.rule_id(n, rid))


def _rule(ctx: _Ctx, node: Any, rid: str, extra: frozenset[str] = frozenset()) -> LayoutRule:
    r = ctx.mapping(node, "rule", RULE_KEYS | extra)
    kinds = [k for k in ("after", "before", "at_most") if k in r]
    if len(kinds) != 1:
        raise ctx.fail(r, None, "a rule has exactly one of after, before, at_most")
    kind = kinds[0]
    arg = r[kind]
    if kind == "at_most" and (not isinstance(arg, int) or arg < 1):
        raise ctx.fail(r, kind, "at_most is a positive integer")
    if kind != "at_most":
        arg = tuple(_as_list(arg))
        if not all(isinstance(a, str) for a in arg):
            raise ctx.fail(r, kind, f"{kind} names records or marks")
    return LayoutRule(kind, arg, ctx.severity(r),
                      ctx.expr(r, "when", r["when"]) if "when" in r else None,
                      ctx.template(r, "message", r["message"]) if "message" in r else None,
                      line=r.line_of(kind) if isinstance(r, Located) else None,
                      id=ctx.rule_id(r, rid))


def _control(ctx: _Ctx, r: Located) -> Control:
    value = r["control"]
    line = r.line_of("control")
    if value in ("end", "yield"):
        return Control(value, line=line)
    if isinstance(value, dict):
        c = ctx.mapping(value, "control", CONTROL_KEYS, parent=r, parent_key="control")
        kinds = [k for k in ("nested", "resume") if k in c]
        if len(kinds) == 1 and isinstance(c[kinds[0]], str):
            return Control(kinds[0], c[kinds[0]],
                           ctx.expr(c, "when", c["when"]) if "when" in c else None,
                           ctx.template(c, "message", c["message"]) if "message" in c else None,
                           line=line)
    raise ctx.fail(r, "control", "control is 'end', 'yield', {nested: FORMAT} or "
                   "{resume: FORMAT} (optionally with 'when' and 'message')")


