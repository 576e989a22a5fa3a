"""XenServer / XCP-ng suspend images: the samples, restore's checks, the legacy signature,
the Xenops S-expression, and dump/build round trips."""

from __future__ import annotations

import struct

import pytest
from conftest import run_xenmig
from dumping import dump_file
from libxl_support import errors, verify, warnings

from xenmig_core.build import build_stream
from xenmig_libxc.samples import assemble, hvm_sample
from xenmig_xenserver import samples as xs
from xenmig_xenserver.sexp import SexpError, dumps, ocaml_int, parse, xenops_record

HEADER = struct.Struct("<QQ")


@pytest.fixture(scope="module")
def spec(registry):
    return registry.specs["xenserver"]


def image(registry, parts, signature=xs.SIGNATURE) -> bytes:
    return xs.assemble_image(registry.specs["xenserver"], parts, signature)


def hvm_parts(registry) -> list[xs.Part]:
    return xs.hvm_parts(registry.specs)


def replace(parts, name, **changes) -> list[xs.Part]:
    """*parts* with the part named *name* changed (fields merged, payload replaced)."""
    out = []
    for part in parts:
        if part.name == name:
            fields = {**part.fields, **changes.pop("fields", {})}
            part = xs.Part(part.name, fields, changes.pop("payload", part.payload))
        out.append(part)
    return out


def without(parts, name) -> list[xs.Part]:
    return [p for p in parts if p.name != name]


# -- valid images -------------------------------------------------------------------------
def test_hvm_and_pv_images_verify_cleanly(registry) -> None:
    for data, kind in ((xs.hvm_image(registry.specs), "HVM"), (xs.pv_image(registry.specs), "PV")):
        report = verify(registry, data)
        assert report.valid and not report.diagnostics, errors(report) + warnings(report)
        out = report.to_dict()
        assert out["format"] == "xenserver" and out["vm_type"] == kind
        assert out["xenserver_word_size"] == 64 and out["vm_uuid"] == xs.UUID
        assert report.contexts[0].records["END_OF_IMAGE"] == 1
        assert report.contexts[1].format == "libxc" and report.contexts[1].records["END"] == 1


def test_xenops_record_is_decoded(registry) -> None:
    report = verify(registry, xs.hvm_image(registry.specs))
    assert "XenServer suspend image of 'win-uefi' (HVM)" in report.summary()
    text, _ = dump_file_bytes(registry, xs.hvm_image(registry.specs))
    assert "saved 20261201T03:52:22Z, word size 64, VM 'win-uefi' (HVM), 0 xenstore entries" in text
    assert "name=win-uefi ty=HVM" in text


def test_xs_subtree_is_listed(registry) -> None:
    sexp = xs.xenops_sexp(xs_subtree=[("/local/domain/7/name", "guest"), ("data/x", "1 2")])
    parts = replace(hvm_parts(registry), "XENOPS", fields={"sexp": sexp})
    data = image(registry, parts)
    report = verify(registry, data)
    assert report.valid and report.to_dict()["vm_name"] == "win-uefi"
    text, _ = dump_file_bytes(registry, data)
    assert "2 xenstore entries" in text
    assert "/local/domain/7/name = 'guest'" in text and "data/x = '1 2'" in text


def test_legacy_signature_is_explained_and_its_stream_verified(registry) -> None:
    for hvm in (True, False):
        report = verify(registry, xs.legacy_image(hvm))
        assert report.valid, errors(report)
        (warning,) = warnings(report)
        assert "legacy (pre-structured" in warning and "--skip-qemu" in warning
        assert report.contexts[1].format == "legacy"
        assert f"legacy {'hvm' if hvm else 'pv'} image" in report.contexts[1].summary
        assert report.contexts[0].records.get("LEGACY_QEMU", 0) == (1 if hvm else 0)


