"""A plugin defined by the tests whose X86_TSC_INFO handler raises a plain exception.

xenmig must report that as a failure of this plugin (PluginError, exit 3, one line naming
it), never as a traceback or as a problem with the stream.
"""

from __future__ import annotations

from typing import Any

from xenmig_core.plugins import hookimpl


def explode(record: Any, ctx: Any) -> None:
    raise ValueError(f"cannot cope with record {record.index}")


@hookimpl
def xenmig_record_handler(format_name: str, name: str) -> Any:
    if format_name == "libxc" and name == "X86_TSC_INFO":
        return explode
    return None
