"""Telling a legacy image's toolstack width and guest type from its first bytes.

A legacy image has no magic number. The rules (from the libxc spec's "Legacy Images" table
and what Xen 4.x's saver writes first):

Toolstack width: octets 4-7 are zero -> 64-bit (they are the upper half of a 64-bit
``p2m_size``, which the saver keeps below 2^28); anything else -> 32-bit (there they hold
the PV extended-info signature 0xffffffff, or the HVM stream's first chunk marker).
Cannot decide: a 32-bit HVM image whose first chunk is the end-of-chunks marker 0 (a guest
with no memory) looks 64-bit; pass ``--width 32``.

Guest type: PV when the word after ``p2m_size`` is all ones (the extended-info signature)
*and* the first extended-info block id ("vcpu", "extv" or "xcnt") follows its 4-byte length;
otherwise HVM. The block id is what separates a PV image from a 32-bit HVM debug image
whose first chunk is -1 (also 0xffffffff). Cannot decide: a PV image without extended info
(accepted by Xen's C reader, never written by the 4.x saver) looks HVM; pass ``--guest pv``.

Detection confidence (for ``--from auto``), p2m_size must be 1..0x0fffffff in any case:
70 for a PV image with a known block id where it belongs; 40 for an HVM image whose p2m_size
is at least 0x100 (its first MiB) and whose chunks, as far as the first 4096 bytes show
them, are known chunks up to a page batch of 1-1024 plausible pfn words (known types, bits
63-32 clear, data-carrying pfns below p2m_size); nothing otherwise. Formats with magic
numbers answer 90, so a legacy guess never overrides them; a header-less v2 record stream
(a COLO back channel) fails the HVM rule on its small first word.
"""

from __future__ import annotations

import struct

from xenmig_core.detect import Detection
from xenmig_core.plain import Plain

FORMAT = "legacy"
MAX_P2M_SIZE = 0x0FFFFFFF
BLOCK_IDS = (b"vcpu", b"extv", b"xcnt")
KNOWN_CHUNKS = range(-20, 0)
MAX_BATCH = 1024
MIN_HVM_P2M_SIZE = 0x100     # an HVM guest has at least its first MiB (firmware, VGA hole)
PV_CONFIDENCE = 70
HVM_CONFIDENCE = 40


class Layout(Plain, frozen=True):
    """What the first bytes say: toolstack *width* (32/64), *guest* ("pv"/"hvm"), and why."""

    width: int
    guest: str
    width_reason: str
    guest_reason: str


def decide(head: bytes, width: int | None = None) -> Layout:
    """Apply the width and guest rules to *head* (at least 8 bytes for a useful answer);
    with *width* given, only the guest rule (for that width)."""
    if width is not None:
        width_reason = "option"
    elif head[4:8] == b"\0\0\0\0":
        width, width_reason = 64, "detected: octets 4-7 are zero"
    else:
        width, width_reason = 32, "detected: octets 4-7 are not zero"
    w = width // 8
    signature = head[w:2 * w]
    block = head[2 * w + 4:2 * w + 8]
    if signature == b"\xff" * w and block in BLOCK_IDS:
        guest, guest_reason = "pv", f"detected: extended info with a {block.decode()!r} block"
    else:
        guest, guest_reason = "hvm", "detected: no PV extended info after p2m_size"
    return Layout(width, guest, width_reason, guest_reason)


def _p2m_size(head: bytes, width: int) -> int:
    return struct.unpack_from("<Q" if width == 64 else "<I", head)[0]


def _plausible_words(head: bytes, offset: int, count: int, width: int, p2m_size: int) -> bool:
    """The pfn words of a batch that lie within *head*: known types, bits 63-32 clear,
    data-carrying pfns below p2m_size."""
    w = width // 8
    words = head[offset:offset + count * w]
    for i in range(len(words) // w):
        word = int.from_bytes(words[i * w:(i + 1) * w], "little")
        ptype = (word >> 28) & 0xF
        if word >> 32 or ptype in (5, 6, 7, 8):
            return False
        if ptype < 0xD and (word & 0x0FFFFFFF) >= p2m_size:
            return False
    return True


def _plausible_chunks(head: bytes, offset: int, width: int, p2m_size: int) -> bool:
    """Follow the chunks that lie within *head*: each marker must be known and each page
    batch's pfn words plausible. Stops (plausible) at the first batch, the 0 chunk or the
    end of *head*."""
    fixed = {-1: 4, -3: 16, -4: 16, -7: 24, -8: 16, -9: 4, -10: 16, -11: 16, -13: 4,
             -14: 16, -15: 16, -16: 16, -17: 16, -19: 16, -20: 16}
    while offset + 4 <= len(head):
        marker = struct.unpack_from("<i", head, offset)[0]
        if 0 < marker <= MAX_BATCH:
            return _plausible_words(head, offset + 4, marker, width, p2m_size)
        if marker == 0:
            return True
        if marker in fixed:
            offset += fixed[marker]
        elif marker == -2 and offset + 8 <= len(head):
            max_id = struct.unpack_from("<i", head, offset + 4)[0]
            if not 0 <= max_id <= 4095:
                return False
            offset += 8 + 8 * (max_id // 64 + 1)
        elif marker == -18 and offset + 8 <= len(head):
            offset += 8 + struct.unpack_from("<I", head, offset + 4)[0]
        else:
            return marker in (-2, -18, -12)
    return True


def detect_legacy(head: bytes) -> Detection | None:
    """A Detection for a plausible legacy image (see the module's confidence rule)."""
    if len(head) < 16:
        return None
    layout = decide(head)
    p2m_size = _p2m_size(head, layout.width)
    if not 1 <= p2m_size <= MAX_P2M_SIZE:
        return None
    what = f"a legacy libxc image ({layout.width}-bit toolstack, {layout.guest.upper()} guest)"
    if layout.guest == "pv":
        return Detection(FORMAT, PV_CONFIDENCE, what)
    if p2m_size < MIN_HVM_P2M_SIZE:
        return None
    if _plausible_chunks(head, layout.width // 8, layout.width, p2m_size):
        return Detection(FORMAT, HVM_CONFIDENCE, what)
    return None
