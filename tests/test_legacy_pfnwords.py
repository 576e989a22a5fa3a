"""A legacy batch's pfn words are handled a whole batch at a time: the bulk functions (and
check_batch's fast path for clean batches) must agree with the per-word definitions."""

from __future__ import annotations

import random
from array import array

import pytest

from xenmig_legacy.convert import convert_word
from xenmig_legacy.handlers import _check_words, _clean_batch
from xenmig_legacy.pfnwords import FILLER, data_pages, to_v2, types


class Quiet:
    """Collects what _check_words reports."""

    def __init__(self) -> None:
        self.reported: list[str] = []

    def report_capped(self, problems, limit, **kw) -> int:
        problems = list(problems)
        self.reported += [p[1] for p in problems]
        return len(problems)


def random_words(rng: random.Random, n: int, wide: bool) -> list[int]:
    words = []
    for _ in range(n):
        ptype = rng.choice([0, 0, 0, 1, 2, 3, 4, 9, 0xB, 0xD, 0xE, 0xF, 5, 8])
        word = (ptype << 28) | rng.randrange(0x100)
        roll = rng.random()
        if roll < 0.02:
            word = FILLER
        elif wide and roll < 0.04:
            word |= 1 << rng.randrange(32, 64)
        words.append(word)
    return words


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("wide", [False, True])
def test_bulk_functions_agree_with_the_definitions(seed, wide) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 2, 5, 300, 1024])
    if seed % 3:
        words = random_words(rng, n, wide)
    else:                                  # a clean batch, as nearly all real ones are
        start = rng.randrange(0x1000)
        words = [(rng.choice([0, 0, 0xF]) << 28) | (start + i) for i in range(n)]
    items = array("Q" if wide else "I", words)
    assert types(items) == bytes((w >> 28) & 0xF for w in words)
    assert data_pages(items, False) == sum(1 for w in words
                                           if w != FILLER and (w >> 28) & 0xF < 0xD)
    assert data_pages(items, True) == 0
    assert list(to_v2(items)) == [convert_word(w) for w in words]
    for p2m_size in (0x80, 0x100, 0x2000):
        probe = Quiet()
        by_type, fillers = _check_words(items, p2m_size, probe)
        clean = _clean_batch(items, p2m_size)
        if clean is not None:      # the fast path may only answer for a clean batch
            assert not probe.reported and not fillers
            assert clean == by_type and list(clean) == list(by_type)
        elif not probe.reported and not fillers:
            # a clean batch it left to the slow path: only dataless pfns beyond p2m_size
            assert any(w & 0x0FFFFFFF >= p2m_size for w in words)
    if seed % 3 == 0:
        assert _clean_batch(items, 0x3000) is not None
