"""How the CLI's help reads: whole first sentences, and the stream parameters plugins declare.

click shortens a command's help in ``xenmig --help`` at its first full stop ("Convert
INPUT (e.g.") and to 45 characters; :class:`Command` and :class:`Group` show the first
sentence whole instead. :class:`ParamsCommand` appends the stream parameters the installed
plugins declare (``xenmig_stream_params``) to the help of verify, dump and convert; plugins
are loaded only when that help is asked for, so start-up stays cheap.
"""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperCommand, TyperGroup

_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)[.!?](?=\s+[A-Z]|\s*$)")


def first_sentence(text: str) -> str:
    """The first sentence of a help text's first paragraph, whole ("e.g." does not end it)."""
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    found = _SENTENCE_END.search(paragraph)
    return paragraph[:found.end()] if found else paragraph


class Command(TyperCommand):
    """A command whose short help (in ``xenmig --help``) is its first sentence, whole."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or first_sentence(self.help or "")


class Group(TyperGroup):
    """A command group whose short help is its first sentence, whole."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return self.short_help or first_sentence(self.help or "")


class ParamsCommand(Command):
    """A command taking stream parameters: its help lists those the plugins declare."""

    def format_epilog(self, ctx: Any, formatter: Any) -> None:
        super().format_epilog(ctx, formatter)
        try:
            from xenmig_core.params import declared_params
            from xenmig_core.plugins import get_plugin_manager
            declared = declared_params(get_plugin_manager())
        except Exception:   # a broken plugin: the commands themselves report it
            return
        rows = [(f"{p.name}=" + ("|".join(p.choices) or p.kind.upper()),
                 p.help + (f" (also {p.alias})" if p.alias else "") + f" [{p.plugin}]")
                for p in declared.values() if (self.name or "") in p.commands]
        if rows:
            with formatter.section("Stream parameters (--param NAME=VALUE)"):
                formatter.write_dl(rows)
