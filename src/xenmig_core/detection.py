"""A detector's answer, :class:`Detection`, in a module of its own.

Hook specs, plugins, the registry and the spec detector all name it; keeping it apart (it
imports nothing of xenmig) is what lets those modules avoid importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """One detector's opinion: *format* with *confidence* (0-100), described for people."""

    format: str
    confidence: int
    description: str
