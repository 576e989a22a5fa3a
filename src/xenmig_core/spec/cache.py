"""The compiled-spec cache: formats compiled once, loaded in a few milliseconds afterwards.

Loading and compiling the YAML specs costs more than the rest of a short run. The compiled
formats (``dict[str, FormatSpec]``: layouts, expressions as code objects, rules) are kept in
one file per *key*, a hash of everything they are made from (every expression is stored
compiled, as marshal data of the code it runs, so that a warm run compiles none):

- the bytes and display path of every spec file, in load order (so a changed, added or
  removed spec file, the user's included, is a new key);
- the plugin set (each plugin's name and where it came from: ``dist==version``, or its
  module for a plugin given directly);
- xenmig's version, the size and modification time of each source of the spec compiler
  (this package and the model's base class, as Python's bytecode cache judges a source: a
  changed compiler in a development checkout is a new key too), the cache format and the
  Python build (code objects are stored with :mod:`marshal`, whose format is Python's own).

Handlers, viewers and walkers are never cached: the registry asks the plugins for them on
every run, as before.

A run reads every format's name, title, magic and framing (detection and the registry need
them) and usually walks one or two formats: each format's other fields (records, headers,
enums, layouts, provenance) are a pickle of their own inside the file, with its digest,
restored through the same restricted unpickler when the format is first used
(:class:`~xenmig_core.spec.model.FormatSpec`). Every digest is checked when the file is
read, so a damaged file is refused then, never in the middle of a walk.

Where: ``$XENMIG_CACHE_DIR``, else ``$XDG_CACHE_HOME/xenmig``, else ``~/.cache/xenmig``.

Format and trust. The file is a :mod:`pickle` (with code objects as :mod:`marshal` bytes and
``struct.Struct`` objects by their format), behind a header holding the key. Unpickling runs
whatever the file says, so a cache file is read only when (1) its folder is owned by the
user and not writable by group or others, (2) the file, opened without following a symlink,
is a regular file owned by the user and not writable by group or others, (3) its header
holds the expected key, and (4) it names nothing but the classes of the spec model and the
few helpers below (a restricted ``find_class``); the result must be a mapping of format
names to :class:`FormatSpec`, each with an intact deferred part. A validating format of
our own (JSON of every model class) would have to follow each change of the model by hand;
pickle follows it for free, and the checks above keep a file others could have written from
being read at all.

Failures are silent by design: an unreadable, corrupt, stale or untrusted file is ignored
and the formats are compiled from the specs; a cache that cannot be written (read-only
folder, full disk, something in the model pickle cannot store) only means the next run
compiles again. Files are written to a temporary name in the folder and renamed into place.
"""

from __future__ import annotations

import copyreg
import gc
import io
import marshal
import os
import stat
import struct
import sys
import time
import types
from collections.abc import Iterable, Mapping

from xenmig_core.spec.expr import Expression
from xenmig_core.spec.model import LIGHT_FIELDS, FormatSpec
from xenmig_core.version import __version__

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

try:   # pickle.py adds only a pure-Python fallback and constants to its C core (a millisecond)
    from _pickle import Pickler, PicklingError, Unpickler, UnpicklingError
except ImportError:  # pragma: no cover - an interpreter without the C core
    from pickle import Pickler, PicklingError, Unpickler, UnpicklingError
#: the pickle protocol of cache files (pickle.HIGHEST_PROTOCOL on every Python xenmig runs on)
PROTOCOL = 5

try:   # hashlib would load OpenSSL first (milliseconds); blake2 is built into Python
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - an interpreter without the builtin module
    from hashlib import blake2b

CACHE_DIR_ENV = "XENMIG_CACHE_DIR"
#: bump when the file layout or what is pickled changes
CACHE_FORMAT = 2
MAGIC = b"xenmig compiled specs\n"
#: at most this many cache files are kept (other spec sets, versions); the oldest go first
KEEP_FILES = 16
_PREFIX, _SUFFIX = "specs-", ".cache"

#: What a cache file may name besides the classes of xenmig_core.spec's model modules.
_ALLOWED_GLOBALS = {
    ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
    ("array", "array"), ("array", "_array_reconstructor"),
    ("collections", "Counter"), ("collections", "OrderedDict"),
    ("marshal", "loads"), (__name__, "_load_function"), (__name__, "_Deferred"),
    ("_struct", "Struct"), ("struct", "Struct"),
}
#: The globals of a compiled spec expression's function: no builtins, nothing else.
_SANDBOX: dict[str, Any] = {"__builtins__": {}}


