#!/usr/bin/env python3
"""Speed and memory of ``xenmig convert`` on a large synthetic legacy HVM image.

    python benchmarks/bench_convert.py [--mib 1024] [--repeat 3] [--xenmig CMD] [--keep PATH]

Writes an xl save file holding a legacy (Xen <= 4.5) HVM image of about MIB mebibytes of
guest memory (1024-page batches, as Xen 4.x's saver writes them, 64-bit toolstack) to a
temporary file, then runs, in fresh processes, each case *repeat* times beside its floors
(``cp`` of the same file, ``cp`` followed by ``sync`` of the copy, ``cat | cat``) and
prints the median wall time, throughput, peak RSS and ratio to the floor:

- file -> xl file, verified (the default: the written file is verified before its rename);
- the same with ``--no-verify``;
- pipe -> pipe, to libxc, verified as it is written.

File outputs include the final fsync of the temporary file, so the disk sets part of their
pace: compare them with both ``cp`` and ``cp + sync``. ``--xenmig`` runs another xenmig
(e.g. an older checkout's interpreter: ``--xenmig "/other/venv/bin/python -m xenmig_core"``).
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
from pathlib import Path

from xenmig_legacy.samples import LegacyWriter, xl_header
from xenmig_libxc.samples import hvm_context_blob

BATCH = 1024
PAGE = 4096


def write_image(path: Path, mib: int) -> int:
    """An xl save file with a valid legacy HVM image of *mib* MiB of pages; returns its
    size in bytes."""
    lw = LegacyWriter(64)
    pages = max(mib * 256, 0x100)
    page = bytes(range(256)) * 16
    with open(path, "wb") as out:
        out.write(xl_header() + lw.p2m_size(pages) + lw.tsc(0, 1, 2000000, 1))
        for start in range(0, pages, BATCH):
            count = min(BATCH, pages - start)
            out.write(lw.batch(list(range(start, start + count)), [page] * count))
        out.write(lw.vcpu_info([0]) + lw.param(-3, 0xFEFF0000) + lw.chunk(-9) + lw.chunk(0))
        out.write(lw.hvm_tail(0xFEFFE, 0xFEFFD, 0xFEFFF, hvm_context_blob(1)))
        out.write(lw.qemu(b"DeviceModelRecord0002", b"QEVM" + bytes(1 << 20)))
        return out.tell()


def run(cmd: str) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB, of the largest process) of one shell command."""
    start = time.perf_counter()
    proc = subprocess.Popen(["/bin/sh", "-c", cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd}: {err}")
    return elapsed, usage.ru_maxrss


def median_run(cmd: str, repeat: int) -> tuple[float, int]:
    runs = [run(cmd) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--xenmig", default=shlex.join([sys.executable, "-m", "xenmig_core"]))
    parser.add_argument("--keep", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        image = args.keep or Path(tmp) / "image.xl"
        if not image.exists():
            write_image(image, args.mib)
        size = image.stat().st_size
        mib = size / 2**20
        print(f"xl file with a legacy HVM image: {mib:.0f} MiB, median of {args.repeat}")
        src, out = shlex.quote(str(image)), shlex.quote(str(Path(tmp) / "out"))
        convert = f"{args.xenmig} convert -q"
        floors = {"cp": median_run(f"cp {src} {out}", args.repeat),
                  "cp + sync": median_run(f"cp {src} {out} && sync {out}", args.repeat),
                  "cat | cat": median_run(f"cat {src} | cat >/dev/null", args.repeat)}
        cases = [("file -> xl file, verified", f"{convert} {src} -o {out} --to xl", "cp"),
                 ("file -> xl file, --no-verify",
                  f"{convert} --no-verify {src} -o {out} --to xl", "cp"),
                 ("pipe -> pipe, libxc, verified",
                  f"cat {src} | {convert} - -o - --to libxc | cat >/dev/null", "cat | cat")]
        for label, (seconds, _rss) in floors.items():
            print(f"{label:31} {seconds:6.2f} s  {mib / seconds:7.0f} MiB/s")
        for label, cmd, floor in cases:
            seconds, peak = median_run(cmd, args.repeat)
            ratios = f"{seconds / floors[floor][0]:5.2f}x {floor}"
            if floor == "cp":
                ratios += f", {seconds / floors['cp + sync'][0]:4.2f}x cp + sync"
            print(f"{label:31} {seconds:6.2f} s  {mib / seconds:7.0f} MiB/s  {ratios}  "
                  f"peak RSS {peak / 1024:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
