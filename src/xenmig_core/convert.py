"""``convert``: one walk of the input through a plugin's converter, written safely.

The format knowledge lives in the converter a plugin returns from ``xenmig_converter``;
this module owns what every conversion needs:

- **Safe output.** A path output is written to a temporary file beside it and renamed into
  place only after the conversion succeeded and its result passed ``verify``; on any error,
  Ctrl-C or SIGTERM the temporary file is removed and the target is left untouched. An
  output that is the input is refused; the input is only ever opened for reading.
- **Streaming.** ``-`` (stdout) or ``fd:N`` outputs are written as the conversion goes (a
  pipe cannot be taken back: on error the consumer sees a short stream and a non-zero exit).
- **Verification.** A regular-file output is verified once written, before the rename: a
  verify walk of the temporary file, which seeks past page contents (they are in the page
  cache, and only headers and pfn arrays are read). Page contents a converter has the
  kernel copy in the background (``copy_later``) may still be on their way: the walk
  goes along behind them, a read waiting only for the copies below it. Any other output
  (a pipe, ``-``, ``fd:N``, a device) is verified as it is written: the bytes are also
  fed, through an OS pipe, to a verify walk in a second thread. ``verify=False`` skips
  both.
- **Progress** on stderr (:mod:`xenmig_core.progress`), only when stderr is a terminal, the
  caller wants it (not ``-q``) and the conversion lasts more than a second.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import stat
import threading
from collections.abc import Iterator

from xenmig_core.errors import SourceError, StreamError, UsageError
from xenmig_core.plain import Plain, factory
from xenmig_core.plugins import call_each
from xenmig_core.progress import Progress, progress_for
from xenmig_core.registry import Registry
from xenmig_core.sink import is_stream_target, open_output
from xenmig_core.source import ByteSource, parse_fd
from xenmig_core.verifier import VerifyReport, choose_format, verify_source

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any, BinaryIO, TextIO


class ConvertOptions(Plain):
    """What a conversion is asked to do. *params* are the stream parameters the plugins
    declare (``--param``: the legacy plugin's ``width``, ``guest``, ``skip_qemu``); *extra*
    carries converter-specific choices (e.g. the compatibility script's handling of an xl
    header, a memory export's checkpoint)."""

    target: str
    params: dict[str, Any] = factory(dict)
    extra: dict[str, Any] = factory(dict)


class ConvertResult(Plain):
    """What a successful conversion wrote. *verify* is the verdict of reading the output
    back (None with ``verify=False``): valid, format, size and diagnostics, without an
    account of the records (``verify --json`` of the output gives that)."""

    source_format: str
    target: str
    bytes_written: int
    verify: VerifyReport | None


def _same_file(input_spec: str, output: str) -> bool:
    try:
        out_stat = os.stat(output)
    except OSError:
        return False
    try:
        fd = parse_fd(input_spec)
        in_stat = os.fstat(fd) if fd is not None else (
            os.fstat(0) if input_spec == "-" else os.stat(input_spec))
    except OSError:
        return False
    return (in_stat.st_dev, in_stat.st_ino) == (out_stat.st_dev, out_stat.st_ino)


class _Tee:
    """Writes to *out* and to a verify walk running in a thread (through an OS pipe)."""

    def __init__(self, out: BinaryIO, registry: Registry, fmt: str) -> None:
        self.out = out
        self.written = 0
        read_fd, write_fd = os.pipe()
        self._pipe = os.fdopen(write_fd, "wb")
        self._reader = io.FileIO(read_fd, "rb")      # unbuffered: the source may splice
        self.report: VerifyReport | None = None
        self.crash: BaseException | None = None
        self._thread = threading.Thread(target=self._verify, args=(registry, fmt),
                                        daemon=True)
        self._thread.start()

    def _verify(self, registry: Registry, fmt: str) -> None:
        try:
            source = ByteSource(self._reader, "<converted output>")
            self.report = verify_source(registry, source, fmt, account=False)
        except BaseException as exc:  # reported by close(); the writer must never block
            self.crash = exc
        finally:
            with contextlib.suppress(OSError, ValueError):
                while self._reader.read(1 << 20):
                    pass
            self._reader.close()

    def write(self, data: bytes | memoryview) -> int:
        self.out.write(data)
        with contextlib.suppress(BrokenPipeError):
            self._pipe.write(data)
        self.written += len(data)
        return len(data)

    def close(self) -> VerifyReport | None:
        with contextlib.suppress(OSError):
            self._pipe.close()
        self._thread.join()
        if self.crash is not None:
            raise self.crash
        return self.report


def _regular_file(out: Any) -> bool:
    """True when *out* is a regular file (which can be read back by seeking)."""
    try:
        return stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return False


def _verify_written(registry: Registry, out: Any, fmt: str) -> VerifyReport:
    """Verify what was written to the regular file *out* (a
    :class:`~xenmig_core.sink.GuardedWriter`) from its start, seeking past page contents,
    while the copies still under way finish (a read waits only for those below what it
    reads: see :meth:`~xenmig_core.sink.GuardedWriter.written`). A failed copy is raised
    once all are done, before the report is returned."""
    raw = out.written()
    try:
        with ByteSource(raw, "<converted output>") as source:
            report = verify_source(registry, source, fmt, account=False)
    finally:
        raw.close()
    out.flush()
    return report


class _Counting:
    """Counts what is written to *out*; reports progress every so often."""

    def __init__(self, out: Any, progress: Progress | None, name: str = "output") -> None:
        self.out = out
        self.name = name
        self.written = 0
        self.progress = progress

    def write(self, data: bytes | memoryview) -> int:
        try:
            self.out.write(data)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise SourceError(f"{self.name}: write error: {exc.strerror or exc}") from None
        self.written += len(data)
        if self.progress is not None:
            self.progress.tick()
        return len(data)

    def fileno(self) -> int:
        """The output's descriptor, for converters that copy with ``os.copy_file_range``;
        they report what they wrote that way with :meth:`count`."""
        return self.out.fileno()

    def copy_from(self, src_fd: int, offset: int, length: int) -> int:
        """Append *length* bytes at *offset* of the regular file *src_fd* (see
        :meth:`xenmig_core.sink.GuardedWriter.copy_from`); returns how many were copied."""
        done: int = self.out.copy_from(src_fd, offset, length)
        self.count(done)
        return done

    def copy_later(self, src_fd: int, offset: int, length: int) -> None:
        """Append *length* bytes at *offset* of the regular file *src_fd*, which holds
        them, without waiting for the copy (see
        :meth:`xenmig_core.sink.GuardedWriter.copy_later`)."""
        self.out.copy_later(src_fd, offset, length)
        self.count(length)

    def count(self, n: int) -> None:
        self.written += n
        if self.progress is not None:
            self.progress.tick()


class Terminated(SystemExit):
    """SIGTERM arrived during a conversion (libxl sends it when a restore is aborted)."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into an exception while converting, so that the temporary output is
    removed like on Ctrl-C (only possible in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(128 + signum)
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _candidates(registry: Registry) -> tuple[list[str], list[str]]:
    """The known formats, sorted, and the targets to ask about: those formats, then the
    other targets plugins name in ``xenmig_converter_targets``, sorted."""
    names = sorted(registry.formats)
    pm = getattr(registry, "pm", None)        # None: a registry without plugins
    extra = {t for _plugin, targets in call_each(pm, "xenmig_converter_targets")
             for t in targets} if pm is not None else set()
    return names, names + sorted(extra - set(names))


def converter_targets(registry: Registry) -> list[str]:
    """The formats some installed plugin converts into (from any known format), sorted,
    then the other targets plugins name in ``xenmig_converter_targets`` (memory images),
    sorted: what the ``xenmig_converter`` hook answers for."""
    names, candidates = _candidates(registry)
    return [target for target in candidates
            if any(registry.converter(source, target) is not None for source in names)]


def converts_to(registry: Registry, target: str) -> bool:
    """``target in converter_targets(registry)``, asking the plugins about *target* only
    (a plugin may load its converter to answer: a memory export's, for a memory image)."""
    names, candidates = _candidates(registry)
    return target in candidates and \
        any(registry.converter(source, target) is not None for source in names)


def convert(registry: Registry, input_spec: str, output_spec: str, options: ConvertOptions,
            *, source_format: str = "auto", verify: bool = True, sync: bool = True,
            progress_to: TextIO | None = None, progress: bool = True) -> ConvertResult:
    """Convert *input_spec* (path, ``-``, ``fd:N``) into *output_spec* as ``options.target``.

    *progress* False never shows progress (``-q``); otherwise it goes to *progress_to*
    (default stderr) when that is a terminal. *sync* False does not wait for a path
    output to reach the disk before renaming it into place (see
    :func:`xenmig_core.sink.atomic_output`). Raises StreamError (exit 1) when the input
    cannot be converted or the output fails verification (nothing is left at a path
    output), UsageError for impossible requests (output = input, no converter for the
    pair), SourceError for I/O failures.
    """
    if not is_stream_target(output_spec) and _same_file(input_spec, output_spec):
        raise UsageError(f"{output_spec}: the output is the input; refusing to overwrite it")
    with _sigterm_unwinds(), ByteSource.open(input_spec) as source:
        fmt = choose_format(registry, source, source_format)
        factory = registry.converter(fmt, options.target)
        if factory is None:
            raise UsageError(f"no converter from {fmt} to {options.target}")
        shown = progress_for(source, "converting", enabled=progress, err=progress_to)
        converter = factory(registry, options)
        with open_output(output_spec, sync=sync) as out:
            counting = _Counting(out, shown, output_spec)
            tee = None
            verify_after = False
            if verify and converter.output_format is not None:
                verify_after = not is_stream_target(output_spec) and _regular_file(out)
                if not verify_after:
                    tee = _Tee(counting, registry, converter.output_format)
            sink: Any = tee if tee is not None else counting
            try:
                result = converter.run(source, sink)
            finally:
                report = tee.close() if tee is not None else None
                if shown is not None:
                    shown.finish()
            if not result.valid:
                raise StreamError(f"cannot convert: {result.errors[0]}")
            if verify_after:
                assert converter.output_format is not None
                report = _verify_written(registry, out, converter.output_format)
            if report is not None and not report.valid:
                raise StreamError("the converted stream does not verify: "
                                  f"{report.result.errors[0]}")
    label = getattr(converter, "source_label", None) or fmt
    return ConvertResult(label, options.target, counting.written, report)


def summary(result: ConvertResult) -> str:
    """One line describing a finished conversion."""
    verified = "verified" if result.verify is not None else "not verified"
    return (f"converted {result.source_format} to {result.target}: "
            f"{result.bytes_written} bytes, {verified}")
