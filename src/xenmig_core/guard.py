"""``xenmig guard``: run a receiver with its standard input fed through the forwarder.

COMMAND's stdout and stderr are xenmig's own (a receiver's replies on a bidirectional
channel such as ssh reach the sender untouched); its stdin is a pipe that gets the stream
read from xenmig's stdin record by record as the records pass their checks
(:mod:`xenmig_core.forward`). On an invalid stream the pipe is closed at the boundary before
the first bad record and the exit is 1 once COMMAND has exited; otherwise the exit is
COMMAND's (128+N when a signal N ended it). SIGINT, SIGTERM and SIGHUP given to xenmig
are passed on to COMMAND; the forwarding then stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xenmig_core.errors import UsageError
from xenmig_core.forward import (
    ForwardClosed,
    ForwardingSource,
    forward_source,
    open_tee,
    write_all,
)

PASSED_ON = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: what the watcher thread sends the main thread when COMMAND exits during forwarding
CHILD_EXITED = signal.SIGUSR1


class _Signalled(BaseException):
    """A signal xenmig passed on to COMMAND: stop forwarding."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@dataclass
class GuardOutcome:
    """What happened: the exit status to use and a one-line message (None: nothing to say)."""

    code: int
    message: str | None
    report: Any = None
    sent: int = 0


def _unread(fd: int) -> int:
    """How many bytes written into the pipe *fd* were not read (0 if unknown)."""
    try:
        import fcntl
        import termios
        count = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, count)
        return int.from_bytes(count, sys.byteorder)
    except (ImportError, OSError):
        return 0


def exit_status(returncode: int) -> int:
    """A Popen return code as a shell would show it (a signal N gives 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


def run_guard(registry: Any, command: Sequence[str], fmt: str = "auto", *,
              tee_path: str | None = None, params: dict[str, Any] | None = None,
              source: str = "-") -> GuardOutcome:
    """Run *command* with *source* forwarded to its stdin (module docs)."""
    if not command:
        raise UsageError("guard needs a COMMAND to run (xenmig guard -- COMMAND [ARG...])")
    tee = open_tee(tee_path)
    opened = ForwardingSource.open(source, decompress=False)
    try:
        child = subprocess.Popen(list(command), stdin=subprocess.PIPE)
    except OSError as exc:
        opened.close()
        if tee is not None:
            tee.close()
        raise UsageError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
    assert child.stdin is not None
    pipe_fd = child.stdin.fileno()

    # the handlers raise (to stop the forwarding, whatever it waits for) only while it
    # runs; the nested try below catches what they raise at any point of it
    state = {"forwarding": True, "stopped": None, "unread": False}

    def pass_on(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)
        state["stopped"] = state["stopped"] or signal.Signals(signum).name
        if state["forwarding"]:
            raise _Signalled(signum)

    def exited(_signum: int, _frame: object) -> None:
        # stop at the next read; now, if the walk waits for the sender (a walk busy with
        # what it has may still reach the stream's end: that end is then a normal one)
        opened.stop = True
        if state["forwarding"] and opened.reading:
            raise ForwardClosed(-1)

    main = threading.get_ident()

    def watcher() -> None:
        child.wait()
        if state["forwarding"]:
            signal.pthread_kill(main, CHILD_EXITED)

    report, sent, closed = None, 0, False
    previous = {}
    try:
        try:
            try:
                previous = {sig: signal.signal(sig, pass_on) for sig in PASSED_ON}
                if threading.current_thread() is threading.main_thread():
                    # COMMAND exiting early interrupts a read that waits for the sender
                    previous[CHILD_EXITED] = signal.signal(CHILD_EXITED, exited)
                    threading.Thread(target=watcher, daemon=True).start()
                report, sent = forward_source(registry, opened, fmt,
                                              lambda data: write_all(pipe_fd, data),
                                              out_fd=pipe_fd, tee=tee, params=params)
            finally:
                state["forwarding"] = False
        except ForwardClosed:
            closed = True
        except _Signalled:
            pass
        finally:
            # a COMMAND that exited leaving bytes of the stream in its pipe stopped before
            # the stream ended, even if every write into the pipe succeeded (also when its
            # exit interrupted the wait for what may follow the stream's end). One still
            # running when the stream is all in its pipe is not asked: closing the pipe is
            # what ends its input, and what it reads after that is no longer known here.
            if (not closed or opened.trailer_check is not None) and \
                    child.poll() is not None and _unread(pipe_fd):
                closed = True
                state["unread"] = True
            child.stdin.close()
            if tee is not None:
                tee.close()
        returncode = child.wait()      # signals are still passed on meanwhile
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stopped = "closed" if closed else state["stopped"]
    status = exit_status(returncode)
    name = os.path.basename(command[0])
    if stopped == "closed" and opened.trailer_check is not None and not state["unread"]:
        # the stream had ended cleanly (only what may follow its end was still awaited)
        return GuardOutcome(status, None if status == 0 else
                            f"{name} exited with status {status}", report, sent)
    if stopped == "closed":
        why = "it left bytes of it unread" if state["unread"] else "it closed its input"
        return GuardOutcome(status or 2, f"{name} exited with status {status} before the "
                            f"stream ended ({why})", report, sent)
    if stopped is not None:
        return GuardOutcome(status or 128 + signal.Signals[stopped].value,
                            f"{stopped} passed on to {name}; it exited with status {status}",
                            report, sent)
    assert report is not None
    if not report.valid:
        return GuardOutcome(1, f"invalid: {report.result.errors[0]}; {name} got the {sent} "
                            f"bytes before it and exited with status {status}", report, sent)
    return GuardOutcome(status, None if status == 0 else
                        f"{name} exited with status {status}", report, sent)
