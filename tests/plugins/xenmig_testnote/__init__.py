"""A third-party-style plugin defined by the tests: it adds a record type to libxc.

``note.yaml`` (shipped with the plugin, returned by ``xenmig_spec_files``) extends libxc with
XENMIG_TEST_MARK (id 0x42): ``u32 level``, ``u32 reserved``, then text. The handler adds
what the spec language does not say: a level above 3 is an error, and the text must be
printable ASCII (a warning otherwise); it counts marks per level in the report's statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xenmig_core.plugins import hookimpl

RECORD = "XENMIG_TEST_MARK"
TYPE_ID = 0x42


def check_mark(record: Any, ctx: Any) -> None:
    level = record.fields["level"]
    if level > 3:
        ctx.error(f"level {level} is above 3", field="level")
    text = record.fields["text"]
    if not all(0x20 <= b < 0x7F for b in text):
        ctx.warning("text is not printable ASCII", field="text")
    ctx.stat("marks", f"level {level}")
    record.summary = f"level {level}: {text.decode('ascii', 'replace')!r}"


@hookimpl
def xenmig_spec_files() -> list[Path]:
    return [Path(__file__).with_name("note.yaml")]


@hookimpl
def xenmig_record_handler(format_name: str, name: str) -> Any:
    if format_name == "libxc" and name == RECORD:
        return check_mark
    return None
