"""The command line as a user meets it: whole first sentences in ``xenmig --help``, plugin
names (never Python reprs), stream parameters declared by plugins (``--param``, listed in
help, the old options kept as aliases), shell completion, progress only on a terminal."""

from __future__ import annotations

import io
import re

import pytest
import typer
from conftest import ROOT

from xenmig_core import progress as progress_module
from xenmig_core.api import open_source, verify_opened
from xenmig_core.cli import app
from xenmig_core.cli_help import first_sentence
from xenmig_core.progress import progress_for

LEGACY = ROOT / "examples" / "pv32-legacy.img"
HVM_LEGACY = ROOT / "examples" / "hvm64-legacy.xl"


def test_help_shows_each_first_sentence_whole(cli) -> None:
    out = cli("--help").stdout
    listed = " ".join(out.split("Commands:", 1)[1].split())
    commands = typer.main.get_command(app).commands
    for name, command in commands.items():
        assert f"{name} {first_sentence(command.help)}" in listed, name
    assert "Convert INPUT into another format (e.g. a legacy Xen <= 4.5 image into a v2 " \
        "stream, or any stream into a memory image)." in listed
    assert "..." not in out.split("Commands:", 1)[1]
    specs = " ".join(cli("specs", "--help").stdout.split())
    assert "exit 2 on the first error." in specs


def test_first_sentence() -> None:
    assert first_sentence("Convert X (e.g. a thing) into Y. More.\n\nDetails.") == \
        "Convert X (e.g. a thing) into Y."
    assert first_sentence("List it; exit 2 on error.") == "List it; exit 2 on error."
    assert first_sentence("No full stop") == "No full stop"


def test_plugins_shows_names_and_parameters(cli) -> None:
    out = cli("plugins").stdout
    assert "object at 0x" not in out and "<" not in out
    assert "xenmig.spec-detector: xenmig_core.detect.SpecDetector (xenmig_detect_format)" in out
    assert "  --param width=32|64: " in out


@pytest.mark.parametrize("command", ["verify", "dump", "convert"])
def test_help_lists_the_declared_stream_parameters(cli, command) -> None:
    out = cli(command, "--help").stdout
    section = out.split("Stream parameters (--param NAME=VALUE):", 1)[1]
    assert re.search(r"width=32\|64\s+toolstack word size", section)
    assert "[legacy]" in section
    assert ("skip_qemu=BOOL" in section) == (command == "convert")


def test_param_and_its_alias(cli) -> None:
    by_param = cli("verify", "--json", "--param", "width=32", "--param", "guest=pv",
                   str(LEGACY))
    by_alias = cli("verify", "--json", "--width", "32", "--guest", "pv", str(LEGACY))
    assert by_param.exit_code == by_alias.exit_code == 0
    assert by_param.stdout == by_alias.stdout and '"width_from": "option"' in by_param.stdout


def test_bad_params_are_usage_errors(cli) -> None:
    unknown = cli("verify", "--param", "colour=blue", str(LEGACY))
    assert unknown.exit_code == 2
    assert unknown.stderr.strip() == ("xenmig: error: unknown stream parameter 'colour' for "
                                      "verify (known: guest, width)")
    assert "--param width must be 32 or 64" in cli("verify", "--param", "width=7",
                                                   str(LEGACY)).stderr
    assert "expected NAME=VALUE" in cli("verify", "--param", "width", str(LEGACY)).stderr
    # skip_qemu is for convert only
    assert cli("verify", "--param", "skip_qemu=1", str(LEGACY)).exit_code == 2


def test_skip_qemu_as_a_param(cli, tmp_path) -> None:
    args = ("convert", str(HVM_LEGACY), "--to", "libxc", "-q")
    assert cli(*args, "-o", str(tmp_path / "a"), "--skip-qemu").exit_code == 0
    assert cli(*args, "-o", str(tmp_path / "b"), "--param", "skip_qemu=yes").exit_code == 0
    assert cli(*args, "-o", str(tmp_path / "c")).exit_code == 0
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert (tmp_path / "a").read_bytes() != (tmp_path / "c").read_bytes()


def test_completion_is_offered(cli) -> None:
    out = cli("--help").stdout
    assert "--install-completion" in out and "--show-completion" in out


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_only_for_long_runs(registry, monkeypatch) -> None:
    with open_source(str(HVM_LEGACY)) as source:
        assert progress_for(source, "verifying", err=io.StringIO()) is None     # a pipe
        assert progress_for(source, "verifying", err=Tty(), enabled=False) is None  # -q
        tty = Tty()
        shown = progress_for(source, "verifying", err=tty)
        verify_opened(registry, source, "auto", shown)
        shown.finish()
    assert tty.getvalue() == ""                                  # under a second: nothing
    monkeypatch.setattr(progress_module, "DELAY", 0)
    monkeypatch.setattr(progress_module, "INTERVAL", 0)
    with open_source(str(HVM_LEGACY)) as source:
        tty = Tty()
        shown = progress_for(source, "verifying", err=tty)
        verify_opened(registry, source, "auto", shown)
        shown.finish()
    text = tty.getvalue()
    assert f"\rxenmig: verifying {HVM_LEGACY}: 0 MiB of 0 MiB (" in text
    assert text.endswith("\r")                                    # erased at the end


def test_no_progress_on_a_pipe(cli, monkeypatch) -> None:
    monkeypatch.setattr(progress_module, "DELAY", 0)
    monkeypatch.setattr(progress_module, "INTERVAL", 0)
    for args in (("verify",), ("dump", "-o", "/dev/null")):
        done = cli(*args, str(HVM_LEGACY))
        assert done.exit_code == 0 and "xenmig:" not in done.stderr
