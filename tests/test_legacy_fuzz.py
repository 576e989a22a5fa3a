"""Seeded random damage to small legacy images: verify and the converter never raise
anything but xenmig's own errors, and every diagnostic says where."""

from __future__ import annotations

import io
import random

import pytest

from xenmig_core.convert import ConvertOptions
from xenmig_core.errors import XenmigError
from xenmig_core.source import ByteSource
from xenmig_core.verifier import verify_source
from xenmig_legacy.compression import DeltaError, iter_pages
from xenmig_legacy.convert import LegacyConverter
from xenmig_legacy.samples import hvm_image, pv_image

BASES = [pv_image(pages=8).data, pv_image(width=32, guest_width=4, xsave=64, pages=8).data,
         hvm_image(pages=8).data, hvm_image(width=32, pages=8).data]


def damaged(seed: int) -> bytes:
    rnd = random.Random(seed)
    data = bytearray(rnd.choice(BASES))
    for _ in range(rnd.randint(1, 4)):
        limit = len(data) if rnd.random() < 0.5 else min(len(data), 200)
        data[rnd.randrange(limit)] = rnd.randrange(256)
    if rnd.random() < 0.2:
        data = data[:rnd.randrange(len(data))]
    return bytes(data)


@pytest.mark.parametrize("chunk", range(4))
def test_damaged_images_never_crash(registry, chunk: int) -> None:
    for seed in range(chunk * 50, chunk * 50 + 50):
        data = damaged(seed)
        report = verify_source(registry, ByteSource.from_bytes(data), "legacy")
        assert all(d.offset is not None or d.unit for d in report.diagnostics), seed
        for target in ("libxc", "libxl"):
            try:
                result = LegacyConverter(registry, ConvertOptions(target)).run(
                    ByteSource.from_bytes(data), io.BytesIO())
            except XenmigError as exc:
                assert exc.exit_code != 3, (seed, exc)
                continue
            if not report.valid:
                assert not result.valid, seed     # never convert what verify refuses
            for error in result.errors:
                assert error.offset is not None or error.unit, (seed, error)


def test_random_compressed_data_never_crashes() -> None:
    for seed in range(300):
        rnd = random.Random(seed)
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 600)))
        try:
            for entry in iter_pages(data):
                assert 0 <= entry.start < entry.end <= len(data)
        except DeltaError as exc:
            assert "offset" in str(exc)
