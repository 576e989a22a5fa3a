"""Forwarding (issue 10): ``verify --forward``, ``--tee``, ``guard`` and ``Forwarder``, through
real processes and pipes.

A valid stream goes through byte-identical; an invalid one goes through exactly up to the
start of its first bad header or record (the unit ``verify --json`` names first); records
arrive while the sender pauses between checkpoints; ``guard`` hands signals and early exits
on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from streams import SAMPLES, _edit, all_streams

import xenmig_core
from xenmig_core.source import PIPE_SIZE
from xenmig_libxc.samples import assemble, pv_sample

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
XENMIG = [sys.executable, "-m", "xenmig_core"]
CLEARED_TO_UNPAUSE = b"domain is yours, you are cleared to unpause\0"
VALID = ["hvm-guest.xl", "hvm-guest.libvirt", "pv32-legacy.img", "remus-3-checkpoints.libxl"]


def forward(data: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``xenmig verify - --forward - ARGS`` fed *data* through a pipe; OUT is a pipe too."""
    return subprocess.run([*XENMIG, "verify", "-", "--forward", "-", *args], input=data,
                          capture_output=True, timeout=60)


@pytest.mark.parametrize("name", VALID)
def test_a_valid_stream_forwards_byte_identical(name: str) -> None:
    data = (EXAMPLES / name).read_bytes()
    done = forward(data)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data
    assert b"valid" in done.stderr


def _swap_tsc_and_params(sample) -> None:
    i, j = sample.index("X86_TSC_INFO"), sample.index("HVM_PARAMS")
    sample.steps[i], sample.steps[j] = sample.steps[j], sample.steps[i]


def _end_first(sample) -> None:
    sample.steps.insert(1, sample.steps.pop(sample.index("END")))


def _pages_after_end(sample) -> None:
    end = sample.steps.pop(sample.index("END"))
    sample.steps.insert(sample.index("PAGE_DATA"), end)


def _invalid_streams(registry) -> dict[str, bytes]:
    spec = registry.specs["libxc"]
    found = {k: v for k, v in all_streams(spec).items()
             if not xenmig_core.verify(v, registry=registry).valid}
    for name, change in (("reordered-end-first", _end_first),
                         ("reordered-pages-after-end", _pages_after_end)):
        found[name] = assemble(spec, _edit(SAMPLES["hvm-v3"], change)())
    xl = (EXAMPLES / "hvm-guest.xl").read_bytes()
    bad_type = bytearray(xl)
    bad_type[0x3d0] ^= 0xFF            # libxc record 1's type: an unknown mandatory record
    found["xl-unknown-libxc-record"] = bytes(bad_type)
    found["xl-truncated-in-libxl-header"] = xl[:0x3a0]
    return found


def _first_bad_unit(registry, data: bytes) -> tuple[int, bool]:
    """Where the first bad header or record starts, per the ``--json`` document's first
    error (the record it names, else the error's offset), and whether it is a truncated
    payload (page contents already on their way may have gone out too)."""
    doc = xenmig_core.verify(data, registry=registry).to_dict()
    first = next(d for d in doc["diagnostics"] if d["severity"] == "error")
    offset = first["offset"]
    if first.get("record_index") is not None:   # (a record broken in its framing is not
        offset = next((r.offset for r in xenmig_core.records(data, registry=registry)  # listed)
                       if r.index == first["record_index"]), offset)
    return offset, "payload needs" in first["message"]


def test_reordered_streams_are_invalid(registry) -> None:
    """(the reordering variants below must be bad streams, or they test nothing)"""
    spec = registry.specs["libxc"]
    for change in (_end_first, _pages_after_end):
        assert not xenmig_core.verify(assemble(spec, _edit(SAMPLES["hvm-v3"], change)()),
                                      registry=registry).valid


#: one of each mutation family goes through the command line (every one through the API)
THROUGH_PIPES = ["hvm-truncated-in-payload", "hvm-truncated-in-header", "hvm-bad-page-type",
                 "hvm-long-tsc-info", "hvm-length-too-big", "pv-bad-padding",
                 "reordered-end-first", "hvm-trailing-garbage", "xl-unknown-libxc-record"]