def cache_dir() -> Path | None:
    """The cache folder (it need not exist yet), or None when no home can be found."""
    from pathlib import Path
    folder = cache_folder()
    return None if folder is None else Path(folder)


def cache_folder() -> str | None:
    """:func:`cache_dir` as a string (a run that finds its cache loads no pathlib)."""
    explicit = os.environ.get(CACHE_DIR_ENV)
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "xenmig")
    home = os.path.expanduser("~")
    return os.path.join(home, ".cache", "xenmig") if home != "~" else None


class _Snapshot:
    """A spec source as it was read for the key, so that what is compiled (and cached under
    that key) is exactly what was hashed, even if the file changes meanwhile."""

    def __init__(self, name: str, data: bytes) -> None:
        self._name = name
        self._data = data

    def read_text(self, encoding: str = "utf-8") -> str:
        return self._data.decode(encoding)

    def read_bytes(self) -> bytes:
        return self._data

    def __str__(self) -> str:
        return self._name


_compiler_hash: bytes | None = None


def _compiler_fingerprint() -> bytes:
    """A hash of the spec compiler's sources (this package's ``*.py`` and the model's base
    class, ``xenmig_core/plain.py``) as Python's bytecode cache tells a changed source:
    by each file's size and modification time (reading them all would cost more than a
    warm run's whole cache look-up). Computed once."""
    global _compiler_hash
    if _compiler_hash is None:
        digest = blake2b(digest_size=16)
        here = os.path.dirname(os.path.abspath(__file__))
        try:
            files = sorted(e.path for e in os.scandir(here) if e.name.endswith(".py"))
            for path in [*files, os.path.join(os.path.dirname(here), "plain.py")]:
                st = os.stat(path)
                digest.update(f"{os.path.basename(path)}\0{st.st_size}\0{st.st_mtime_ns}\0"
                              .encode())
        except OSError:
            pass   # e.g. running from an archive: the version still keys the cache
        _compiler_hash = digest.digest()
    return _compiler_hash


def cache_key(sources: Iterable[tuple[str, bytes]], plugins: Mapping[str, str]) -> str:
    """The key of compiled formats made from *sources* ((display path, bytes) in load
    order) with *plugins* (name -> origin) by this xenmig."""
    digest = blake2b(digest_size=20)
    head = f"{CACHE_FORMAT}\0{__version__}\0{sys.implementation.cache_tag}\0{sys.version}\0"
    digest.update(head.encode())
    digest.update(_compiler_fingerprint())
    for name, origin in sorted(plugins.items()):
        digest.update(f"plugin\0{name}\0{origin}\0".encode())
    for name, data in sources:
        digest.update(f"spec\0{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def load_formats(sources: Iterable[Any], plugins: Mapping[str, str] | None = None, *,
                 directory: Path | None = None) -> dict[str, FormatSpec]:
    """The compiled formats of spec *sources* (Paths or Traversables): from the cache when
    a trusted file for their key is there, else compiled (and the cache file written).
    Spec errors are raised as the loader raises them; cache problems never are."""
    return load_formats_status(sources, plugins, directory=directory)[0]


def load_formats_status(sources: Iterable[Any], plugins: Mapping[str, str] | None = None, *,
                        directory: Path | None = None) -> tuple[dict[str, FormatSpec], str]:
    """:func:`load_formats`, also saying what happened: ``hit`` (read from the cache),
    ``written`` (compiled and stored), ``compiled`` (compiled, not stored) or ``uncached``
    (a source could not be read for the key: compiled straight from the sources)."""
    sources = list(sources)
    try:
        snapshots = [_Snapshot(str(s), s.read_bytes()) for s in sources]
    except (OSError, AttributeError):
        return _compile(sources), "uncached"      # the loader reports an unreadable file
    key = cache_key(((str(s), s.read_bytes()) for s in snapshots), plugins or {})
    folder = directory if directory is not None else cache_folder()
    if folder is not None:
        cached = read_cache(folder, key)
        if cached is not None:
            return cached, "hit"
    specs = _compile(snapshots)
    if folder is not None and write_cache(folder, key, specs):
        return specs, "written"
    return specs, "compiled"


