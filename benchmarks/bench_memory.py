#!/usr/bin/env python3
"""Speed and memory of memory exports (``xenmig convert --to raw|elf|lime|xen-core``).

    python benchmarks/bench_memory.py [--mib 4096] [--formats raw,elf,lime,xen-core]
                                      [--dir DIR] [--keep]

Writes a libxc HVM stream of MIB mebibytes of guest memory (1024-page PAGE_DATA records,
as Xen's saver writes them, with a hole and a resent batch) to a temporary file in DIR,
reads it once so that the cache is warm, then exports it to each format in a fresh
process, file to file. Prints wall time, throughput (guest bytes per second) and the
child's peak RSS for each. The targets (issue 9): at least 1 GB/s for a 4 GiB guest and at
most 64 MiB of RSS at any size.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xenmig_core.session import open_registry
from xenmig_core.writer import StreamWriter
from xenmig_libxc.samples import Step, hvm_context_blob, hvm_sample

BATCH = 1024
PAGE = 4096


def write_stream(path: Path, mib: int) -> int:
    """A valid libxc HVM stream with *mib* MiB of guest pages; returns the page count."""
    spec = open_registry(autoload=False).specs["libxc"]
    sample = hvm_sample()
    head = io.BytesIO()
    writer = StreamWriter(head, spec)
    writer.header("image_header", sample.image_header)
    writer.header("domain_header", sample.domain_header)
    for step in sample.steps:
        if step.name == "PAGE_DATA":
            break
        step.write(writer, "little")
    pages = mib * 256
    body = bytes(range(256)) * (PAGE // 256) * BATCH
    with open(path, "wb") as out:
        out.write(head.getvalue())
        for start in range(0, pages, BATCH):
            count = min(BATCH, pages - start)
            # a hole of 16 pages every 64 MiB: the export has many runs, as real guests do
            words = [pfn for pfn in range(start, start + count)
                     if pfn % (64 * 256) >= 16]
            out.write(_page_data(words, body))
        resent = list(range(100, 100 + BATCH))           # a resent batch: last copy wins
        out.write(_page_data(resent, body))
        tail = io.BytesIO()
        writer = StreamWriter(tail, spec)
        for step in [Step("X86_TSC_INFO", {"mode": 0, "khz": 2400000, "nsec": 1,
                                           "incarnation": 1}),
                     Step("HVM_CONTEXT", {"context": hvm_context_blob(2)}), Step("END")]:
            step.write(writer, "little")
        out.write(tail.getvalue())
    return pages


def _page_data(words: list[int], body: bytes) -> bytes:
    length = 8 + 8 * len(words) + PAGE * len(words)
    return (struct.pack("<IIII", 1, length, len(words), 0)
            + struct.pack(f"<{len(words)}Q", *words) + body[:PAGE * len(words)])


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def baseline(stream: Path, out: Path) -> float:
    """Seconds to copy the whole stream with os.copy_file_range and fsync the copy, as
    ``xenmig convert`` syncs its output: the disk's speed, the best an export can do."""
    warm(stream)
    start = time.monotonic()
    size = stream.stat().st_size
    with open(stream, "rb") as src, open(out, "wb") as dst:
        done = 0
        while done < size:
            done += os.copy_file_range(src.fileno(), dst.fileno(), size - done)
        os.fsync(dst.fileno())
    seconds = time.monotonic() - start
    out.unlink()
    return seconds


def measure(args: list[str]) -> tuple[float, float, float, int]:
    """Wall seconds, user and system CPU seconds and peak RSS (KiB) of one run in a fresh
    child process. CPU time says what the export costs on a machine busy with other work,
    where the wall time says more about the neighbours."""
    start = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "xenmig_core", *args],
                             stdout=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(child.pid, 0)
    elapsed = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"xenmig {' '.join(args)} failed")
    return elapsed, usage.ru_utime, usage.ru_stime, usage.ru_maxrss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=4096)
    parser.add_argument("--formats", default="raw,elf,lime,xen-core")
    parser.add_argument("--dir", default=None, help="where the stream and exports go")
    parser.add_argument("--keep", action="store_true", help="keep the stream")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        stream = Path(tmp) / "guest.libxc"
        pages = write_stream(stream, args.mib)
        size = stream.stat().st_size
        guest = pages * PAGE
        print(f"stream: {size / 2**30:.2f} GiB, guest {guest / 2**30:.2f} GiB")
        seconds = baseline(stream, Path(tmp) / "copy")
        print(f"copy+fsync of the stream (the disk's speed): {seconds:6.2f} s  "
              f"{size / seconds / 1e9:5.2f} GB/s")
        for target in args.formats.split(","):
            out = Path(tmp) / f"guest.{target}"
            warm(stream)
            seconds, user, system, rss = measure(["convert", str(stream), "-o", str(out),
                                                  "--to", target, "-q"])
            print(f"{target:>9}: {seconds:6.2f} s  {guest / seconds / 1e9:5.2f} GB/s  "
                  f"CPU {user:5.2f} s user {system:5.2f} s system  "
                  f"peak RSS {rss / 1024:5.1f} MiB  (output {out.stat().st_size / 2**30:.2f} "
                  "GiB)")
            out.unlink()
        if args.keep:
            kept = Path(tempfile.gettempdir()) / "xenmig-bench-guest.libxc"
            shutil.move(stream, kept)
            print(f"kept {kept}")


if __name__ == "__main__":
    main()
