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

Detection confidence (for ``--from auto``): 70 for a PV image with a known block id where
it belongs; 40 for an HVM image whose first chunk marker is a known chunk or a page batch of
1-1024 plausible pfn words; nothing otherwise. Formats with magic numbers answer 90, so a
legacy guess never overrides them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from xenmig_core.detect import Detection

FORMAT = "legacy"
MAX_P2M_SIZE = 0x0FFFFFFF
BLOCK_IDS = (b"vcpu", b"extv", b"xcnt")
KNOWN_CHUNKS = range(-20, 0)
MAX_BATCH = 1024
PV_CONFIDENCE = 70
HVM_CONFIDENCE = 40


@dataclass(frozen=True)
class Layout:
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


def _plausible_batch(head: bytes, offset: int, count: int, width: int) -> bool:
    w = width // 8
    words = head[offset:offset + count * w]
    for i in range(len(words) // w):
        word = int.from_bytes(words[i * w:(i + 1) * w], "little")
        if word >> 32 or (word >> 28) in (5, 6, 7, 8):
            return False
    return True


def detect_legacy(head: bytes) -> Detection | None:
    """A Detection for a plausible legacy image (see the module's confidence rule)."""
    if len(head) < 12:
        return None
    layout = decide(head)
    if not 1 <= _p2m_size(head, layout.width) <= MAX_P2M_SIZE:
        return None
    what = f"a legacy libxc image ({layout.width}-bit toolstack, {layout.guest.upper()} guest)"
    if layout.guest == "pv":
        return Detection(FORMAT, PV_CONFIDENCE, what)
    w = layout.width // 8
    marker = struct.unpack_from("<i", head, w)[0]
    if marker in KNOWN_CHUNKS or (0 < marker <= MAX_BATCH and
                                  _plausible_batch(head, w + 4, marker, layout.width)):
        return Detection(FORMAT, HVM_CONFIDENCE, what)
    return None
