"""Plugin: XenServer / XCP-ng suspend images (xenopsd's framing around libxc streams).

``specs/xenserver.yaml`` lays out each header and record; this plugin adds the walker that
frames them (:mod:`.walker`: some headers carry no length because another stream follows),
the Xenops record's S-expression (:mod:`.xenops`, :mod:`.sexp`), and detection of both
signatures. The libxc (or legacy) stream inside is verified by its own plugin, nested.
"""

from __future__ import annotations

from collections.abc import Mapping

from xenmig_core.detect import Detection
from xenmig_core.engine import StreamContext
from xenmig_core.plugins import hookimpl, package_file
from xenmig_core.spec.model import FormatSpec

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

FORMAT = "xenserver"
SIGNATURES = {b"XenSavedDomv2-\n": "a XenServer/XCP-ng suspend image",
              b"XenSavedDomain\n": "a legacy (pre-structured) XenServer suspend image"}


@hookimpl
def xenmig_spec_files() -> list[Any]:
    return [package_file("xenmig_specs", "xenserver.yaml")]


@hookimpl
def xenmig_record_handler(format_name: str, name: str) -> Any:
    if (format_name, name) == (FORMAT, "XENOPS"):
        from xenmig_xenserver.xenops import check_xenops
        return check_xenops
    return None


def view_signature(header: Any, ctx: Any) -> dict[str, Any]:
    """The signature as the text it is."""
    return {"signature": bytes(header.fields["signature"]).decode("latin-1").replace("\n", "\\n")}


@hookimpl
def xenmig_record_viewer(format_name: str, name: str) -> Any:
    if format_name == FORMAT and name == "XENOPS":
        from xenmig_xenserver.xenops import view_xenops
        return view_xenops
    if format_name == FORMAT and name == "signature":
        return view_signature
    return None


@hookimpl
def xenmig_walker(format_name: str) -> Any:
    if format_name != FORMAT:
        return None
    from xenmig_xenserver.walker import walk
    return walk


@hookimpl
def xenmig_detect_format(head: bytes, specs: Mapping[str, FormatSpec]) -> Detection | None:
    if FORMAT not in specs:
        return None
    description = SIGNATURES.get(head[:15])
    return Detection(FORMAT, 95, description) if description else None


@hookimpl
def xenmig_trailing_data(ctx: StreamContext, head: bytes) -> str | None:
    """xenopsd's restore stops reading at End_of_image."""
    if ctx.name == FORMAT and ctx.counts["END_OF_IMAGE"]:
        return "after End_of_image, which xenopsd's restore never reads"
    return None
