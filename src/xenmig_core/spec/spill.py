"""Large field values kept out of memory: a field that loads more than :data:`SPILL_MIN`
bytes (a blob, an array sized by ``rest`` or a count) is read from its source in chunks of
:data:`CHUNK` into an unlinked temporary file, and the record keeps a *spilled* value that
stands for it without holding it.

Contract of every spilled value (:class:`SpilledBytes`, :class:`SpilledArray`,
:class:`SpilledRows`): memory is bounded by a chunk whatever its size (disk holds the bytes
that arrived, in the directory ``tempfile`` picks, and is freed when the value is dropped or
:meth:`Spilled.close`\\ d); ``len()``, iteration (chunk by chunk), indexing, bounded slices,
equality with an in-memory value of the same kind, ``sha256()``, ``chunks()`` and
``summary()`` work (the length and sha256 of the field's bytes as the stream carries
them); anything that would build the whole value in memory (``bytes()``,
``tobytes()``, a slice longer than :data:`MAX_SLICE`) raises :class:`TooLarge`, a
RecordError with a one-line message, instead.

Integer arrays are stored in the machine's byte order (swapped chunk by chunk as they are
read), so their items read back as ``array.array`` would give them.
"""

from __future__ import annotations

import os
import struct
from array import array
from collections.abc import Callable, Iterator, Sequence

from xenmig_core.errors import RecordError

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

#: A field that loads more bytes than this is spilled to a temporary file.
SPILL_MIN = 4 << 20
#: Bytes moved at once between the source, the file and the consumer.
CHUNK = 1 << 20
#: Small reads (an HVM entry's descriptor, one item) are served from a cached window this big.
WINDOW = 1 << 16
#: The longest slice a spilled value returns as an in-memory value.
MAX_SLICE = SPILL_MIN


