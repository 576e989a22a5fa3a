"""Built-in plugin: guest memory and vcpu state out of a save image or migration stream.

``xenmig convert IMAGE -o OUT --to raw|elf|lime|xen-core`` for every input whose libxc
stream xenmig finds (libxc, libxl, xl and libvirt save files, Remus/COLO captures, legacy
images through the legacy plugin's converter). :mod:`.export` runs it, :mod:`.index` finds
pages and CPU state in one engine walk, :mod:`.pfnmap` keeps the page map in bounded
memory, :mod:`.cpu` decodes vcpu registers and builds core-file notes, :mod:`.formats`
writes the four formats, :mod:`.output` copies pages with ``os.copy_file_range``,
:mod:`.preview` reports in ``verify --json`` what an export would contain.
docs/memory.md is the user's guide.
"""

from __future__ import annotations

from xenmig_core.plugins import hookimpl

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

#: the memory image formats (xenmig_memory.export.WRITERS has one writer for each); the
#: exporter itself is imported only by a conversion, so that verify does not load it
TARGETS = ("raw", "elf", "lime", "xen-core")


@hookimpl
def xenmig_converter(source_format: str, target: str) -> Any:
    """Any stream converts to a memory image (the run says so when it holds no guest)."""
    if target not in TARGETS:
        return None
    from xenmig_memory.export import factory
    return factory(source_format)


@hookimpl
def xenmig_converter_targets() -> list[str]:
    return list(TARGETS)


@hookimpl
def xenmig_report_section() -> tuple[str, Any]:
    """``memory`` in ``verify --json``: what an export would contain."""
    from xenmig_memory.preview import ExportPreview
    return "memory", ExportPreview()
