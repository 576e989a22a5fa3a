"""xl save files and libvirt's libxl save files: headers, configuration, XML, what follows."""

from __future__ import annotations

import json
import struct

import pytest
from libxl_support import build, errors, verify, warnings

from xenmig_libxl.samples import hvm_libxl_sample, pv_libxl_sample
from xenmig_xl.samples import (
    domain_xml,
    hvm_config,
    json_config_bytes,
    libvirt_file,
    xl_file,
)


def registry_without_legacy(extra_specs=()):
    """A registry without the legacy plugin: how xl and libvirt behave when no loaded
    plugin provides the format 'legacy'."""
    from xenmig_core.plugins import get_plugin_manager
    from xenmig_core.registry import Registry

    pm = get_plugin_manager(autoload=False)
    pm.unregister(name="legacy")
    return Registry(pm, extra_specs)


@pytest.fixture(scope="module")
def stream(registry) -> bytes:
    return build(registry, hvm_libxl_sample(pages=4))


@pytest.fixture
def xl(registry, stream):
    def make(**kw) -> bytes:
        kw.setdefault("config", json_config_bytes(hvm_config()))
        return xl_file(registry.specs["xl"], kw.pop("stream", stream), **kw)
    return make


def test_xl_file_is_valid(registry, xl) -> None:
    report = verify(registry, xl())
    assert report.valid and not warnings(report), errors(report)
    assert report.format == "xl"
    assert [c.format for c in report.contexts] == ["xl", "libxl", "libxc"]
    data = report.to_dict()
    assert data["xl_config_format"] == "json" and data["guest_type"] == "x86 HVM"
    config = data["streams"][0]["headers"]["optional_data"]["config"]
    assert config["c_info"]["name"] == "hvm-guest"
    headers = [e for e in data["account"] if e["kind"] == "header"]
    assert [(h["format"], h["name"], h["offset"]) for h in headers[:4]] == [
        ("xl", "header", 0), ("xl", "flags", 36), ("xl", "optional_data", 48),
        ("libxl", "header", 48 + 4 + len(json_config_bytes(hvm_config())))]


def test_text_config(registry, xl) -> None:
    text = b'name = "old-guest"\nbuilder = "hvm"\nmemory = 256\n'
    report = verify(registry, xl(config=text, mandatory=2))
    assert report.valid, errors(report)
    header = report.contexts[0].headers["optional_data"]
    assert header["config_text"] == text.decode()
    assert "xl save file (text configuration)" in report.summary()


@pytest.mark.parametrize("kw", [{"config": b""}, {"optional_data": b""}])
def test_no_config_warns(registry, xl, kw) -> None:
    report = verify(registry, xl(**kw))
    assert report.valid
    assert any("no domain configuration" in w for w in warnings(report))


def test_big_endian_marker(registry, xl) -> None:
    report = verify(registry, xl(byte_order="big"))
    assert any("big-endian host" in w for w in warnings(report))
    assert report.contexts[0].headers["flags"]["mandatory_flags"] == 3
    assert report.valid          # the config length was read big-endian too


def test_optional_flags_are_ignored(registry, xl) -> None:
    assert verify(registry, xl(optional_flags=0xFF)).valid


@pytest.mark.parametrize(("kw", "expected"), [
    ({"magic": b"Xen saved domain, xl format\n \0 \n"}, "magic: wrong magic"),
    ({"byteorder": 0x01020305}, "byteorder: byte-order marker"),
    ({"optional_data": b"\0" * 0x1000001}, "more than 16 MiB of optional data"),
])
def test_fatal_header_problems(registry, xl, kw, expected) -> None:
    report = verify(registry, xl(**kw), "xl")
    found = errors(report)
    assert len(found) == 1 and expected in found[0], found
    assert [c.format for c in report.contexts] == ["xl"]


def test_unknown_mandatory_flag(registry, xl) -> None:
    found = errors(verify(registry, xl(mandatory=7)))
    assert len(found) == 1
    assert "mandatory_flags: unknown mandatory flags: xl refuses the file" in found[0]


