"""xenstore migration / live-update streams: both byte orders, both length styles, every rule
the design states that the stream alone can check, cross-record references, round trips."""

from __future__ import annotations

import struct

import pytest
from conftest import run_xenmig
from dumping import dump_file
from libxl_support import errors, verify, warnings

from xenmig_core.build import build_stream
from xenmig_libxc.samples import Step
from xenmig_xenstore import checks
from xenmig_xenstore import samples as xst


@pytest.fixture(scope="module")
def spec(registry):
    return registry.specs["xenstore"]


def stream(spec, steps=None, **kw) -> bytes:
    order = kw.get("byte_order", "little")
    steps = steps if steps is not None else xst.live_update_records(order, kw.get("version", 2))
    return xst.assemble_xenstore(spec, steps, **kw)


def edit(steps, index, **fields) -> list[Step]:
    """*steps* with step *index*'s fields updated."""
    out = list(steps)
    step = out[index]
    out[index] = Step(step.name, {**step.fields, **fields}, step.payload, step.overrides)
    return out


def find(steps, name, nth=0) -> int:
    return [i for i, s in enumerate(steps) if s.name == name][nth]


def node_index(steps, path) -> int:
    return next(i for i, s in enumerate(steps)
                if s.name == "NODE_DATA" and s.fields["path"] == path.encode() + b"\0")


ALL = [(order, style, version) for order in ("little", "big")
       for style in ("xenstored", "design") for version in (1, 2)]


# -- valid streams ---------------------------------------------------------------------------
@pytest.mark.parametrize("order, style, version", ALL)
def test_samples_verify(registry, spec, order, style, version) -> None:
    report = verify(registry, stream(spec, byte_order=order, style=style, version=version))
    assert report.valid, errors(report)
    out = report.to_dict()
    assert out["format"] == "xenstore" and out["byte_order"] == order
    assert (out["xenstore_version"], out["connections"], out["nodes"]) == (version, 2, 11)
    if style == "xenstored":
        assert not report.diagnostics, warnings(report)
    else:
        (warning,) = warnings(report)
        assert "not a multiple of 8" in warning and "xenstored's live-update reader" in warning


def test_records_are_in_the_flags_byte_order(registry, spec) -> None:
    little = stream(spec)
    big = stream(spec, byte_order="big")
    assert little[:8] == big[:8] == b"xenstore" and big[12:16] == b"\0\0\0\1"
    assert little[16:20] == struct.pack("<I", 1) and big[16:20] == struct.pack(">I", 1)
    # a big-endian stream whose flags say little-endian is misread
    report = verify(registry, big[:12] + b"\0\0\0\0" + big[16:])
    assert not report.valid


def test_dump_shows_connections_watches_and_the_node_tree(registry, spec, tmp_path) -> None:
    path = tmp_path / "xs"
    path.write_bytes(stream(spec, byte_order="big"))
    text, _ = dump_file(registry, path)
    assert "conn 2, domain 5, event channel 11, 0 bytes in, 47 bytes out" in text
    assert "conn_spec: kind=socket socket_fd=9" in text
    assert "unique_id=0x5a17000000000005" in text
    assert "conn 2: '/local/domain/5/device' token 'token-5', depth 1" in text
    assert "/local/domain/5/name, owner 5, 7 bytes" in text
    assert "perms=[n5, r0 (stale)]" in text and "value=guest-5" in text
    assert "/local/domain/5/data/pending (transaction 7 of conn 2)" in text
    assert "quotas: nodes=2000 watches=256" in text