def test_legacy_qemu_record_must_follow_an_hvm_image(registry) -> None:
    data = xs.legacy_image()
    at = data.index(b"QemuDeviceModelRecord\n")
    broken = data[:at] + b"DeviceModelRecord0002" + data[at + 21:]
    report = verify(registry, broken)
    (error,) = errors(report)
    assert f"@{at:#x}" in error and "Read invalid legacy qemu save signature" in error


@pytest.mark.parametrize("signature", [xs.SIGNATURE, xs.LEGACY_SIGNATURE])
def test_both_signatures_are_detected(registry, signature) -> None:
    from xenmig_core.detect import detect
    data = xs.hvm_image(registry.specs) if signature == xs.SIGNATURE else xs.legacy_image()
    assert detect(registry, data[:4096])[0].format == "xenserver"


def test_demu_on_the_main_stream_leaves_the_rest_unverified(registry) -> None:
    parts = hvm_parts(registry)
    parts.insert(3, xs.Part("DEMU"))
    parts.insert(4, xs.Part(raw=b"vgpu state of unknown length" * 10))
    report = verify(registry, image(registry, parts))
    assert report.valid, errors(report)
    (warning,) = warnings(report)
    assert "Demu (vGPU)" in warning and "not verified" in warning


def test_length_fields_restore_ignores_warn(registry) -> None:
    parts = replace(hvm_parts(registry), "LIBXC", fields={"length": 5})
    parts = replace(parts, "END_OF_IMAGE", fields={"length": 9})
    report = verify(registry, image(registry, parts))
    assert report.valid, errors(report)
    assert len(warnings(report)) == 2
    assert all("restore ignores it" in w for w in warnings(report))


def test_order_rules_are_warnings(registry) -> None:
    parts = hvm_parts(registry)
    parts = [parts[1], parts[2], parts[0], *parts[3:]]   # Xenops after the libxc stream
    report = verify(registry, image(registry, parts))
    assert report.valid
    assert any("no Xenops record before the Libxc record" in w for w in warnings(report))
    assert any("Xenops record after the Libxc record" in w for w in warnings(report))


# -- invalid images ------------------------------------------------------------------------
def _offset_of(data: bytes, type_id: int, nth: int = 0) -> int:
    """Offset of the nth header of *type_id* at the xenserver level (found by walking)."""
    return [i for i in range(len(data) - 16) if data[i:i + 8] == struct.pack("<Q", type_id)][nth]


def broken_images(registry):
    """name -> (bytes, expected error text, expected offset or None)."""
    parts = hvm_parts(registry)
    good = image(registry, parts)
    eoi = len(good) - 16
    qemu = next(i for i in range(len(good)) if good[i:i + 8] == struct.pack("<Q", 0x0F00)
                and good[i + 16:i + 20] == b"QEVM")
    return {
        "bad signature": (b"XenSavedDomv3-\n" + good[15:], "Not a valid signature", 0),
        "unknown type": (good[:eoi] + HEADER.pack(0x1234, 0), "unknown header type 0x1234",
                         eoi),
        "no End_of_image": (good[:eoi], "stream ended before End_of_image", eoi),
        "record cut short": (good[:qemu + 40], "truncated", None),
        "header cut short": (good[:eoi + 9], "stream truncated: the header needs 16 bytes",
                             eoi),
        "qemu record too long": (image(registry, replace(parts, "QEMU_TRAD",
                                                         payload=b"QEVM" + bytes(0x100000))),
                                 "xenopsd refuses more than 1 MiB", None),
        "no Libxc": (image(registry, [p for p in parts[:1]] + parts[3:]),
                     "no Libxc record", None),
        "bad sexp": (image(registry, replace(parts, "XENOPS",
                                             fields={"sexp": b"((time x)(word_size 64)"})),
                     "not an S-expression: 1 unclosed list(s) at byte 23", 15),
        "extra field": (image(registry, replace(parts, "XENOPS", fields={
            "sexp": b"((time x)(word_size 64)(colour blue))"})), "unknown field(s) colour", 15),
        "no word_size": (image(registry, replace(parts, "XENOPS", fields={
            "sexp": b"((time x))"})), "no word_size field", 15),
        "Libxl": (image(registry, [*parts[:1], xs.Part("LIBXL")]), "Libxl record", None),
        "Qemu_xen": (image(registry, [*parts[:-1], xs.Part("QEMU_XEN", payload=b"x"),
                                      parts[-1]]), "Qemu_xen record", None),
        "huge Xenops": (xs.SIGNATURE + HEADER.pack(0x0F, 1 << 40), "does not load more", 15),
        "second libxc": (image(registry, [*parts[:3], parts[1], parts[2], *parts[3:]]),
                         "a second nested libxc stream", None),
    }


