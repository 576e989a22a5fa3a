"""Output gathered and written in large pieces: a renderer's many small writes (one per item,
or per line) cost more than the text they write."""

from __future__ import annotations

from typing import TextIO

#: gathered text is written when it adds up to this many characters (a piece larger than that
#: is written at once: memory stays bounded by one item)
BATCH = 64 << 10


class Batched:
    """Gathers text and writes it to *out* about :data:`BATCH` characters at a time; the
    owner calls :meth:`flush` at its end (the dump calls it too when an error stops it)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._parts: list[str] = []
        self._size = 0

    def _put(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= BATCH:
            self.flush()

    def flush(self) -> None:
        """Write what was gathered."""
        if self._parts:
            text = "".join(self._parts)
            self._parts = []
            self._size = 0
            self.out.write(text)
