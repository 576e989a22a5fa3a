"""PAGE_DATA's pfn words are checked a whole batch at a time (bytes operations in C): the
bulk pass must agree, word for word, with the per-word definition of the checks."""

from __future__ import annotations

import json
import random
from array import array
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xenmig_core.present import fold_runs, is_run
from xenmig_libxc.page_data import (
    INVALID_TYPES,
    PFN_MASK,
    RESERVED_MASK,
    TYPE_SHIFT,
    _scan,
    _uniform,
)
from xenmig_libxc.views import view_page_data, view_page_data_json


def by_definition(words: list[int], max_pfn: int | None) -> tuple[dict[int, int], bool]:
    """Per word: count types in order of first appearance; any invalid type, reserved bit
    or pfn above *max_pfn* makes the batch suspect."""
    by_type: dict[int, int] = {}
    suspect = False
    for word in words:
        ptype = word >> TYPE_SHIFT
        by_type[ptype] = by_type.get(ptype, 0) + 1
        suspect = suspect or ptype in INVALID_TYPES or bool(word & RESERVED_MASK) or (
            max_pfn is not None and (word & PFN_MASK) > max_pfn)
    return by_type, suspect


def random_word(rng: random.Random) -> int:
    ptype = rng.choice([0, 0, 0, 1, 2, 3, 4, 9, 0xC, 0xD, 0xE, 0xF, 5, 6, 7, 8])
    pfn = rng.choice([0, 1, 0xFFFFF, 0x100000, PFN_MASK, rng.getrandbits(52)])
    word = (ptype << TYPE_SHIFT) | pfn
    if rng.random() < 0.05:
        word |= 1 << rng.randrange(52, 60)     # one reserved bit
    return word


@pytest.mark.parametrize("seed", range(40))
def test_bulk_scan_agrees_with_the_definition(seed) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 2, 3, 17, 1024, 1500])
    if seed % 2:
        words = [random_word(rng) for _ in range(n)]
    else:                                       # mostly clean batches, as real ones are
        base = rng.choice([0, 0xF]) << TYPE_SHIFT
        words = [base | rng.randrange(0x200000) for _ in range(n)]
        if seed % 4 == 0:
            words[rng.randrange(n)] = random_word(rng)
    for max_pfn in (None, 0xFFFFF, 0x1FFFFF, PFN_MASK):
        expected = by_definition(words, max_pfn)
        found = _scan(array("Q", words), max_pfn)
        assert found == expected
        assert list(found[0]) == list(expected[0])   # the same order of types
        uniform = _uniform(array("Q", words), max_pfn)    # (short batches' own scan)
        if len(expected[0]) > 1:        # words of several types: always left to _scan
            assert uniform is None
        elif uniform is not None:       # (None: words whose reserved bits differ)
            assert ({uniform[0]: n}, uniform[1]) == expected
    assert _scan(list(words), 0xFFFFF) == by_definition(words, 0xFFFFF)


def test_each_reserved_bit_and_the_largest_pfn() -> None:
    for bit in range(52, 60):
        assert _scan(array("Q", [1, 1 << bit, 2]), None)[1]
    assert not _scan(array("Q", [PFN_MASK]), PFN_MASK)[1]
    assert _scan(array("Q", [(0xF << TYPE_SHIFT) | 0x100]), 0xFF)[1]     # type bits ignored
    assert not _scan(array("Q", [(0xF << TYPE_SHIFT) | 0xFF]), 0xFF)[1]
    assert _scan(array("Q", []), None) == ({}, False)
    for bit in range(52, 60):       # one reserved bit on every word: min and max agree
        assert _uniform(array("Q", [1 | 1 << bit, 2 | 1 << bit]), None) == (0, True)
    assert _uniform(array("Q", [5 << TYPE_SHIFT]), None) == (5, True)
    assert _uniform(array("Q", [3, PFN_MASK]), PFN_MASK - 1) == (0, True)
    assert _uniform(array("Q", [3, PFN_MASK]), PFN_MASK) == (0, False)
    assert _uniform(array("Q", [3, 1 << 52]), None) is None     # reserved bits differ


@pytest.mark.parametrize("words", [
    [5, 6, 7, 8], [9], [], [1 << TYPE_SHIFT | 3, 1 << TYPE_SHIFT | 4],
    [(2 << TYPE_SHIFT) | (1 << 53) | 7, (2 << TYPE_SHIFT) | (1 << 53) | 8],   # reserved bits
    [PFN_MASK - 1, PFN_MASK], [PFN_MASK, PFN_MASK + 1],     # the last pfn, then a carry
    [5, 6, 8, 9, 10], [3, 2, 1], [0xF << TYPE_SHIFT | 1, 2]])
