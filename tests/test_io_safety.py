"""Outputs and inputs at the edges: special files, symlinks, permissions, closed standard
streams, write errors, and an ``fd:N`` input that starts part-way into a file."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import ROOT, run_xenmig

from xenmig_core.errors import SourceError
from xenmig_core.sink import atomic_output, open_output

LEGACY = ROOT / "examples" / "hvm64-legacy.xl"
HVM_XL = ROOT / "examples" / "hvm-guest.xl"
HVM_LIBXC = ROOT / "examples" / "hvm-v3.libxc"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# -- 1. atomic_output and what already sits at the target ----------------------------------
def test_atomic_output_writes_into_a_fifo_and_keeps_it(tmp_path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    with atomic_output(fifo) as out:
        out.write(b"through the fifo")
    reader.join(timeout=10)
    assert got == [b"through the fifo"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert _leftovers(tmp_path) == []


def test_atomic_output_writes_into_a_null_device_and_keeps_it(tmp_path) -> None:
    # a private node equal to /dev/null: a broken fix must not be able to replace the real one
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    with atomic_output(node) as out:
        out.write(b"discarded")
    assert stat.S_ISCHR(os.lstat(node).st_mode)
    assert os.lstat(node).st_rdev == os.makedev(1, 3)
    assert _leftovers(tmp_path) == []


def test_atomic_output_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path
                                                                               ) -> None:
    elsewhere = tmp_path / "real"
    elsewhere.mkdir()
    target = elsewhere / "data.bin"
    target.write_bytes(b"old")
    link = tmp_path / "link"
    link.symlink_to(target)
    with atomic_output(link) as out:
        out.write(b"new")
    assert link.is_symlink()
    assert os.readlink(link) == str(target)
    assert target.read_bytes() == b"new"
    assert _leftovers(tmp_path) == [] and _leftovers(elsewhere) == []


def test_atomic_output_keeps_an_existing_targets_mode(tmp_path) -> None:
    target = tmp_path / "secret.img"
    target.write_bytes(b"old")
    target.chmod(0o600)
    with atomic_output(target) as out:
        out.write(b"new")
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_atomic_output_new_file_gets_the_umask_mode(tmp_path) -> None:
    old = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "fresh") as out:
            out.write(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o640


def test_convert_to_a_symlinked_0600_output_through_the_cli(tmp_path) -> None:
    target = tmp_path / "out.libxl"
    target.write_bytes(b"")
    target.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(target.name)
    done = run_xenmig("convert", str(LEGACY), "-o", str(link), "--to", "libxl", "-q")
    assert done.returncode == 0, done.stderr
    assert link.is_symlink()
    assert target.stat().st_size > 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


# -- 2. closed standard input / output -----------------------------------------------------
def _shell(command: str) -> subprocess.CompletedProcess:
    """Run ``python -m xenmig_core`` under sh with *command*'s redirections."""
    return subprocess.run(["sh", "-c", f'"$0" -m xenmig_core {command}', sys.executable],
                          capture_output=True, text=True, cwd=ROOT)


