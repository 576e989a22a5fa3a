"""Every hook is documented: in its docstring and in docs/plugins.md (datasette's rule)."""

from __future__ import annotations

import inspect

from conftest import ROOT

from xenmig_core import hookspecs


def _hooks() -> list[str]:
    return [name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
            if name.startswith("xenmig_")]


def test_every_hook_has_a_contract_docstring() -> None:
    assert _hooks(), "no hooks found"
    for name in _hooks():
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 80, f"{name} has no real docstring"


def test_every_hook_is_in_the_plugin_guide() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    missing = [name for name in _hooks() if f"`{name}`" not in guide]
    assert not missing, f"docs/plugins.md does not document {missing}"