def _check_prefix(name: str, data: bytes, sent: bytes, boundary: int, in_payload: bool) -> None:
    if in_payload:
        assert data.startswith(sent) and len(sent) >= boundary, name
    else:
        assert sent == data[:boundary], (name, len(sent), boundary)


def test_an_invalid_stream_forwards_exactly_the_prefix_before_its_first_bad_record(
        registry) -> None:
    streams = _invalid_streams(registry)
    assert len(streams) >= 20 and set(THROUGH_PIPES) <= set(streams)
    for name, data in streams.items():
        boundary, in_payload = _first_bad_unit(registry, data)
        pusher = xenmig_core.Forwarder(registry=registry)
        passed = b"".join(pusher.feed(data[i:i + 5000]) for i in range(0, len(data), 5000))
        passed += pusher.close()
        _check_prefix(name, data, passed, boundary, in_payload)
        assert pusher.valid is False and pusher.error is not None
        if name in THROUGH_PIPES:
            done = forward(data)
            assert done.returncode == 1, (name, done.stderr)
            assert done.stderr.startswith(b"xenmig: invalid: "), (name, done.stderr)
            assert done.stdout == passed, name


def test_tee_keeps_everything_read_whatever_the_verdict(tmp_path: Path) -> None:
    data = (EXAMPLES / "hvm-v3.libxc").read_bytes() + b"junk after the end"
    copy = tmp_path / "copy"
    done = forward(data, "--tee", str(copy))
    assert done.returncode == 1
    assert done.stdout == data[:-18]
    assert copy.read_bytes() == data


def test_forward_to_a_path_and_an_fd(tmp_path: Path) -> None:
    data = (EXAMPLES / "hvm-guest.xl").read_bytes()
    out = tmp_path / "out"
    done = subprocess.run([*XENMIG, "verify", "-", "--forward", str(out)], input=data,
                          capture_output=True, timeout=60)
    assert done.returncode == 0 and out.read_bytes() == data and done.stdout == b""
    with open(tmp_path / "fd", "wb") as target:
        done = subprocess.run([*XENMIG, "verify", str(EXAMPLES / "hvm-guest.xl"),
                               "--forward", f"fd:{target.fileno()}"],
                              pass_fds=(target.fileno(),), capture_output=True, timeout=60)
    assert done.returncode == 0 and (tmp_path / "fd").read_bytes() == data


class SlowSender:
    """Writes *parts* into a FIFO, pausing *pause* seconds after each but the last; keeps
    the FIFO open for *linger* seconds after the last. ``resumed[i]`` is when part i+1
    started (the end of pause i)."""

    def __init__(self, fifo: Path, parts: list[bytes], pause: float, linger: float = 0.0):
        self.resumed: list[float] = []
        self.thread = threading.Thread(target=self._send, args=(fifo, parts, pause, linger),
                                       daemon=True)
        self.thread.start()

    def _send(self, fifo: Path, parts: list[bytes], pause: float, linger: float) -> None:
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb", buffering=0) as out:
            for number, part in enumerate(parts):
                if number:
                    time.sleep(pause)
                    self.resumed.append(time.monotonic())
                for start in range(0, len(part), 4096):      # slowly
                    out.write(part[start:start + 4096])
                    time.sleep(0.001)
            time.sleep(linger)


def arrivals(pipe) -> list[tuple[float, int]]:
    """(time, bytes received so far) after every read of *pipe*, until its end."""
    seen, total = [], 0
    while chunk := os.read(pipe.fileno(), 1 << 16):
        total += len(chunk)
        seen.append((time.monotonic(), total))
    return seen


def received_by(seen: list[tuple[float, int]], moment: float) -> int:
    return max((total for when, total in seen if when < moment), default=0)