@pytest.mark.parametrize(("optional", "expected"), [
    (b"\1\0", "cannot hold the 4-byte config_len"),
    (struct.pack("<I", 100) + b"{}\0", "config_len 100 overruns the optional data"),
    (struct.pack("<I", 2) + b"{}", "not NUL-terminated"),
    (struct.pack("<I", 4) + b"{x}\0", "does not parse"),
    (struct.pack("<I", 3) + b"[]\0", "is a list, not an object"),
])
def test_broken_config(registry, xl, optional, expected) -> None:
    found = errors(verify(registry, xl(optional_data=optional)))
    assert len(found) == 1 and expected in found[0], found
    assert found[0].startswith("xl optional data @0x30: config")


def test_bytes_after_the_config_warn(registry, xl) -> None:
    config = json_config_bytes(hvm_config())
    report = verify(registry, xl(optional_data=struct.pack("<I", len(config)) + config + b"xx"))
    assert report.valid and any("2 bytes after the configuration" in w
                                for w in warnings(report))


def test_config_guest_type_against_the_stream(registry, xl) -> None:
    pv = build(registry, pv_libxl_sample(pages=4))
    found = errors(verify(registry, xl(stream=pv)))
    assert found == ["xl: the configuration's guest type is hvm, but the stream holds an "
                     "x86 PV domain: restore would fail"]
    found = errors(verify(registry, xl(config=json_config_bytes(hvm_config(kind="pvh")))))
    assert len(found) == 1 and "2 emulator records for a PVH guest" in found[0]


def test_legacy_stream_is_recognised_not_verified(xl) -> None:
    report = verify(registry_without_legacy(), xl(stream=b"\x01" * 64, mandatory=1))
    assert report.valid
    assert report.summary().startswith("xl save file (JSON configuration, legacy stream); ")
    assert "a legacy libxc (Xen 4.5 and older) stream follows" in \
        report.to_dict()["account"][2]["summary"]
    assert warnings(report) == ["xl rest of stream @0x38e: the rest of the stream (64 bytes) "
                                "is a 'legacy' stream, which no loaded plugin provides: not "
                                "verified"]


def test_header_only(registry, xl) -> None:
    found = errors(verify(registry, xl(stream=b"")))
    assert found == ["libxl end of stream @0x38e: stream ended where a libxl migration stream "
                     "should start"]


def test_xl_migrate_trailer(registry, xl) -> None:
    report = verify(registry, xl() + b"domain is yours, you are cleared to unpause\0")
    assert report.valid and "captured migration stream" in warnings(report)[0]


# -- libvirt ------------------------------------------------------------------------------
@pytest.fixture
def libvirt(registry, stream):
    def make(**kw) -> bytes:
        return libvirt_file(registry.specs["libvirt"], kw.pop("stream", stream), **kw)
    return make


def test_libvirt_file_is_valid(registry, libvirt) -> None:
    report = verify(registry, libvirt())
    assert report.valid and not warnings(report), errors(report)
    assert [c.format for c in report.contexts] == ["libvirt", "libxl", "libxc"]
    header = report.contexts[0].headers["domain_xml"]
    assert header["name"] == "hvm-guest" and header["os_type"] == "hvm"
    assert header["xml_text"] == domain_xml()
    data = report.to_dict()
    assert data["domain_name"] == "hvm-guest" and data["libvirt_save_version"] == 2
    json.dumps(data)


def test_libvirt_version_1_in_front_of_a_v2_stream(registry, libvirt) -> None:
    report = verify(registry, libvirt(version=1))
    assert report.valid and [c.format for c in report.contexts][1] == "libxl"
    assert any("header version 1 in front of a libxl v2 stream" in w
               for w in warnings(report))


