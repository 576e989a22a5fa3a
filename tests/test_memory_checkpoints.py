"""Memory export of checkpointed streams, pipes, and input that cannot be exported."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from conftest import run_xenmig, verify_bytes
from memory_support import (
    PAGE,
    apply,
    elf_notes,
    export,
    hvm_context,
    page_step,
    regs_for,
    vol_layer,
)

from xenmig_core.convert import ConvertOptions, convert
from xenmig_core.errors import StreamError, UsageError
from xenmig_libxc.samples import Step, assemble, hvm_sample
from xenmig_libxl.samples import (
    assemble_back_channel,
    assemble_libxl,
    back_channel_steps,
    checkpointed_sample,
)


def remus_stream(registry, checkpoints: int = 3) -> tuple[bytes, list[dict], list[int]]:
    """A Remus stream whose every PAGE_DATA carries new contents and whose every checkpoint
    has its own HVM context (vcpu 0's rip = base + checkpoint). Returns the bytes, the
    memory at the end of each checkpoint, and the byte offset where each checkpoint's
    records end (after its CHECKPOINT_END)."""
    sample = checkpointed_sample(checkpoints, hvm=True, pages=16)
    memory: dict[int, bytes] = {}
    states: list[dict] = []
    ends: list[int] = []
    generation = 0
    checkpoint = 1
    for i, (fmt, step) in enumerate(sample.parts):
        if step.name == "PAGE_DATA":
            entries = [(word & ((1 << 52) - 1), word >> 60) for word in step.fields["pfn"]]
            new, carried = page_step(entries, generation)
            generation += 1
            apply(memory, carried)
            sample.parts[i] = (fmt, new)
        elif step.name == "HVM_CONTEXT":
            sample.parts[i] = (fmt, Step("HVM_CONTEXT", {"context": hvm_context(
                registry.specs["libxc"].types, 2, generation=checkpoint)}))
        elif step.name == "CHECKPOINT":
            states.append(dict(memory))
            checkpoint += 1
        elif step.name == "CHECKPOINT_END":
            prefix = type(sample)(sample.header, sample.libxc, sample.parts[:i + 1])
            ends.append(len(assemble_libxl(registry.specs, prefix)))
    return assemble_libxl(registry.specs, sample), states, ends


def lime_memory(path: Path) -> dict[int, bytes]:
    layer = vol_layer(path, "lime")
    return {pfn: layer.read(pfn * PAGE, PAGE) for pfn in range(64)
            if layer.is_valid(pfn * PAGE, PAGE)}


def vcpu0_rip(path: Path) -> int:
    notes = [d for name, t, d in elf_notes(path.read_bytes()) if (name, t) == (b"CORE", 1)]
    return struct.unpack_from("<27Q", notes[0], 112)[16]


@pytest.fixture
def remus(registry, tmp_path):
    data, states, ends = remus_stream(registry)
    source = tmp_path / "remus.libxl"
    source.write_bytes(data)
    return source, states, ends


def test_last_checkpoint_by_default_and_any_on_request(registry, remus):
    source, states, _ends = remus
    assert states[0] != states[1] != states[2]
    out, label = export(registry, source, "lime")
    assert lime_memory(out) == states[2]
    for n in (1, 2, 3):
        out, label = export(registry, source, "lime", checkpoint=n)
        assert lime_memory(out) == states[n - 1], n
        assert f"checkpoint {n}" in label
        out, _label = export(registry, source, "elf", checkpoint=n)
        assert vcpu0_rip(out) == regs_for(0)["rip"] + n        # the vcpus of checkpoint n


def test_a_cut_stream_exports_its_last_complete_checkpoint(registry, remus, tmp_path):
    source, states, ends = remus
    cut = tmp_path / "cut.libxl"
    cut.write_bytes(source.read_bytes()[:ends[1] + 100])      # inside checkpoint 3's pages
    out, label = export(registry, cut, "lime")
    assert lime_memory(out) == states[1]
    assert "checkpoint 2, the last complete one: the stream is cut" in label
    out, _label = export(registry, cut, "lime", checkpoint=1)
    assert lime_memory(out) == states[0]
    with pytest.raises(UsageError, match="2 complete checkpoints"):
        export(registry, cut, "lime", checkpoint=3)
    early = tmp_path / "early.libxl"
    early.write_bytes(source.read_bytes()[:ends[0] - 3000])   # inside checkpoint 1
    with pytest.raises(StreamError, match="truncated"):
        export(registry, early, "raw")
    assert not early.with_name("early.libxl.raw").exists()


def test_stdin_and_stdout(registry, remus, tmp_path):
    """A pipe input is spooled; raw to a pipe writes its holes as zeros."""
    source, _states, _ends = remus
    expected, _label = export(registry, source, "elf")
    out = tmp_path / "piped.elf"
    done = run_xenmig("convert", "-", "-o", str(out), "--to", "elf", input=source.read_bytes())
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == expected.read_bytes()
    raw, _label = export(registry, source, "raw", checkpoint=2)
    done = run_xenmig("convert", str(source), "-o", "-", "--to", "raw", "--checkpoint", "2",
                      "-q")
    assert done.returncode == 0, done.stderr
    assert done.stdout == raw.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["remus.libxl", "remus.libxl.elf", "remus.libxl.raw", "piped.elf"])


# -- what cannot be exported -------------------------------------------------------------
def unexportable(registry, libxc) -> dict[str, tuple[bytes, list[str]]]:
    """message -> (stream, extra convert arguments)."""
    no_pages = hvm_sample()
    no_pages.steps = [s for s in no_pages.steps if s.name != "PAGE_DATA"]
    no_pages.steps.insert(no_pages.index("X86_TSC_INFO"), page_step([(5, 0xF), (6, 0xF)])[0])
    far = hvm_sample()
    far.steps.insert(far.index("X86_TSC_INFO"), page_step([(1 << 41, 0)])[0])
    big_pages = hvm_sample()
    big_pages.domain_header["page_shift"] = 13
    whole = assemble(libxc, hvm_sample())
    return {
        "no guest memory: the stream has no page with data": (assemble(libxc, no_pages), []),
        "unknown page size: the domain header's page shift is 13":
            (assemble(libxc, big_pages), []),
        "stream truncated": (whole[:len(whole) // 2], []),
        "pfn 0x20000000000 is beyond what can be exported": (assemble(libxc, far), []),
        "no guest memory: this colo-back-channel stream holds no libxc stream": (
            assemble_back_channel(registry.specs["colo-back-channel"], back_channel_steps()),
            ["--from", "colo-back-channel"]),
    }


@pytest.mark.parametrize("case", range(5))
def test_unexportable_input_is_refused_and_leaves_nothing(registry, libxc, tmp_path, case):
    message, (data, args) = list(unexportable(registry, libxc).items())[case]
    source = tmp_path / "bad"
    source.write_bytes(data)
    options = ConvertOptions(target="elf")
    fmt = args[1] if args else "auto"
    with pytest.raises(StreamError, match=re.escape(message)):
        convert(registry, str(source), str(tmp_path / "out.elf"), options, source_format=fmt)
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]


def test_the_cli_says_it_in_one_line_with_exit_1(registry, libxc, tmp_path):
    message, (data, _args) = next(iter(unexportable(registry, libxc).items()))
    source = tmp_path / "bad"
    source.write_bytes(data)
    done = run_xenmig("convert", str(source), "-o", str(tmp_path / "out.elf"), "--to", "elf")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert [p.name for p in tmp_path.iterdir()] == ["bad"]


def test_checkpoint_of_a_plain_stream_is_a_usage_error(registry, libxc, tmp_path):
    source = tmp_path / "plain"
    source.write_bytes(assemble(libxc, hvm_sample()))
    with pytest.raises(UsageError, match="the stream has 0 complete checkpoints"):
        export(registry, source, "raw", checkpoint=1)
    assert [p.name for p in tmp_path.iterdir()] == ["plain"]


def test_verify_stays_valid_for_pfns_an_export_refuses(registry, libxc):
    sample = hvm_sample()
    sample.steps.insert(sample.index("X86_TSC_INFO"), page_step([(1 << 41, 0)])[0])
    report = verify_bytes(registry, assemble(libxc, sample))
    assert report.valid
    assert report.to_dict()["memory"]["pfns_beyond_limit"] == 1