def _one_line_error(done: subprocess.CompletedProcess, text: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and text in lines[0], done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr


def test_closed_stdin_is_a_one_line_error() -> None:
    _one_line_error(_shell("verify - <&-"), "standard input is closed")
    _one_line_error(_shell("dump - <&-"), "standard input is closed")


@pytest.mark.parametrize("command", [
    f"verify {HVM_LIBXC}", f"verify -v {HVM_LIBXC}", f"verify --json {HVM_LIBXC}",
    f"dump {HVM_LIBXC}", f"convert {LEGACY} -o - --to libxl"])
def test_closed_stdout_is_a_one_line_error(command) -> None:
    _one_line_error(_shell(f"{command} >&-"), "standard output is closed")


def test_closed_stdout_is_fine_when_quiet() -> None:
    assert _shell(f"verify -q {HVM_LIBXC} >&-").returncode == 0


# -- 3. write errors -----------------------------------------------------------------------
needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


@needs_dev_full
@pytest.mark.parametrize("command", [
    f"convert {LEGACY} -o - --to libxl",
    f"dump {HVM_LIBXC}", f"verify -v {HVM_LIBXC}", f"verify --json {HVM_LIBXC}"])
def test_a_full_device_is_a_one_line_write_error(command) -> None:
    done = _shell(f"{command} >/dev/full")
    _one_line_error(done, "write error: No space left on device")


def test_a_full_device_as_output_path_is_written_directly(tmp_path) -> None:
    # a private node equal to /dev/full: code that renames over it cannot harm the real one
    node = tmp_path / "full"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot create a device node here: {exc}")
    done = _shell(f"convert {LEGACY} -o {node} --to libxl")
    _one_line_error(done, "write error: No space left on device")
    assert stat.S_ISCHR(os.lstat(node).st_mode)


def test_a_read_only_output_fd_is_a_one_line_write_error() -> None:
    done = _shell(f"convert {LEGACY} -o fd:0 --to libxl </dev/null")
    _one_line_error(done, "fd:0: write error")


@needs_dev_full
def test_open_output_turns_write_errors_into_source_errors() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        with pytest.raises(SourceError, match=r"fd:\d+: write error"), \
                open_output(f"fd:{fd}") as out:
            out.write(b"x" * 100000)
    finally:
        os.close(fd)


def test_a_closed_pipe_stays_silent() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "xenmig_core", "convert", str(LEGACY),
                             "-o", "-", "--to", "libxl", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(16)
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait(timeout=60)
    assert err == b""
    assert proc.returncode != 0


# -- 4. an fd:N input opened part-way into a file --------------------------------------------
def test_fd_input_part_way_into_a_file_reports_its_own_size() -> None:
    data = HVM_XL.read_bytes()
    start = data.index(b"LibxlFmt")
    assert start > 0
    fd = os.open(HVM_XL, os.O_RDONLY)
    try:
        os.lseek(fd, start, os.SEEK_SET)
        done = run_xenmig("verify", "--json", f"fd:{fd}", pass_fds=[fd])
        report = json.loads(done.stdout)
        os.lseek(fd, start, os.SEEK_SET)
        text = run_xenmig("verify", f"fd:{fd}", pass_fds=[fd])
    finally:
        os.close(fd)
    assert done.returncode == 0, done.stderr
    assert report["format"] == "libxl"
    assert report["size"] == len(data) - start
    assert report["streams"][0]["offset"] == start          # offsets stay absolute
    assert f"{len(data) - start} bytes".encode() in text.stdout


# -- 5. convert --to comes from the plugins' converters ---------------------------------------
def test_convert_to_lists_the_installed_converters(cli, tmp_path) -> None:
    result = cli("convert", str(LEGACY), "-o", str(tmp_path / "out"), "--to", "nope")
    assert result.exit_code == 2
    assert "--to 'nope'" in result.output
    assert "libxc, libxl, xl" in result.output
    assert not (tmp_path / "out").exists()


def test_converter_targets_ask_the_registry() -> None:
    from xenmig_core.convert import converter_targets

    class Stub:
        formats = ("a", "b", "c")

        def converter(self, source: str, target: str) -> object | None:
            return object() if (source, target) == ("a", "c") else None
    assert converter_targets(Stub()) == ["c"]     # type: ignore[arg-type]


def test_converts_to_agrees_with_converter_targets_and_loads_only_what_it_asks(registry
                                                                           ) -> None:
    """``converts_to(t)`` is ``t in converter_targets()`` for every target, known or not;
    asked about a stream format it does not load the memory exporter (which only a
    memory image target needs)."""
    import subprocess

    from xenmig_core.convert import converter_targets, converts_to
    targets = converter_targets(registry)
    assert {"xl", "raw"} <= set(targets)
    for target in [*registry.formats, *targets, "nope", "legacy"]:
        assert converts_to(registry, target) == (target in targets), target
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys\n"
         "from xenmig_core.session import open_registry\n"
         "from xenmig_core.convert import converts_to\n"
         "assert converts_to(open_registry(), 'xl')\n"
         "print('xenmig_memory.export' in sys.modules)"],
        capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "False", loaded.stderr


