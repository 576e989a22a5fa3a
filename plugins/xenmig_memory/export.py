"""``xenmig convert --to raw|elf|lime|xen-core``: the guest's memory and vcpus out of a stream.

:class:`MemoryExport` is the converter the plugin's ``xenmig_converter`` hook returns for
every source format. Its run:

1. Make the input a seekable file: a regular input file is used as it is; a pipe (or any
   unseekable input) is first copied to an unlinked temporary file in the output's
   directory; a legacy image (bare or behind an xl header) is first converted, through the
   legacy plugin's own converter, into a libxc stream in such a file.
2. Walk it once with :class:`~xenmig_memory.index.MemoryIndex`: the latest copy of each
   pfn, the vcpus, the checkpoints. Any libxc stream the walk meets counts, whatever
   wraps it.
3. Choose the state: the end of the stream; ``--checkpoint N`` (``options.extra
   ["checkpoint"]``): the end of checkpoint N; a stream cut after at least one complete
   checkpoint (every error lies after the last complete one): the last complete
   checkpoint, and the summary line says so. A second walk that stops at that checkpoint
   rebuilds the state.
4. Write the format (:mod:`~xenmig_memory.formats`), copying pages from the file.

Bad or unexportable input (an invalid stream, no libxc stream, a page size other than
4 KiB, no page with data) is a one-line :class:`~xenmig_core.errors.StreamError` (exit 1);
``xenmig convert`` then leaves no output file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any

from xenmig_core.convert import ConvertOptions
from xenmig_core.engine import Engine, WalkResult
from xenmig_core.errors import StreamError, UsageError
from xenmig_core.registry import Registry
from xenmig_core.source import ByteSource
from xenmig_memory.formats import WRITERS, Guest
from xenmig_memory.index import MemoryIndex, Stopped
from xenmig_memory.output import Output
from xenmig_memory.pfnmap import PfnMap

LEGACY = "legacy"
SPOOL_PIECE = 1 << 20
PAGE_SHIFT = 12


def directory_of(fd: int | None) -> str | None:
    """The directory of the file open as *fd* (Linux's /proc), or None (then temporary
    files go to the system's temporary directory)."""
    if fd is None:
        return None
    with contextlib.suppress(OSError):
        path = os.readlink(f"/proc/self/fd/{fd}")
        directory = os.path.dirname(path)
        if path.startswith("/") and os.path.isdir(directory):
            return directory
    return None


def _temp_file(directory: str | None) -> int:
    """An unlinked temporary file in *directory*: gone whatever happens to this process."""
    fd, name = tempfile.mkstemp(prefix=".xenmig-export.", suffix=".tmp", dir=directory)
    os.unlink(name)
    return fd


def _source_at(fd: int, start: int, name: str) -> ByteSource:
    """A fresh source over file *fd* from byte *start* (a descriptor of its own)."""
    own = os.dup(fd)
    os.lseek(own, start, os.SEEK_SET)
    return ByteSource(os.fdopen(own, "rb"), name, owned=True)


class MemoryExport:
    """Converter from any stream holding a libxc stream to a memory image (see module)."""

    output_format = None        # no xenmig format describes the output: nothing to verify

    def __init__(self, registry: Registry, options: ConvertOptions, source_format: str) -> None:
        if options.target not in WRITERS:
            raise UsageError(f"no memory export format {options.target!r}")
        self.registry = registry
        self.options = options
        self.source_format = source_format
        self.checkpoint: int | None = options.extra.get("checkpoint")
        self.source_label: str | None = None
        self.guest: Guest | None = None

    # -- input ---------------------------------------------------------------------------
    def _spool(self, source: ByteSource, directory: str | None) -> int:
        fd = _temp_file(directory)
        try:
            while data := source.read_upto(SPOOL_PIECE):
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
        except OSError as exc:
            os.close(fd)
            raise StreamError(f"cannot spool the input: {exc.strerror or exc}") from None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _legacy(self, source: ByteSource, directory: str | None, stack: contextlib.ExitStack
                ) -> tuple[int, WalkResult]:
        """Convert a legacy image to a libxc stream in a temporary file."""
        from xenmig_legacy.convert import factory
        fd = _temp_file(directory)
        stack.callback(os.close, fd)
        options = ConvertOptions(target="libxc", params=dict(self.options.params))
        with os.fdopen(os.dup(fd), "wb") as spool:
            result = factory(self.registry, options).run(source, spool)
        return fd, result

    # -- walks ---------------------------------------------------------------------------
    def _walk(self, fd: int, start: int, fmt: str, pfns: PfnMap, stop_at: int | None
              ) -> tuple[MemoryIndex, WalkResult]:
        index = MemoryIndex(pfns, stop_at)
        with _source_at(fd, start, "<input>") as source:
            engine = Engine(self.registry, source, index, params=self.options.params)
            with contextlib.suppress(Stopped):
                engine.run(fmt)
        return index, engine.result

    # -- the run -------------------------------------------------------------------------
    def run(self, source: ByteSource, out: Any) -> WalkResult:
        output = Output(out)
        directory = directory_of(output.fd)
        with contextlib.ExitStack() as stack:
            stack.callback(output.close)
            fmt = self.source_format
            label = fmt
            fd = source.file_fd()
            start = source.start if fd is not None else 0
            if fmt == LEGACY:
                fd, result = self._legacy(source, directory, stack)
                if not result.valid:
                    return result
                fmt, start, label = "libxc", 0, "legacy image"
            elif fd is None:
                fd = self._spool(source, directory)
                stack.callback(os.close, fd)
            pfns = PfnMap(directory)
            stack.callback(pfns.close)
            index, result = self._walk(fd, start, fmt, pfns, None)
            if index.libxc is None and LEGACY in index.other_formats:
                with _source_at(fd, start, source.name) as again:
                    fd, result = self._legacy(again, directory, stack)
                if not result.valid:
                    return result
                fmt, start, label = "libxc", 0, "legacy image behind an xl header"
                pfns.close()
                pfns = PfnMap(directory)
                stack.callback(pfns.close)
                index, result = self._walk(fd, start, fmt, pfns, None)
            if index.libxc is None:
                if not result.valid:
                    return result
                raise StreamError(f"no guest memory: this {fmt} stream holds no libxc stream")
            if index.page_shift is not None and index.page_shift != PAGE_SHIFT:
                raise StreamError(f"unknown page size: the domain header's page shift is "
                                  f"{index.page_shift} (only 4 KiB pages can be exported)")
            stop, note = self._choose_state(index, result)
            if stop is not None:
                pfns.close()
                pfns = PfnMap(directory)
                stack.callback(pfns.close)
                index, result = self._walk(fd, start, fmt, pfns, stop)
            if not result.valid:
                return result
            self.guest = self._guest(index, pfns, fd)
            note = "; ".join(part for part in (note, *index.problems[:1]) if part)
            self.source_label = self._label(label, self.guest, note)
            WRITERS[self.options.target](self.guest, output)
        return result

    def _choose_state(self, index: MemoryIndex, result: WalkResult
                      ) -> tuple[int | None, str]:
        """(checkpoint to stop at or None for the end of the stream, a note for the
        summary)."""
        complete = index.checkpoints
        cut = not result.valid and complete > 0 and not index.ended and all(
            d.offset is None or (index.checkpoint_end is not None
                                 and d.offset >= index.checkpoint_end)
            for d in result.errors)
        if self.checkpoint is not None:
            if self.checkpoint < 1 or self.checkpoint > complete:
                have = f"{complete} complete checkpoint{'s' if complete != 1 else ''}"
                raise UsageError(f"--checkpoint {self.checkpoint}: the stream has {have}")
            if not result.valid and not cut:
                return None, ""                    # the walk's error is reported
            return self.checkpoint, f"checkpoint {self.checkpoint}"
        if cut:
            first = result.errors[0]
            return complete, (f"checkpoint {complete}, the last complete one: the stream is "
                              f"cut after it ({first.message})")
        return None, ""

    @staticmethod
    def _guest(index: MemoryIndex, pfns: PfnMap, fd: int) -> Guest:
        pages, highest, runs = pfns.summary()
        if not pages:
            raise StreamError("no guest memory: the stream has no page with data")
        return Guest(pfns=pfns, src_fd=fd, vcpus=index.vcpus(), is_pv=index.is_pv,
                     guest_width=index.guest_width, shared_info=index.shared_info,
                     xen_version=index.xen_version, pages=pages, highest_pfn=highest,
                     runs=runs)

    @staticmethod
    def _label(label: str, guest: Guest, note: str) -> str:
        what = (f"{label} ({guest.pages} pages, highest pfn {guest.highest_pfn:#x}, "
                f"{len(guest.vcpus)} vcpu{'s' if len(guest.vcpus) != 1 else ''}")
        return what + (f"; {note})" if note else ")")


def factory(source_format: str) -> Any:
    """The ``xenmig_converter`` factory for streams detected as *source_format*."""
    def make(registry: Registry, options: ConvertOptions) -> MemoryExport:
        return MemoryExport(registry, options, source_format)
    return make
