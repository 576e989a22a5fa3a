"""An example xenmig plugin: the EXAMPLE_NOTE record type of libxc streams.

Two hooks, both registered through the ``xenmig.plugins`` entry point in pyproject.toml:

- ``xenmig_spec_files`` contributes ``note.yaml``, which extends the libxc format with the
  record's layout and the checks the spec language states (reserved field, minimum length);
- ``xenmig_record_handler`` returns :func:`check_note` for that record, for the rules the
  spec cannot state.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from xenmig_core.plugins import hookimpl

RECORD = "EXAMPLE_NOTE"
TYPE_ID = 0x8000F001
VERSIONS = (1,)


def check_note(record: Any, ctx: Any) -> None:
    """Called after the spec decoded and checked the record: ``record.fields`` holds
    ``version``, ``reserved`` and ``text``; problems go to ``ctx.error``/``ctx.warning``."""
    version = record.fields["version"]
    if version not in VERSIONS:
        ctx.error(f"version {version} is not one this plugin knows (1)", field="version")
    try:
        record.fields["text"].decode("utf-8")
    except UnicodeDecodeError:
        ctx.warning("text is not UTF-8", field="text")
    ctx.stat("example_notes", f"version {version}")


def note_body(text: str, version: int = 1) -> bytes:
    """The body of an EXAMPLE_NOTE record (for tests and for toolstacks writing one)."""
    return version.to_bytes(4, "little") + bytes(4) + text.encode("utf-8")


@hookimpl
def xenmig_spec_files() -> list[Any]:
    return [files("xenmig_example") / "note.yaml"]


@hookimpl
def xenmig_record_handler(format_name: str, name: str) -> Any:
    if (format_name, name) == ("libxc", RECORD):
        return check_note
    return None
