"""Opening a stream and verifying it, as the Python API and the ``verify`` command both do:
:func:`open_source`, :func:`verify_opened` and the :class:`Report` they give.

Kept apart from :mod:`xenmig_core.api` (which re-exports all three) so that ``xenmig verify``
loads neither the API's record iterator nor its threads and queues.
"""

from __future__ import annotations

import io
import os

from xenmig_core.source import ByteSource
from xenmig_core.verifier import VerifyReport, verify_source

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from xenmig_core.diagnostics import Diagnostic
    from xenmig_core.engine import Consumer, WalkResult
    from xenmig_core.registry import Registry

if TYPE_CHECKING:
    #: What the API accepts as a stream.
    Source = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO


def __getattr__(name: str) -> Any:
    """``Source`` (what the API accepts as a stream), made when first asked for: it needs
    ``typing``, which ``xenmig verify`` does not otherwise import."""
    if name == "Source":
        from typing import BinaryIO, Union
        # (the very object this name has always been at run time)
        return Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_source(source: Source, *, decompress: bool = True) -> ByteSource:
    """A :class:`ByteSource` over *source* (see the module's conventions); the caller closes
    it. A file object given is not closed with it."""
    if isinstance(source, bytes | bytearray | memoryview):
        plain = ByteSource(io.BytesIO(source), "<bytes>", owned=True)
        if not decompress:
            return plain
        from xenmig_core.decompress import maybe_decompress
        return maybe_decompress(plain)
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if isinstance(source, bytes):        # an os.PathLike of bytes
        source = os.fsdecode(source)
    return ByteSource.open(source, decompress=decompress)


class Report:
    """The outcome of verifying one stream.

    ``valid`` is True when a real Xen restore would accept the stream; ``diagnostics`` holds
    every error and warning kept (each with ``severity``, ``message``, ``offset``,
    ``record`` (name), ``record_index``, ``field``, ``format``); ``to_dict()`` is the document
    ``xenmig verify --json`` prints.
    """

    def __init__(self, inner: VerifyReport, compression: str | None = None) -> None:
        self._inner = inner
        #: gzip, xz, bzip2 or zstd when the stream was stored compressed (offsets are then
        #: offsets in the decompressed stream), else None
        self.compression = compression

    @property
    def valid(self) -> bool:
        return self._inner.valid

    @property
    def format(self) -> str:
        """The outermost format (detected, or as asked)."""
        return self._inner.format

    @property
    def source(self) -> str:
        return self._inner.source

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return self._inner.diagnostics

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def result(self) -> WalkResult:
        """The engine's own account of the walk (record count, diagnostics the caps dropped
        and of what kind)."""
        return self._inner.result

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if not d.is_error]

    @property
    def error_count(self) -> int:
        """Errors found, including those beyond the caps on kept diagnostics."""
        return self._inner.result.error_count

    @property
    def size(self) -> int:
        """The stream's size in bytes (decompressed)."""
        return self._inner.size

    @property
    def record_count(self) -> int:
        return self._inner.result.records

    def summary(self) -> str:
        """One line: the streams found, records and bytes (what ``xenmig verify`` prints)."""
        text = self._inner.summary()
        return f"{text} ({self.compression}-compressed)" if self.compression else text

    def offsets_note(self) -> str:
        """``" [offsets in the gzip-decompressed stream]"`` for a compressed stream, else
        an empty string: what messages naming offsets add."""
        return f" [offsets in the {self.compression}-decompressed stream]" \
            if self.compression else ""

    def to_dict(self) -> dict[str, Any]:
        """The ``xenmig verify --json`` document (plus ``compression`` when compressed)."""
        doc = self._inner.to_dict()
        if self.compression:
            doc["compression"] = self.compression
        return doc

    def __repr__(self) -> str:
        verdict = "valid" if self.valid else f"invalid, {self.error_count} errors"
        return f"<xenmig Report {self.source}: {self.format}, {verdict}>"


def verify_opened(registry: Registry, source: ByteSource, format: str = "auto",
                  consumer: Consumer | None = None,
                  params: dict[str, Any] | None = None, *, account: bool = True) -> Report:
    """:func:`verify` on an opened source with checked *params* (what the CLI calls); with
    *account* False the report has no account of records (``to_dict()`` is then shorter:
    a verdict does not need it, and is faster without it)."""
    inner = verify_source(registry, source, format, consumer, params, account=account)
    return Report(inner, source.compression)
