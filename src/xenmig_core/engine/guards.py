"""Guards: one generated function per record type and phase that says "nothing to report".

Checking a valid record the general way costs a loop over rules, checks and conditions,
each evaluated on its own. A guard is the conjunction of them all, generated as Python
source from the spec model when a record type is first met and compiled once: for a valid
record it returns True in one call and the general checks are skipped. When it returns
False (or a spec expression fails inside it), the general code runs and reports exactly
what it always did, in the same order. Guards have no side effects (spec expressions have
none), so running the general code after one changes nothing.

A phase whose model has something a guard cannot express (a check on an array or a struct,
an ``expr`` field check) gets no guard (None) and always runs the general way.
"""

from __future__ import annotations

from collections.abc import Callable
from types import CodeType

from xenmig_core.spec.expr import Expression
from xenmig_core.spec.layout import FieldSpec, Layout
from xenmig_core.spec.model import Condition, LayoutRule

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

Guard = Callable[..., bool]


class Unguarded(Exception):
    """Something in the phase is beyond a guard: that phase gets none."""


#: compiled guard code by (source, file name): a guard's code depends on its text alone
#: (its constants are in the scope it is evaluated in), and the same record types' guards
#: are made again by every walk of a run (and by plugins checking nested entries)
_codes: dict[tuple[str, str], CodeType] = {}


def _compile(params: str, parts: list[str], constants: dict[str, Any], name: str) -> Guard:
    body = " and ".join(f"({p})" for p in parts) or "True"
    key = (f"lambda {params}: {body}", f"<guard {name}>")
    code = _codes.get(key)
    if code is None:
        code = _codes[key] = compile(key[0], key[1], "eval")
    scope: dict[str, Any] = {"__builtins__": {}, **constants}
    return eval(code, scope)  # type: ignore[no-any-return]


def _source(expr: Expression) -> str:
    if expr.scoped:
        raise Unguarded
    return expr.fast_source


def _when(when: Expression | None, test: str) -> str:
    return test if when is None else f"not ({_source(when)}) or ({test})"


def rules_guard(name: str, versions: tuple[int, ...] | None, rules: list[LayoutRule]
                ) -> Guard | None:
    """``guard(_N, _marks, _counts, _S)``: True when the record's ``versions`` and every
    ``rules`` entry hold (``_N``: the context's names, ``_S``: its state)."""
    try:
        return _rules_guard(name, versions, rules)
    except Unguarded:
        return None


def _rules_guard(name: str, versions: tuple[int, ...] | None, rules: list[LayoutRule]
                 ) -> Guard:
    constants: dict[str, Any] = {}
    parts = rules_tests(name, versions, rules, _source, constants)
    return _compile("_N, _marks, _counts, _S", parts, constants, name)


def rules_tests(name: str, versions: tuple[int, ...] | None, rules: list[LayoutRule],
                source: Callable[[Expression], str], constants: dict[str, Any]) -> list[str]:
    """Python tests over ``_marks``, ``_counts`` and the state ``_S`` that all hold when the
    record's ``versions`` and every ``rules`` entry do; a rule's ``when`` becomes
    ``source(expr)``, other values go into *constants*."""
    parts = []
    if versions is not None:
        key = f"_V{len(constants)}"
        constants[key] = frozenset(versions)
        parts.append(f'_S.get("version") in {key}')
    for rule in rules:
        if rule.kind == "after":
            test = " and ".join(f"{m!r} in _marks" for m in rule.arg) or "True"
        elif rule.kind == "before":
            test = " and ".join(f"{m!r} not in _marks" for m in rule.arg) or "True"
        else:
            test = f"_counts[{name!r}] < {int(rule.arg)!r}"
        parts.append(test if rule.when is None else f"not ({source(rule.when)}) or ({test})")
    return parts


def conditions_guard(name: str, conditions: list[Condition]) -> Guard | None:
    """``guard(_N)``: True when every condition whose ``when`` holds is true."""
    try:
        return _compile("_N", [_when(c.when, _source(c.expr)) for c in conditions], {}, name)
    except Unguarded:
        return None


def fields_guard(name: str, layout: Layout) -> Guard | None:
    """``guard(_F, _N)``: True when every field check of *layout* passes on the decoded
    fields ``_F``; None when some check is beyond a guard (arrays, structs, bytes, ``expr``)."""
    constants: dict[str, Any] = {}
    parts = []
    try:
        for spec in checked_fields(layout):
            tests = field_tests(spec, f"_F[{spec.id!r}]", _source, constants)
            parts.append(f"{spec.id!r} not in _F or ({' and '.join(tests)})")
    except Unguarded:
        return None
    return _compile("_F, _N", parts, constants, name)


def checked_fields(layout: Layout) -> list[FieldSpec]:
    """The fields of *layout* that have checks; Unguarded when a check is beyond a guard
    (one of a struct's fields)."""
    found = []
    for spec in layout.fields:
        if not spec.checks:
            if spec.struct is not None and spec.struct.has_checks:
                raise Unguarded
            continue
        found.append(spec)
    return found


def field_tests(spec: FieldSpec, value: str, source: Callable[[Expression], str],
                constants: dict[str, Any]) -> list[str]:
    """Python tests, one per check of *spec*, that all hold when its value (the Python
    expression *value*) passes them; a check's expression argument becomes
    ``source(expr)``, other arguments go into *constants*. Unguarded when a check is beyond
    generated code (not an int field, an ``expr`` check)."""
    if not spec.is_int or spec.repeat is not None or spec.struct is not None:
        raise Unguarded
    tests = []
    for i, chk in enumerate(spec.checks):
        arg = chk.arg
        if isinstance(arg, Expression):
            arg_source = f"({source(arg)})"
        elif chk.kind in ("eq", "min", "max", "reserved_bits") and isinstance(arg, int):
            arg_source = repr(arg)
        elif chk.kind in ("any_of", "known"):
            key = f"_C{len(constants)}_{i}"
            constants[key] = frozenset(arg) if chk.kind == "known" else tuple(arg)
            arg_source = key
        elif chk.kind == "reserved":
            arg_source = ""
        else:
            raise Unguarded
        test = {"eq": f"{value} == {arg_source}", "min": f"{value} >= {arg_source}",
                "max": f"{value} <= {arg_source}", "any_of": f"{value} in {arg_source}",
                "known": f"{value} in {arg_source}", "reserved": f"{value} == 0",
                "reserved_bits": f"not {value} & {arg_source}"}.get(chk.kind)
        if test is None:
            raise Unguarded
        tests.append(test)
    return tests
