"""The background copies of a path output (``GuardedWriter.copy_later``): the pipe they
splice through, the means they fall back to when the kernel refuses one, and the disk
space reserved ahead of them (``filecopy.SpaceAhead``)."""

from __future__ import annotations

import errno
import os
import sys

import pytest

from xenmig_core import filecopy, linuxcalls
from xenmig_core.sink import atomic_output

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="splice and fallocate are Linux's")

#: stretches of the input copied between small writes: misaligned, one longer than the
#: pipe, one of a byte
STRETCHES = [(5, 3 << 20), (7 << 20, 5 << 20), (1, 1), (4093, 1 << 20), (0, 2 << 20)]


def _convert_like(tmp_path, *, check_midway=None) -> tuple[bytes, bytes]:
    """Write a marker, then copy_later one stretch of a 12 MiB input, for each stretch,
    into an atomic output; return (what the output holds, what it should hold).
    *check_midway(out)* runs before the output is finished."""
    source = tmp_path / "in"
    source.write_bytes(bytes(range(1, 256)) * ((12 << 20) // 255 + 1))
    data = source.read_bytes()
    expected = b"".join(b"<%d>" % i + data[o:o + n] for i, (o, n) in enumerate(STRETCHES))
    with open(source, "rb") as src, atomic_output(tmp_path / "out") as out:
        for i, (offset, length) in enumerate(STRETCHES):
            out.write(b"<%d>" % i)
            out.copy_later(src.fileno(), offset, length)
        if check_midway is not None:
            check_midway(out)
    return (tmp_path / "out").read_bytes(), expected


def _counting(monkeypatch, module, name: str, fail: int | None = None,
              when=lambda kwargs: True) -> list[dict]:
    """Record the calls of *module.name*; with *fail*, those for which *when(kwargs)*
    holds fail with that errno instead."""
    real = getattr(module, name)
    calls: list[dict] = []

    def call(*args, **kwargs):
        calls.append(kwargs)
        if fail is not None and when(kwargs):
            raise OSError(fail, os.strerror(fail))
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, call)
    return calls


@linux_only
def test_copies_splice_through_a_pipe_and_land_in_order(tmp_path, monkeypatch) -> None:
    splices = _counting(monkeypatch, os, "splice")
    copies = _counting(monkeypatch, os, "copy_file_range")
    got, expected = _convert_like(tmp_path)
    assert got == expected
    assert splices and not copies
    assert max(len(kwargs) for kwargs in splices) == 1      # always at given offsets


@linux_only
def test_stretches_a_reflink_could_share_go_to_copy_file_range(tmp_path, monkeypatch
                                                               ) -> None:
    """A stretch at the same offset within a page in input and output is left to
    copy_file_range, which a filesystem may serve with a reflink."""
    splices = _counting(monkeypatch, os, "splice")
    copies = _counting(monkeypatch, os, "copy_file_range")
    source = tmp_path / "in"
    source.write_bytes(bytes(range(256)) * 4096 * 2)
    with open(source, "rb") as src, atomic_output(tmp_path / "out") as out:
        out.write(b"x" * 4096)
        out.copy_later(src.fileno(), 8192, 1 << 20)
    assert (tmp_path / "out").read_bytes() == b"x" * 4096 + source.read_bytes()[8192:][:1 << 20]
    assert copies and not splices


@pytest.mark.parametrize("refused", ["into the pipe", "out of the pipe"])
def test_a_file_splice_cannot_serve_is_copied_another_way(tmp_path, monkeypatch, refused
                                                          ) -> None:
    """A filesystem whose files take no splice (EINVAL): the copies go on, by
    copy_file_range when the input refuses, through this process when the output does
    (the bytes already in the pipe are not lost)."""
    side = "offset_src" if refused == "into the pipe" else "offset_dst"
    splices = _counting(monkeypatch, os, "splice", fail=errno.EINVAL,
                        when=lambda kwargs: side in kwargs)
    got, expected = _convert_like(tmp_path)
    assert got == expected
    assert len([kwargs for kwargs in splices if side in kwargs]) == 1   # not tried again


@pytest.mark.parametrize("refused", ["pipe", "fcntl"])
def test_without_a_large_pipe_the_copies_go_to_copy_file_range(tmp_path, monkeypatch, refused
                                                               ) -> None:
    """No descriptor left for a pipe, or a pipe that cannot grow to 1 MiB."""
    import fcntl
    _counting(monkeypatch, fcntl if refused == "fcntl" else os, refused,
              fail=errno.EPERM if refused == "fcntl" else errno.EMFILE)
    splices = _counting(monkeypatch, os, "splice")
    got, expected = _convert_like(tmp_path)
    assert got == expected
    assert not splices


def test_a_failed_write_out_of_the_pipe_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    _counting(monkeypatch, os, "splice", fail=errno.ENOSPC,
              when=lambda kwargs: "offset_dst" in kwargs)
    with pytest.raises(filecopy.SourceError, match="write error: No space left"):
        _convert_like(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]

@linux_only
def test_space_is_reserved_ahead_of_the_copies_and_given_back(tmp_path, monkeypatch) -> None:
    """Past one step of output, the disk space ahead of the copies is reserved (the file
    occupies more than its size while it is written); the finished file occupies no more
    than its size: the rest was given back."""
    monkeypatch.setattr(filecopy, "RESERVE_STEP", 1 << 20)
    seen: list[tuple[int, int]] = []

    def midway(out) -> None:
        info = os.fstat(out.fileno())
        seen.append((info.st_blocks * 512, info.st_size))
    got, expected = _convert_like(tmp_path, check_midway=midway)
    assert got == expected
    (occupied, size), = seen
    assert occupied >= size + (1 << 20)
    assert (tmp_path / "out").stat().st_blocks * 512 < len(expected) + (64 << 10)


@pytest.mark.parametrize("fallocate", ["missing", "failing"])
def test_without_reserved_space_the_copies_still_land(tmp_path, monkeypatch, fallocate
                                                      ) -> None:
    """No fallocate (another system, an old C library) or one that fails (a filesystem
    without it, too little space for a step): reserving stops after one try and the
    output is the same."""
    monkeypatch.setattr(filecopy, "RESERVE_STEP", 1 << 20)
    tries: list[tuple] = []

    def failing(*args) -> int:
        tries.append(args)
        return -1
    monkeypatch.setattr(linuxcalls, "fallocate",
                        lambda: None if fallocate == "missing" else failing)
    got, expected = _convert_like(tmp_path)
    assert got == expected
    assert len(tries) == (fallocate == "failing")
