"""Many streams in one call: ``xenmig verify A B C -j 4``.

Each stream is verified on its own (an unreadable one does not stop the others) and becomes
an :class:`Outcome`: its exit status (0 valid, 1 invalid, 2 I/O or usage, 3 internal), one
line of text and one JSON document. With ``jobs > 1`` paths are verified in that many worker
processes (each opens its registry once); ``-`` and ``fd:N`` are read by the calling process.
Outcomes come back in the order the streams were given, as soon as each is known.
"""

from __future__ import annotations

import concurrent.futures
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from xenmig_core.errors import XenmigError
from xenmig_core.registry import Registry
from xenmig_core.source import parse_fd

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


@dataclass
class Outcome:
    """What verifying one stream gave: status, a line for people, a document for scripts."""

    source: str
    code: int
    line: str
    doc: dict[str, Any]


def verify_one(registry: Registry, stream: str, fmt: str, params: dict[str, Any]) -> Outcome:
    """Verify *stream* (a path, ``-`` or ``fd:N``); never raises for a bad or unreadable
    stream: every failure is an outcome."""
    from xenmig_core.api import open_source, verify_opened
    try:
        with open_source(stream) as source:
            report = verify_opened(registry, source, fmt, None, params)
    except XenmigError as exc:
        return _failed(stream, exc.exit_code, str(exc))
    except Exception as exc:  # a bug; the other streams still get verified
        return _failed(stream, EXIT_INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
    warnings = len(report.warnings)
    if report.valid:
        more = f"; {warnings} warning" + ("" if warnings == 1 else "s") if warnings else ""
        return Outcome(stream, EXIT_OK, f"{report.source}: valid: {report.summary()}{more}",
                       report.to_dict())
    count = report.error_count
    more = f" ({count - 1} more)" if count > 1 else ""
    line = f"{report.source}: INVALID: {report.errors[0]}{more}{report.offsets_note()}"
    return Outcome(stream, EXIT_INVALID, line, report.to_dict())


def _failed(stream: str, code: int, message: str) -> Outcome:
    return Outcome(stream, code, f"{stream}: error: {message}",
                   {"source": stream, "valid": False, "error": message, "exit_code": code})


#: the registry and settings of a worker process
_WORKER: dict[str, Any] = {}


def _init_worker(specs: Sequence[str], fmt: str, params: dict[str, Any]) -> None:
    from xenmig_core.session import open_registry
    _WORKER.update(registry=open_registry(specs), fmt=fmt, params=params)


def _work(stream: str) -> Outcome:
    return verify_one(_WORKER["registry"], stream, _WORKER["fmt"], _WORKER["params"])


def _local(stream: str) -> bool:
    """True for what only this process can read (stdin, an inherited descriptor)."""
    return stream == "-" or parse_fd(stream) is not None


def verify_many(registry: Registry, streams: Sequence[str], fmt: str,
                params: dict[str, Any], *, jobs: int = 1,
                specs: Sequence[str] = ()) -> Iterator[Outcome]:
    """Outcomes of verifying each of *streams*, in order. *specs* are the extra spec files
    the workers load (the registry itself is not sent to them)."""
    if jobs <= 1 or sum(not _local(s) for s in streams) <= 1:
        for stream in streams:
            yield verify_one(registry, stream, fmt, params)
        return
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=jobs, initializer=_init_worker,
            initargs=(list(specs), fmt, params)) as pool:
        pending = [None if _local(s) else pool.submit(_work, s) for s in streams]
        for stream, future in zip(streams, pending, strict=True):
            if future is None:
                yield verify_one(registry, stream, fmt, params)
            else:
                yield future.result()


def summary_line(codes: Iterable[int]) -> str:
    """``5 streams: 3 valid, 1 invalid, 1 error`` (nothing for a status nobody had)."""
    counts = Counter(codes)
    total = sum(counts.values())
    parts = [f"{counts[EXIT_OK]} valid"]
    if counts[EXIT_INVALID]:
        parts.append(f"{counts[EXIT_INVALID]} invalid")
    failed = total - counts[EXIT_OK] - counts[EXIT_INVALID]
    if failed:
        parts.append(f"{failed} error" + ("" if failed == 1 else "s"))
    return f"{total} streams: " + ", ".join(parts)