def test_a_large_output_is_handed_to_the_disk_as_it_grows(tmp_path, monkeypatch) -> None:
    """Finished stretches of a temporary output are handed to the disk while it is written
    (so the final sync has little left): in order, without gaps, never past what was
    written, and the output is whole."""
    from xenmig_core import sink
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(sink, "WRITE_BEHIND", 1 << 20)
    monkeypatch.setattr(sink, "_writeback_starter",
                        lambda: lambda fd, offset, length: calls.append((offset, length)))
    data = bytes(range(256)) * (4096 * 5 + 7)    # a little over 5 MiB
    target = tmp_path / "out"
    with atomic_output(target) as out:
        for start in range(0, len(data), 300_000):
            out.write(data[start:start + 300_000])
    assert target.read_bytes() == data
    assert len(calls) >= 4
    assert calls[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in itertools.pairwise(calls))
    assert calls[-1][0] + calls[-1][1] <= len(data)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_the_writeback_starter_works_here(tmp_path) -> None:
    from xenmig_core.linuxcalls import sync_file_range
    from xenmig_core.sink import _writeback_starter
    assert sync_file_range() is not None
    start = _writeback_starter()
    assert start is not None
    with open(tmp_path / "f", "wb") as out:
        out.write(bytes(1 << 20))
        out.flush()
        start(out.fileno(), 0, 1 << 20)     # returns at once, raises nothing


def _without(monkeypatch, *calls: str) -> None:
    """Make the named os calls fail as a kernel without them does (ENOSYS)."""
    import errno

    def missing(*args, **kwargs):
        raise OSError(errno.ENOSYS, "not here")
    for name in calls:
        monkeypatch.setattr(os, name, missing)


@pytest.mark.parametrize("missing", [(), ("copy_file_range",),
                                     ("copy_file_range", "sendfile")])
@pytest.mark.parametrize("target", ["file", "pipe"])
def test_copy_from_lands_between_buffered_writes(tmp_path, monkeypatch, missing, target
                                                 ) -> None:
    """``copy_from`` appends a stretch of an input file where the next write would have
    gone, whichever means the kernel offers (and through a buffer when it offers none);
    writes before and after it stay in order; a stretch past the input's end is short."""
    source = tmp_path / "in"
    source.write_bytes(bytes(range(256)) * 4096 * 3)     # 3 MiB: pieces beyond one buffer
    _without(monkeypatch, *missing)
    expected = b"head" + source.read_bytes()[5:5 + (3 << 20) - 9] + b"tail" + b"end"
    with open(source, "rb") as src:
        fd = src.fileno()
        if target == "file":
            with atomic_output(tmp_path / "out") as out:
                out.write(b"head")
                assert out.copy_from(fd, 5, (3 << 20) - 9) == (3 << 20) - 9
                out.write(b"tail")
                assert out.copy_from(fd, 3 << 20, 10) == 0          # the input ended
                out.write(b"end")
            assert (tmp_path / "out").read_bytes() == expected
            return
        read_end, write_end = os.pipe()
        got = bytearray()
        reader = threading.Thread(target=lambda: got.extend(os.fdopen(read_end, "rb").read()))
        reader.start()
        with open_output(f"fd:{write_end}") as out:
            out.write(b"head")
            out.copy_from(fd, 5, (3 << 20) - 9)
            out.write(b"tailend")
        os.close(write_end)
        reader.join()
        assert bytes(got) == expected


@pytest.mark.parametrize("missing", [(), ("copy_file_range",)])
@pytest.mark.parametrize("target", ["file", "fd"])
def test_copy_later_lands_where_copy_from_would(tmp_path, monkeypatch, missing, target
                                                ) -> None:
    """``copy_later`` copies in a second thread into an atomic output (at once into any
    other) while later writes go after the stretch; the file the rename brings is the one
    writes and copies in order make, and the write-behind never runs ahead of the copies."""
    from xenmig_core import sink
    source = tmp_path / "in"
    source.write_bytes(bytes(range(256)) * 4096 * 40)    # 40 MiB: beyond one write-behind
    _without(monkeypatch, *missing)
    monkeypatch.setattr(sink, "WRITE_BEHIND", 1 << 20)
    data = source.read_bytes()
    # many stretches: the disk is handed finished ones as the copies end
    stretches = [(5, 3 << 20), (7 << 20, 5 << 20), (1, 1)] + \
        [((i * 7919) % (39 << 20), 1 << 20) for i in range(30)]
    expected = b"".join(b"<%d>" % i + data[o:o + n] for i, (o, n) in enumerate(stretches))
    handed: list[bool] = []        # each stretch given to the disk was final by then

    def starter():
        return lambda fd, offset, length: handed.append(
            os.pread(fd, length, offset) == expected[offset:offset + length])
    monkeypatch.setattr(sink, "_writeback_starter", starter)
    out_path = tmp_path / "out"
    with open(source, "rb") as src:
        if target == "file":
            opened = atomic_output(out_path)
        else:
            handle = open(out_path, "wb")      # noqa: SIM115 - closed below
            opened = open_output(f"fd:{handle.fileno()}")
        with opened as out:
            for i, (offset, length) in enumerate(stretches):
                out.write(b"<%d>" % i)
                out.copy_later(src.fileno(), offset, length)
        if target == "fd":
            handle.close()
    assert out_path.read_bytes() == expected
    assert all(handed) and bool(handed) == (target == "file")