class TooLarge(RecordError):
    """Something asked for a spilled value whole (or a slice of it too long to hold)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message, field=field, fatal=False)


def spill_from(reader: Any, nbytes: int, what: str,
               convert: Callable[[memoryview], Any] | None = None) -> tuple[Any, int]:
    """Read *nbytes* from *reader* (a layout Reader: ``take_into``, ``holds``) into a new
    unlinked temporary file, :data:`CHUNK` at a time; *convert* may turn each chunk into
    what is written (e.g. a byteswapped array). Returns (the file, *nbytes*). A seekable
    source that cannot hold them raises its truncation error before anything is read."""
    import tempfile  # here: most runs never spill (and it costs start-up time)
    reader.holds(nbytes)       # a file too short: the usual truncation error, at once
    handle = tempfile.TemporaryFile(prefix="xenmig-spill-", buffering=0)  # noqa: SIM115 (the value owns it)
    try:
        buffer = memoryview(bytearray(min(CHUNK, nbytes)))
        done = 0
        while done < nbytes:
            part = buffer[:min(CHUNK, nbytes - done)]
            reader.take_into(part, what)
            handle.write(part if convert is None else convert(part))
            done += len(part)
    except BaseException:
        handle.close()
        raise
    return handle, nbytes


class Spilled:
    """*nbytes* bytes in an unlinked temporary file; the base of the spilled values."""

    __slots__ = ("_file", "_wbuf", "_wstart", "nbytes", "what")

    def __init__(self, handle: Any, nbytes: int, what: str) -> None:
        self._file = handle
        self.nbytes = nbytes
        self.what = what
        self._wstart = 0
        self._wbuf = b""

    # -- raw access ------------------------------------------------------------------
    def read(self, start: int, n: int) -> bytes:
        """*n* bytes at *start* (fewer at the end); small reads come from a cached window."""
        n = max(0, min(n, self.nbytes - start))
        if n > WINDOW // 2:
            return os.pread(self._file.fileno(), n, start)
        if not (self._wstart <= start and start + n <= self._wstart + len(self._wbuf)):
            self._wstart = start
            self._wbuf = os.pread(self._file.fileno(), WINDOW, start)
        at = start - self._wstart
        return self._wbuf[at:at + n]

    def chunks(self, start: int = 0, end: int | None = None, size: int = CHUNK
               ) -> Iterator[bytes]:
        """The bytes from *start* to *end* in order, at most *size* at a time."""
        end = self.nbytes if end is None else min(end, self.nbytes)
        fd = self._file.fileno()
        while start < end:
            data = os.pread(fd, min(size, end - start), start)
            if not data:
                raise OSError(f"spilled {self.what}: temporary file shorter than written")
            yield data
            start += len(data)

    def sha256(self) -> str:
        import hashlib  # here: its OpenSSL costs memory and start-up time
        digest = hashlib.sha256()
        for data in self.chunks():
            digest.update(data)
        return digest.hexdigest()

    def summary(self) -> dict[str, Any]:
        """What stands for the value in a dump: its length in bytes and its sha256."""
        return {"length": self.nbytes, "sha256": self.sha256()}

    def close(self) -> None:
        self._file.close()

    def _too_large(self, what: str) -> TooLarge:
        return TooLarge(f"{self.what}: {what} of {self.nbytes} bytes is not held in memory "
                        f"(fields above {SPILL_MIN} bytes are read in chunks)", field=self.what)

    def __bytes__(self) -> bytes:
        raise self._too_large("the whole value")

    def tobytes(self) -> bytes:
        raise self._too_large("the whole value")

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.what}: {self.nbytes} bytes>"

    def _same_bytes(self, other: Spilled) -> bool:
        return self.nbytes == other.nbytes and all(
            a == b for a, b in zip(self.chunks(), other.chunks(), strict=True))


def _slice(index: slice, length: int) -> range:
    span = range(*index.indices(length))
    if span.step != 1 and len(span) > 1:
        raise TypeError("spilled values take slices with step 1 only")
    return span


class SpilledBytes(Spilled):
    """A ``bytes`` field held in a temporary file (see the module's contract)."""

    __slots__ = ()

    def __len__(self) -> int:
        return self.nbytes

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            span = _slice(index, self.nbytes)
            if len(span) > MAX_SLICE:
                raise self._too_large(f"a slice of {len(span)} bytes")
            return self.read(span.start, len(span)) if len(span) else b""
        if index < 0:
            index += self.nbytes
        if not 0 <= index < self.nbytes:
            raise IndexError("spilled bytes index out of range")
        return self.read(index, 1)[0]

    def __iter__(self) -> Iterator[int]:
        for data in self.chunks():
            yield from data

    def any_set(self) -> bool:
        """True when some byte is not zero."""
        return any(data.count(0) != len(data) for data in self.chunks())

    def find(self, sub: bytes, start: int = 0) -> int:
        """The offset of the first *sub* (one byte, e.g. a NUL) at or after *start*, or -1."""
        if len(sub) != 1:
            raise ValueError("spilled bytes find one byte at a time")
        at = start
        for data in self.chunks(start):
            found = data.find(sub)
            if found >= 0:
                return at + found
            at += len(data)
        return -1

    def startswith(self, prefix: bytes) -> bool:
        return self.read(0, len(prefix)) == prefix

    def reader(self, start: int = 0, end: int | None = None) -> SpilledReader:
        """A layout Reader over bytes *start* to *end* (to decode what the blob holds)."""
        return SpilledReader(self, start, self.nbytes if end is None else end)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SpilledBytes):
            return self._same_bytes(other)
        if isinstance(other, bytes | bytearray | memoryview):
            view = memoryview(other).cast("B")
            if len(view) != self.nbytes:
                return False
            at = 0
            for data in self.chunks():
                if view[at:at + len(data)] != data:
                    return False
                at += len(data)
            return True
        return NotImplemented


class SpilledReader:
    """A layout Reader (``take``, ``take_into``, ``holds``, ``remaining``) over a range of a
    :class:`SpilledBytes`: a field of what it decodes may be spilled again."""

    __slots__ = ("_blob", "_pos", "remaining")

    def __init__(self, blob: SpilledBytes, start: int, end: int) -> None:
        self._blob = blob
        self._pos = start
        self.remaining = max(0, end - start)

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining:
            raise RecordError(f"needs {n} bytes, only {self.remaining} left in body",
                              field=what, fatal=False)
        if n > MAX_SLICE:
            raise self._blob._too_large(f"a read of {n} bytes")
        data = self._blob.read(self._pos, n)
        self._pos += n
        self.remaining -= n
        return data

    def take_into(self, view: memoryview, what: str) -> None:
        n = len(view)
        if n > self.remaining:
            raise RecordError(f"needs {n} bytes, only {self.remaining} left in body",
                              field=what, fatal=False)
        at = 0
        for data in self._blob.chunks(self._pos, self._pos + n):
            view[at:at + len(data)] = data
            at += len(data)
        self._pos += n
        self.remaining -= n

    def holds(self, n: int) -> bool:
        return n <= self.remaining


