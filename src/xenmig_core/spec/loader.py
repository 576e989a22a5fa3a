"""Loading and validating spec files into :mod:`xenmig_core.spec.model` objects.

Every key is checked on load: unknown keys, wrong types, undefined names (a field counted by
a field that does not come before it, an enum that does not exist, a rule naming an unknown
record) raise :class:`SpecError` naming file, line and key. A spec file either defines a
format (``format: NAME``) or adds to one (``extends: NAME``); the full language is described
in docs/spec-language.md.
"""

from __future__ import annotations

import os
import re
from typing import Any

from xenmig_core.errors import SpecError
from xenmig_core.spec import extend
from xenmig_core.spec.extend import Ledger
from xenmig_core.spec.layout import Layout
from xenmig_core.spec.model import (
    EnumSpec,
    FormatSpec,
    Magic,
    RecordType,
)
from xenmig_core.spec.parse import (
    IDENT,
    SPEC_VERSION,
    TOP_KEYS,
    _as_list,
    _condition,
    _Ctx,
    _enum,
    _framing,
    _header,
    _layout,
    _record,
)
from xenmig_core.spec.yamlsrc import Located, load_yaml, read_spec_text


def load_spec_file(source: Any) -> Located:
    """Read one spec file (Path or Traversable) into its raw, located mapping."""
    text, path = read_spec_text(source)
    data = load_yaml(text, path)
    ctx = _Ctx(path)
    if not isinstance(data, dict):
        raise SpecError("a spec file must be a mapping", path=path)
    ctx.mapping(data, "spec", TOP_KEYS)
    if data.get("xenmig_spec") != SPEC_VERSION:
        raise ctx.fail(data, "xenmig_spec", f"xenmig_spec must be {SPEC_VERSION}")
    if ("format" in data) == ("extends" in data):
        raise ctx.fail(data, None, "a spec needs exactly one of 'format' or 'extends'")
    return data  # type: ignore[return-value]


def build_formats(raw_specs: list[Located]) -> dict[str, FormatSpec]:
    """Compile raw spec mappings into formats: definitions, their extensions, then variants
    (copies of a finished base format), then extensions of variants.

    Extensions apply in the order given (the registry gives built-in and plugin specs, then
    ``$XENMIG_SPEC_PATH``, then ``--spec``); a file given twice (the same file, by any path)
    counts once.
    Two extensions that change the same thing differently are refused (see
    :mod:`xenmig_core.spec.extend`); the result depends only on the files' contents, their
    paths (named in provenance and messages) and their order."""
    formats: dict[str, FormatSpec] = {}
    ledger = Ledger()
    seen_paths: set[str] = set()
    unique = []
    for raw in raw_specs:
        key = os.path.realpath(raw.path) if os.path.exists(raw.path) else raw.path
        if key not in seen_paths:
            seen_paths.add(key)
            unique.append(raw)
    raw_specs = unique
    definitions = [r for r in raw_specs if "format" in r and "variant_of" not in r]
    variants = [r for r in raw_specs if "format" in r and "variant_of" in r]
    variant_names = {r["format"] for r in variants}
    extensions = [r for r in raw_specs if "extends" in r]
    for raw in definitions:
        ctx = _Ctx(raw.path)
        name = _format_name(ctx, raw, formats)
        fmt = FormatSpec(name=name, title=str(raw.get("title", name)),
                         doc=str(raw.get("doc", "")))
        _apply(ctx, fmt, raw, ledger, defining=True)
        formats[name] = fmt
    _extend(formats, [r for r in extensions if r["extends"] not in variant_names], ledger)
    for raw in variants:
        ctx = _Ctx(raw.path)
        name = _format_name(ctx, raw, formats)
        base = formats.get(raw["variant_of"])
        if base is None or base.base is not None:
            raise ctx.fail(raw, "variant_of", f"variant of unknown format {raw['variant_of']!r}"
                           f" (known: {', '.join(sorted(formats)) or 'none'})")
        fmt = _variant(base, name, raw)
        _apply(ctx, fmt, raw, ledger, defining=False, variant=True)
        formats[name] = fmt
    _extend(formats, [r for r in extensions if r["extends"] in variant_names], ledger)
    for fmt in formats.values():
        _check_record_references(fmt, formats)
    return formats


def _format_name(ctx: _Ctx, raw: Located, formats: dict[str, FormatSpec]) -> str:
    name = raw["format"]
    if not isinstance(name, str) or not re.match(r"^[a-z][a-z0-9-]*$", name):
        raise ctx.fail(raw, "format", "format names are lower-case words with '-'")
    if name in formats:
        raise ctx.fail(raw, "format", f"format {name!r} is already defined in "
                       f"{formats[name].paths[0]}")
    return name


