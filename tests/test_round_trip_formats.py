"""Round trip (dump -t yaml, then build) of the libxl, xl, libvirt and checkpointed streams the
libxl/xl plugins' sample builders make: plain, nested, checkpointed (Remus, COLO), big-endian,
back channel, and broken variants. Skipped where those plugins are not installed."""

from __future__ import annotations

import pytest
from dumping import dump_file

from xenmig_core.build import build_stream

libxl_samples = pytest.importorskip("xenmig_libxl.samples")
xl_samples = pytest.importorskip("xenmig_xl.samples")


def _streams(registry) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, format to dump with)."""
    specs = registry.specs
    s = libxl_samples
    hvm = s.assemble_libxl(specs, s.hvm_libxl_sample())
    out = {
        "libxl-hvm": (hvm, "auto"),
        "libxl-pv": (s.assemble_libxl(specs, s.pv_libxl_sample()), "auto"),
        "libxl-hvm-be": (s.assemble_libxl(specs, s.hvm_libxl_sample(), "big"), "auto"),
        "remus-3": (s.assemble_libxl(specs, s.checkpointed_sample(3)), "auto"),
        "remus-pv-2": (s.assemble_libxl(specs, s.checkpointed_sample(2, hvm=False)), "auto"),
        "colo-2": (s.assemble_libxl(specs, s.checkpointed_sample(2, colo=True)), "auto"),
        "colo-back-channel": (s.assemble_back_channel(specs["colo-back-channel"],
                                                      s.back_channel_steps(2)),
                              "colo-back-channel"),
        "xl-hvm": (xl_samples.xl_file(specs["xl"], hvm, config=xl_samples.json_config_bytes(
            xl_samples.hvm_config())), "auto"),
        "libvirt-hvm": (xl_samples.libvirt_file(specs["libvirt"], hvm), "auto"),
    }
    remus = out["remus-3"][0]
    out["remus-cut-in-checkpoint"] = (remus[:len(remus) * 2 // 3], "auto")
    out["libxl-trailing"] = (hvm + b"\xff" * 13, "auto")
    out["xl-bad-magic"] = (xl_samples.xl_file(specs["xl"], hvm, magic=b"X" * 32), "xl")
    out["libvirt-long-xml-len"] = (xl_samples.libvirt_file(specs["libvirt"], hvm,
                                                           xml_len=10_000), "libvirt")
    return out


def test_nested_and_checkpointed_streams_round_trip(registry, tmp_path) -> None:
    for name, (data, fmt) in _streams(registry).items():
        source = tmp_path / name
        source.write_bytes(data)
        for to, pages in (("yaml", "ref"), ("jsonl", "hex")):
            text, _ = dump_file(registry, source, to, fmt=fmt, pages=pages)
            description = tmp_path / f"{name}.{to}"
            description.write_text(text)
            built = tmp_path / f"{name}.{to}.built"
            build_stream(registry, str(description), str(built), verify=False)
            assert built.read_bytes() == data, f"{name} via {to}"



def test_nested_stream_dumps_validate_against_schema(registry) -> None:
    import json
    from importlib.resources import files

    import jsonschema
    from dumping import dump_text

    from xenmig_core.source import ByteSource
    schema = jsonschema.Draft202012Validator(
        json.loads((files("xenmig_core.schemas") / "dump.schema.json").read_text()))
    nested = set()
    for name, (data, fmt) in _streams(registry).items():
        for pages in ("ref", "sha256", "hex"):
            out, _ = dump_text(registry, ByteSource.from_bytes(data, name), "json", fmt,
                               pages=pages)
            doc = json.loads(out)
            errors = list(schema.iter_errors(doc))
            assert not errors, f"{name} --pages {pages}: {errors[0].message}"
            nested.update(name for i in doc["items"] if i["kind"] == "stream" and i["depth"])
    assert {"libxl-hvm", "remus-3", "colo-2", "xl-hvm", "libvirt-hvm"} <= nested