class SpilledArray(Spilled, Sequence[int]):
    """An integer array field (``array.array`` when small) held in a temporary file, in the
    machine's byte order."""

    __slots__ = ("itemsize", "swapped", "typecode")

    def __init__(self, handle: Any, nbytes: int, what: str, typecode: str,
                 swapped: bool = False) -> None:
        super().__init__(handle, nbytes, what)
        self.typecode = typecode
        self.itemsize = array(typecode).itemsize
        #: the stream's byte order is not the machine's (the file holds swapped items)
        self.swapped = swapped

    def sha256(self) -> str:
        """Of the items' bytes as the stream carries them (in its byte order)."""
        if not self.swapped:
            return super().sha256()
        import hashlib
        digest = hashlib.sha256()
        for piece in self.arrays():
            piece.byteswap()
            digest.update(piece)
        return digest.hexdigest()

    def __len__(self) -> int:
        return self.nbytes // self.itemsize

    def arrays(self) -> Iterator[array]:
        """The items as ``array.array`` pieces of at most :data:`CHUNK` bytes, in order."""
        for data in self.chunks(size=CHUNK - CHUNK % self.itemsize):
            yield array(self.typecode, data)

    def __iter__(self) -> Iterator[int]:
        for piece in self.arrays():
            yield from piece

    def __getitem__(self, index: Any) -> Any:
        n = len(self)
        if isinstance(index, slice):
            span = _slice(index, n)
            if len(span) * self.itemsize > MAX_SLICE:
                raise self._too_large(f"a slice of {len(span)} items")
            if not len(span):
                return array(self.typecode)
            return array(self.typecode, self.read(span.start * self.itemsize,
                                                  len(span) * self.itemsize))
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("spilled array index out of range")
        return array(self.typecode, self.read(index * self.itemsize, self.itemsize))[0]

    def tolist(self) -> list[int]:
        raise self._too_large("a list")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SpilledArray):
            return len(self) == len(other) and all(
                a == b for a, b in zip(self, other, strict=True))
        if isinstance(other, array | list | tuple):
            return len(self) == len(other) and all(
                a == b for a, b in zip(self, other, strict=True))
        return NotImplemented


class SpilledRows(Spilled, Sequence[dict[str, "Any"]]):
    """An array of fixed-size structs held in a temporary file; each item is decoded when
    read (*unpack* turns a run of whole items' bytes into their dicts)."""

    __slots__ = ("_unpack", "item_size")

    def __init__(self, handle: Any, nbytes: int, what: str, item_size: int,
                 unpack: Callable[[bytes], list[dict[str, Any]]]) -> None:
        super().__init__(handle, nbytes, what)
        self.item_size = item_size
        self._unpack = unpack

    def __len__(self) -> int:
        return self.nbytes // self.item_size

    def __iter__(self) -> Iterator[dict[str, Any]]:
        step = max(self.item_size, CHUNK - CHUNK % self.item_size)
        for data in self.chunks(size=step):
            yield from self._unpack(data)

    def __getitem__(self, index: Any) -> Any:
        n = len(self)
        if isinstance(index, slice):
            span = _slice(index, n)
            if len(span) * self.item_size > MAX_SLICE:
                raise self._too_large(f"a slice of {len(span)} items")
            if not len(span):
                return []
            return self._unpack(self.read(span.start * self.item_size,
                                          len(span) * self.item_size))
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("spilled struct array index out of range")
        return self._unpack(self.read(index * self.item_size, self.item_size))[0]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SpilledRows):
            return self._same_bytes(other) if other.item_size == self.item_size else False
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and all(
                a == b for a, b in zip(self, other, strict=True))
        return NotImplemented


def pieces(items: Sequence[int]) -> Iterator[Sequence[int]]:
    """An integer array as it is, or a spilled one's ``array.array`` pieces, in order: for
    work done on whole pieces (translate, count) that must not build the whole array."""
    if isinstance(items, SpilledArray):
        yield from items.arrays()
    else:
        yield items


def head(value: Any, limit: int) -> bytes:
    """The bytes of a ``bytes``-like field value, or the first *limit* of a spilled one."""
    if isinstance(value, SpilledBytes):
        return b"".join(value.chunks(0, limit))
    return bytes(value)


def unpacker(struct_: struct.Struct, names: tuple[str, ...]
             ) -> Callable[[bytes], list[dict[str, Any]]]:
    """Rows of one fixed run: whole items' bytes -> their dicts."""
    def unpack(data: bytes) -> list[dict[str, Any]]:
        return [dict(zip(names, values, strict=True)) for values in struct_.iter_unpack(data)]
    return unpack