def test_page_data_view_of_one_run_is_the_runs_view(libxc, words) -> None:
    """The view of a batch of consecutive pfns (one run, made at once) is what the run by
    run walk makes of the same words (given as a list, which takes that walk)."""
    ctx = SimpleNamespace(format=SimpleNamespace(spec=libxc))

    def view(pfn):
        return view_page_data(SimpleNamespace(fields={"pfn": pfn}), ctx)
    assert view(array("Q", words)) == view(list(words))


@pytest.mark.parametrize("words", [
    [5, 6, 7, 8], [9], [], [1 << TYPE_SHIFT | 3, 1 << TYPE_SHIFT | 4],
    [(2 << TYPE_SHIFT) | (1 << 53) | 7, (2 << TYPE_SHIFT) | (1 << 53) | 8],   # reserved bits
    [(6 << TYPE_SHIFT) | 7, (6 << TYPE_SHIFT) | 8],     # an invalid type: named unknown(...)
    [PFN_MASK - 1, PFN_MASK], [PFN_MASK, PFN_MASK + 1],     # the last pfn, then a carry
    [5, 6, 8, 9, 10], [3, 2, 1], [0xF << TYPE_SHIFT | 1, 2]])
def test_page_data_view_as_json_text_is_the_shown_view_encoded(libxc, words) -> None:
    """The viewer's JSON text (a JSON dump's shortcut) is what json.dumps writes of the view
    the dump shows (the handler's pages_with_data first, then the viewer's values), for
    every batch (a run, as decoded, or not), when pages_with_data is the only derived
    value (else None)."""
    ctx = SimpleNamespace(format=SimpleNamespace(spec=libxc))
    shown = {"pages_with_data": 2}
    for pfn in (array("Q", words), list(words)):
        record = SimpleNamespace(fields={"pfn": pfn})
        text = view_page_data_json(record, ctx, shown)
        assert text == json.dumps({**shown, **view_page_data(record, ctx)})
        for other in ({}, {**shown, "more": 1}, {"pages_with_data": True}):
            assert view_page_data_json(record, ctx, other) is None


@pytest.mark.parametrize("values", [[5, 6, 7], [5, 6, 7, 9], [1, 2], [7, 6, 5], [0, 2, 4],
                                    [], [3, 4, 5, 6, 7, 8, 9, 10], [2**64 - 3, 2**64 - 2,
                                                                     2**64 - 1]])
def test_fold_runs_of_an_array_is_that_of_its_list(values) -> None:
    assert fold_runs(array("Q", values)) == fold_runs(list(values))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from("BHILQbhilq"), st.integers(1, 80), st.data())
def test_is_run_is_the_definition(code, n, data) -> None:
    """is_run says what comparing item by item with values[0], values[0] + 1, ... says: for
    every typecode, short and long arrays, runs near the top of the range, and runs broken
    anywhere."""
    low, high = (-(1 << (8 * array(code).itemsize - 1)), (1 << (8 * array(code).itemsize - 1)))\
        if code.islower() else (0, 1 << (8 * array(code).itemsize))
    first = data.draw(st.integers(low, max(low, high - n)))
    values = list(range(first, first + n))
    if data.draw(st.booleans()):        # (perhaps) break the run: change one value
        i = data.draw(st.integers(0, n - 1))
        values[i] = data.draw(st.integers(low, high - 1))
    words = array(code, values)
    assert is_run(words) == (values == list(range(values[0], values[0] + n)))


def test_is_run_of_short_arrays_at_the_ends_of_their_range() -> None:
    for code, runs, others in (("Q", [[5, 6, 7], [5, 6, 7, 8], [2**64 - 2, 2**64 - 1]],
                                [[5, 7, 7], [5, 5, 7], [5, 6, 9, 8], [5, 9, 7, 8],
                                 [5, 6, 7, 9, 9]]),
                               ("B", [[254, 255], [0]], [[0, 2, 2], [1, 1, 3]]),
                               ("b", [[-1, 0, 1]], [[-2, 0, 0], [-1, -1, 1]])):
        assert all(is_run(array(code, v)) for v in runs)
        assert not any(is_run(array(code, v)) for v in others)
