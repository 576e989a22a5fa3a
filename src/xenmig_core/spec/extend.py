"""What an ``extends`` file may change in a format that is already defined, and how.

An extension speaks in the keys the defining spec uses:

* an ``enums`` entry naming an existing enum adds values (with labels, docs, warnings); a
  value the enum already has must be said exactly as it is (an extension adds, it never
  renames), and a new value may not reuse a name;
* a ``types`` entry with a new name adds a layout (``hvm_<name>`` for a new HVM save entry,
  ``hvm_<name>__<tag>`` for another size of an existing one); an existing name is refused;
* a ``records.types`` entry whose ``id`` or ``name`` is an existing record type changes that
  type. It may only: ``append`` fields (decoded as far as the body reaches), replace the
  ``valid`` checks of its fields, add or ``replace`` entries of ``length``, ``rules`` and
  ``checks`` (by rule id), ``disable`` rules, and replace the ``summary``;
* ``end_checks`` entries are added, or ``replace`` one by id; a top-level ``disable`` turns
  off any rule of the format by id (record, header or end check).

Every change is recorded in a :class:`Ledger`: the same change made again by a later file is
ignored (the same extension installed twice), a different change to the same thing is an
error naming both files and lines. Changed record types and headers are copies: a variant
that shares them with its base is not changed with it.
"""

from __future__ import annotations

import json
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

from xenmig_core.plain import replace
from xenmig_core.spec.layout import Layout, Reader
from xenmig_core.spec.model import EnumSpec, FormatSpec, Origin, RecordType
from xenmig_core.spec.parse import _as_list, _condition, _enum, _layout, _length, _rule, _valid
from xenmig_core.spec.yamlsrc import Located

#: what an extension may say about an existing record type
CHANGE_KEYS = {"id", "name", "append", "valid", "length", "rules", "checks", "disable",
               "summary"}
_KINDS = {"length": "length rule", "rules": "rule", "checks": "check"}
_ID_KIND = {"length": "length", "rules": "rule", "checks": "check"}


