"""The memory export's page map: latest copy wins, bounded memory (chunks spill to an
unlinked file and come back), extents and runs found without a loop per pfn."""

from __future__ import annotations

import os
import random

import pytest

from xenmig_memory.pfnmap import ABSENT, CHUNK_PFNS, PAGE, PFN_LIMIT, PfnMap


def model_extents(model: dict[int, int]) -> list[tuple[int, int, int]]:
    out: list[list[int]] = []
    for pfn in sorted(model):
        offset = model[pfn]
        if out and out[-1][0] + out[-1][1] == pfn and out[-1][2] + out[-1][1] * PAGE == offset:
            out[-1][1] += 1
        else:
            out.append([pfn, 1, offset])
    return [tuple(e) for e in out]


@pytest.mark.parametrize("seed", range(4))
def test_random_updates_match_a_dict(tmp_path, seed):
    """Runs set, overwritten and removed across chunk boundaries, with at most two chunks
    in memory: the map always says what a plain dict says."""
    rng = random.Random(seed)
    pfns = PfnMap(str(tmp_path), max_resident=2)
    model: dict[int, int] = {}
    for _ in range(300):
        first = rng.choice([0, CHUNK_PFNS - 5, 3 * CHUNK_PFNS + 7, 9 * CHUNK_PFNS - 1]) \
            + rng.randrange(0, 40)
        count = rng.randrange(1, 30)
        offset = ABSENT if rng.random() < 0.25 else rng.randrange(0, 1 << 30) * PAGE
        pfns.set_run(first, count, offset)
        for i in range(count):
            if offset == ABSENT:
                model.pop(first + i, None)
            else:
                model[first + i] = offset + i * PAGE
    assert list(pfns.extents()) == model_extents(model)
    low, high = CHUNK_PFNS - 3, 3 * CHUNK_PFNS + 20
    assert list(pfns.extents(low, high)) == model_extents(
        {p: o for p, o in model.items() if low <= p < high})
    pages, highest, runs = pfns.summary()
    assert pages == len(model) and highest == max(model)
    assert runs == len(list(pfns.runs()))
    assert os.listdir(tmp_path) == []            # the spill file is unlinked
    pfns.close()


def test_contiguous_copies_are_one_extent_across_chunks():
    pfns = PfnMap()
    pfns.set_run(CHUNK_PFNS - 10, 20, 1 << 20)
    pfns.set_run(CHUNK_PFNS + 10, 5, 1 << 30)          # contiguous pfns, other place
    assert list(pfns.extents()) == [(CHUNK_PFNS - 10, 20, 1 << 20),
                                    (CHUNK_PFNS + 10, 5, 1 << 30)]
    assert list(pfns.runs()) == [(CHUNK_PFNS - 10, 25)]


def test_pfns_beyond_the_limit_are_refused():
    with pytest.raises(ValueError, match="beyond"):
        PfnMap().set_run(PFN_LIMIT - 1, 2, 0)