def test_records_of_a_checkpoint_arrive_while_the_sender_pauses(tmp_path: Path,
                                                                registry) -> None:
    data = (EXAMPLES / "remus-3-checkpoints.libxl").read_bytes()
    ends = [r.offset + 8 for r in xenmig_core.records(data, registry=registry)
            if r.name == "CHECKPOINT_END"]
    assert len(ends) == 3
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    parts = [data[:ends[0]], data[ends[0]:ends[1]], data[ends[1]:]]
    reader = subprocess.Popen([*XENMIG, "verify", str(fifo), "--forward", "-"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sender = SlowSender(fifo, parts, pause=0.8)
    seen = arrivals(reader.stdout)
    assert reader.wait(timeout=60) == 0, reader.stderr.read()
    sender.thread.join()
    # every byte of checkpoint N was there before the sender went on with checkpoint N+1
    assert received_by(seen, sender.resumed[0]) == ends[0]
    assert received_by(seen, sender.resumed[1]) == ends[1]
    assert seen[-1][1] == len(data)


def test_xl_migrate_messages_after_the_end_go_on_as_they_come(tmp_path: Path) -> None:
    """The sender waits for the receiver's reply before it closes: the message after the
    stream's END must not wait for the end of the input."""
    data = (EXAMPLES / "hvm-guest.xl").read_bytes()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen([*XENMIG, "verify", str(fifo), "--forward", "-"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sender = SlowSender(fifo, [data, CLEARED_TO_UNPAUSE], pause=0.4, linger=1.0)
    seen = arrivals(reader.stdout)
    assert reader.wait(timeout=60) == 0, reader.stderr.read()
    sender.thread.join()
    assert seen[-1][1] == len(data) + len(CLEARED_TO_UNPAUSE)
    assert received_by(seen, sender.resumed[0]) == len(data)
    closed = sender.resumed[0] + 0.9            # (at least) when the sender closed
    assert received_by(seen, closed) == len(data) + len(CLEARED_TO_UNPAUSE)


# -- guard ---------------------------------------------------------------------------------
def guard(command: list[str], data: bytes | None = None, **popen) -> subprocess.Popen:
    return subprocess.Popen([*XENMIG, "guard", "--", *command], stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE if data is not None else popen.pop("stdin"),
                            **popen)


def copy_to(path: Path, status: int = 0) -> list[str]:
    """A receiver: its stdin into *path*, then exit *status*."""
    return [sys.executable, "-c", "import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, "
            f"open({str(path)!r}, 'wb')); sys.exit({status})"]


def test_guard_feeds_a_valid_stream_and_exits_with_the_command(tmp_path: Path) -> None:
    data = (EXAMPLES / "hvm-guest.xl").read_bytes()
    got = tmp_path / "got"
    for status in (0, 5):
        run = guard(copy_to(got, status), data)
        _out, err = run.communicate(data, timeout=60)
        assert run.returncode == status, err
        assert got.read_bytes() == data


def test_guard_closes_the_commands_input_at_the_first_bad_record(tmp_path: Path,
                                                                 registry) -> None:
    data = _invalid_streams(registry)["xl-unknown-libxc-record"]
    got = tmp_path / "got"
    run = guard(copy_to(got), data)
    _out, err = run.communicate(data, timeout=60)
    assert run.returncode == 1
    assert got.read_bytes() == data[:0x3ce]
    assert b"invalid: record 1" in err and b"exited with status 0" in err


def test_guard_ends_the_commands_input_at_the_first_error_while_the_sender_sends_on(
        tmp_path: Path, registry) -> None:
    """The receiver must not wait for the sender to finish (or give up) to see the end."""
    data = _invalid_streams(registry)["xl-unknown-libxc-record"]
    fifo, got = tmp_path / "fifo", tmp_path / "got"
    os.mkfifo(fifo)
    sender = SlowSender(fifo, [data[:0x3ce + 100], data[0x3ce + 100:]], pause=20)
    with open(fifo, "rb") as stdin:
        run = guard(copy_to(got), stdin=stdin)
        _out, err = run.communicate(timeout=10)
    assert run.returncode == 1, err
    assert got.read_bytes() == data[:0x3ce]
    del sender


def test_guard_passes_the_commands_stdout_on() -> None:
    data = (EXAMPLES / "hvm-v3.libxc").read_bytes()
    run = subprocess.run([*XENMIG, "guard", "--", "wc", "-c"], input=data,
                         capture_output=True, timeout=60)
    assert run.returncode == 0 and run.stdout.split() == [str(len(data)).encode()]


def test_guard_a_command_that_exits_early(registry) -> None:
    # more than the grown pipe holds (PIPE_SIZE): the writes must meet the closed input
    data = assemble(registry.specs["libxc"], pv_sample(pages=1024))
    assert len(data) > 2 * PIPE_SIZE
    run = guard(["sh", "-c", "head -c 100 >/dev/null; exit 4"], data)
    _out, err = run.communicate(data, timeout=60)
    assert run.returncode == 4
    assert b"exited with status 4 before the stream ended" in err
    assert b"Traceback" not in err


def test_guard_a_command_that_exits_while_the_sender_pauses(tmp_path: Path) -> None:
    """No write fails (the sender sends nothing): xenmig must still notice and stop."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = (EXAMPLES / "remus-3-checkpoints.libxl").read_bytes()
    sender = SlowSender(fifo, [data[:20000], data[20000:]], pause=20)
    with open(fifo, "rb") as stdin:
        run = guard(["sh", "-c", "head -c 100 >/dev/null; exit 0"], stdin=stdin)
        _out, err = run.communicate(timeout=10)
    assert run.returncode == 2
    assert b"exited with status 0 before the stream ended" in err
    del sender      # (a daemon thread, blocked on the FIFO nobody reads)


def test_guard_a_command_that_exits_after_the_end_while_the_sender_waits(
        tmp_path: Path) -> None:
    """xl migrate-receive exits after the stream's end and its replies; the sender has not
    closed its side yet: that is a normal end, with the command's status."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = (EXAMPLES / "hvm-guest.xl").read_bytes()
    sender = SlowSender(fifo, [data], pause=0, linger=20)
    with open(fifo, "rb") as stdin:
        run = guard(["sh", "-c", f"head -c {len(data)} >/dev/null; exit 0"], stdin=stdin)
        _out, err = run.communicate(timeout=10)
    assert run.returncode == 0, err
    assert err == b""
    del sender


def test_guard_a_command_that_exits_leaving_the_stream_unread_while_the_sender_waits(
        tmp_path: Path) -> None:
    """The whole stream fits in the pipe and went out; the command read 100 bytes of it and
    exited while xenmig waited for what may follow the end: not a normal end."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = (EXAMPLES / "hvm-guest.xl").read_bytes()
    sender = SlowSender(fifo, [data], pause=0, linger=20)
    with open(fifo, "rb") as stdin:
        run = guard(["sh", "-c", "head -c 100 >/dev/null; sleep 1; exit 0"], stdin=stdin)
        _out, err = run.communicate(timeout=10)
    assert run.returncode == 2, err
    assert b"exited with status 0 before the stream ended" in err
    del sender


def test_guard_a_command_that_is_killed() -> None:
    data = (EXAMPLES / "hvm-v3.libxc").read_bytes()
    run = guard(["sh", "-c", "kill -9 $$"], data)
    _out, err = run.communicate(data, timeout=60)
    assert run.returncode == 128 + 9
    assert b"exited with status 137" in err


def test_guard_passes_ctrl_c_on(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = (EXAMPLES / "remus-3-checkpoints.libxl").read_bytes()
    sender = SlowSender(fifo, [data[:20000], data[20000:]], pause=20)
    marker, ready = tmp_path / "interrupted", tmp_path / "ready"
    receiver = [sys.executable, "-c",
                "import signal, sys, time\n"
                "def hit(*_):\n"
                f"    open({str(marker)!r}, 'w').close(); sys.exit(7)\n"
                "signal.signal(signal.SIGINT, hit)\n"
                f"open({str(ready)!r}, 'w').close()\n"
                "while True: sys.stdin.buffer.read(1) or time.sleep(0.01)\n"]
    with open(fifo, "rb") as stdin:
        run = guard(receiver, stdin=stdin)
        deadline = time.monotonic() + 30
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        run.send_signal(signal.SIGINT)
        _out, err = run.communicate(timeout=10)
    assert marker.exists()
    assert run.returncode == 7
    assert b"SIGINT passed on" in err
    del sender


def test_guard_needs_a_command() -> None:
    run = subprocess.run([*XENMIG, "guard"], capture_output=True, timeout=60, input=b"")
    assert run.returncode == 2
