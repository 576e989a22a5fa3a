"""A legacy batch's pfn words, a whole batch at a time.

A legacy pfn word (u32 from a 32-bit toolstack, u64 from a 64-bit one) holds the page
type in bits 31-28 and the pfn in bits 27-0 (bits 63-32 zero). The functions here work on
the words' raw bytes with ``bytes`` operations done in C (strided slices, ``translate``,
``count``), so a 1024-word batch costs microseconds, not a Python loop per word.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence

FILLER = 0xF0000000
TYPE_MASK = 0xF0000000
#: Types from here up (0xd: XALLOC, 0xe: BROKEN, 0xf: XTAB) carry no page data.
FIRST_DATALESS_TYPE = 0xD0000000
_LITTLE = sys.byteorder == "little"
_HIGH_NIBBLE = bytes(b >> 4 for b in range(256))
_KEEP_HIGH = bytes(b & 0xF0 for b in range(256))
_KEEP_LOW = bytes(b & 0x0F for b in range(256))
_DATA_TYPES = bytes(range(FIRST_DATALESS_TYPE >> 28))


def as_array(words: Sequence[int]) -> array:
    """*words* as an array of native unsigned ints (itself when it already is one)."""
    if isinstance(words, array) and words.typecode in "IQL":
        return words
    return array("Q", words)


def type_byte_index(itemsize: int) -> int:
    """Offset, within one native word of *itemsize* bytes, of the byte of bits 31-24."""
    return 3 if _LITTLE else itemsize - 4


def types(words: Sequence[int]) -> bytes:
    """The type nibble (bits 31-28) of each word, one byte per word."""
    items = as_array(words)
    step = items.itemsize
    return items.tobytes()[type_byte_index(step)::step].translate(_HIGH_NIBBLE)


def data_pages(words: Sequence[int], compressed: bool) -> int:
    """Pages of data after a batch's pfn words: one per word (fillers aside) whose type is
    below BROKEN (the rule of Xen's converter); none in format B, where -12 chunks carry
    them. (A filler, 0xf0000000, has type 0xf: it never counts.)"""
    if compressed:
        return 0
    nibbles = types(words)
    return len(nibbles) - len(nibbles.translate(None, _DATA_TYPES))


def to_v2(words: Sequence[int]) -> array:
    """Each word as a v2 PAGE_DATA word (type to bits 63-60, pfn bits 27-0 kept), as an
    array of u64."""
    items = as_array(words)
    if not _LITTLE:
        return array("Q", [((w & TYPE_MASK) << 32) | (w & 0x0FFFFFFF) for w in items])
    raw = items.tobytes()
    step = items.itemsize
    out = bytearray(8 * len(items))
    out[0::8] = raw[0::step]
    out[1::8] = raw[1::step]
    top = raw[3::step]
    out[2::8] = raw[2::step]
    out[3::8] = top.translate(_KEEP_LOW)
    out[7::8] = top.translate(_KEEP_HIGH)
    result = array("Q")
    result.frombytes(out)
    return result
