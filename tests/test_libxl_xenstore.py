"""EMULATOR_XENSTORE_DATA: key/value decoding and its edge cases."""

from __future__ import annotations

import pytest
from libxl_support import build, errors, walk, warnings

from xenmig_libxl.samples import PHYSMAP, hvm_libxl_sample, xenstore_data


def _with_data(registry, data: bytes):
    sample = hvm_libxl_sample(pages=4)
    i = sample.index("libxl", "EMULATOR_XENSTORE_DATA")
    sample.parts[i][1].fields["data"] = data
    report, log = walk(registry, build(registry, sample))
    index = [r.name for r in log.records].index("EMULATOR_XENSTORE_DATA")
    return report, log.fields[index]


def test_pairs_are_decoded_into_the_record(registry) -> None:
    report, fields = _with_data(registry, xenstore_data(PHYSMAP))
    assert report.valid and not warnings(report)
    assert fields["pairs"] == [[k.decode(), v.decode()] for k, v in PHYSMAP]
    account = [e for e in report.to_dict()["account"] if e.get("name") ==
               "EMULATOR_XENSTORE_DATA"]
    assert account[0]["summary"].startswith("qemu-upstream, index 0, 3 keys: "
                                            "physmap/f0000000/start_addr=f0000000")


def test_empty_data_and_empty_value_are_fine(registry) -> None:
    report, fields = _with_data(registry, b"")
    assert report.valid and fields["pairs"] == []
    report, fields = _with_data(registry, b"k\0\0")
    assert report.valid and fields["pairs"] == [["k", ""]]


@pytest.mark.parametrize(("data", "expected"), [
    (b"key\0value", "the last string 'value' is not terminated"),
    (b"key", "the last string 'key' is not terminated"),
    (b"a\0b\0c\0", "3 strings: key/value pairs need an even number; key 'c' has no value"),
    (b"\0", "1 string: key/value pairs need an even number; key '' has no value"),
    (b"\0value\0", "empty key"),
    (b"/local/domain/0/x\0v\0", "is absolute"),
    (b"physmap/a b\0v\0", "characters outside A-Z a-z 0-9 - / _ @: ' '"),
    (b"physmap/..\0v\0", "characters outside"),
    (b"physmap//size\0v\0", "empty path component"),
    (b"physmap/\0v\0", "empty path component"),
    (b"ke\xffy\0v\0", "characters outside"),
])
def test_broken_data_is_an_error(registry, data, expected) -> None:
    report, _ = _with_data(registry, data)
    found = errors(report)
    assert len(found) == 1 and expected in found[0], found
    assert "(EMULATOR_XENSTORE_DATA)" in found[0]


def test_allowed_key_characters(registry) -> None:
    report, _ = _with_data(registry, b"aZ09-/_@x\0v\0")
    assert report.valid, errors(report)


@pytest.mark.parametrize(("data", "expected"), [
    (b"k\0v\x01\0", "not printable ASCII"),
    (b"k\0a\0k\0b\0", "appears twice"),
])
def test_doubtful_data_warns(registry, data, expected) -> None:
    report, _ = _with_data(registry, data)
    assert report.valid
    assert any(expected in w for w in warnings(report))


def test_problems_are_capped_per_record(registry) -> None:
    data = b"".join(b"/abs%d\0v\0" % i for i in range(10))
    report, fields = _with_data(registry, data)
    assert len(errors(report)) == 3 and len(fields["pairs"]) == 10
