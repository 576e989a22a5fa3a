"""``xenmig specs show``: the effective definition of a format or record type, and where
each part of it came from (built-in spec, plugin spec, ``$XENMIG_SPEC_PATH`` or ``--spec``).

:func:`describe_format` and :func:`describe_record` return plain data (for ``--json``);
:func:`text_lines` renders either as indented text, one part per line, its origin last.
"""

from __future__ import annotations

from typing import Any

from xenmig_core.spec.layout import FieldSpec, Layout
from xenmig_core.spec.model import (
    Condition,
    EnumSpec,
    FormatSpec,
    LayoutRule,
    LengthRule,
    Origin,
    RecordType,
)


def _origin(fmt: FormatSpec, key: str) -> str | None:
    origin: Origin | None = fmt.provenance.get(key)
    return str(origin) if origin is not None else None


def _source(value: Any) -> Any:
    """An expression, template or literal as the spec wrote it."""
    if isinstance(value, tuple):
        return [_source(v) for v in value]
    return getattr(value, "source", value)


def describe_rule(fmt: FormatSpec, rule: Any) -> dict[str, Any]:
    """One rule (length rule, placement rule or check) with its id and origin."""
    out: dict[str, Any] = {"id": rule.id, "severity": rule.severity}
    if isinstance(rule, LengthRule):
        out[rule.kind] = _source(rule.arg)
        if rule.after:
            out["after"] = rule.after
    elif isinstance(rule, LayoutRule):
        out[rule.kind] = list(rule.arg) if isinstance(rule.arg, tuple) else rule.arg
    elif isinstance(rule, Condition):
        out["expr"] = rule.expr.source
    if rule.when is not None:
        out["when"] = rule.when.source
    message = getattr(rule, "message", None)
    if message is not None:
        out["message"] = message.source
    out["from"] = _origin(fmt, f"rule:{rule.id}")
    replaced = _origin(fmt, f"replaced:{rule.id}")
    if replaced:
        out["replaces"] = replaced
    return out


def _field(fmt: FormatSpec, record: str, spec: FieldSpec, appended: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"id": spec.id, "type": spec.type}
    for key in ("size", "repeat", "enum", "flags"):
        if getattr(spec, key) is not None:
            out[key] = getattr(spec, key)
    if spec.payload:
        out["payload"] = True
    if spec.checks:
        out["valid"] = [c.kind for c in spec.checks]
    if appended:
        out["appended"] = True
    out["from"] = _origin(fmt, f"field:{record}.{spec.id}")
    valid = _origin(fmt, f"valid:{record}.{spec.id}")
    if valid:
        out["valid_from"] = valid
    return out


def describe_enum(fmt: FormatSpec, enum: EnumSpec) -> dict[str, Any]:
    """An enum, each value with its origin."""
    values = []
    for value, entry in sorted(enum.entries.items()):
        item: dict[str, Any] = {"value": value, "name": entry.name}
        if entry.label != entry.name:
            item["label"] = entry.label
        if entry.warn:
            item["warn"] = entry.warn
        item["from"] = _origin(fmt, f"enum:{enum.name}:{value}")
        values.append(item)
    return {"name": enum.name, "kind": enum.kind, "from": _origin(fmt, f"enum:{enum.name}"),
            "values": values}


def describe_record(fmt: FormatSpec, rtype: RecordType) -> dict[str, Any]:
    """A record type's effective definition: fields, length rules, rules, checks (each
    with its id), disabled rules, summary, and the enums its fields use."""
    layout: Layout | None = rtype.layout
    appended = getattr(layout, "appended", frozenset())
    fields = [_field(fmt, rtype.name, f, f.id in appended) for f in layout.fields] \
        if layout is not None else []
    enums = sorted({name for f in (layout.fields if layout else [])
                    for name in (f.enum, f.flags) if name})
    out: dict[str, Any] = {
        "format": fmt.name, "id": rtype.id, "name": rtype.name, "title": rtype.title,
        "from": _origin(fmt, f"record:{rtype.name}") or rtype.spec_path,
        "fields": fields,
        "length": [describe_rule(fmt, r) for r in rtype.length],
        "rules": [describe_rule(fmt, r) for r in rtype.rules],
        "checks": [describe_rule(fmt, r) for r in rtype.checks],
    }
    if rtype.versions is not None:
        out["versions"] = list(rtype.versions)
    if rtype.disabled:
        out["disabled"] = [{"id": r.id, "by": _origin(fmt, f"disabled:{r.id}"),
                            "from": _origin(fmt, f"rule:{r.id}")} for r in rtype.disabled]
    if rtype.summary is not None:
        out["summary"] = {"template": rtype.summary.source,
                          "from": _origin(fmt, f"summary:{rtype.name}") or out["from"]}
    out["enums"] = [describe_enum(fmt, fmt.enums[e]) for e in enums]
    return out