class Ledger:
    """The changes extension files made, by the thing each changes."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, ...], tuple[Any, Origin]] = {}

    def claim(self, ctx: Any, node: Any, key: str | None, thing: tuple[str, ...],
              value: Any) -> bool:
        """Record that the file of *ctx* changes *thing* to *value* (a raw node). False when
        an earlier file made the very same change (the caller skips it); SpecError at
        *node*/*key* when an earlier file changed *thing* differently."""
        earlier = self._seen.get(thing)
        if earlier is None:
            self._seen[thing] = (value, ctx.origin(node, key))
            return True
        if earlier[0] == value:
            return False
        raise ctx.fail(node, key, f"conflicts with {earlier[1]}: both change "
                       f"{_describe(thing)}, differently")

    def get(self, thing: tuple[str, ...]) -> tuple[Any, Origin] | None:
        return self._seen.get(thing)


def _describe(thing: tuple[str, ...]) -> str:
    kind, fmt, *rest = thing
    return {"type": f"type {rest[0]!r} of {fmt}", "rule": f"rule {rest[0]} of {fmt}",
            "append": f"the fields appended to {rest[0]} of {fmt}",
            "valid": f"the valid checks of {rest[0]} of {fmt}",
            "state": f"the initial value of state {rest[0]!r} of {fmt}",
            "report": f"report value {rest[0]!r} of {fmt}",
            "summary": f"the summary of {rest[0]} of {fmt}"}.get(kind, " ".join(thing))


# -- enums -------------------------------------------------------------------------------------
def add_enum_values(ctx: Any, fmt: FormatSpec, parent: Any, name: str, node: Any) -> None:
    """Add the values of *node* to the existing enum *name* (in place: ``known`` checks see
    the enum live)."""
    current = fmt.enums[name]
    added: EnumSpec = _enum(ctx, parent, name, node)
    if "kind" in node and added.kind != current.kind:
        raise ctx.fail(node, "kind", f"enum {name!r} is of kind {current.kind!r}")
    for value, entry in added.entries.items():
        key = str(value)
        old = current.entries.get(value)
        if old is not None:
            if old == entry:
                continue  # said again exactly as it is: nothing to add
            where = fmt.provenance.get(f"enum:{name}:{value}", Origin(fmt.paths[0]))
            raise ctx.fail(node, key, f"enum {name} value {value} ({value:#x}) is already "
                           f"{old.name!r} ({where}): an extension adds values, it does not "
                           "change them")
        other = current.value_of(entry.name)
        if other is not None:
            where = fmt.provenance.get(f"enum:{name}:{other}", Origin(fmt.paths[0]))
            raise ctx.fail(node, key, f"enum {name} already names value {other} "
                           f"{entry.name!r} ({where})")
        current.entries[value] = entry
        fmt.provenance[f"enum:{name}:{value}"] = ctx.origin(node, key)


# -- types -------------------------------------------------------------------------------------
def repeated_type(ctx: Any, fmt: FormatSpec, ledger: Ledger, parent: Any, name: str,
                  node: Any) -> None:
    """An extension names a type that exists: fine when an earlier extension added the very
    same layout, else an error."""
    hint = f"a layout of another size is a variant: name it {name.split('__')[0]}__<tag>"
    earlier = ledger.get(("type", fmt.name, name))
    if earlier is not None:
        if earlier[0] == node:
            return   # the very same layout, said again
        raise ctx.fail(parent, name, f"conflicts with {earlier[1]}: both change "
                       f"{_describe(('type', fmt.name, name))}, differently; {hint}")
    where = fmt.provenance.get(f"type:{name}", Origin(fmt.paths[0]))
    raise ctx.fail(parent, name, f"type {name!r} is already defined ({where}); {hint}")


# -- record types ------------------------------------------------------------------------------
def names_existing_record(fmt: FormatSpec, node: Any) -> bool:
    """True when a ``records.types`` entry's id or name is a record type of *fmt*."""
    if not isinstance(node, dict):
        return False
    rid, name = node.get("id"), node.get("name")
    return (isinstance(rid, int) and not isinstance(rid, bool) and rid in fmt.records) or (
        isinstance(name, str) and fmt.record_by_name(name) is not None)


def change_record(ctx: Any, node: Any, what: str, fmt: FormatSpec,
                  types: dict[str, Layout], ledger: Ledger) -> None:
    """Apply an extension's entry for an existing record type (see the module doc)."""
    by_id = fmt.records.get(node["id"]) if "id" in node else None
    by_name = fmt.record_by_name(node["name"]) if "name" in node else None
    rtype = by_id or by_name
    assert rtype is not None
    if by_id is not None and "name" in node and by_name is not by_id:
        where = fmt.provenance.get(f"record:{by_id.name}", Origin(by_id.spec_path))
        raise ctx.fail(node, "id", f"record id {by_id.id:#x} is already {by_id.name} "
                       f"({where}): a new record type needs a new id; an entry that changes "
                       f"{by_id.name} names it")
    if "id" in node and by_id is None:
        raise ctx.fail(node, "id", f"{rtype.name} is record id {rtype.id:#x}, not "
                       f"{node['id']!r}")
    for key in node:
        if key not in CHANGE_KEYS:
            where = fmt.provenance.get(f"record:{rtype.name}", Origin(rtype.spec_path))
            raise ctx.fail(node, str(key), f"{key!r} of {rtype.name} ({where}) cannot be "
                           "changed: an entry naming an existing record type may only "
                           f"change {', '.join(sorted(CHANGE_KEYS - {'id', 'name'}))}")
    rtype = replace(rtype, length=list(rtype.length), rules=list(rtype.rules),
                    checks=list(rtype.checks), disabled=list(rtype.disabled))
    if "append" in node and ledger.claim(ctx, node, "append", ("append", fmt.name, rtype.name),
                                         node["append"]):
        _append(ctx, node, fmt, rtype, types)
    if "valid" in node:
        _revalidate(ctx, node, fmt, rtype, ledger)
    for key in ("length", "rules", "checks"):
        for item in _as_list(node.get(key)):
            _change_rule(ctx, item, key, what, fmt, rtype, ledger)
    for rid in _ids(ctx, node):
        _disable(ctx, node, rid, fmt, rtype, ledger)
    if "summary" in node and ledger.claim(ctx, node, "summary",
                                          ("summary", fmt.name, rtype.name), node["summary"]):
        rtype.summary = ctx.template(node, "summary", node["summary"])
        fmt.provenance[f"summary:{rtype.name}"] = ctx.origin(node, "summary")
    fmt.records[rtype.id] = rtype


def _append(ctx: Any, node: Any, fmt: FormatSpec, rtype: RecordType,
            types: dict[str, Layout]) -> None:
    base = rtype.layout if rtype.layout is not None else Layout("body", [])
    for spec in base.fields:
        if spec.payload or "rest" in (spec.size, spec.repeat):
            raise ctx.fail(node, "append", f"{rtype.name} ends with {spec.id!r}, which takes "
                           "the rest of the body: no field can follow it")
    outer = frozenset(f.id for f in base.fields if f.is_int and f.repeat is None)
    tail = _layout(ctx, node, "append", node["append"], fmt, types, outer)
    taken = {f.id for f in base.fields}
    for spec, fnode in zip(tail.fields, node["append"], strict=True):
        if spec.id in taken:
            raise ctx.fail(fnode, "id", f"{rtype.name} already has a field {spec.id!r}")
        if spec.payload:
            raise ctx.fail(fnode, "payload", "appended fields cannot be a payload")
        fmt.provenance[f"field:{rtype.name}.{spec.id}"] = ctx.origin(fnode)
    rtype.layout = TailedLayout(base, tail)


def _revalidate(ctx: Any, node: Any, fmt: FormatSpec, rtype: RecordType,
                ledger: Ledger) -> None:
    """``valid: {FIELD: {...}}``: replace the ``valid`` checks of R's field FIELD (its
    ``reserved`` and ``reserved_bits`` checks stay); ``{}`` removes them."""
    changes = node["valid"]
    if not isinstance(changes, dict):
        raise ctx.fail(node, "valid", "valid maps field ids to their new 'valid' checks")
    layout = rtype.layout
    fields = {f.id: f for f in layout.fields} if layout is not None else {}
    replaced: dict[str, Any] = {}
    for fid, vnode in changes.items():
        if fid not in fields:
            raise ctx.fail(changes, str(fid), f"{rtype.name} has no field {fid!r} (fields: "
                           f"{', '.join(fields) or 'none'})")
        if not ledger.claim(ctx, changes, str(fid), ("valid", fmt.name, f"{rtype.name}.{fid}"),
                            vnode):
            continue
        holder = Located({"valid": vnode})
        holder.path, holder.line = ctx.path, changes.line_of(str(fid))
        holder.key_lines = {"valid": holder.line}
        spec = fields[fid]
        kept = [c for c in spec.checks if c.kind in ("reserved", "reserved_bits")]
        new = replace(spec, checks=kept)
        new.checks.extend(_valid(ctx, holder, new, fmt) if vnode else [])
        replaced[fid] = new
        fmt.provenance[f"valid:{rtype.name}.{fid}"] = ctx.origin(changes, str(fid))
    if not replaced or layout is None:
        return
    def rebuilt(part: Layout) -> Layout:
        return Layout(part.name, [replaced.get(f.id, f) for f in part.fields])
    rtype.layout = TailedLayout(rebuilt(layout.base), rebuilt(layout.tail)) \
        if isinstance(layout, TailedLayout) else rebuilt(layout)


def _change_rule(ctx: Any, item: Any, key: str, what: str, fmt: FormatSpec,
                 rtype: RecordType, ledger: Ledger) -> None:
    """Add a rule to *rtype*'s list *key*, or replace the one ``replace`` names."""
    rules: list[Any] = getattr(rtype, key)
    replace = item.get("replace") if isinstance(item, dict) else None
    if replace is None:
        if isinstance(item, dict) and "id" in item:
            rid = item["id"]
            if not ledger.claim(ctx, item, None, ("rule", fmt.name, str(rid)), item):
                return  # the same rule, added by an earlier file
        else:
            if not ledger.claim(ctx, item, None, _added(fmt, rtype.name, key, item), item):
                return  # the same rule, added by an earlier file
            rid = _next_id(rtype, _ID_KIND[key])
        if str(rid) in fmt.rule_ids() or any(r.id == rid for r in rtype.disabled):
            raise ctx.fail(item, "id", f"rule id {rid!r} already exists in {fmt.name}")
        rule = _parse(ctx, item, key, what, str(rid))
        rules.append(rule)
        fmt.provenance[f"rule:{rule.id}"] = ctx.origin(item)
        return
    if "id" in item:
        raise ctx.fail(item, "id", "a replacement keeps the id of the rule it replaces")
    index = next((i for i, r in enumerate(rules) if r.id == replace), None)
    if index is None:
        raise ctx.fail(item, "replace", _no_such_rule(fmt, rtype, str(replace), key))
    if not ledger.claim(ctx, item, "replace", ("rule", fmt.name, str(replace)), item):
        return
    rules[index] = _parse(ctx, item, key, what, str(replace), frozenset({"replace"}))
    fmt.provenance[f"replaced:{replace}"] = fmt.provenance.get(f"rule:{replace}",
                                                               Origin(rtype.spec_path))
    fmt.provenance[f"rule:{replace}"] = ctx.origin(item, "replace")


def _added(fmt: FormatSpec, scope: str, key: str, item: Any) -> tuple[str, ...]:
    """The ledger's key for a rule added without an id: the rule itself (its id depends on
    what was added before it)."""
    return ("added", fmt.name, scope, key, json.dumps(item, sort_keys=True, default=str))


def _parse(ctx: Any, item: Any, key: str, what: str, rid: str,
           extra: frozenset[str] = frozenset()) -> Any:
    if key == "length":
        return _length(ctx, item, rid, extra)
    if key == "rules":
        return _rule(ctx, item, rid, extra)
    return _condition(ctx, item, f"{what}.checks", rid, extra)


def _next_id(rtype: RecordType, kind: str) -> str:
    taken = {r.id for r in (*rtype.length, *rtype.rules, *rtype.checks, *rtype.disabled)}
    n = 1
    while f"{rtype.name}.{kind}.{n}" in taken:
        n += 1
    return f"{rtype.name}.{kind}.{n}"


def _no_such_rule(fmt: FormatSpec, rtype: RecordType, rid: str, key: str) -> str:
    rules = getattr(rtype, key)
    known = ", ".join(r.id for r in rules) or "none"
    elsewhere = fmt.rule_ids().get(rid)
    hint = f"; {rid} is not a {_KINDS[key]} of {rtype.name}" if elsewhere is not None else ""
    return (f"rule id {rid!r} does not exist among the {_KINDS[key]}s of {rtype.name} "
            f"(they are: {known}){hint}; `xenmig specs show {fmt.name} {rtype.name}` lists "
            "them")


def _ids(ctx: Any, node: Any, key: str = "disable") -> list[str]:
    value = node.get(key)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(i, str) for i in items):
        raise ctx.fail(node, key, "disable lists rule ids")
    return items


def _disable(ctx: Any, node: Any, rid: str, fmt: FormatSpec, rtype: RecordType,
             ledger: Ledger) -> None:
    for attr in ("length", "rules", "checks"):
        rules = getattr(rtype, attr)
        for i, rule in enumerate(rules):
            if rule.id == rid:
                if ledger.claim(ctx, node, "disable", ("rule", fmt.name, rid), "disabled"):
                    rtype.disabled.append(rules.pop(i))
                    fmt.provenance[f"disabled:{rid}"] = ctx.origin(node, "disable")
                return
    if ledger.get(("rule", fmt.name, rid)) is not None:
        ledger.claim(ctx, node, "disable", ("rule", fmt.name, rid), "disabled")
        return  # disabled by an earlier file already
    known = ", ".join(r.id for r in (*rtype.length, *rtype.rules, *rtype.checks)) or "none"
    raise ctx.fail(node, "disable", f"rule id {rid!r} does not exist in {rtype.name} "
                   f"(its rules: {known})")


# -- end checks and format-wide disable --------------------------------------------------------
def change_end_checks(ctx: Any, fmt: FormatSpec, raw: Any, ledger: Ledger) -> None:
    """An extension's ``end_checks``: each is added, or replaces the one it names."""
    for i, item in enumerate(raw.get("end_checks") or []):
        what = f"end_checks[{i}]"
        replace = item.get("replace") if isinstance(item, dict) else None
        if replace is None:
            if not ledger.claim(ctx, item, None, _added(fmt, "end", "end_checks", item), item):
                continue  # the same check, added by an earlier file
            n = len(fmt.end_checks) + 1
            while f"end.check.{n}" in fmt.rule_ids() or ledger.get(
                    ("rule", fmt.name, f"end.check.{n}")) is not None:
                n += 1
            cond = _condition(ctx, item, what, f"end.check.{n}")
            if cond.id in fmt.rule_ids():
                raise ctx.fail(item, "id", f"rule id {cond.id!r} already exists in {fmt.name}")
            fmt.end_checks.append(cond)
            fmt.provenance[f"rule:{cond.id}"] = ctx.origin(item)
            continue
        index = next((k for k, c in enumerate(fmt.end_checks) if c.id == replace), None)
        if index is None:
            known = ", ".join(str(c.id) for c in fmt.end_checks) or "none"
            raise ctx.fail(item, "replace", f"rule id {replace!r} is not an end check of "
                           f"{fmt.name} (they are: {known})")
        if not ledger.claim(ctx, item, "replace", ("rule", fmt.name, str(replace)), item):
            continue
        fmt.end_checks[index] = _condition(ctx, item, what, str(replace),
                                           frozenset({"replace"}))
        fmt.provenance[f"replaced:{replace}"] = fmt.provenance.get(f"rule:{replace}",
                                                                   Origin(fmt.paths[0]))
        fmt.provenance[f"rule:{replace}"] = ctx.origin(item, "replace")


def disable_rules(ctx: Any, fmt: FormatSpec, raw: Any, ledger: Ledger) -> None:
    """A top-level ``disable``: any rule of the format by id."""
    for rid in _ids(ctx, raw):
        owner = next((r for r in fmt.records.values()
                      if any(x.id == rid for x in (*r.length, *r.rules, *r.checks))), None)
        if owner is not None:
            changed = replace(owner, length=list(owner.length), rules=list(owner.rules),
                              checks=list(owner.checks), disabled=list(owner.disabled))
            _disable(ctx, raw, rid, fmt, changed, ledger)
            fmt.records[changed.id] = changed
            continue
        found = _disable_format_check(ctx, raw, rid, fmt, ledger)
        if not found and ledger.get(("rule", fmt.name, rid)) is None:
            raise ctx.fail(raw, "disable", f"rule id {rid!r} does not exist in {fmt.name}; "
                           f"`xenmig specs show {fmt.name}` lists its rules")
        if not found:
            ledger.claim(ctx, raw, "disable", ("rule", fmt.name, rid), "disabled")


def _disable_format_check(ctx: Any, raw: Any, rid: str, fmt: FormatSpec,
                          ledger: Ledger) -> bool:
    """Disable end check or header check *rid*; False when there is none."""
    for i, cond in enumerate(fmt.end_checks):
        if cond.id == rid:
            if ledger.claim(ctx, raw, "disable", ("rule", fmt.name, rid), "disabled"):
                fmt.end_checks = [c for k, c in enumerate(fmt.end_checks) if k != i]
                fmt.provenance[f"disabled:{rid}"] = ctx.origin(raw, "disable")
            return True
    for i, header in enumerate(fmt.headers):
        if any(c.id == rid for c in header.checks):
            if ledger.claim(ctx, raw, "disable", ("rule", fmt.name, rid), "disabled"):
                fmt.headers = list(fmt.headers)
                fmt.headers[i] = replace(
                    header, checks=[c for c in header.checks if c.id != rid])
                fmt.provenance[f"disabled:{rid}"] = ctx.origin(raw, "disable")
            return True
    return False


# -- appended fields ---------------------------------------------------------------------------
class TailedLayout(Layout):
    """A record body whose newer versions append fields: the original fields, then the
    appended ones, each decoded only while the body has bytes left (an older, shorter body
    simply lacks them; a body that ends inside a field is a short read, as for any field).
    Which body lengths are valid, and in which versions, is said by length rules.
    ``fields`` lists all of them, so checks, dump and build see the appended ones."""

    def __init__(self, base: Layout, tail: Layout) -> None:
        super().__init__(base.name, [*base.fields, *tail.fields])
        self.base = base
        self.tail = tail
        self._pieces = [Layout(tail.name, [f]) for f in tail.fields]
        self.appended = frozenset(f.id for f in tail.fields)
        self.static_size = None   # an older, shorter body is as valid as the longest

    def decode(self, reader: Reader, order: str,
               outer: Mapping[str, Any] | None = None) -> dict[str, Any]:
        out = self.base.decode(reader, order, outer)
        for piece in self._pieces:
            if not reader.remaining:
                break
            values: Any = ChainMap(out, dict(outer)) if outer else out
            out.update(piece.decode(reader, order, values))
        return out

    def encode(self, values: Mapping[str, Any], order: str) -> bytes:
        """The original fields, then the appended ones up to the first not in *values*."""
        data = self.base.encode(values, order)
        for piece in self._pieces:
            if piece.fields[0].id not in values:
                break
            data += piece.encode(values, order)
        return data
