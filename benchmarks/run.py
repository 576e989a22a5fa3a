#!/usr/bin/env python3
"""Speed and memory of xenmig, each case side by side with its floor, in one command.

    python benchmarks/run.py [--quick] [--runs N] [--dir DIR] [--reference SCRIPT]
                             [--xenmig CMD] [CASE...]

Writes the streams it needs (deterministic, see ``streams.py``) under a temporary directory
(or DIR, where they are kept and reused), runs every case and its floor (``cat``,
``cat | cat``, ``cp``, ``python3 -c pass``) N times each in fresh processes, and prints a
Markdown table: median wall time, the ratio to the floor, and peak RSS (of the whole
pipeline, measured by GNU time when present). ``--quick`` uses small sizes. ``--reference``
adds Xen's ``verify-stream-v2`` (a path in a Xen source tree, ``tools/python/scripts/``)
where it can read the stream. Cold-cache runs drop the file's pages
(``posix_fadvise(DONTNEED)``) before each run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import streams  # (this directory, put on the path just above)

#: (full, quick) sizes
SIZES = {"big_mib": (4096, 64), "pipe_mib": (1024, 32), "legacy_mib": (1024, 32),
         "checkpoints": (20000, 1000)}


@dataclass
class Command:
    label: str
    shell: str
    before: Callable[[], None] | None = None   # run before each timing (not timed)
    floor: bool = False


@dataclass
class Case:
    name: str
    commands: list[Command] = field(default_factory=list)


def fresh_output(path: Path) -> Callable[[], None]:
    """Remove *path* and write every dirty page to disk: each run that writes *path* starts
    from the same state (no old file to replace, no earlier run's writes still pending)."""
    def clear() -> None:
        if path.exists():
            path.unlink()
        os.sync()
    return clear


def drop_cache(path: Path) -> Callable[[], None]:
    """Evict *path*'s pages from the page cache (the next read comes from the disk)."""
    def evict() -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return evict


#: GNU time measures the pipeline from a small process: a child forked from this Python
#: process would count this process's memory as its own peak until it execs
TIME = "/usr/bin/time"


def timed(command: Command, env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB, the largest process of the pipeline) of one run."""
    if command.before is not None:
        command.before()
    with tempfile.NamedTemporaryFile("r") as rss:
        argv = ["sh", "-c", command.shell]
        if os.path.exists(TIME):
            argv = [TIME, "-q", "-f", "%M", "-o", rss.name, *argv]
        start = time.perf_counter()
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env=env)
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            raise SystemExit(f"exit code {code}: {command.shell}")
        text = rss.read().strip()
    return elapsed, int(text) if text.isdigit() else usage.ru_maxrss


def xenmig_command() -> str:
    script = Path(sys.executable).with_name("xenmig")
    return shlex.quote(str(script)) if script.exists() else \
        f"{shlex.quote(sys.executable)} -m xenmig_core"


def build_cases(work: Path, quick: bool, reference: str | None,
                xenmig: str | None = None) -> list[Case]:
    size = {key: value[1 if quick else 0] for key, value in SIZES.items()}
    q = shlex.quote
    xm = xenmig or xenmig_command()
    py = q(sys.executable)
    # the reference runs on this interpreter, as `python3 -c pass` does (a `python3` found
    # on PATH may be a slower wrapper, flattering xenmig)
    ref = f"{py} {q(reference)}" if reference else None

    def stream(name: str, write: Callable[[Path], int]) -> Path:
        path = work / name
        if not path.exists():
            print(f"writing {path} ...", file=sys.stderr, flush=True)
            tmp = path.with_suffix(".partial")
            write(tmp)
            tmp.rename(path)
        return path

    tiny = stream("tiny-hvm.libxl", streams.write_tiny_hvm)
    n = size["checkpoints"]
    records = stream(f"checkpoints-{n}.libxl", lambda p: streams.write_checkpoints(p, n))
    bare = stream(f"checkpoints-{n}.libxc",
                  lambda p: streams.write_checkpoints(p, n, bare=True))
    big = stream(f"hvm-{size['big_mib']}m.libxl",
                 lambda p: streams.write_hvm_libxl(p, size["big_mib"]))
    piped = stream(f"hvm-{size['pipe_mib']}m.libxl",
                   lambda p: streams.write_hvm_libxl(p, size["pipe_mib"]))
    legacy = stream(f"legacy-{size['legacy_mib']}m.xl",
                    lambda p: streams.write_legacy_xl(p, size["legacy_mib"]))
    out = q(str(work / "converted.xl"))
    fresh = fresh_output(work / "converted.xl")
    # memory images go to a RAM-backed folder when there is one, so that the case measures
    # the exporter (and cp, its floor, the same way) rather than the disk's write speed
    shm = Path("/dev/shm")
    image_path = shm / "xenmig-bench-guest.memory" if shm.is_dir() else work / "guest.memory"
    image = q(str(image_path))

    def with_ref(case: Case, shell: str, before: Callable[[], None] | None = None) -> Case:
        if ref:
            case.commands.append(Command("reference verify-stream-v2", f"{ref} {shell}",
                                         before))
        return case

    mib = lambda p: f"{p.stat().st_size / 2**20:.0f} MiB"  # noqa: E731
    cases = [
        with_ref(Case(f"tiny HVM stream ({tiny.stat().st_size // 1024} KiB), verify -q", [
            Command("xenmig verify -q", f"{xm} verify -q {q(str(tiny))}"),
            Command("python3 -c pass", f"{py} -c pass", floor=True)]),
            f"-f libxl -q -i {q(str(tiny))}"),
        Case(f"{n * 5:,} records (Remus, libxl), verify -q", [
            Command("xenmig verify -q", f"{xm} verify -q {q(str(records))}"),
            Command("cat", f"cat {q(str(records))} > /dev/null", floor=True)]),
        with_ref(Case(f"{n * 5:,} records (same, bare libxc), verify -q", [
            Command("xenmig verify -q", f"{xm} verify -q {q(str(bare))}"),
            Command("cat", f"cat {q(str(bare))} > /dev/null", floor=True)]),
            f"-f libxc -q -i {q(str(bare))}"),
        with_ref(Case(f"HVM libxl stream ({mib(big)}), file, warm cache", [
            Command("xenmig verify -q", f"{xm} verify -q {q(str(big))}"),
            Command("cat", f"cat {q(str(big))} > /dev/null", floor=True)]),
            f"-f libxl -q -i {q(str(big))}"),
        with_ref(Case(f"HVM libxl stream ({mib(big)}), file, cold cache", [
            Command("xenmig verify -q", f"{xm} verify -q {q(str(big))}", drop_cache(big)),
            Command("cat", f"cat {q(str(big))} > /dev/null", drop_cache(big), floor=True)]),
            f"-f libxl -q -i {q(str(big))}", drop_cache(big)),
        Case(f"HVM libxl stream ({mib(piped)}) through a pipe", [
            Command("cat | xenmig verify -q -", f"cat {q(str(piped))} | {xm} verify -q -"),
            Command("cat | cat", f"cat {q(str(piped))} | cat > /dev/null", floor=True)]),
        Case(f"HVM libxl stream ({mib(piped)}) forwarded through pipes", [
            Command("cat | xenmig verify --forward - | cat",
                    f"cat {q(str(piped))} | {xm} verify -q - --forward - | cat > /dev/null"),
            Command("cat | cat | cat", f"cat {q(str(piped))} | cat | cat > /dev/null",
                    floor=True)]),
        Case(f"{n * 5:,} records (Remus, libxl) forwarded through pipes", [
            Command("cat | xenmig verify --forward - | cat",
                    f"cat {q(str(records))} | {xm} verify -q - --forward - | cat > /dev/null"),
            Command("cat | cat | cat", f"cat {q(str(records))} | cat | cat > /dev/null",
                    floor=True)]),
        Case(f"convert legacy xl image ({mib(legacy)}) to xl, verified", [
            Command("xenmig convert", f"{xm} convert -q {q(str(legacy))} -o {out} --to xl",
                    fresh),
            Command("cp", f"cp {q(str(legacy))} {out}", fresh, floor=True),
            # what xenmig's default adds to cp: the output on disk before it is renamed
            Command("cp, then sync of the copy",
                    f"cp {q(str(legacy))} {out} && sync {out}", fresh)]),
        Case(f"convert legacy xl image ({mib(legacy)}) to xl, verified, --no-sync", [
            Command("xenmig convert --no-sync",
                    f"{xm} convert -q --no-sync {q(str(legacy))} -o {out} --to xl", fresh),
            Command("cp", f"cp {q(str(legacy))} {out}", fresh, floor=True)]),
        Case(f"convert legacy xl image ({mib(legacy)}) to xl, --no-verify", [
            Command("xenmig convert --no-verify",
                    f"{xm} convert -q --no-verify {q(str(legacy))} -o {out} --to xl", fresh),
            Command("cp", f"cp {q(str(legacy))} {out}", fresh, floor=True)]),
        Case(f"dump -t jsonl of {n * 5:,} records", [
            Command("xenmig dump -t jsonl", f"{xm} dump -t jsonl {q(str(records))} > /dev/null"),
            Command("cat", f"cat {q(str(records))} > /dev/null", floor=True)]),
    ]
    cases += [Case(f"memory export of the HVM libxl stream ({mib(big)}) to {target}", [
        Command(f"xenmig convert --to {target}",
                f"{xm} convert -q {q(str(big))} -o {image} --to {target}"),
        Command("cp", f"cp {q(str(big))} {image}", floor=True)]) for target in ("raw", "elf")]
    return cases


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 runs")
    parser.add_argument("--runs", type=int, help="runs per command (default 5, quick 2)")
    parser.add_argument("--dir", type=Path, help="keep and reuse the streams here")
    parser.add_argument("--reference", help="path of Xen's verify-stream-v2")
    parser.add_argument("--xenmig", help="the xenmig command to time (default: this one's), "
                        "e.g. another checkout's: '/other/venv/bin/python -m xenmig_core'")
    parser.add_argument("cases", nargs="*", help="run only cases whose name has one of these")
    args = parser.parse_args(argv)
    runs = args.runs or (2 if args.quick else 5)
    env = dict(os.environ)
    # time the programs as users run them: with their modules' bytecode cached (a shell
    # that sets PYTHONDONTWRITEBYTECODE would recompile every module of every run)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if args.reference:   # its modules live in tools/python, above tools/python/scripts
        tools = str(Path(args.reference).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (tools, env.get("PYTHONPATH")) if p)
    temporary = None
    if args.dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="xenmig-bench-")
        work = Path(temporary.name)
    else:
        work = args.dir
        work.mkdir(parents=True, exist_ok=True)
    try:
        cases = build_cases(work, args.quick, args.reference, args.xenmig)
        print(f"{'quick' if args.quick else 'full'} run, {runs} runs each, median wall time; "
              f"ratio = median / the floor's median; peak RSS of the whole pipeline\n")
        print("| case | command | median | ratio | peak RSS |")
        print("|---|---|---|---|---|")
        for case in cases:
            if args.cases and not any(word in case.name for word in args.cases):
                continue
            for command in case.commands:
                timed(command, env)     # untimed warm-up: bytecode and spec caches written
            # rounds of every command once, so that a change in the machine's load between
            # rounds weighs on each command alike
            samples: list[list[tuple[float, int]]] = [[] for _ in case.commands]
            for _ in range(runs):
                for command, taken in zip(case.commands, samples, strict=True):
                    taken.append(timed(command, env))
            results = [(command, statistics.median(s[0] for s in taken),
                        max(s[1] for s in taken))
                       for command, taken in zip(case.commands, samples, strict=True)]
            floor = next(seconds for command, seconds, _ in results if command.floor)
            for i, (command, seconds, rss) in enumerate(results):
                print(f"| {case.name if i == 0 else ''} | {command.label} | {seconds:.2f} s | "
                      f"{seconds / floor:.2f}x | {rss / 1024:.0f} MiB |", flush=True)
    finally:
        for output in (work / "converted.xl", work / "guest.memory",
                       Path("/dev/shm/xenmig-bench-guest.memory")):
            if output.exists():
                output.unlink()
        if temporary is not None:
            temporary.cleanup()
        elif shutil.disk_usage(work).free < 1 << 30:
            print(f"note: {work} keeps the streams; little disk left", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