@pytest.mark.parametrize("name", ["bad signature", "unknown type", "no End_of_image",
                                  "record cut short", "header cut short",
                                  "qemu record too long", "no Libxc", "bad sexp",
                                  "extra field", "no word_size", "Libxl", "Qemu_xen",
                                  "huge Xenops", "second libxc"])
def test_broken_images_are_invalid(registry, name) -> None:
    data, expected, offset = broken_images(registry)[name]
    report = verify(registry, data, "xenserver" if name == "bad signature" else "auto")
    assert not report.valid
    found = [d for d in report.diagnostics if d.is_error and expected in str(d)]
    assert found, errors(report)
    if offset is not None:
        assert found[0].offset == offset, str(found[0])


def test_cli_one_line_error_with_offset(tmp_path) -> None:
    from xenmig_core.session import open_registry
    registry = open_registry(autoload=False)
    good = xs.hvm_image(registry.specs)
    path = tmp_path / "bad.img"
    path.write_bytes(good[:-16] + HEADER.pack(0x7777, 0))
    result = run_xenmig("verify", str(path))
    assert result.returncode == 1
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert f"@{len(good) - 16:#x}" in lines[0] and "unknown header type 0x7777" in lines[0]


# -- round trip -----------------------------------------------------------------------------
def dump_file_bytes(registry, data: bytes, to: str = "text", **options):
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image"
        path.write_bytes(data)
        return dump_file(registry, path, to, **options)


def test_round_trip_through_dump_and_build(registry, tmp_path) -> None:
    parts = hvm_parts(registry)
    streams = {
        "hvm": xs.hvm_image(registry.specs),
        "pv": xs.pv_image(registry.specs),
        "legacy-hvm": xs.legacy_image(True),
        "legacy-pv": xs.legacy_image(False),
        "big-endian-libxc": image(registry, [parts[0], parts[1], xs.Part(raw=assemble(
            registry.specs["libxc"], hvm_sample(pages=4), "big")), *parts[3:]]),
        "bad-sexp": image(registry, replace(parts, "XENOPS", fields={"sexp": b"(("})),
        "libxc-length": image(registry, replace(parts, "LIBXC", fields={"length": 3})),
    }
    for name, data in streams.items():
        source = tmp_path / name
        source.write_bytes(data)
        for to, pages in (("yaml", "ref"), ("jsonl", "hex")):
            text, _ = dump_file(registry, source, to, pages=pages)
            description = tmp_path / f"{name}.{to}"
            description.write_text(text)
            built = tmp_path / f"{name}.{to}.built"
            build_stream(registry, str(description), str(built), verify=False)
            assert built.read_bytes() == data, f"{name} via {to}"


# -- the S-expression reader ----------------------------------------------------------------
def test_sexp_reads_what_sexplib_writes() -> None:
    text = (b'((time 20240102T03:04:05Z)(word_size 0x40)(vm_str "((id 1)(name \\"a b\\")'
            b'(ty(PVH())))")(xs_subtree((k v)("with space" "x\\ny"))))')
    record = xenops_record(parse(text))
    assert record.word_size == 64 and record.vm == {"id": "1", "name": "a b", "ty": "PVH"}
    assert record.xs_subtree == [("k", "v"), ("with space", "x\ny")]
    assert dumps(parse(text)).encode() == text


