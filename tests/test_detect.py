"""Format detection: --from auto, explicit names, and wrong explicit formats."""

from __future__ import annotations

import pytest
from conftest import ROOT
from libxl_support import build, errors, verify

from xenmig_core.detect import detect
from xenmig_core.errors import UsageError
from xenmig_core.source import ByteSource
from xenmig_core.verifier import choose_format
from xenmig_libxl.samples import hvm_libxl_sample

EXAMPLES = {
    "hvm-v3.libxc": ("libxc", "a libxc migration stream (v2/v3)"),
    "remus-3-checkpoints.libxl": ("libxl", "a libxl migration stream"),
    "hvm-guest.xl": ("xl", "an xl save file"),
    "hvm-guest.libvirt": ("libvirt", "a libvirt libxl save file"),
}


def _head(name: str) -> bytes:
    return (ROOT / "examples" / name).read_bytes()[:4096]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_each_format_is_detected(registry, name) -> None:
    fmt, description = EXAMPLES[name]
    found = detect(registry, _head(name))
    assert [(d.format, d.description) for d in found] == [(fmt, description)]
    with ByteSource.open(str(ROOT / "examples" / name)) as source:
        assert choose_format(registry, source, "auto") == fmt
        assert choose_format(registry, source, fmt) == fmt


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_wrong_explicit_format_says_what_the_stream_looks_like(registry, name) -> None:
    fmt, description = EXAMPLES[name]
    for wrong in ("libxc", "libxl", "xl", "libvirt", "colo-back-channel"):
        if wrong == fmt:
            continue
        with ByteSource.open(str(ROOT / "examples" / name)) as source, \
                pytest.raises(UsageError) as info:
            choose_format(registry, source, wrong)
        assert str(info.value) == (f"--from {wrong}: this looks like {description} "
                                   f"(--from {fmt}), not {wrong}")


@pytest.mark.parametrize("data", [b"\0" * 64, b"LibxlFm", b"Xen saved domain, xl format\n",
                                  b"libvirt-xml\n \0 \n" + b"\0" * 48, b"\xff" * 8])
def test_garbage_is_not_recognised(registry, data) -> None:
    assert detect(registry, data) == []
    found = errors(verify(registry, data))
    assert len(found) == 1 and found[0].startswith("@0x0: unrecognised stream")


def test_empty_stream(registry) -> None:
    assert errors(verify(registry, b"")) == ["@0x0: empty stream: nothing to verify"]


def test_unknown_format_name(registry) -> None:
    with pytest.raises(UsageError, match="unknown format 'legacyy'"):
        verify(registry, b"LibxlFmt", "legacyy")


def test_third_party_detector_takes_part(registry) -> None:
    """A plugin's xenmig_detect_format answer competes with the specs' magic."""
    from xenmig_core.detect import Detection
    from xenmig_core.plugins import hookimpl
    from xenmig_core.session import open_registry

    class Sniffer:
        @staticmethod
        @hookimpl
        def xenmig_detect_format(head, specs):
            if head.startswith(b"LibxlFmt"):
                return Detection("libxc", 99, "something a plugin knows better")
            return None

    reg = open_registry(plugins=[Sniffer()], autoload=False)
    data = build(reg, hvm_libxl_sample(pages=4))
    found = detect(reg, data[:4096])
    assert [d.format for d in found] == ["libxc", "libxl"]
