"""Generated guards (xenmig_core.engine.guards): code is shared by text, values are not."""

from __future__ import annotations

from xenmig_core.engine import guards
from xenmig_core.spec.layout import Check, FieldSpec, Layout


def _layout(allowed: tuple[int, ...]) -> Layout:
    return Layout("T", [FieldSpec(id="kind", type="u32", checks=[Check("any_of", allowed)])])


def test_guards_of_the_same_text_share_code_but_keep_their_own_constants() -> None:
    one = guards.fields_guard("REC", _layout((1, 2)))
    other = guards.fields_guard("REC", _layout((7,)))
    assert one is not None and other is not None
    assert one.__code__ is other.__code__          # compiled once
    assert one({"kind": 2}, None) and not one({"kind": 7}, None)
    assert other({"kind": 7}, None) and not other({"kind": 2}, None)