def test_libvirt_version_1_with_a_legacy_stream(libvirt) -> None:
    report = verify(registry_without_legacy(), libvirt(version=1, stream=b"\xff" * 40))
    assert report.valid and "is a 'legacy' stream" in warnings(report)[0]


def test_libvirt_version_2_needs_a_libxl_stream(registry, libvirt) -> None:
    found = errors(verify(registry, libvirt(stream=b"\xff" * 40)))
    assert len(found) == 1 and "libxl header" in found[0] and "LibxlFmt" in found[0]


@pytest.mark.parametrize(("kw", "expected", "fatal"), [
    ({"version": 3}, "libvirt refuses a save image version above 2", False),
    ({"xml_len": 0}, "libvirt refuses 0", True),
    ({"xml_len": 0x1000001}, "xenmig loads no more than 16 MiB", True),
    ({"xml": domain_xml().encode()}, "not NUL-terminated", False),
    ({"xml": b"<domain><name>x</domain>\0"}, "does not parse", False),
    ({"xml": b"<other/>\0"}, "root element is <other>", False),
    ({"xml": b"\xff\xfe\0"}, "not UTF-8", False),
])
def test_libvirt_errors(registry, libvirt, kw, expected, fatal) -> None:
    report = verify(registry, libvirt(**kw))
    found = errors(report)
    assert len(found) == 1 and expected in found[0], found
    assert (len(report.contexts) == 1) == fatal


def test_libvirt_warnings(registry, libvirt) -> None:
    report = verify(registry, libvirt(unused=[0] * 9 + [1]))
    assert report.valid and any("unused words" in w for w in warnings(report))
    report = verify(registry, libvirt(xml=b"<domain type='kvm'><name>k</name></domain>\0"))
    assert report.valid and any("expected 'xen'" in w for w in warnings(report))


def test_a_registered_legacy_format_is_used_automatically(tmp_path, stream) -> None:
    """Once a plugin (or spec) provides the format 'legacy', xl and libvirt files whose
    stream is legacy are handed to it: no change in the xl plugin needed."""
    (tmp_path / "legacy.yaml").write_text(
        "xenmig_spec: 1\nformat: legacy\ntitle: toy legacy stream\nheaders:\n"
        "  - {name: head, byte_order: little, seq: [{id: magic, type: u32, valid: {eq: 7}}],"
        " fatal: [magic], summary: 'toy legacy'}\nfollows: \"''\"\n")
    registry = registry_without_legacy([tmp_path / "legacy.yaml"])
    data = xl_file(registry.specs["xl"], struct.pack("<I", 7), mandatory=1,
                   config=json_config_bytes(hvm_config()))
    report = verify(registry, data)
    assert report.valid and not warnings(report), report.diagnostics
    assert [c.format for c in report.contexts] == ["xl", "legacy"]
    report = verify(registry, libvirt_file(registry.specs["libvirt"], struct.pack("<I", 8),
                                           version=1))
    assert [c.format for c in report.contexts] == ["libvirt", "legacy"]
    assert errors(report) == ["legacy head @0x124: magic: expected 7, found 8"]


@pytest.mark.parametrize("inner", ["libxc", "libxl"])
def test_v2_stream_behind_a_header_without_the_v2_flag(registry, xl, stream, inner) -> None:
    """What convert-legacy-stream writes with its xl option: the inner v2 stream is
    verified as what it is, and the missing flag is the one error, at the flags header."""
    from xenmig_libxc.samples import assemble, hvm_sample

    body = assemble(registry.specs["libxc"], hvm_sample(pages=4)) if inner == "libxc" \
        else stream
    report = verify(registry, xl(stream=body, mandatory=1))
    assert [c.format for c in report.contexts][:2] == ["xl", inner]
    (only,) = report.diagnostics
    assert only.is_error and (only.unit, only.offset, only.field) == (
        "flags", 36, "mandatory_flags")
    assert f"lacks the stream-v2 flag (mandatory flag bit 1) but a v2 {inner} stream " \
        "follows" in only.message
    assert "p2m" not in only.message
