"""Byte sources, and verify on sources that cannot seek (pipes, sockets, Xen's own fds).

Xen's 2015 verifier "cannot even read a pipe"; xenmig must, skipping page payloads by
reading through one reusable buffer when seeking is impossible, with the same results as
on a file.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import struct
import threading
import tracemalloc
from array import array

import pytest
from conftest import ROOT, verify_bytes

from xenmig_core.engine import Consumer
from xenmig_core.errors import SourceError, TruncatedError
from xenmig_core.source import SKIP_BUFFER_SIZE, ByteSource
from xenmig_core.verifier import verify_source
from xenmig_libxc.samples import (
    NOTAB,
    XTAB,
    Step,
    assemble,
    hvm_sample,
    page_bytes,
    page_data,
    pv_sample,
)

PV = ROOT / "examples" / "pv64-2vcpu-v3.libxc"


class Unseekable(io.RawIOBase):
    """A pipe-like raw stream over bytes: short reads, and no seeking at all."""

    def __init__(self, data: bytes, chunk: int = 4093) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._chunk = chunk
        self.reads = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def seek(self, *args):  # pragma: no cover - must never be called
        raise AssertionError("seek on an unseekable source")

    def tell(self):  # pragma: no cover
        raise OSError("unseekable")

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._chunk, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos:self._pos + n]
        self._pos += n
        self.reads += 1
        return n


def big_hvm(libxc, pages: int = 400) -> bytes:
    """An HVM stream with one PAGE_DATA of *pages* pages (more than one skip buffer)."""
    sample = hvm_sample()
    i = sample.index("PAGE_DATA")
    sample.steps[i:i + 2] = [page_data([(pfn, NOTAB) for pfn in range(pages)]
                                       + [(pages, XTAB)])]
    return assemble(libxc, sample)


def summary(report) -> tuple:
    return (report.valid, report.summary().split(";")[0], report.result.records,
            [str(d) for d in report.diagnostics], report.contexts[0].stats)


def test_verify_unseekable_source_matches_file(registry, libxc) -> None:
    data = big_hvm(libxc)
    assert len(data) > SKIP_BUFFER_SIZE
    raw = Unseekable(data)
    with ByteSource(raw, "<pipe>") as source:
        report = verify_source(registry, source)
        assert source._skip_buffer is not None  # payload went through the buffer
        assert source.offset == len(data)
    assert report.valid
    assert summary(report) == summary(verify_bytes(registry, data))


def test_verify_real_pipe(registry) -> None:
    data = PV.read_bytes()
    read_end, write_end = os.pipe()

    def feed() -> None:
        with os.fdopen(write_end, "wb") as out:
            out.write(data)
    writer = threading.Thread(target=feed)
    writer.start()
    try:
        with ByteSource.open(f"fd:{read_end}") as source:
            assert not source._seekable
            report = verify_source(registry, source)
    finally:
        writer.join()
        os.close(read_end)
    assert report.valid and report.result.end_offset == len(data)


def test_truncated_payload_on_a_pipe(registry, libxc) -> None:
    data = big_hvm(libxc)
    cut = len(data) // 2
    with ByteSource(Unseekable(data[:cut]), "<pipe>") as source:
        report = verify_source(registry, source)
    (diag,) = [d for d in report.diagnostics if d.is_error]
    assert diag.record_type == "PAGE_DATA" and "truncated" in diag.message
    assert diag.offset is not None and diag.offset < cut


def test_payload_delivered_in_chunks_on_a_pipe(registry, libxc) -> None:
    """A consumer asking for payload gets every page byte, through one reused buffer."""
    data = big_hvm(libxc, pages=300)

    class Pages(Consumer):
        def __init__(self) -> None:
            self.got = bytearray()
            self.views = set()

        def wants_payload(self, record) -> bool:
            return record.name == "PAGE_DATA"

        def on_payload(self, record, offset, chunk) -> None:
            assert offset == len(self.got)
            self.got += chunk
            self.views.add(id(chunk.obj))

    consumer = Pages()
    with ByteSource(Unseekable(data), "<pipe>") as source:
        report = verify_source(registry, source, "libxc", consumer)
    assert report.valid
    assert bytes(consumer.got) == b"".join(page_bytes(pfn) for pfn in range(300))
    assert len(consumer.views) == 1  # one reusable buffer, not a copy per chunk


# -- ByteSource ---------------------------------------------------------------------------------
def test_peek_then_read_on_a_pipe() -> None:
    source = ByteSource(Unseekable(bytes(range(100)), chunk=7), "<pipe>")
    assert source.peek(10) == bytes(range(10))
    assert source.offset == 0
    assert source.read_exact(4) == bytes(range(4))
    assert source.peek(3) == bytes(range(4, 7))
    source.skip(50)
    assert source.offset == 54
    assert source.read_upto(100) == bytes(range(54, 100))
    assert source.at_eof()


def test_skip_past_the_end_on_a_pipe() -> None:
    source = ByteSource(Unseekable(bytes(100)), "<pipe>")
    source.read_exact(10)
    with pytest.raises(TruncatedError) as info:
        source.skip(200, "page bytes")
    assert info.value.offset == 10
    assert "page bytes" in info.value.message and "0xa" in info.value.message


def test_skip_past_the_end_of_a_file(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(100))
    with ByteSource.open(str(path)) as source:
        source.skip(90)
        assert source.offset == 90
        with pytest.raises(TruncatedError) as info:
            source.skip(20, "body")
        assert info.value.offset == 90 and "only 10 left" in info.value.message


def test_read_exact_names_offset() -> None:
    source = ByteSource.from_bytes(b"abcdef")
    source.read_exact(4)
    with pytest.raises(TruncatedError, match="record header needs 8 bytes at offset 0x4, "
                                             "only 2 left"):
        source.read_exact(8, "record header")


def test_iter_chunks_reuses_the_buffer() -> None:
    source = ByteSource(Unseekable(bytes(range(256)) * 10), "<pipe>")
    buffer = memoryview(bytearray(1000))
    chunks = [bytes(c) for c in source.iter_chunks(2560, buffer)]
    assert [len(c) for c in chunks] == [1000, 1000, 560]
    assert b"".join(chunks) == bytes(range(256)) * 10


def test_open_errors(tmp_path) -> None:
    with pytest.raises(SourceError, match="cannot open"):
        ByteSource.open(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match=r"(?i)is a directory"):
        ByteSource.open(str(tmp_path))
    with pytest.raises(SourceError, match="expected fd:N"):
        ByteSource.open("fd:-1")


def test_fd_source_does_not_close_the_callers_fd(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    try:
        with ByteSource.open(f"fd:{fd}") as source:
            assert source.read_exact(4) == b"0123"
        os.fstat(fd)  # still open: the caller owns it
    finally:
        os.close(fd)


def test_large_int_arrays_stay_compact(registry, libxc, tmp_path) -> None:
    """A record of 1M u64 (8 MiB) costs about 8 MiB to decode, not a list of int objects
    (which cost over 40 MiB): bounded memory holds even for a 128 MiB record."""
    sample = pv_sample(pages=4, vcpus=1)
    n = 1 << 20
    body = struct.pack("<II", 0, 0) + array("Q", range(1 << 40, (1 << 40) + n)).tobytes()
    sample.steps[sample.index("X86_PV_P2M_FRAMES")] = Step("X86_PV_P2M_FRAMES",
                                                           overrides={"body": body})
    path = tmp_path / "big-p2m.libxc"
    path.write_bytes(assemble(libxc, sample))
    del body
    tracemalloc.start()
    try:
        with ByteSource.open(str(path)) as source:
            report = verify_source(registry, source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "expected 16" in str(report.diagnostics[0])
    assert peak < 2.5 * 8 * n, f"peak {peak / 2**20:.1f} MiB"


def test_large_struct_arrays_stay_compact(registry, libxc, tmp_path) -> None:
    """1M HVM params (16 MiB) are kept as raw bytes and unpacked on access: no million
    dicts (which cost over 300 MiB), and a summary that stays one short line."""
    sample = hvm_sample()
    n = 1 << 20
    body = struct.pack("<II", n, 0) + array("Q", range(2 * n)).tobytes()
    sample.steps[sample.index("HVM_PARAMS")] = Step("HVM_PARAMS", overrides={"body": body})
    path = tmp_path / "many-params.libxc"
    path.write_bytes(assemble(libxc, sample))
    del body

    class Summaries(Consumer):
        def __init__(self) -> None:
            self.lines: list[str] = []

        def on_record(self, record) -> None:
            if record.name == "HVM_PARAMS":
                self.lines.append(record.summary)
                params = record.fields["params"]
                assert len(params) == n and params[-1] == {"index": 2 * n - 2,
                                                           "value": 2 * n - 1}

    consumer = Summaries()
    tracemalloc.start()
    try:
        with ByteSource.open(str(path)) as source:
            report = verify_source(registry, source, "auto", consumer)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.valid
    assert peak < 2.5 * 16 * n, f"peak {peak / 2**20:.1f} MiB"
    (line,) = consumer.lines
    assert line.startswith("1048576 params: CALLBACK_IRQ=0x1, STORE_EVTCHN=0x3, ")
    assert line.endswith(", ...") and len(line) < 400


def test_failed_item_checks_are_capped(registry, libxc) -> None:
    """An MSR policy whose every entry breaks a check gives a few diagnostics, not one per
    entry."""
    sample = hvm_sample()
    msrs = [{"idx": i, "flags": 1, "val": 0} for i in range(10000)]
    sample.steps[sample.index("X86_MSR_POLICY")].fields["msrs"] = msrs
    report = verify_bytes(registry, assemble(libxc, sample))
    errors = [d for d in report.diagnostics if d.is_error]
    assert [d.field for d in errors] == ["msrs[0].flags", "msrs[1].flags", "msrs[2].flags",
                                         "msrs"]
    assert "more items fail their checks" in errors[-1].message


# -- reading ahead, splicing, seeking ---------------------------------------------------------
def _model_run(source: ByteSource, data: bytes, seed: int) -> None:
    """Random peeks, reads, readintos and skips (around the buffer sizes) against *data*."""
    import random
    rng = random.Random(seed)
    pos = 0
    sizes = [0, 1, 7, 16, 4095, 4096, 16 << 10, (16 << 10) + 3, 64 << 10, (64 << 10) + 1,
             200_000, SKIP_BUFFER_SIZE + 5]
    while pos < len(data):
        n = rng.choice(sizes)
        op = rng.choice(("peek", "read", "readinto", "skip"))
        if op == "peek":
            assert source.peek(n) == data[pos:pos + n]
            continue
        if pos + n > len(data):
            n = len(data) - pos
        if op == "read":
            assert source.read_exact(n) == data[pos:pos + n]
        elif op == "readinto":
            buffer = bytearray(n)
            source.readinto_exact(memoryview(buffer))
            assert buffer == data[pos:pos + n]
        else:
            source.skip(n)
        pos += n
        assert source.offset == pos
    assert source.at_eof() and source.read_upto(10) == b""


@pytest.mark.parametrize("seed", range(6))
def test_buffered_reads_match_the_bytes(tmp_path, seed) -> None:
    """Whatever mix of reads, peeks and skips: the same bytes from a file, a pipe-like raw
    stream with short reads, and a real pipe."""
    data = bytes((i * 7 + i // 251) & 0xFF for i in range(3 << 20))
    path = tmp_path / "data"
    path.write_bytes(data)
    with ByteSource.open(str(path)) as source:
        _model_run(source, data, seed)
    with ByteSource(Unseekable(data, chunk=65521), "<pipe>") as source:
        _model_run(source, data, seed)
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: os.fdopen(write_end, "wb").write(data) and None)
    writer.start()
    try:
        with ByteSource.open(f"fd:{read_end}") as source:
            _model_run(source, data, seed)
    finally:
        writer.join()
        os.close(read_end)


def _pipe_source(data: bytes):
    read_end, write_end = os.pipe()

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), os.fdopen(write_end, "wb") as out:
            out.write(data)
    writer = threading.Thread(target=feed)
    writer.start()
    return read_end, writer


@pytest.mark.skipif(not hasattr(os, "splice") or not os.path.exists("/dev/null"),
                    reason="splice(2) is Linux-only")
def test_pipe_payload_is_spliced_not_read(registry, libxc) -> None:
    """On Linux the page contents on a pipe go to /dev/null by splice: the skip buffer is
    never even allocated, and the verdict is the same as from a file."""
    data = big_hvm(libxc)
    read_end, writer = _pipe_source(data)
    try:
        with ByteSource.open(f"fd:{read_end}") as source:
            report = verify_source(registry, source)
            assert source._skip_buffer is None
            assert source.offset == len(data)
    finally:
        writer.join()
        os.close(read_end)
    assert summary(report) == summary(verify_bytes(registry, data))


def test_pipe_skips_fall_back_when_splice_is_refused(registry, libxc, monkeypatch) -> None:
    """A kernel or file that refuses splice (EINVAL) costs nothing but speed: the skip
    reads through the reusable buffer instead, with the same verdict."""
    calls = []

    def refuse(*args):
        calls.append(args)
        raise OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(os, "splice", refuse, raising=False)
    data = big_hvm(libxc)
    read_end, writer = _pipe_source(data)
    try:
        with ByteSource.open(f"fd:{read_end}") as source:
            report = verify_source(registry, source)
            assert source._skip_buffer is not None
    finally:
        writer.join()
        os.close(read_end)
    assert len(calls) == 1   # refused once, then never asked again
    assert summary(report) == summary(verify_bytes(registry, data))


def test_a_callers_seekable_fd_is_left_at_the_offset(tmp_path) -> None:
    """Reading ahead is invisible to the owner of an ``fd:N``: on close, the fd is at the
    first byte the source did not consume."""
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 512)
    fd = os.open(path, os.O_RDONLY)
    try:
        with ByteSource.open(f"fd:{fd}") as source:
            assert source.read_exact(10) == bytes(range(10))
        assert os.lseek(fd, 0, os.SEEK_CUR) == 10
        with ByteSource.open(f"fd:{fd}") as source:    # starts there, offsets absolute
            assert source.offset == 10 and source.read_exact(2) == bytes([10, 11])
    finally:
        os.close(fd)


def test_regular_long_skips_read_the_next_stride_ahead(tmp_path, monkeypatch) -> None:
    """Page batches come at a regular stride: after two long skips over a file, the OS is
    asked to read ahead where the next record's head will be; short skips ask nothing."""
    hints: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise",
                        lambda fd, offset, length, advice: hints.append((offset, length)),
                        raising=False)
    path = tmp_path / "strided"
    stride = 3 << 20
    path.write_bytes(bytes(5 * stride))
    with ByteSource.open(str(path)) as source:
        source.skip(100)                      # short: no hint
        for _ in range(3):
            source.read_exact(16)
            source.skip(stride - 16)
        assert source.offset == 100 + 3 * stride
    assert hints == [(100 + 3 * stride, 16 << 10), (100 + 4 * stride, 16 << 10)]