def describe_format(fmt: FormatSpec) -> dict[str, Any]:
    """A format: its files in the order they applied, enums, types, record types, header
    and end checks (with ids), and rules extensions disabled."""
    disabled = sorted(k.split(":", 1)[1] for k in fmt.provenance if k.startswith("disabled:"))
    return {
        "format": fmt.name, "title": fmt.title, "files": list(fmt.paths),
        "enums": [describe_enum(fmt, e) for e in fmt.enums.values()],
        "types": [{"name": name, "from": _origin(fmt, f"type:{name}")} for name in fmt.types],
        "records": [{"id": r.id, "name": r.name, "title": r.title,
                     "from": _origin(fmt, f"record:{r.name}") or r.spec_path}
                    for r in sorted(fmt.records.values(), key=lambda r: r.id)],
        "header_checks": [describe_rule(fmt, c) for h in fmt.headers for c in h.checks],
        "end_checks": [describe_rule(fmt, c) for c in fmt.end_checks],
        "disabled": [{"id": rid, "by": _origin(fmt, f"disabled:{rid}")} for rid in disabled],
    }


def _rule_line(rule: dict[str, Any]) -> str:
    skip = {"id", "from", "replaces", "message"}
    body = ", ".join(f"{k}: {v}" for k, v in rule.items() if k not in skip)
    line = f"{rule['id']}  {body}"
    if "message" in rule:
        line += f"  -- {rule['message']!r}"
    line += f"  [{rule['from']}"
    return line + (f", replaces {rule['replaces']}]" if "replaces" in rule else "]")


def _enum_lines(enum: dict[str, Any], indent: str) -> list[str]:
    lines = [f"{indent}{enum['name']} ({enum['kind']})  [{enum['from']}]"]
    home = (enum["from"] or "").rsplit(":", 1)[0]
    for v in enum["values"]:
        where = v["from"] or ""
        mark = f"  [{where}]" if where.rsplit(":", 1)[0] != home else ""
        label = f" ({v['label']})" if "label" in v else ""
        lines.append(f"{indent}  {v['value']:>6}  {v['name']}{label}{mark}")
    return lines


def text_lines(desc: dict[str, Any]) -> list[str]:
    """*desc* (from describe_format or describe_record) as text lines."""
    if "fields" in desc:
        return _record_lines(desc)
    lines = [f"{desc['format']}: {desc['title']}", "  files (in the order they apply):"]
    lines += [f"    {p}" for p in desc["files"]]
    lines.append("  enums:")
    for enum in desc["enums"]:
        lines += _enum_lines(enum, "    ")
    lines.append("  types:")
    lines += [f"    {t['name']}  [{t['from']}]" for t in desc["types"]]
    lines.append("  records:")
    lines += [f"    {r['id']:#010x}  {r['name']:<28} [{r['from']}]" for r in desc["records"]]
    for key, title in (("header_checks", "header checks"), ("end_checks", "end checks")):
        if desc[key]:
            lines.append(f"  {title}:")
            lines += [f"    {_rule_line(r)}" for r in desc[key]]
    if desc["disabled"]:
        lines.append("  disabled:")
        lines += [f"    {d['id']}  [disabled by {d['by']}]" for d in desc["disabled"]]
    return lines


def _record_lines(desc: dict[str, Any]) -> list[str]:
    lines = [f"{desc['format']} record {desc['name']} ({desc['id']:#010x}): {desc['title']}  "
             f"[{desc['from']}]"]
    if "versions" in desc:
        lines.append(f"  versions: {', '.join(str(v) for v in desc['versions'])}")
    lines.append("  fields:")
    for f in desc["fields"]:
        extra = ", ".join(f"{k}: {v}" for k, v in f.items()
                          if k not in ("id", "type", "from", "appended", "valid_from"))
        if "valid_from" in f:
            extra += f"; valid checks from {f['valid_from']}"
        note = " (appended: decoded when the body reaches it)" if f.get("appended") else ""
        lines.append(f"    {f['id']}: {f['type']}{' (' + extra + ')' if extra else ''}{note}"
                     f"  [{f['from']}]")
    for key, title in (("length", "length rules"), ("rules", "rules"), ("checks", "checks")):
        lines.append(f"  {title}:")
        lines += [f"    {_rule_line(r)}" for r in desc[key]]
    for d in desc.get("disabled", []):
        lines.append(f"  disabled: {d['id']}  [disabled by {d['by']}; was {d['from']}]")
    if "summary" in desc:
        lines.append(f"  summary: {desc['summary']['template']!r}  [{desc['summary']['from']}]")
    if desc["enums"]:
        lines.append("  enums:")
        for enum in desc["enums"]:
            lines += _enum_lines(enum, "    ")
    return lines
