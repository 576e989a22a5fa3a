"""The console script's fast path for ``verify`` and ``convert`` (no typer) against the typer
app: the same invocation gives the same stdout, stderr, exit status (and output file) either
way, and the fast path takes only what it is sure of (the rest goes to the typer app)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from conftest import ROOT
from typer.testing import CliRunner

from xenmig_core import entry
from xenmig_core.cli import app
from xenmig_legacy.samples import hvm_image, xl_header
from xenmig_libxc.samples import assemble, pv_sample

PV = ROOT / "examples" / "pv64-2vcpu-v3.libxc"
HVM = ROOT / "examples" / "hvm-v3.libxc"


@pytest.fixture(scope="module")
def files(tmp_path_factory, registry) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("fastpath")
    libxc = registry.specs["libxc"]
    broken = pv_sample()
    broken.steps[5].fields["pfn"][3] = (6 << 60) | 3
    broken.steps[5].payload = broken.steps[5].payload[:-4096]
    broken.steps[7].fields["reserved"] = 1
    paths = {"broken": folder / "broken.libxc", "be": folder / "be.libxc",
             "empty": folder / "empty", "junk": folder / "junk",
             "legacy": folder / "legacy.img", "cut": folder / "cut.img"}
    legacy = xl_header() + hvm_image(width=64).data
    paths["legacy"].write_bytes(legacy)
    paths["cut"].write_bytes(legacy[:len(legacy) * 2 // 3])
    paths["broken"].write_bytes(assemble(libxc, broken))
    paths["be"].write_bytes(assemble(libxc, pv_sample(), "big"))
    paths["empty"].write_bytes(b"")
    paths["junk"].write_bytes(b"not a stream at all" * 10)
    found = {name: str(path) for name, path in paths.items()}
    found.update(pv=str(PV), hvm=str(HVM), missing=str(folder / "missing"), dir=str(folder))
    return found


#: (arguments with {name} for a file of the fixture, stdin bytes or None, fast path taken)
INVOCATIONS = [
    ("verify {pv}", None, True),
    ("verify -q {pv}", None, True),
    ("verify --quiet {broken}", None, True),
    ("verify {broken}", None, True),
    ("verify -v {broken}", None, True),
    ("verify --verbose {hvm}", None, True),
    ("verify --json {pv}", None, True),
    ("verify --json {broken}", None, True),
    ("verify -q --json {hvm}", None, True),
    ("verify -q -v --json {hvm}", None, True),
    ("verify {be}", None, True),
    ("verify {empty}", None, True),
    ("verify {junk}", None, True),
    ("verify {missing}", None, True),
    ("verify {dir}", None, True),
    ("verify -f libxc {pv}", None, True),
    ("verify --from libxq {pv}", None, True),
    ("verify --from=libxl {pv}", None, True),
    ("verify {pv} -f auto -q", None, True),
    ("verify -- {pv}", None, True),
    ("verify {pv} {broken} {missing}", None, True),
    ("verify --json {pv} {be}", None, True),
    ("verify -q {pv} {broken}", None, True),
    ("verify -v {pv} {hvm}", None, True),
    ("verify", "pv", True),
    ("verify -", "hvm", True),
    ("verify -q -", "broken", True),
    ("verify", "empty", True),
    # left to the typer app: the entry must hand them over unchanged
    ("verify -qv {pv}", None, False),
    ("verify --frobnicate {pv}", None, False),
    ("verify -f", None, False),
    ("verify -f -q {pv}", None, False),
    ("verify --jobs 0 {pv}", None, False),
    ("verify --param width=7 {pv}", None, False),
    ("verify --help", None, False),
    ("--version", None, False),
    ("dump --limit 2 {pv}", None, False),
]


#: the same for convert; {out} is an output path of each side's own
CONVERSIONS = [
    ("convert {legacy} -o {out} --to xl", None, True),
    ("convert -q {legacy} -o {out} --to xl --no-sync", None, True),
    ("convert {legacy} --output={out} --to=libxc -f legacy --no-verify", None, True),
    ("convert --quiet --to libxl -o {out} -- {legacy}", None, True),
    ("convert {legacy} -o - --to libxl -q", None, True),
    ("convert - -o {out} --to xl", "legacy", True),
    ("convert {legacy} -o {out} --to xl --to nope", None, True),
    ("convert {legacy} -o {out} --to libxc -f libxc", None, True),
    ("convert {pv} -o {out} --to xl", None, True),
    ("convert {cut} -o {out} --to xl", None, True),
    ("convert {junk} -o {out} --to xl", None, True),
    ("convert {missing} -o {out} --to xl", None, True),
    ("convert {legacy} -o {legacy} --to xl", None, True),
    ("convert {legacy} -o {dir} --to xl", None, True),
    # left to the typer app
    ("convert {legacy} -o {out}", None, False),
    ("convert {legacy} --to xl", None, False),
    ("convert {legacy} {pv} -o {out} --to xl", None, False),
    ("convert {legacy} -o {out} --to xl --param width=64", None, False),
    ("convert {legacy} -o {out} --to xl --skip-qemu", None, False),
    ("convert {legacy} -o -q --to xl", None, False),
    ("convert {legacy} -qo {out} --to xl", None, False),
    ("convert --help", None, False),
]


def _args(template: str, files: dict[str, str]) -> list[str]:
    return [word.format(**files) for word in template.split()]


def _both_ways(args: list[str], data: bytes | None, fast: bool = False) -> tuple[tuple, tuple]:
    """(stdout, stderr, exit status) of the typer app, then of the console script's entry
    (*fast*: the entry takes its fast path, which must have enabled the collector again)."""
    runner = CliRunner()
    typed = runner.invoke(app, args, input=data, catch_exceptions=False)
    with runner.isolation(input=data) as (out, err, _mixed):
        try:
            entry.main(args)
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        finally:    # what the fast path does to the collector, undone for the test process
            assert gc.isenabled() or code == 2 or not fast
            gc.unfreeze()
            gc.enable()
        stdout, stderr = out.getvalue(), err.getvalue()
    return (typed.stdout_bytes, typed.stderr_bytes, typed.exit_code), (stdout, stderr, code)


@pytest.mark.parametrize(("template", "stdin", "fast"), CONVERSIONS,
                         ids=[t for t, _s, _f in CONVERSIONS])
def test_convert_fast_path_writes_and_exits_as_the_typer_app(files, tmp_path, monkeypatch,
                                                             template, stdin, fast) -> None:
    monkeypatch.chdir(tmp_path)     # "-o -q" writes a file named -q, here
    data = Path(files[stdin]).read_bytes() if stdin else None
    outputs = [tmp_path / "typed.out", tmp_path / "entry.out"]
    sides = [_args(template, {**files, "out": str(path)}) for path in outputs]
    assert (entry.parse_convert(sides[1]) is not None) is fast
    assert entry.parse_verify(sides[1]) is None
    typed, _ = _both_ways(sides[0], data)
    _, fasted = _both_ways(sides[1], data)
    # the messages name each side's output path: make them alike
    same = [part.replace(b"typed.out", b"entry.out") for part in typed[:2]]
    assert (same[0], same[1], typed[2]) == fasted, fasted[1]
    assert b"Traceback" not in fasted[1]
    made = [path.read_bytes() if path.exists() else None for path in outputs]
    assert made[0] == made[1]
    assert (made[1] is not None) == (fasted[2] == 0 and "{out}" in template)


@pytest.mark.parametrize(("template", "stdin", "fast"), INVOCATIONS,
                         ids=[t for t, _s, _f in INVOCATIONS])
def test_fast_path_prints_and_exits_as_the_typer_app(files, template, stdin, fast) -> None:
    args = _args(template, files)
    data = Path(files[stdin]).read_bytes() if stdin else None
    assert (entry.parse_verify(args) is not None) is fast
    typed, fasted = _both_ways(args, data, fast)
    assert fasted == typed
    assert b"Traceback" not in fasted[1]


def test_parse_verify_reads_options_as_click_does() -> None:
    assert entry.parse_verify(["verify"]) == {"streams": [], "from_": "auto"}
    assert entry.parse_verify(["verify", "a", "-q", "--from=x", "-f", "y", "-", "--", "-v"]) \
        == {"streams": ["a", "-", "-v"], "from_": "y", "quiet": True}
    assert entry.parse_verify(["verify", "--json", "-v"]) == \
        {"streams": [], "from_": "auto", "as_json": True, "verbose": True}
    for other in (["dump", "a"], [], ["verify", "-j", "2"], ["verify", "--from"],
                  ["verify", "-fx"], ["verify", "--tee", "x"], ["verify", "-h"]):
        assert entry.parse_verify(other) is None, other


def test_parse_convert_reads_options_as_click_does() -> None:
    assert entry.parse_convert(["convert", "a", "-o", "-", "--to", "xl"]) == \
        {"input_": "a", "output": "-", "to": "xl", "from_": "auto"}
    assert entry.parse_convert(["convert", "-q", "--to=x", "--to", "y", "--output=o",
                                "--from=l", "-", "--no-verify", "--no-sync"]) == \
        {"input_": "-", "output": "o", "to": "y", "from_": "l", "quiet": True,
         "no_verify": True, "no_sync": True}
    for other in (["convert"], ["convert", "a", "-o", "o"], ["convert", "a", "--to", "x"],
                  ["convert", "-o", "o", "--to", "x"], ["convert", "a", "-o=o", "--to", "x"],
                  ["convert", "a", "-o", "o", "--to", "-"], ["convert", "a", "-oo", "--to",
                  "x"], ["convert", "a", "-o", "o", "--to", "x", "--checkpoint", "2"],
                  ["verify", "a", "-o", "o", "--to", "x"], ["convert", "a", "-o"]):
        assert entry.parse_convert(other) is None, other


def test_completion_goes_to_the_typer_app(monkeypatch) -> None:
    monkeypatch.setenv("_XENMIG_COMPLETE", "bash_source")
    called = []
    monkeypatch.setattr("xenmig_core.cli.app", lambda *a, **k: called.append(a))
    entry.main(["verify", "-q", str(PV)])
    assert called
