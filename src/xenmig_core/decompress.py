"""Compressed images: gzip, xz, bzip2 and zstd, recognised by their magic bytes.

:func:`maybe_decompress` looks at the first bytes of an opened :class:`ByteSource` (a path,
stdin, ``fd:N`` or a file object). When they are the magic of a known compression and the
first block decodes, it returns a new source that yields the *decompressed* bytes; otherwise
the source itself. The new source starts at offset 0 and cannot seek, so every offset the
engine reports is an offset in the decompressed stream (``ByteSource.compression`` names
the compression so that callers can say so). Decompression streams through the standard
library's (or zstandard's) incremental decoders: memory stays bounded whatever the size.

zstd needs the optional ``zstandard`` package (``pip install 'xenmig[zstd]'``); without it,
a zstd image is refused with a message naming the extra.

A trial decode of the first bytes guards against a raw stream that merely starts with a
compression's magic (a legacy image's first word is a page count, and could).
"""

from __future__ import annotations

import io
from collections.abc import Callable

from xenmig_core.errors import SourceError

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

    from xenmig_core.source import ByteSource

#: How many bytes the trial decode looks at.
TRIAL_BYTES = 4096
ZSTD_EXTRA = "pip install 'xenmig[zstd]'"


def _gzip_trial(data: bytes) -> None:
    import zlib  # (a shared library too: only for a stream that starts like gzip)
    zlib.decompressobj(wbits=31).decompress(data, 1)


def _xz_trial(data: bytes) -> None:
    import lzma  # (lzma and bz2 load shared libraries: only for such a stream)
    lzma.LZMADecompressor().decompress(data, 1)


def _bz2_trial(data: bytes) -> None:
    import bz2
    bz2.BZ2Decompressor().decompress(data)


def _zstd_trial(data: bytes) -> None:
    zstd = _zstandard()
    zstd.ZstdDecompressor().decompressobj().decompress(data)


def _zstandard() -> Any:
    try:
        import zstandard
    except ImportError:
        raise SourceError("this stream is zstd-compressed, which needs the zstd extra: "
                          f"{ZSTD_EXTRA}") from None
    return zstandard


def _gzip_open(raw: BinaryIO) -> BinaryIO:
    import gzip
    return gzip.GzipFile(fileobj=raw, mode="rb")


def _xz_open(raw: BinaryIO) -> BinaryIO:
    import lzma
    return lzma.LZMAFile(raw, "rb")


def _bz2_open(raw: BinaryIO) -> BinaryIO:
    import bz2
    return bz2.BZ2File(raw, "rb")


def _zstd_open(raw: BinaryIO) -> BinaryIO:
    return _zstandard().ZstdDecompressor().stream_reader(raw, read_across_frames=True,
                                                          closefd=False)


#: name -> (magic bytes, trial decode of the first bytes, opener of a decompressing reader)
COMPRESSIONS: dict[str, tuple[bytes, Callable[[bytes], None], Callable[[BinaryIO], BinaryIO]]] = {
    "gzip": (b"\x1f\x8b\x08", _gzip_trial, _gzip_open),
    "xz": (b"\xfd7zXZ\x00", _xz_trial, _xz_open),
    "bzip2": (b"BZh", _bz2_trial, _bz2_open),
    "zstd": (b"\x28\xb5\x2f\xfd", _zstd_trial, _zstd_open),
}


def sniff(head: bytes) -> str | None:
    """The compression whose magic *head* starts with and whose first bytes decode, or
    None. Raises SourceError for zstd when ``zstandard`` is not installed."""
    for name, (magic, trial, _open) in COMPRESSIONS.items():
        if not head.startswith(magic):
            continue
        if name == "bzip2" and not head[3:4].isdigit():
            continue
        try:
            trial(head)
        except SourceError:
            raise
        except Exception:      # each library raises its own kind for data it cannot decode
            return None
        return name
    return None


class _Compressed(io.RawIOBase):
    """The compressed bytes, read from the underlying source (which owns the file)."""

    def __init__(self, source: ByteSource) -> None:
        self.source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.source.read_upto(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class _Decompressed(io.RawIOBase):
    """The decompressed bytes: not seekable (seeking would mean decompressing again), and
    every decoder failure is an OSError naming the compression, which ByteSource turns
    into a one-line read error."""

    def __init__(self, source: ByteSource, kind: str) -> None:
        self.source = source
        self.kind = kind
        self._reader = COMPRESSIONS[kind][2](_Compressed(source))  # type: ignore[arg-type]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: Any) -> int:
        try:
            return self._reader.readinto(buffer) or 0
        except EOFError:
            raise OSError(f"{self.kind} data ends before its end marker "
                          "(the compressed file is truncated)") from None
        except Exception as exc:
            if isinstance(exc, SourceError):
                raise
            raise OSError(f"{self.kind} data is corrupt: {exc}") from None

    def close(self) -> None:
        if not self.closed:
            try:
                self._reader.close()
            finally:
                self.source.close()
        super().close()


def maybe_decompress(source: ByteSource) -> ByteSource:
    """*source*, or a source of its decompressed bytes when it is compressed (see module).
    The returned source owns *source*: closing it closes both."""
    kind = sniff(source.peek(TRIAL_BYTES))
    if kind is None:
        return source
    decompressed = type(source)(_Decompressed(source, kind), source.name, owned=True)  # type: ignore[arg-type]
    decompressed.compression = kind
    return decompressed
