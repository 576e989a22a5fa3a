"""What a memory export of a stream would contain, for ``xenmig verify --json``.

:class:`ExportPreview` watches the verify walk with the exporter's own
:class:`~xenmig_memory.index.MemoryIndex` (page offsets only: no page is read) and reports,
under the key ``memory``, the state at the end of the stream: pages present (latest copies,
no-data types removed), the highest present pfn, the runs of present pfns (ELF segments,
LiME ranges), the vcpus with CPU state, the complete checkpoints, and the size of a raw
export. Streams without a libxc stream get no section.
"""

from __future__ import annotations

from typing import Any

from xenmig_memory.index import MemoryIndex
from xenmig_memory.pfnmap import PAGE, PfnMap


class ExportPreview(MemoryIndex):
    """A MemoryIndex that reads no payload and reports instead of exporting."""

    def __init__(self) -> None:
        super().__init__(PfnMap(), contexts=False, strict=False)

    def report(self) -> dict[str, Any] | None:
        if self.libxc is None:
            self.pfns.close()
            return None
        pages, highest, runs = self.pfns.summary()
        self.pfns.close()
        return {"pages": pages, "highest_pfn": highest if highest >= 0 else None,
                "runs": runs, "vcpus": self.vcpu_count(), "checkpoints": self.checkpoints,
                "raw_size": (highest + 1) * PAGE,
                **({"pfns_beyond_limit": self.beyond} if self.beyond else {})}