# -- broken streams --------------------------------------------------------------------------
def broken(spec):
    """name -> (bytes, expected error text, offset or None)."""
    steps = xst.live_update_records()
    good = stream(spec)
    end = len(good) - 8
    watch = find(steps, "WATCH_DATA")
    conn = find(steps, "CONNECTION_DATA", 1)
    name = node_index(steps, "/local/domain/5/name")
    quota = find(steps, "GLOBAL_QUOTA_DATA")
    design = stream(spec, style="design")    # DOMAIN_DATA: 30 bytes, 2 of padding, then END
    return {
        "bad ident": (b"xenstorf" + good[8:], "expected 0x78656e73746f7265", 0),
        "version 3": (good[:8] + struct.pack(">I", 3) + good[12:], "unknown version", 0),
        "reserved flags": (good[:12] + struct.pack(">I", 0x10) + good[16:],
                           "reserved flag bits 1-31 set", 0),
        "no END": (good[:end], "stream ended before END", end),
        "cut in a record": (good[:end - 20], "truncated", None),
        "watch before its connection": (
            stream(spec, [*steps[:watch - 1], steps[watch], *steps[watch - 1:watch],
                          *steps[watch + 1:]]),
            "connection not found for read watch", None),
        "path without NUL": (stream(spec, edit(steps, name, path=b"/local/domain/5/nameX")),
                             "not one NUL-terminated string", None),
        "relative path": (stream(spec, edit(steps, name, path=b"local/x\0", path_len=8)),
                          "neither absolute nor a special @ node", None),
        "committed node without owner": (stream(spec, edit(steps, name, perm_count=0,
                                                           perms=[])),
                                         "without permissions", None),
        "partial response too long": (stream(spec, edit(steps, conn, out_resp_len=200)),
                                      "exceeds out-data-len", None),
        "unique-id flag, no room": (stream(spec, edit(steps, conn, tail=b"")),
                                    "fields bit 0 (unique-id)", None),
        "too few quota names": (stream(spec, edit(steps, quota,
                                                  names=xst.names_blob(["nodes"]))),
                                "4 quota values but 1 names", None),
        "lengths do not add up": (stream(spec, edit(steps, watch, pad=bytes(16))),
                                  "lengths do not add up", None),
        "bad framing padding": (design[:-9] + b"\x01" + design[-8:],
                                "padding contains non-zero bytes", len(design) - 8 - 40),
        "watch path too long": (stream(spec, edit(steps, watch, wpath_len=200)),
                                "body too short", None),
    }


@pytest.mark.parametrize("name", ["bad ident", "version 3", "reserved flags", "no END",
                                  "cut in a record", "watch before its connection",
                                  "path without NUL", "relative path",
                                  "committed node without owner", "partial response too long",
                                  "unique-id flag, no room", "too few quota names",
                                  "lengths do not add up", "bad framing padding",
                                  "watch path too long"])
def test_broken_streams_are_invalid(registry, spec, name) -> None:
    data, expected, offset = broken(spec)[name]
    report = verify(registry, data, "xenstore")
    assert not report.valid
    found = [d for d in report.diagnostics if d.is_error and expected in str(d)]
    assert found, errors(report)
    if offset is not None:
        assert found[0].offset == offset, str(found[0])


def test_errors_name_the_record_and_its_offset(registry, spec) -> None:
    steps = xst.live_update_records()
    name = node_index(steps, "/local/domain/5/name")
    data = stream(spec, edit(steps, name, path=b"relative\0", path_len=9))
    report = verify(registry, data)
    (error,) = [d for d in report.diagnostics if d.is_error]
    assert error.record_type == "NODE_DATA" and error.field == "path"
    assert data[error.offset:error.offset + 4] == struct.pack("<I", 5)


def test_cli_one_line_error(tmp_path, registry, spec) -> None:
    steps = xst.live_update_records()
    watch = find(steps, "WATCH_DATA")
    path = tmp_path / "bad.xs"
    data = stream(spec, edit(steps, watch, conn_id=99))
    path.write_bytes(data)
    result = run_xenmig("verify", str(path))
    assert result.returncode == 1
    (line,) = result.stderr.decode().splitlines()
    (error,) = errors(verify(registry, data))
    offset = int(error.split("@", 1)[1].split(":", 1)[0], 16)
    assert data[offset:offset + 4] == struct.pack("<I", 3)      # a WATCH_DATA header
    assert f"record {watch} (WATCH_DATA) @{offset:#x}" in line and "conn-id 99" in line


# -- warnings: what the design asks and the reader does not check, or the receiver decides --
def warned(registry, data, expected) -> None:
    report = verify(registry, data, "xenstore")
    assert report.valid, errors(report)
    assert any(expected in w for w in warnings(report)), warnings(report)


def test_extended_watch_in_a_version_1_stream_warns(registry, spec) -> None:
    steps = xst.live_update_records(version=2)
    warned(registry, stream(spec, steps, version=1), "WATCH_DATA_EXTENDED in a version 1")


def test_features_in_a_version_1_stream_warn(registry, spec) -> None:
    steps = xst.live_update_records(version=1)
    steps = edit(steps, find(steps, "DOMAIN_DATA"), features=3)
    warned(registry, stream(spec, steps, version=1), "features 0x3 in a version 1 stream")


def test_unknown_record_type_warns(registry, spec) -> None:
    data = stream(spec)
    data = data[:16] + struct.pack("<II", 0x42, 8) + bytes(8) + data[16:]
    warned(registry, data, "unknown optional record type 0x00000042")


