"""Format detection from a stream's first bytes, through the ``xenmig_detect_format`` hook.

:class:`~xenmig_core.detection.Detection` is defined in its own module and re-exported here
(plugins import it from either)."""

from __future__ import annotations

from collections.abc import Mapping

from xenmig_core.detection import Detection
from xenmig_core.markers import hookimpl

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from xenmig_core.registry import Registry
    from xenmig_core.spec.model import FormatSpec

__all__ = ["DETECT_BYTES", "Detection", "SpecDetector", "detect", "match_magic"]

#: How many bytes detectors are shown.
DETECT_BYTES = 4096


def match_magic(spec: FormatSpec, head: bytes, confidence: int = 90) -> Detection | None:
    """A Detection when every ``detect`` entry of *spec* matches *head*; helper for plugins."""
    if not spec.magic:
        return None
    for magic in spec.magic:
        if head[magic.offset:magic.offset + len(magic.data)] != magic.data:
            return None
    description = spec.magic[0].description or spec.title
    return Detection(spec.name, confidence, description)


class SpecDetector:
    """xenmig's own detector plugin: matches each spec's ``detect`` magic bytes."""

    @staticmethod
    @hookimpl
    def xenmig_detect_format(head: bytes, specs: Mapping[str, FormatSpec]) -> list[Detection]:
        found = (match_magic(spec, head) for spec in specs.values())
        return [d for d in found if d is not None]


def detect(registry: Registry, head: bytes) -> list[Detection]:
    """Every detector's answers for *head*, most confident first."""
    found = registry.detections(head)
    return sorted(found, key=lambda d: -d.confidence)