def test_reading_back_waits_for_the_copies_below_what_it_reads(tmp_path, monkeypatch
                                                               ) -> None:
    """``written()`` reads the output back while a background copy is held: what lies
    before the copy reads at once, what lies after it waits for it (never a hole's zeros),
    and the writer's position is left alone."""
    from xenmig_core import filecopy
    source = tmp_path / "in"
    source.write_bytes(bytes(range(1, 256)) * 4112)
    release = threading.Event()
    real = filecopy.FileCopy.copy

    def held(self, *args):
        assert release.wait(30)
        return real(self, *args)
    monkeypatch.setattr(filecopy.FileCopy, "copy", held)
    size = source.stat().st_size
    with open(source, "rb") as src, atomic_output(tmp_path / "out") as out:
        out.write(b"head")
        out.copy_later(src.fileno(), 0, size)
        out.write(b"tail")
        reader = out.written()
        assert reader.read(4) == b"head"           # the copy is still held
        assert reader.seek(0, os.SEEK_END) == size + 8
        reader.seek(4)
        threading.Timer(0.2, release.set).start()
        assert reader.read() == source.read_bytes() + b"tail"
        reader.close()
        out.write(b"more")
    assert (tmp_path / "out").read_bytes() == b"head" + source.read_bytes() + b"tailmore"


def test_an_error_with_copies_queued_drops_them_and_leaves_nothing(tmp_path, monkeypatch
                                                                   ) -> None:
    """A failure (Ctrl-C, a bad record) while background copies are queued: the copies not
    started are dropped, the one under way ends, and the temporary file vanishes."""
    from xenmig_core import filecopy
    source = tmp_path / "in"
    source.write_bytes(bytes(1 << 20))
    release, began = threading.Event(), threading.Event()
    started: list[int] = []
    real = filecopy.FileCopy.copy

    def held(self, src, offset, length, dst_pos=None):
        started.append(offset)
        began.set()
        assert release.wait(30)
        return real(self, src, offset, length, dst_pos)
    monkeypatch.setattr(filecopy.FileCopy, "copy", held)
    close = filecopy.BackgroundCopy.close

    def closing(self):          # the first copy is let go only once the output is given up
        self._stopping = True
        release.set()
        close(self)
    monkeypatch.setattr(filecopy.BackgroundCopy, "close", closing)
    with open(source, "rb") as src, pytest.raises(KeyboardInterrupt), \
            atomic_output(tmp_path / "out") as out:
        for offset in range(0, 1 << 20, 1 << 16):
            out.copy_later(src.fileno(), offset, 1 << 16)
        assert began.wait(30)
        raise KeyboardInterrupt
    assert started == [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_copy_later_of_what_the_input_no_longer_holds_fails_and_leaves_nothing(tmp_path
                                                                            ) -> None:
    """A background copy that comes up short (the input shrank) is a one-line
    SourceError when the output is finished, and the output never appears."""
    source = tmp_path / "in"
    source.write_bytes(bytes(1 << 20))
    with open(source, "rb") as src, pytest.raises(SourceError, match="shrank"), \
            atomic_output(tmp_path / "out") as out:
        out.write(b"head")
        out.copy_later(src.fileno(), 1000, 1 << 20)
        out.write(b"tail")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.parametrize("sync", [True, False])
def test_sync_false_renames_without_waiting_for_the_disk(tmp_path, monkeypatch, sync) -> None:
    from xenmig_core import sink
    synced: list[int] = []
    monkeypatch.setattr(sink.os, "fsync", lambda fd: synced.append(fd))
    target = tmp_path / "out"
    with atomic_output(target, sync=sync) as out:
        out.write(b"data")
    assert target.read_bytes() == b"data"
    assert bool(synced) == sync
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
