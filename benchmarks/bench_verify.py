#!/usr/bin/env python3
"""Speed and memory of ``xenmig verify`` on a large synthetic stream, beside its floors.

    python benchmarks/bench_verify.py [--mib 1024] [--kind pv|hvm-libxl] [--repeat 3]
                                      [--reference CMD] [--keep PATH] [--compress KIND]

Writes a valid stream of about MIB mebibytes of guest memory (1024-page PAGE_DATA batches,
as Xen's saver writes them): a libxc v3 PV stream, or an HVM libxl stream (``xl save``'s
shape) with ``--kind hvm-libxl``. Then runs, in fresh processes, each case *repeat* times and
prints the median wall time, throughput, peak RSS and ratio to its floor:

- ``file``: verify from the file (page contents skipped by seeking), warm page cache;
- ``file, cold``: the same after the file's pages were dropped from the cache;
- ``pipe``: ``cat FILE | xenmig verify -`` (page contents read through), floor ``cat | cat``;
- ``file --json``.

``--reference CMD`` also times another verifier on the same file (CMD gets the path appended,
e.g. a hand-written reader), warm and cold; ``--xenmig CMD`` times another xenmig (e.g. an
older checkout's: ``--xenmig "/other/venv/bin/python -m xenmig_core"``). Peak RSS must not
grow with MIB.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from xenmig_core.session import open_registry
from xenmig_core.writer import StreamWriter
from xenmig_libxc.samples import hvm_sample, pv_sample
from xenmig_libxl.samples import LIBXC_HEADERS, emulator_parts, plain_sample

BATCH = 1024
PAGE = 4096
XENMIG = [sys.executable, "-m", "xenmig_core"]


def _page_batches(writer: StreamWriter, pages: int) -> None:
    page = bytes(range(256)) * 16
    for start in range(0, pages, BATCH):
        count = min(BATCH, pages - start)
        writer.record("PAGE_DATA", {"count": count, "pfn": list(range(start, start + count))},
                      payload=page * count)


def write_pv(path: Path, mib: int) -> int:
    """A valid libxc PV stream with *mib* MiB of pages; returns its size in bytes."""
    spec = open_registry(autoload=False).specs["libxc"]
    sample = pv_sample(pages=16)
    pages = mib * 256
    fpp = PAGE // 8
    with open(path, "wb") as out:
        writer = StreamWriter(out, spec)
        writer.header("image_header", sample.image_header)
        writer.header("domain_header", sample.domain_header)
        for step in sample.steps:
            if step.name == "X86_PV_P2M_FRAMES":
                frames = (pages - 1) // fpp + 1
                writer.record(step.name, {"p2m_start_pfn": 0, "p2m_end_pfn": pages - 1,
                                          "p2m_pfns": list(range(frames))})
                _page_batches(writer, pages)
            elif step.name != "PAGE_DATA":
                writer.record(step.name, step.fields, payload=step.payload)
        return writer.written


def write_hvm_libxl(path: Path, mib: int) -> int:
    """A valid HVM libxl stream (libxc inside) with *mib* MiB of pages; returns its size."""
    specs = open_registry(autoload=False).specs
    sample = plain_sample(hvm_sample(pages=16), emulator=False)
    # no EMULATOR_XENSTORE_DATA: Xen's Python reader, run by Python 3, refuses every one
    sample.parts[-1:-1] = emulator_parts(xenstore=False)
    with open(path, "wb") as out:
        libxl = StreamWriter(out, specs["libxl"])
        libxc = StreamWriter(out, specs["libxc"])
        libxl.header("header", sample.header)
        batches_written = False
        for fmt, step in sample.parts:
            if step.name == LIBXC_HEADERS:
                libxc.header("image_header", sample.libxc.image_header)
                libxc.header("domain_header", sample.libxc.domain_header)
            elif step.name == "PAGE_DATA":
                if not batches_written:
                    _page_batches(libxc, mib * 256)
                    batches_written = True
            else:
                step.write(libxl if fmt == "libxl" else libxc, "little")
        return out.tell()


def compress(path: Path, kind: str) -> Path:
    """*path* compressed as *kind* beside it, streamed in 1 MiB pieces."""
    import bz2
    import gzip
    import lzma
    openers = {"gzip": lambda p: gzip.open(p, "wb", compresslevel=1),  # noqa: SIM115
               "xz": lambda p: lzma.open(p, "wb", preset=1),  # noqa: SIM115
               "bzip2": lambda p: bz2.open(p, "wb", compresslevel=1)}  # noqa: SIM115
    target = path.with_name(path.name + "." + kind)
    with open(path, "rb") as raw:
        if kind == "zstd":
            import zstandard
            with open(target, "wb") as out:
                zstandard.ZstdCompressor(level=1).copy_stream(raw, out)
        else:
            with openers[kind](target) as out:
                while chunk := raw.read(1 << 20):
                    out.write(chunk)
    return target


def drop_cache(path: Path) -> None:
    """Evict *path*'s pages from the page cache (best effort)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def run(cmd: str, before: Callable[[], None] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB, of the largest process) of one shell pipeline."""
    if before is not None:
        before()
    start = time.perf_counter()
    proc = subprocess.Popen(["/bin/sh", "-c", cmd],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd}: exit {proc.returncode}: {err}")
    return elapsed, usage.ru_maxrss


