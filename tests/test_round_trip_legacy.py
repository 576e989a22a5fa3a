"""Round trip (dump, then build) of legacy (Xen <= 4.5) images, whose walker implies each
unit's type and length: units are rebuilt from their fields, with no record header. Skipped
where the legacy plugin is not installed."""

from __future__ import annotations

import pytest
from dumping import dump_file

from xenmig_core.build import build_stream

legacy = pytest.importorskip("xenmig_legacy.samples")


def _images() -> dict[str, bytes]:
    images = {
        "pv64": legacy.pv_image(), "pv32": legacy.pv_image(width=32, guest_width=4),
        "pv-xsave": legacy.pv_image(xsave=832), "pv-empty-batch": legacy.pv_image(
            empty_batch=True),
        "hvm64": legacy.hvm_image(), "hvm32": legacy.hvm_image(width=32),
        "hvm-no-qemu": legacy.hvm_image(qemu=None),
    }
    out = {name: image.data for name, image in images.items()}
    out["pv64-truncated"] = out["pv64"][:len(out["pv64"]) // 2]
    return out


def test_legacy_images_round_trip(registry, tmp_path) -> None:
    for name, data in _images().items():
        source = tmp_path / name
        source.write_bytes(data)
        for to, pages in (("yaml", "ref"), ("jsonl", "hex")):
            text, result = dump_file(registry, source, to, fmt="legacy", pages=pages)
            assert result.valid == (name != "pv64-truncated"), name
            description = tmp_path / f"{name}.{to}"
            description.write_text(text)
            built = tmp_path / f"{name}.{to}.built"
            build_stream(registry, str(description), str(built), verify=False)
            assert built.read_bytes() == data, f"{name} via {to}"


def test_legacy_units_are_fields_not_raw(registry, tmp_path) -> None:
    import json
    source = tmp_path / "pv64"
    source.write_bytes(legacy.pv_image().data)
    text, _ = dump_file(registry, source, "json", fmt="legacy")
    records = [i for i in json.loads(text)["items"] if i["kind"] == "record"]
    assert records and all("fields" in r for r in records if r.get("length"))
    assert not any("raw" in r or "body" in r for r in records)


def test_dump_takes_width_and_guest(cli, tmp_path) -> None:
    from conftest import ROOT
    image = str(ROOT / "examples" / "pv32-legacy.img")
    right = cli("dump", "--width", "32", "--guest", "pv", image)
    assert right.exit_code == 0 and "end: valid" in right.stdout
    wrong = cli("dump", "--width", "64", "--guest", "hvm", "-t", "yaml", image, "-o",
                str(tmp_path / "wrong.yaml"))
    assert wrong.exit_code == 1                     # read as the wrong width: invalid ...
    assert cli("build", "--no-verify", str(tmp_path / "wrong.yaml"), "-o",
               str(tmp_path / "again")).exit_code == 0
    assert (tmp_path / "again").read_bytes() == (ROOT / "examples" / "pv32-legacy.img"
                                                 ).read_bytes()   # ... and still rebuilt
    bad = cli("dump", "--width", "48", image)
    assert bad.exit_code == 2 and "--width must be 32 or 64" in bad.stderr