def _extend(formats: dict[str, FormatSpec], extensions: list[Located], ledger: Any) -> None:
    for raw in extensions:
        ctx = _Ctx(raw.path)
        base = raw["extends"]
        if base not in formats:
            raise ctx.fail(raw, "extends", f"extends unknown format {base!r} "
                           f"(known: {', '.join(sorted(formats)) or 'none'})")
        _apply(ctx, formats[base], raw, ledger, defining=False)


def _variant(base: FormatSpec, name: str, raw: Located) -> FormatSpec:
    """A new format that starts as a copy of *base*: same framing, records, enums, state,
    headers, end checks, report and summary; no detection magic. The variant's own keys then
    apply as in an ``extends`` file, except that ``headers`` replaces the base's headers
    (``headers: []``: the stream has none) and ``state`` values override the base's."""
    return FormatSpec(
        name=name, title=str(raw.get("title", name)), doc=str(raw.get("doc", base.doc)),
        paths=list(base.paths), state=dict(base.state),
        # own copies of the enums: values a variant's extension adds are the variant's
        enums={k: EnumSpec(e.name, e.kind, dict(e.entries)) for k, e in base.enums.items()},
        provenance=dict(base.provenance),
        headers=list(base.headers), framing=base.framing, records=dict(base.records),
        follows=base.follows, end_checks=list(base.end_checks), report=dict(base.report),
        magic=[], end_record=base.end_record, summary=base.summary, base=base.name)


def _apply(ctx: _Ctx, fmt: FormatSpec, raw: Located, ledger: Any, *, defining: bool,
           variant: bool = False) -> None:
    extending = not defining and not variant   # an ``extends`` file: changes are claimed
    fmt.paths.append(ctx.path)
    if defining and "disable" in raw:
        raise ctx.fail(raw, "disable", "only an 'extends' spec disables rules")
    if not defining:
        for key in ("follows", "detect") if variant else ("headers", "follows", "detect"):
            if key in raw:
                what = "a 'variant_of'" if variant else "an 'extends'"
                raise ctx.fail(raw, key, f"{what} spec cannot change {key}")
        if variant and "headers" in raw:
            fmt.headers = []
    for ename, enode in (raw.get("enums") or {}).items():
        if ename in fmt.enums:   # only an extension can name an existing enum: it adds values
            extend.add_enum_values(ctx, fmt, raw["enums"], ename, enode)
            continue
        fmt.enums[ename] = _enum(ctx, raw["enums"], ename, enode)
        _note_enum(ctx, fmt, raw["enums"], ename, enode)
    state = raw.get("state") or {}
    if not isinstance(state, dict):
        raise ctx.fail(raw, "state", "state must map names to initial values")
    for key, value in state.items():
        if not IDENT.match(str(key)):
            raise ctx.fail(state, key, "state names are lower_case identifiers")
        if extending and not ledger.claim(ctx, state, key, ("state", fmt.name, key), value):
            continue
        fmt.state[key] = value
    types: dict[str, Layout] = {}
    # an extension's layouts may use the format's types (a variant starts with none)
    visible: dict[str, Layout] = {} if defining else dict(fmt.types)
    for tname, tnode in (raw.get("types") or {}).items():
        if not IDENT.match(str(tname)):
            raise ctx.fail(raw["types"], tname, "type names are lower_case identifiers")
        if tname in fmt.types:
            extend.repeated_type(ctx, fmt, ledger, raw["types"], tname, tnode)
            continue
        visible[tname] = types[tname] = _layout(ctx, raw["types"], tname, tnode, fmt, visible)
        fmt.provenance[f"type:{tname}"] = ctx.origin(raw["types"], tname)
        if not defining:
            ledger.claim(ctx, raw["types"], tname, ("type", fmt.name, tname), tnode)
    fmt.types.update(types)
    types = visible
    earlier: set[str] = set()  # integer fields of earlier headers: sizes may name them
    for i, hnode in enumerate(raw.get("headers") or []):
        header = _header(ctx, hnode, f"headers[{i}]", fmt, types, frozenset(earlier))
        fmt.headers.append(header)
        for cnode, cond in zip(hnode.get("checks") or [], header.checks, strict=True):
            fmt.provenance[f"rule:{cond.id}"] = ctx.origin(cnode)
        earlier |= {f.id for f in header.layout.fields if f.is_int and f.repeat is None}
    if "detect" in raw:
        for dnode in raw["detect"]:
            d = ctx.mapping(dnode, "detect entry", {"offset", "hex", "ascii", "description"})
            if "hex" in d:
                data = bytes.fromhex(str(d["hex"]).replace(" ", ""))
            elif "ascii" in d:
                data = str(d["ascii"]).encode("latin-1")
            else:
                raise ctx.fail(d, None, "a detect entry needs 'hex' or 'ascii'")
            fmt.magic.append(Magic(int(d.get("offset", 0)), data, str(d.get("description", ""))))
    if "follows" in raw:
        fmt.follows = ctx.expr(raw, "follows", raw["follows"])
    records = raw.get("records")
    if records is not None:
        rec = ctx.mapping(records, "records", {"framing", "types"}, parent=raw,
                          parent_key="records")
        if "framing" in rec:
            if not defining:
                raise ctx.fail(rec, "framing", "an 'extends' spec cannot change the framing")
            fmt.framing, fmt.end_record = _framing(ctx, rec["framing"])
        if fmt.framing is None:
            raise ctx.fail(rec, None, "records need a framing")
        for i, tnode in enumerate(rec.get("types") or []):
            if not defining and extend.names_existing_record(fmt, tnode):
                extend.change_record(ctx, tnode, f"records.types[{i}]", fmt, types, ledger)
                continue
            rtype = _record(ctx, tnode, f"records.types[{i}]", fmt, types)
            if rtype.id in fmt.records:
                other = fmt.records[rtype.id]
                raise ctx.fail(tnode, "id", f"record id {rtype.id:#x} is already "
                               f"{other.name} ({other.spec_path})")
            if fmt.record_by_name(rtype.name):
                raise ctx.fail(tnode, "name", f"record name {rtype.name} is already used")
            fmt.records[rtype.id] = rtype
            _note_record(ctx, fmt, tnode, rtype)
    if defining:
        for i, cnode in enumerate(raw.get("end_checks") or []):
            cond = _condition(ctx, cnode, f"end_checks[{i}]", f"end.check.{i + 1}")
            fmt.end_checks.append(cond)
            fmt.provenance[f"rule:{cond.id}"] = ctx.origin(cnode)
    else:
        extend.change_end_checks(ctx, fmt, raw, ledger)
        extend.disable_rules(ctx, fmt, raw, ledger)
    if "summary" in raw and (not extending or ledger.claim(
            ctx, raw, "summary", ("summary", fmt.name, "(format)"), raw["summary"])):
        fmt.summary = ctx.template(raw, "summary", raw["summary"])
    for key, value in (raw.get("report") or {}).items():
        if extending and not ledger.claim(ctx, raw["report"], key, ("report", fmt.name, key),
                                          value):
            continue
        fmt.report[key] = ctx.expr(raw["report"], key, value)