class _CountingFile(io.FileIO):
    """A file that records the size of each read it is asked for and counts seeks."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "rb")
        self.reads: list[int] = []
        self.seeks = 0

    def readinto(self, buffer) -> int:
        self.reads.append(len(buffer))
        return super().readinto(buffer)

    def seek(self, *args) -> int:
        self.seeks += 1
        return super().seek(*args)


def test_strided_skips_read_only_what_lies_between_them(tmp_path) -> None:
    """A Remus checkpoint's shape: small records around a 4 KiB body, then 16 KiB of page
    contents. The short skip reads on (no seek); the long one seeks; once two seeks measured
    the stride, the read after each asks for about the bytes up to the next seek, not for
    a full buffer of page contents it would skip."""
    small, body, pages = 100, 4096, 16384
    stride = 2 * small + body + pages
    data = bytes((i * 7 + i // 251) & 0xFF for i in range(12 * stride))
    path = tmp_path / "checkpoints"
    path.write_bytes(data)
    raw = _CountingFile(str(path))
    with ByteSource(raw, str(path), owned=True) as source:
        for i in range(10):
            assert source.read_exact(small) == data[i * stride:i * stride + small]
            source.skip(body)
            at = i * stride + small + body
            assert source.read_exact(small) == data[at:at + small]
            source.skip(pages)
            assert source.offset == (i + 1) * stride
        seeks = raw.seeks
    assert seeks <= 11            # one per long skip (and one for the file's size)
    assert raw.reads[0] == 16 << 10
    assert all(size <= 2 * small + body + 1024 for size in raw.reads[3:])


def test_holds_answers_without_raising_and_sees_a_file_grow(tmp_path) -> None:
    """``holds(n)``: True only for a file known to hold *n* more bytes (asking again once
    the size it knew falls short, as a growing file needs); False for a short file, never
    TruncatedError; False for a pipe, which cannot tell."""
    path = tmp_path / "f"
    path.write_bytes(bytes(100))
    with open(path, "rb") as raw, ByteSource(raw, "f") as source:
        source.read_exact(10)
        assert source.holds(90) and not source.holds(91)
        with open(path, "ab") as more:
            more.write(bytes(50))
        assert source.holds(140) and not source.holds(141)
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as w:
        w.write(bytes(10))
    with io.FileIO(read_end, "rb") as raw, ByteSource(raw, "pipe") as source:
        assert not source.holds(1)
