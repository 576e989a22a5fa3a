"""Where each guest page's latest copy lives: a pfn -> byte-offset map in bounded memory.

Each pfn's entry is ``offset - pfn * PAGE`` (a 64-bit signed int in an
:class:`array.array`), so that pfns whose copies lie back to back in the source have equal
entries: runs are found by comparing slices with a constant array (C speed), not by a
Python loop per pfn. :data:`CHUNK_PFNS` pfns per chunk; a chunk exists only once one of
its pfns is set (a sparse guest costs little).
At most *max_resident* chunks stay in memory; the least recently used one beyond that is
written to an unlinked temporary file and read back when touched again, so the map of a
guest of any size fits in a fixed amount of memory. :data:`ABSENT` marks a pfn with no data
(never sent, or last sent as XTAB/BROKEN/XALLOC).

:meth:`PfnMap.extents` yields maximal runs of present pfns whose copies also lie back to
back in the source, in pfn order: the unit of one ``copy_file_range`` call.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections import OrderedDict
from collections.abc import Iterator

PAGE = 4096
ABSENT = -1
#: what a chunk holds for an absent pfn (no ``offset - pfn * PAGE`` can be this small)
_HOLE = -(1 << 63)
#: pfns from here on cannot be mapped (4 PiB of guest memory: no real guest comes close)
PFN_LIMIT = 1 << 40
CHUNK_SHIFT = 16
CHUNK_PFNS = 1 << CHUNK_SHIFT
CHUNK_BYTES = CHUNK_PFNS * 8
#: chunks kept in memory (8 MiB of map: every pfn of a 16 GiB guest); more are spilled
DEFAULT_RESIDENT = 16


def _run_end(chunk: array, start: int, end: int) -> int:
    """The end of the run of entries equal to ``chunk[start]`` within [start, end)
    (galloping, then bisection: whole-slice comparisons, not a loop per pfn)."""
    value = array("q", [chunk[start]])
    good = 1                                    # chunk[start:start+good] are all equal
    probe = 2
    while start + good < end:
        probe = min(probe, end - start)
        if chunk[start:start + probe] == value * probe:
            good = probe
            probe *= 2
            continue
        break
    else:
        return start + good
    low, high = good, probe                     # run length in [low, high)
    while high - low > 1:
        mid = (low + high) // 2
        if chunk[start:start + mid] == value * mid:
            low = mid
        else:
            high = mid
    return start + low


class PfnMap:
    """pfn -> source offset of its latest copy (or :data:`ABSENT`), in bounded memory.

    *spill_dir* is where the overflow file goes (None: the system's temporary directory);
    the file is unlinked on creation, so nothing is left behind whatever happens.
    """

    def __init__(self, spill_dir: str | None = None, max_resident: int = DEFAULT_RESIDENT
                 ) -> None:
        self._resident: OrderedDict[int, array] = OrderedDict()
        self._spilled: set[int] = set()
        self._spill_dir = spill_dir
        self._spill_fd: int | None = None
        self._max_resident = max(1, max_resident)

    def close(self) -> None:
        if self._spill_fd is not None:
            os.close(self._spill_fd)
            self._spill_fd = None
        self._resident.clear()
        self._spilled.clear()

    # -- chunks --------------------------------------------------------------------------
    def _evict(self) -> None:
        index, chunk = self._resident.popitem(last=False)
        if self._spill_fd is None:
            fd, name = tempfile.mkstemp(prefix=".xenmig-pfnmap.", dir=self._spill_dir)
            os.unlink(name)
            self._spill_fd = fd
        data = chunk.tobytes()
        done = 0
        while done < len(data):
            done += os.pwrite(self._spill_fd, data[done:], index * CHUNK_BYTES + done)
        self._spilled.add(index)

    def _chunk(self, index: int, create: bool) -> array | None:
        chunk = self._resident.get(index)
        if chunk is not None:
            self._resident.move_to_end(index)
            return chunk
        if index in self._spilled:
            assert self._spill_fd is not None
            data = os.pread(self._spill_fd, CHUNK_BYTES, index * CHUNK_BYTES)
            chunk = array("q")
            chunk.frombytes(data)
        elif create:
            chunk = array("q", [_HOLE]) * CHUNK_PFNS
        else:
            return None
        self._resident[index] = chunk
        if len(self._resident) > self._max_resident:
            self._evict()
        return chunk

    # -- updates -------------------------------------------------------------------------
    def set_run(self, pfn: int, count: int, offset: int) -> None:
        """Pfns ``pfn .. pfn+count-1`` now live at ``offset + i * PAGE`` (or are all absent
        when *offset* is :data:`ABSENT`). Raises ValueError for a pfn beyond
        :data:`PFN_LIMIT`."""
        if pfn + count > PFN_LIMIT:
            raise ValueError(f"pfn {pfn + count - 1:#x} is beyond what can be exported")
        entry = _HOLE if offset == ABSENT else offset - pfn * PAGE
        fill = array("q", [entry])
        while count > 0:
            index, at = divmod(pfn, CHUNK_PFNS)
            take = min(count, CHUNK_PFNS - at)
            chunk = self._chunk(index, create=offset != ABSENT)
            if chunk is not None:
                chunk[at:at + take] = fill * take
            pfn += take
            count -= take

    # -- queries -------------------------------------------------------------------------
    def extents(self, low: int = 0, high: int | None = None) -> Iterator[tuple[int, int, int]]:
        """(first pfn, count, source offset) of each run of present pfns in [low, high)
        whose copies are contiguous in the source, in pfn order (merged across chunks)."""
        indexes = sorted(set(self._resident) | self._spilled)
        pending: list[int] | None = None           # [pfn, count, offset]
        for index in indexes:
            base = index * CHUNK_PFNS
            if high is not None and base >= high:
                break
            if base + CHUNK_PFNS <= low:
                continue
            chunk = self._chunk(index, create=False)
            assert chunk is not None
            pos = max(low - base, 0)
            end = CHUNK_PFNS if high is None else min(CHUNK_PFNS, high - base)
            while pos < end:
                entry = chunk[pos]
                stop = _run_end(chunk, pos, end)
                if entry != _HOLE:
                    pfn = base + pos
                    offset = entry + pfn * PAGE
                    if pending is not None and pending[0] + pending[1] == pfn \
                            and pending[2] + pending[1] * PAGE == offset:
                        pending[1] += stop - pos
                    else:
                        if pending is not None:
                            yield pending[0], pending[1], pending[2]
                        pending = [pfn, stop - pos, offset]
                pos = stop
        if pending is not None:
            yield pending[0], pending[1], pending[2]

    def runs(self) -> Iterator[tuple[int, int]]:
        """(first pfn, count) of each maximal run of present pfns, in pfn order."""
        current: list[int] | None = None
        for pfn, count, _offset in self.extents():
            if current is not None and current[0] + current[1] == pfn:
                current[1] += count
                continue
            if current is not None:
                yield current[0], current[1]
            current = [pfn, count]
        if current is not None:
            yield current[0], current[1]

    def summary(self) -> tuple[int, int, int]:
        """(pages present, highest present pfn or -1, number of runs)."""
        pages = 0
        highest = -1
        runs = 0
        for pfn, count in self.runs():
            pages += count
            highest = pfn + count - 1
            runs += 1
        return pages, highest, runs