def test_data_after_end_warns(registry, spec) -> None:
    warned(registry, stream(spec) + b"junk", "xenstored's reader stops at END")


def test_parent_outside_the_stream_warns(registry, spec) -> None:
    steps = xst.live_update_records()
    steps = [s for s in steps if s.fields.get("path") != b"/local/domain/5\0"]
    warned(registry, stream(spec, steps), "parent '/local/domain/5' is not in the stream")


def test_unknown_domain_and_transaction_warn(registry, spec) -> None:
    steps = xst.live_update_records()
    steps = edit(steps, find(steps, "DOMAIN_DATA"), domain_id=9)
    steps = [s for s in steps if s.name != "TRANSACTION_DATA"]
    data = stream(spec, steps)
    warned(registry, data, "domain 9 has no shared-ring CONNECTION_DATA")
    warned(registry, data, "no earlier TRANSACTION_DATA declared")


def test_end_with_a_body_warns(registry, spec) -> None:
    steps = xst.live_update_records()
    steps[-1] = Step("END", overrides={"body": bytes(8)})
    warned(registry, stream(spec, steps), "body length 8, expected 0")


def test_bookkeeping_is_bounded(registry, spec, monkeypatch) -> None:
    monkeypatch.setattr(checks, "MAX_IDS", 2)
    report = verify(registry, stream(spec))
    assert report.valid, errors(report)
    assert sum("more connections, transactions or nodes" in w for w in warnings(report)) == 1


# -- round trips ---------------------------------------------------------------------------
def test_round_trip_through_dump_and_build(registry, spec, tmp_path) -> None:
    datas = {f"{o}-{s}-v{v}": stream(spec, byte_order=o, style=s, version=v)
             for o, s, v in ALL}
    for name in ("watch before its connection", "path without NUL", "no END",
                 "too few quota names"):
        datas[name] = broken(spec)[name][0]
    for name, data in datas.items():
        source = tmp_path / name.replace(" ", "_")
        source.write_bytes(data)
        for to, pages in (("yaml", "ref"), ("jsonl", "hex")):
            text, _ = dump_file(registry, source, to, fmt="xenstore", pages=pages)
            description = tmp_path / f"{source.name}.{to}"
            description.write_text(text)
            built = tmp_path / f"{source.name}.{to}.built"
            build_stream(registry, str(description), str(built), verify=False)
            assert built.read_bytes() == data, f"{name} via {to}"


def test_specs_list_and_plugins_show_the_new_formats(cli) -> None:
    listed = cli("specs", "list")
    assert listed.exit_code == 0
    for name in ("xenserver", "xenstore"):
        assert name in listed.output
    plugins = cli("plugins")
    assert "xenmig_xenserver" in plugins.output and "xenmig_xenstore" in plugins.output


def test_an_oversized_record_is_refused_before_it_is_loaded(registry, spec) -> None:
    import tracemalloc
    good = stream(spec)
    data = good[:16] + struct.pack("<II", 5, 0xF0000000) + bytes(64)
    tracemalloc.start()
    report = verify(registry, data)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert not report.valid and peak < 16 << 20
    assert any("expected at most" in e for e in errors(report)), errors(report)


def test_damaged_streams_never_crash_and_errors_have_offsets(registry) -> None:
    """Bit flips and cuts across the example: a report every time (no exception), every
    error placed at an offset, every cut stream invalid."""
    from conftest import ROOT
    data = (ROOT / "examples" / "live-update.xenstore").read_bytes()
    for i in range(0, len(data), 7):
        damaged = bytearray(data)
        damaged[i] ^= 0x80 if i % 2 else 0x01
        report = verify(registry, bytes(damaged))
        assert all(d.offset is not None for d in report.diagnostics if d.is_error), i
    for cut in range(0, len(data), 9):
        assert not verify(registry, data[:cut], "xenstore").valid, cut


def test_reserved_bits_and_unknown_permissions_warn(registry, spec) -> None:
    steps = xst.live_update_records()
    name = node_index(steps, "/local/domain/5/name")
    steps = edit(steps, name, access=0x10, perms=[xst.perm("x", 5), xst.perm("r", 0, 0x81)])
    report = verify(registry, stream(spec, steps))
    assert report.valid, errors(report)
    found = warnings(report)
    assert any("reserved access bits set: 0x10" in w for w in found)
    assert any("permission 1 is 0x78, none of w, r, b, n" in w for w in found)
    assert any("permission 2 has reserved flag bits 0x80" in w for w in found)
