"""Linux file calls that Python's ``os`` module lacks, reached through ctypes.

Each lookup returns the C function, typed, or None where it cannot be had (another system,
no ctypes, an old C library): callers then do without it, which costs only speed. ctypes is
loaded at the first lookup, not at import: most runs never need either call.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from collections.abc import Callable

#: fallocate's mode: reserve the space without changing the file's size.
FALLOC_FL_KEEP_SIZE = 1
#: sync_file_range's flag: start writing the stretch to disk, do not wait.
SYNC_FILE_RANGE_WRITE = 2


def _lookup(name: str, *argtypes: str) -> Callable[..., int] | None:
    """The C library's function *name* taking the ctypes types named *argtypes* and
    returning an int (0 on success, -1 with errno set), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        call = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError, ImportError):
        return None
    call.argtypes = [getattr(ctypes, kind) for kind in argtypes]
    call.restype = ctypes.c_int
    return call  # type: ignore[no-any-return]


def sync_file_range() -> Callable[..., int] | None:
    """``sync_file_range(fd, offset, length, flags)``, or None."""
    return _lookup("sync_file_range", "c_int", "c_int64", "c_int64", "c_uint")


def fallocate() -> Callable[..., int] | None:
    """``fallocate(fd, mode, offset, length)``, or None. Unlike ``os.posix_fallocate``, it
    fails where the filesystem cannot reserve space, instead of writing zeros over it."""
    return _lookup("fallocate", "c_int", "c_int", "c_int64", "c_int64")