def median_run(cmd: str, repeat: int, before: Callable[[], None] | None = None
               ) -> tuple[float, int]:
    runs = [run(cmd, before) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--kind", choices=("pv", "hvm-libxl"), default="pv")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--reference", help="another verifier to time (path appended)")
    parser.add_argument("--xenmig", default=shlex.join(XENMIG),
                        help="the xenmig command to time (e.g. another checkout's)")
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--compress", choices=("gzip", "xz", "bzip2", "zstd"),
                        help="verify the stream compressed (level 1), from the file and a pipe")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / f"bench.{args.kind}"
        if not path.exists():
            (write_pv if args.kind == "pv" else write_hvm_libxl)(path, args.mib)
        mib = path.stat().st_size / (1 << 20)
        print(f"stream: {args.kind}, {mib:.0f} MiB, median of {args.repeat}")
        file = shlex.quote(str(path))
        xenmig = args.xenmig
        cold = lambda: drop_cache(path)  # noqa: E731
        floors = {"cat": median_run(f"cat {file} >/dev/null", args.repeat),
                  "cat | cat": median_run(f"cat {file} | cat >/dev/null", args.repeat)}
        cases = [("file", f"{xenmig} verify -q {file}", None, "cat"),
                 ("file, cold", f"{xenmig} verify -q {file}", cold, "cat"),
                 ("pipe", f"cat {file} | {xenmig} verify -q -", None, "cat | cat"),
                 ("file --json", f"{xenmig} verify --json {file} >/dev/null", None, "cat")]
        if args.compress:
            packed = shlex.quote(str(compress(path, args.compress)))
            cases = [(f"{args.compress} file", f"{xenmig} verify -q {packed}", None, "cat"),
                     (f"{args.compress} pipe", f"cat {packed} | {xenmig} verify -q -", None,
                      "cat | cat")]
        if args.reference:
            cases += [("reference, file", f"{args.reference} {file}", None, "cat"),
                      ("reference, cold", f"{args.reference} {file}", cold, "cat")]
        for label, (seconds, _rss) in floors.items():
            print(f"{label:<16} {seconds:6.2f} s  {mib / seconds:8.0f} MiB/s")
        for label, cmd, before, floor in cases:
            seconds, rss = median_run(cmd, args.repeat, before)
            ratio = seconds / floors[floor][0]
            print(f"{label:<16} {seconds:6.2f} s  {mib / seconds:8.0f} MiB/s  "
                  f"{ratio:5.2f}x {floor:<9}  peak RSS {rss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
