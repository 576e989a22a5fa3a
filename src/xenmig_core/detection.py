"""A detector's answer, :class:`Detection`, in a module of its own.

Hook specs, plugins, the registry and the spec detector all name it; keeping it apart (it
imports nothing of xenmig but the plain data class) is what lets those modules avoid
importing one another.
"""

from __future__ import annotations

from xenmig_core.plain import Plain


class Detection(Plain, frozen=True):
    """One detector's opinion: *format* with *confidence* (0-100), described for people."""

    format: str
    confidence: int
    description: str
