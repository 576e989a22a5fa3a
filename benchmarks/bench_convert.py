#!/usr/bin/env python3
"""Speed and memory of ``xenmig convert`` on a large synthetic legacy HVM image.

    python benchmarks/bench_convert.py [--mib 1024] [--keep PATH]

Writes a legacy (Xen <= 4.5) HVM image of about MIB mebibytes of guest memory (1024-page
batches, as Xen 4.x's saver writes them, 64-bit toolstack) to a temporary file, then converts
it in fresh processes: to a libxl file (verified as it is written), the same without
verification, and pipe to pipe to libxc. Prints wall time, throughput and peak RSS of each,
so that memory can be seen not to grow with the image's size.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xenmig_legacy.samples import LegacyWriter
from xenmig_libxc.samples import hvm_context_blob

BATCH = 1024
PAGE = 4096


def write_image(path: Path, mib: int) -> int:
    """A valid legacy HVM image with *mib* MiB of pages; returns its size in bytes."""
    lw = LegacyWriter(64)
    pages = max(mib * 256, 0x100)
    page = bytes(range(256)) * 16
    with open(path, "wb") as out:
        out.write(lw.p2m_size(pages) + lw.tsc(0, 1, 2000000, 1))
        for start in range(0, pages, BATCH):
            count = min(BATCH, pages - start)
            out.write(lw.batch(list(range(start, start + count)), [page] * count))
        out.write(lw.vcpu_info([0]) + lw.param(-3, 0xFEFF0000) + lw.chunk(-9) + lw.chunk(0))
        out.write(lw.hvm_tail(0xFEFFE, 0xFEFFD, 0xFEFFF, hvm_context_blob(1)))
        out.write(lw.qemu(b"DeviceModelRecord0002", b"QEVM" + bytes(1 << 20)))
        return out.tell()


def measure(args: list[str], stdin_path: Path | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run in a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.monotonic()
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        subprocess.run([sys.executable, "-m", "xenmig_core", *args], stdin=stdin,
                       stdout=subprocess.DEVNULL, check=True)
    finally:
        if stdin_path:
            stdin.close()
    elapsed = time.monotonic() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        image = args.keep or Path(tmp) / "image.legacy"
        size = write_image(image, args.mib)
        print(f"legacy HVM image: {size / 2**20:.0f} MiB")
        out = Path(tmp) / "out"
        runs = [("file -> libxl file, verified", ["convert", str(image), "-o", str(out),
                                                   "--to", "libxl", "-q"], None),
                ("file -> libxl file, --no-verify", ["convert", str(image), "-o", str(out),
                                                     "--to", "libxl", "-q", "--no-verify"],
                 None),
                ("pipe -> pipe, libxc, verified", ["convert", "-", "-o", "-", "--to", "libxc",
                                                   "-q"], image)]
        for label, run_args, stdin in runs:
            seconds, peak = measure(run_args, stdin)
            print(f"{label:34} {seconds:6.2f} s  {size / 2**20 / seconds:7.0f} MiB/s  "
                  f"peak RSS {peak / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
