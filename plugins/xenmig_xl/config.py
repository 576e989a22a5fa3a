"""The xl save file's optional data: ``u32 config_len`` then the domain configuration.

xl (xl_vmcontrol.c) reads config_len and the configuration from the optional data, refusing
either when it overruns ("Savefile truncated."), and ignores anything after them. With
mandatory flag bit 0 the configuration is libxl's JSON (``config_len`` counts its NUL);
otherwise it is old xl configuration text. With no configuration, restore needs one on the
command line.
"""

from __future__ import annotations

import json
import re
import struct

from xenmig_core.engine import StreamContext
from xenmig_core.engine.context import HeaderValue

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

TEXT_SHOWN = 64 << 10
#: a configuration longer than this is not parsed: its parse (JSON objects) could take many
#: times its size in memory
MAX_PARSED = 1 << 20
_NAME = re.compile(rb"""^\s*name\s*=\s*["']([^"']*)["']""", re.MULTILINE)


def check_optional_data(header: HeaderValue, ctx: StreamContext) -> None:
    """Decode the configuration into ``header.fields`` (``config_len``, and ``config`` for
    JSON or ``config_text`` for old text) and set state ``config_format``."""
    data = header.fields["data"]     # bytes, or a spilled value (more than 4 MiB)
    fields = header.fields
    ctx.state["config_format"] = "none"
    if not data:
        _no_config(ctx, "no optional data", header)
        return
    if len(data) < 4:
        _error(ctx, f"{len(data)} bytes of optional data cannot hold the 4-byte config_len "
                    "(xl: \"Savefile truncated.\")", "config_len", header)
        return
    (config_len,) = struct.unpack(ctx.byte_order + "I", bytes(data[:4]))
    fields["config_len"] = config_len
    if config_len > len(data) - 4:
        _error(ctx, f"config_len {config_len} overruns the optional data ({len(data) - 4} "
                    "bytes left; xl: \"Savefile truncated.\")", "config_len", header)
        return
    extra = len(data) - 4 - config_len
    if extra:
        ctx.warning(f"{extra} bytes after the configuration in the optional data (xl ignores "
                    "them)", field="optional_data", unit=header.name, offset=header.offset)
    ctx.state["config_bytes"] = config_len
    if not config_len:
        _no_config(ctx, "config_len is 0", header)
        return
    if config_len > MAX_PARSED:
        ctx.state["config_format"] = "json" if ctx.state["json_config"] else "text"
        ctx.warning(f"a configuration of {config_len} bytes is not parsed (xenmig parses at "
                    f"most {MAX_PARSED >> 20} MiB; xl writes a few KiB)", field="config",
                    unit=header.name, offset=header.offset)
        header.summary = f"{ctx.state['config_format']} configuration, {config_len} bytes"
        return
    config = bytes(data[4:4 + config_len])
    if ctx.state["json_config"]:
        _json_config(header, ctx, config)
    else:
        _text_config(header, ctx, config)


def _json_config(header: HeaderValue, ctx: StreamContext, config: bytes) -> None:
    ctx.state["config_format"] = "json"
    if config[-1] != 0:
        _error(ctx, "the JSON configuration is not NUL-terminated (xl writes config_len = "
                    "length + 1, NUL included)", "config", header)
    else:
        config = config[:-1]
    try:
        parsed = json.loads(config.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        _error(ctx, f"the JSON configuration does not parse: {exc} (xl restore would fail)",
               "config", header)
        return
    except RecursionError:
        # arrays or objects nested deeper than the parser's stack: no real configuration is
        _error(ctx, "the JSON configuration does not parse: nested too deeply "
                    "(xl restore would fail)", "config", header)
        return
    if not isinstance(parsed, dict):
        _error(ctx, f"the JSON configuration is a {type(parsed).__name__}, not an object "
                    "(libxl_domain_config_from_json refuses it)", "config", header)
        return
    header.fields["config"] = parsed
    header.summary = f"JSON configuration, {len(config)} bytes{describe_config(parsed)}"


def describe_config(config: dict[str, Any]) -> str:
    """``: domain 'name' (hvm), uuid ..., 2 vcpus, 256 MiB`` from libxl's JSON, as far as
    the values are there and of the expected types."""
    c_info = config.get("c_info") if isinstance(config.get("c_info"), dict) else {}
    b_info = config.get("b_info") if isinstance(config.get("b_info"), dict) else {}
    parts = []
    if isinstance(c_info.get("name"), str):
        kind = c_info.get("type")
        parts.append(f"domain {c_info['name']!r}" + (f" ({kind})" if isinstance(kind, str)
                                                      else ""))
    if isinstance(c_info.get("uuid"), str):
        parts.append(f"uuid {c_info['uuid']}")
    if isinstance(b_info.get("max_vcpus"), int):
        parts.append(f"{b_info['max_vcpus']} vcpus")
    if isinstance(b_info.get("max_memkb"), int):
        parts.append(f"{b_info['max_memkb'] // 1024} MiB")
    return (": " + ", ".join(parts)) if parts else ""


def guest_type(config: dict[str, Any]) -> str | None:
    """The guest type ("pv", "hvm", "pvh") a JSON configuration names, or None."""
    c_info = config.get("c_info")
    kind = c_info.get("type") if isinstance(c_info, dict) else None
    return kind if isinstance(kind, str) else None


def _text_config(header: HeaderValue, ctx: StreamContext, config: bytes) -> None:
    ctx.state["config_format"] = "text"
    text = config.rstrip(b"\0")
    header.fields["config_text"] = text[:TEXT_SHOWN].decode("utf-8", errors="replace")
    lines = text.count(b"\n") + (0 if text.endswith(b"\n") else 1)
    name = _NAME.search(text)
    header.summary = (f"xl configuration text, {len(config)} bytes, {lines} lines"
                      + (f": domain {name.group(1).decode(errors='replace')!r}" if name else ""))


def _no_config(ctx: StreamContext, why: str, header: HeaderValue) -> None:
    ctx.warning(f"no domain configuration in the file ({why}): xl restore needs one on its "
                "command line", unit="optional data", offset=header.offset)


def _error(ctx: StreamContext, message: str, field: str,
           header: HeaderValue | None = None) -> None:
    ctx.error(message, field=field, unit="optional data",
              offset=header.offset if header is not None else None)