def _compile(sources: list[Any]) -> dict[str, FormatSpec]:
    from xenmig_core.spec.loader import build_formats, load_spec_file

    return build_formats([load_spec_file(s) for s in sources])


def _path(folder: str | os.PathLike[str], key: str, prefix: str = _PREFIX) -> str:
    return os.path.join(folder, f"{prefix}{key}{_SUFFIX}")


def _private(st: os.stat_result) -> bool:
    """Owned by this user and writable by nobody else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def trusted_folder(folder: str | os.PathLike[str]) -> bool:
    """True when *folder* is a directory of this user that nobody else can write to."""
    if not hasattr(os, "geteuid"):
        return False           # no owners to check: do not trust any file
    try:
        st = os.stat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and _private(st)


def read_private(folder: str | os.PathLike[str], key: str, prefix: str = _PREFIX
                 ) -> bytes | None:
    """The contents of the cache file of *key* (and *prefix*) in *folder*, or None when
    there is none or it cannot be trusted (see the module's docstring) or read."""
    if not trusted_folder(folder):
        return None
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(_path(folder, key, prefix), flags)
    except OSError:
        return None
    try:
        with open(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or not _private(st):
                return None
            return f.read()
    except OSError:
        return None


def read_cache(folder: str | os.PathLike[str], key: str) -> dict[str, FormatSpec] | None:
    """The formats stored under *key* in *folder*, or None when there is no such file or it
    cannot be trusted, read or validated."""
    data = read_private(folder, key)
    if data is None:
        return None
    header = MAGIC + key.encode() + b"\n"
    if not data.startswith(header):
        return None
    collecting = gc.isenabled()
    gc.disable()     # thousands of new objects, none garbage: a collection would only cost
    try:
        specs = _Unpickler(io.BytesIO(memoryview(data)[len(header):])).load()
    except Exception:   # a corrupt pickle can raise nearly anything; it is only a cache
        return None
    finally:
        if collecting:
            gc.enable()
    if not isinstance(specs, dict) or not all(
            isinstance(k, str) and isinstance(v, FormatSpec) and v.name == k and
            type(v.__dict__.get("_deferred")) is _Deferred and v.__dict__["_deferred"].intact()
            for k, v in specs.items()):
        return None
    return specs


def write_cache(folder: str | os.PathLike[str], key: str, specs: dict[str, FormatSpec]
                ) -> bool:
    """Store *specs* under *key* in *folder* (created, private, when missing), atomically.
    False when it could not be done; never raises."""
    try:
        buffer = io.BytesIO()
        buffer.write(MAGIC + key.encode() + b"\n")
        _Pickler(buffer, protocol=PROTOCOL).dump(specs)
    except Exception:   # something of the model pickle cannot store: run uncached
        return False
    return write_private(folder, key, buffer.getbuffer())


def write_private(folder: str | os.PathLike[str], key: str, data: bytes | memoryview,
                  prefix: str = _PREFIX) -> bool:
    """Store *data* as the cache file of *key* (and *prefix*) in *folder* (created, private,
    when missing), atomically, keeping the newest :data:`KEEP_FILES` files of *prefix*.
    False when it could not be done; never raises."""
    from pathlib import Path
    folder = Path(folder)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not trusted_folder(folder):
            return False
        final = Path(_path(folder, key, prefix))
        temporary = folder / f".{final.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | \
            getattr(os, "O_CLOEXEC", 0)
        fd = os.open(temporary, flags, 0o600)
        try:
            with open(fd, "wb") as f:
                f.write(data)
            os.replace(temporary, final)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _prune(folder, final, prefix)
    except OSError:
        return False
    return True


def _prune(folder: Path, keep: Path, prefix: str) -> None:
    """Keep the newest :data:`KEEP_FILES` cache files of *prefix*; drop temporaries a killed
    run left."""
    files: list[tuple[float, Path]] = []
    now = time.time()
    for path in folder.iterdir():
        try:
            mtime = path.lstat().st_mtime
            if path.name.startswith(prefix) and path.name.endswith(_SUFFIX):
                files.append((mtime, path))
            elif path.name.startswith(f".{prefix}") and path.name.endswith(".tmp") and \
                    now - mtime > 3600:
                path.unlink()
        except OSError:
            continue
    files.sort(reverse=True)
    for _mtime, path in files[KEEP_FILES:]:
        if path != keep:
            path.unlink(missing_ok=True)


def _load_function(code: types.CodeType) -> types.FunctionType:
    """A compiled expression's function: *code* with no builtins and no other globals."""
    if type(code) is not types.CodeType:
        raise UnpicklingError("expected a code object")
    return types.FunctionType(code, dict(_SANDBOX))


class _Deferred:
    """The fields of a format beyond its light ones, as a pickle of their own (restored,
    through the same restricted unpickler, when the format is first used: see
    :class:`~xenmig_core.spec.model.FormatSpec`), with its digest: the cache file is
    refused when it is read if any of them was damaged, not later in a walk."""

    __slots__ = ("data", "digest")

    def __init__(self, data: bytes, digest: bytes | None = None) -> None:
        self.data = data
        self.digest = _digest(data) if digest is None else digest

    def __reduce__(self) -> tuple[Any, ...]:
        return _Deferred, (self.data, self.digest)

    def intact(self) -> bool:
        return type(self.data) is bytes and self.digest == _digest(self.data)

    def load(self) -> dict[str, Any]:
        collecting = gc.isenabled()
        gc.disable()
        try:
            fields = _Unpickler(io.BytesIO(self.data)).load()
        finally:
            if collecting:
                gc.enable()
        if not isinstance(fields, dict) or not all(
                name in FormatSpec.__fields__ and name not in LIGHT_FIELDS for name in fields):
            raise UnpicklingError("not the fields of a format")
        return fields


def _digest(data: bytes) -> bytes:
    return blake2b(data, digest_size=16).digest()


def _format_state(spec: FormatSpec) -> dict[str, Any]:
    """*spec*'s state as stored: its light fields, and the rest as a :class:`_Deferred`."""
    spec.restore()
    heavy = {name: getattr(spec, name) for name in spec.__fields__ if name not in LIGHT_FIELDS}
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=PROTOCOL).dump(heavy)
    state = {name: getattr(spec, name) for name in LIGHT_FIELDS}
    state["_deferred"] = _Deferred(buffer.getvalue())
    return state


def _slots_of(cls: type) -> list[str]:
    return [name for klass in cls.__mro__ for name in getattr(klass, "__slots__", ())]


class _Pickler(Pickler):
    """Stores what makes compiled specs fast to load, as it is: expressions with their
    compiled code (:meth:`~xenmig_core.spec.expr.Expression.cache_state`), code objects as
    marshal data, functions with sandboxed globals and no closure by their code,
    ``struct.Struct`` objects by their format, and the ``__slots__`` objects of the
    spec model (expressions, templates) by their slots, whatever their own ``__reduce__``
    does for other picklers (recompiling from source on load would cost what the cache
    saves). Anything else that ordinary pickling cannot store makes the dump fail, and the
    run goes on without a cache file."""

    def reducer_override(self, obj: Any) -> Any:
        kind = type(obj)
        if kind is Expression:   # stored compiled: a warm run compiles nothing
            return copyreg.__newobj__, (kind,), (None, obj.cache_state())
        if kind is FormatSpec:   # the light fields, the rest restored on first use
            return copyreg.__newobj__, (kind,), _format_state(obj)
        if kind is _Deferred:
            return NotImplemented
        if kind is types.CodeType:
            return marshal.loads, (marshal.dumps(obj),)
        if kind is types.FunctionType and obj is not _load_function:  # (that one by name)
            if obj.__globals__ != _SANDBOX or obj.__closure__ or obj.__defaults__ \
                    or obj.__kwdefaults__:
                raise PicklingError(f"cannot store function {obj.__qualname__}")
            return _load_function, (obj.__code__,)
        if kind is struct.Struct:
            return struct.Struct, (obj.format,)
        if kind.__module__.startswith("xenmig_core.spec.") and kind.__bases__ == (object,) \
                and "__slots__" in kind.__dict__:
            state = {name: getattr(obj, name) for name in _slots_of(kind) if hasattr(obj, name)}
            return copyreg.__newobj__, (kind,), (None, state)
        return NotImplemented


class _Unpickler(Unpickler):
    """Builds nothing but classes of the spec model and :data:`_ALLOWED_GLOBALS`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module.startswith("xenmig_core.spec.") and module != __name__:
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise UnpicklingError(f"{module}.{name} is not allowed in a spec cache")