@pytest.mark.parametrize("text, message", [
    (b"", "no S-expression"),
    (b"(a b", "unclosed"),
    (b"(a))", r"unexpected '\)'"),
    (b"(a) b", "followed by data"),
    (b'("abc', "unterminated string"),
    (b"#| open", "unterminated #| comment"),
])
def test_sexp_syntax_errors(text, message) -> None:
    with pytest.raises(SexpError, match=message):
        parse(text)


def test_sexp_comments_and_escapes() -> None:
    assert parse(b"; note\n(a #| block #| nested |# |# b #;(skipped) c) ; end") == ["a", "b", "c"]
    assert parse(b'"\\065\\x42\\t"') == "AB\t"
    assert parse(b"(a) #;(b)") == ["a"] and parse(b"#;x (a)") == ["a"]


@pytest.mark.parametrize("text, message", [
    (b"atom", "an atom"),
    (b"((time a)(time b)(word_size 1))", "appears twice"),
    (b"((time (a))(word_size 1))", "time is a list"),
    (b"((time a)(word_size 1)(xs_subtree ((a b c))))", "xs_subtree entry 1"),
    (b"((time a)(word_size x1))", "word_size is not an integer"),
])
def test_xenops_record_errors(text, message) -> None:
    with pytest.raises(ValueError, match=message):
        xenops_record(parse(text))


def test_ocaml_int() -> None:
    assert [ocaml_int(t) for t in ("64", "0x40", "0o100", "0b1000000", "6_4", "-3", "1e3")] \
        == [64, 64, 64, 64, 64, -3, None]


def test_deep_nesting_is_refused_without_recursion() -> None:
    with pytest.raises(SexpError, match="nested deeper"):
        parse(b"(" * 5000 + b")" * 5000)


def test_data_after_end_of_image_warns(registry) -> None:
    report = verify(registry, xs.hvm_image(registry.specs) + b"extra")
    assert report.valid, errors(report)
    (warning,) = warnings(report)
    assert "5 bytes after the end of the stream" in warning and "never reads" in warning


def test_damaged_images_never_crash_and_errors_have_offsets(registry) -> None:
    """Bit flips and cuts in xenopsd's framing (the libxc stream inside has its own tests):
    a report every time, every error placed at an offset, every cut image invalid."""
    data = xs.hvm_image(registry.specs)
    libxc_end = data.index(HEADER.pack(0x0F11, 256))          # the Varstored header
    where = [*range(0, 0x1A0, 5), *range(libxc_end, len(data), 11)]
    for i in where:
        damaged = bytearray(data)
        damaged[i] ^= 0x80 if i % 2 else 0x01
        report = verify(registry, bytes(damaged), "xenserver")
        assert all(d.offset is not None for d in report.diagnostics if d.is_error), i
    for cut in where:
        assert not verify(registry, data[:cut], "xenserver").valid, cut


def test_legacy_image_without_the_legacy_plugin_is_not_verified() -> None:
    from xenmig_core.plugins import get_plugin_manager
    from xenmig_core.registry import Registry
    pm = get_plugin_manager(autoload=False)
    pm.unregister(name="legacy")
    report = verify(Registry(pm), xs.legacy_image())
    assert report.valid
    assert any("no loaded plugin provides: not verified" in w for w in warnings(report))


def test_skip_qemu_is_only_for_the_legacy_stream_inside(registry) -> None:
    """The walk parameter the legacy image sets is gone once its legacy stream ended: a
    legacy stream elsewhere (behind an xl header) still reads its own qemu record."""
    from xenmig_core.engine.walk import Engine
    from xenmig_core.source import ByteSource
    engine = Engine(registry, ByteSource.from_bytes(xs.legacy_image()))
    result = engine.run("xenserver")
    assert result.valid and "skip_qemu" not in engine.params
