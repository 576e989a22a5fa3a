#!/usr/bin/env python3
"""Speed and memory of ``xenmig verify`` on a large synthetic PV stream.

    python benchmarks/bench_verify.py [--mib 1024] [--keep PATH] [--compress KIND]

Writes a libxc v3 stream of about MIB mebibytes of guest memory (1024-page PAGE_DATA batches,
as Xen's saver writes them) to a temporary file, then verifies it three ways in fresh
processes: from the file (payload skipped by seeking), from a pipe (payload read through one
reusable buffer), and with --json. Prints wall time, throughput and peak RSS of each, so that
memory can be seen not to grow with the stream's size (run with two sizes to compare).
With --compress gzip|xz|bzip2|zstd the stream is compressed first (level 1) and verified
compressed, from the file and from a pipe.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xenmig_core.session import open_registry
from xenmig_core.writer import StreamWriter
from xenmig_libxc.samples import pv_sample

BATCH = 1024
PAGE = 4096


def write_stream(path: Path, mib: int) -> int:
    """A valid PV stream with *mib* MiB of pages; returns its size in bytes."""
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
                page = bytes(range(256)) * 16
                for start in range(0, pages, BATCH):
                    count = min(BATCH, pages - start)
                    writer.record("PAGE_DATA", {"count": count,
                                                "pfn": list(range(start, start + count))},
                                  payload=page * count)
            elif step.name != "PAGE_DATA":
                writer.record(step.name, step.fields, payload=step.payload)
        return writer.written


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


def measure(args: list[str], stdin_path: Path | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one verify run in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        cmd = [sys.executable, "-m", "xenmig_core", "verify", *args]
        if stdin_path:  # through a real pipe, not a seekable file
            cat = subprocess.Popen(["cat"], stdin=stdin, stdout=subprocess.PIPE)
            done = subprocess.run(cmd, stdin=cat.stdout, capture_output=True)
            cat.wait()
        else:
            done = subprocess.run(cmd, stdin=stdin, capture_output=True)
    finally:
        if stdin_path:
            stdin.close()
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"verify failed: {done.stderr.decode()}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--keep", type=Path)
    parser.add_argument("--compress", choices=("gzip", "xz", "bzip2", "zstd"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.libxc"
        size = write_stream(path, args.mib)
        mib = size / (1 << 20)
        print(f"stream: {path} {mib:.0f} MiB")
        runs = [("file", [str(path)], None), ("pipe", ["-"], path),
                ("file --json", ["--json", str(path)], None)]
        if args.compress:
            packed = compress(path, args.compress)
            print(f"{args.compress}: {packed.stat().st_size / (1 << 20):.1f} MiB")
            runs = [(f"{args.compress} file", [str(packed)], None),
                    (f"{args.compress} pipe", ["-"], packed)]
        for label, cmd, pipe in runs:
            seconds, rss = measure(cmd, pipe)
            print(f"{label:<12} {seconds:6.2f} s  {mib / seconds:8.0f} MiB/s  "
                  f"peak RSS {rss / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