def _note_enum(ctx: _Ctx, fmt: FormatSpec, parent: Any, name: str, node: Any) -> None:
    fmt.provenance[f"enum:{name}"] = ctx.origin(parent, name)
    for value in fmt.enums[name].entries:
        fmt.provenance[f"enum:{name}:{value}"] = ctx.origin(node, str(value))


def _note_record(ctx: _Ctx, fmt: FormatSpec, node: Any, rtype: RecordType) -> None:
    """Remember where the record type, its fields and its rules were defined."""
    fmt.provenance[f"record:{rtype.name}"] = ctx.origin(node)
    for fnode in node.get("body") or []:
        if isinstance(fnode, dict) and "id" in fnode:
            fmt.provenance[f"field:{rtype.name}.{fnode['id']}"] = ctx.origin(fnode)
    for key, rules in (("length", rtype.length), ("rules", rtype.rules),
                       ("checks", rtype.checks)):
        for rnode, rule in zip(_as_list(node.get(key)), rules, strict=True):
            fmt.provenance[f"rule:{rule.id}"] = ctx.origin(rnode)




def _check_record_references(fmt: FormatSpec, formats: dict[str, FormatSpec]) -> None:
    """Rules must name records of the format or marks that some record infers."""
    names = {r.name for r in fmt.records.values()}
    names |= {i.mark for r in fmt.records.values() for i in r.infer}
    ids: set[str] = set()
    for rule in (*(x for r in fmt.records.values() for x in (*r.length, *r.rules, *r.checks)),
                 *(c for h in fmt.headers for c in h.checks), *fmt.end_checks):
        if rule.id in ids:
            where = fmt.provenance.get(f"rule:{rule.id}")
            raise SpecError(f"format {fmt.name}: rule id {rule.id!r} is used twice",
                            path=where.path if where else fmt.paths[0],
                            line=where.line if where else None, key="id")
        ids.add(rule.id)
    for rtype in fmt.records.values():
        ctx = _Ctx(rtype.spec_path)
        for rule in rtype.rules:
            if rule.kind == "at_most":
                continue
            unknown = [a for a in rule.arg if a not in names]
            if unknown:
                raise SpecError(f"record {rtype.name}: rule names unknown record or mark "
                                f"{', '.join(unknown)}", path=ctx.path,
                                line=rule.line or rtype.spec_line, key=rule.kind)
        if rtype.control and rtype.control.format and rtype.control.format not in formats:
            raise SpecError(f"record {rtype.name}: control names unknown format "
                            f"{rtype.control.format!r}", path=ctx.path,
                            line=rtype.control.line or rtype.spec_line, key="control")
    if fmt.end_record and fmt.end_record not in names:
        raise SpecError(f"framing.end names unknown record {fmt.end_record!r}",
                        path=fmt.paths[0])
