"""The drop-in scripts, driven with the exact argument lists Xen's tooling uses
(formats.md section 9), as real subprocesses with file descriptors and pipes."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from xenmig_core import progress as progress_module
from xenmig_core.convert import ConvertOptions, convert
from xenmig_legacy.compat import convert_main, fd_or_file, verify_main
from xenmig_legacy.samples import hvm_image, pv_image, xl_header

BIN = Path(sys.executable).parent


def expected(registry, tmp_path: Path, data: bytes, target: str, **kw) -> bytes:
    src, out = tmp_path / "ref.in", tmp_path / f"ref.{target}"
    src.write_bytes(data)
    convert(registry, str(src), str(out), ConvertOptions(target, params=kw))
    return out.read_bytes()


def run_with_fds(args_for, data: bytes) -> tuple[int, bytes, bytes]:
    """Run a script whose argv names an input pipe fd and an output pipe fd, as libxl and
    xenopsd do; returns (exit status, output bytes, stderr)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    argv = args_for(str(in_r), str(out_w))
    proc = subprocess.Popen(argv, pass_fds=(in_r, out_w), stderr=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    os.close(in_r)
    os.close(out_w)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), os.fdopen(in_w, "wb") as pipe:
            pipe.write(data)
    feeder = threading.Thread(target=feed)
    feeder.start()
    with os.fdopen(out_r, "rb") as pipe:
        got = pipe.read()
    feeder.join()
    _stdout, stderr = proc.communicate(timeout=60)
    return proc.returncode, got, stderr


@pytest.mark.parametrize("guest,width", [("hvm", "64"), ("pv", "64"), ("hvm", "32"),
                                         ("pv", "32")])
def test_libxl_invocation(registry, tmp_path, guest: str, width: str) -> None:
    """libxl: --in FD --out FD --width 64|32 --guest hvm|pv --format libxl."""
    image = (hvm_image if guest == "hvm" else pv_image)(width=int(width)).data
    code, got, stderr = run_with_fds(lambda i, o: [
        str(BIN / "xenmig-convert-legacy-stream"), "--in", i, "--out", o, "--width", width,
        "--guest", guest, "--format", "libxl"], image)
    assert code == 0, stderr
    assert got == expected(registry, tmp_path, image, "libxl")


@pytest.mark.parametrize("guest", ["hvm", "pv"])
def test_xenopsd_invocation(registry, tmp_path, guest: str) -> None:
    """xenopsd: --in FD --out FD --width 32 --skip-qemu --guest-type hvm|pv --syslog
    --verbose (libxc output, qemu left to xenopsd, info to syslog, nothing on stdout)."""
    image = (hvm_image if guest == "hvm" else pv_image)(width=32).data
    code, got, stderr = run_with_fds(lambda i, o: [
        str(BIN / "xenmig-convert-legacy-stream"), "--in", i, "--out", o, "--width", "32",
        "--skip-qemu", "--guest-type", guest, "--syslog", "--verbose"], image)
    assert code == 0, stderr
    assert got == expected(registry, tmp_path, image, "libxc", skip_qemu=True)
    assert not got.endswith(b"QEVM" + bytes(range(256)) * 3 + b"xyz")


def test_helper_env_variable_style(registry, tmp_path) -> None:
    """LIBXL_CONVERT_HELPER=xenmig-convert-legacy-stream: the script name alone works."""
    image = hvm_image(width=64).data
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    src = tmp_path / "img"
    src.write_bytes(image)
    with open(src, "rb") as fin, open(tmp_path / "out", "wb") as fout:
        done = subprocess.run(["xenmig-convert-legacy-stream", "--in", str(fin.fileno()),
                               "--out", str(fout.fileno()), "--width", "64", "--guest", "hvm",
                               "--format", "libxl"], pass_fds=(fin.fileno(), fout.fileno()),
                              env=env, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out").read_bytes() == expected(registry, tmp_path, image, "libxl")


def test_failure_exits_non_zero_and_leaves_no_file(tmp_path, capsys) -> None:
    src = tmp_path / "img"
    src.write_bytes(hvm_image().data[:-50])
    code = convert_main(["-i", str(src), "-o", str(tmp_path / "out"), "-w", "64", "-g", "hvm",
                         "-f", "libxl"])
    assert code == 1
    assert "Stream Error" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_options_print_help_and_exit_1(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        convert_main(["-i", "0", "-o", "1", "-w", "32"])
    assert exc.value.code == 1
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--s"], ["-w", "48"], ["-g", "pvh"], ["--bogus"]])
def test_usage_errors_exit_2(argv) -> None:
    with pytest.raises(SystemExit) as exc:
        convert_main(["-i", "0", "-o", "1", "-w", "32", "-g", "pv", *argv])
    assert exc.value.code == 2


def test_xl_option(registry, tmp_path) -> None:
    image = xl_header(mandatory=1) + hvm_image().data
    src = tmp_path / "img"
    src.write_bytes(image)
    assert convert_main(["-i", str(src), "-o", str(tmp_path / "o1"), "-w", "64", "-g", "hvm",
                         "-x", "-f", "libxl"]) == 0
    assert (tmp_path / "o1").read_bytes() == expected(registry, tmp_path, image, "xl")
    # -x with libxc output keeps the header unchanged, as upstream (nothing verifies that)
    assert convert_main(["-i", str(src), "-o", str(tmp_path / "o2"), "-w", "64", "-g", "hvm",
                         "--x"]) == 0
    out = (tmp_path / "o2").read_bytes()
    assert out.startswith(xl_header(mandatory=1))
    assert out[len(xl_header(mandatory=1)):] == expected(registry, tmp_path,
                                                          hvm_image().data, "libxc")
    # an xl header needs -x; -x needs an xl header
    assert convert_main(["-i", str(src), "-o", str(tmp_path / "o3"), "-w", "64",
                         "-g", "hvm"]) == 1
    plain = tmp_path / "plain"
    plain.write_bytes(hvm_image().data)
    assert convert_main(["-i", str(plain), "-o", str(tmp_path / "o4"), "-w", "64",
                         "-g", "hvm", "-x"]) == 1
    assert not (tmp_path / "o3").exists() and not (tmp_path / "o4").exists()


def test_fd_rule() -> None:
    assert fd_or_file("3") == "fd:3"
    assert fd_or_file(" +4 ") == "fd:4"
    assert fd_or_file("1_0") == "fd:10"
    assert fd_or_file("-1") == "-1"
    assert fd_or_file("image.sav") == "image.sav"


def test_verify_stream_v2(registry, tmp_path, capsys) -> None:
    good = tmp_path / "good.libxl"
    good.write_bytes(expected(registry, tmp_path, hvm_image().data, "libxl"))
    assert verify_main(["-i", str(good), "-f", "libxl"]) == 0
    assert verify_main(["--in", str(good), "--format", "libxl", "-v"]) == 0
    assert "LIBXC_CONTEXT" in capsys.readouterr().out
    assert verify_main(["-i", str(good)]) == 1          # default format libxc
    bad = tmp_path / "bad"
    bad.write_bytes(good.read_bytes()[:-20])
    assert verify_main(["-i", str(bad), "-f", "libxl"]) == 1
    assert "Stream Error" in capsys.readouterr().err
    assert verify_main(["-i", str(bad), "-f", "libxl", "-q"]) == 1
    assert capsys.readouterr().err == ""
    with pytest.raises(SystemExit) as exc:
        verify_main(["-f", "qcow"])
    assert exc.value.code == 2


def test_verify_stream_v2_reads_stdin_by_default(registry, tmp_path) -> None:
    data = expected(registry, tmp_path, pv_image().data, "libxc")
    done = subprocess.run([str(BIN / "xenmig-verify-stream-v2"), "--syslog"], input=data,
                          capture_output=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(BIN / "xenmig-verify-stream-v2")], input=data[:100],
                          capture_output=True)
    assert done.returncode == 1


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_for_long_runs(registry, tmp_path, monkeypatch) -> None:
    src = tmp_path / "img"
    src.write_bytes(hvm_image().data)
    tty, plain = _Tty(), io.StringIO()
    convert(registry, str(src), str(tmp_path / "a"), ConvertOptions("libxc"), progress_to=tty)
    assert tty.getvalue() == ""                          # a short run
    monkeypatch.setattr(progress_module, "DELAY", 0)
    monkeypatch.setattr(progress_module, "INTERVAL", 0)
    convert(registry, str(src), str(tmp_path / "b"), ConvertOptions("libxc"), progress_to=tty)
    assert f"xenmig: converting {src}:" in tty.getvalue() and "%)" in tty.getvalue()
    convert(registry, str(src), str(tmp_path / "c"), ConvertOptions("libxc"),
            progress_to=plain)
    assert plain.getvalue() == ""
    convert(registry, str(src), str(tmp_path / "d"), ConvertOptions("libxc"),
            progress_to=(quiet := _Tty()), progress=False)
    assert quiet.getvalue() == ""                        # -q


def test_syslog_takes_info_and_errors(tmp_path, monkeypatch, capsys) -> None:
    import syslog

    logged: list[tuple[int, str]] = []
    monkeypatch.setattr(syslog, "openlog", lambda ident, opt: logged.append((-1, ident)))
    monkeypatch.setattr(syslog, "syslog", lambda prio, msg: logged.append((prio, msg)))
    src = tmp_path / "img"
    src.write_bytes(hvm_image(width=32).data)
    assert convert_main(["--in", str(src), "--out", str(tmp_path / "o"), "--width", "32",
                         "--skip-qemu", "--guest-type", "hvm", "--syslog", "--verbose"]) == 0
    assert logged[0] == (-1, "convert-legacy-stream")
    assert any(p == syslog.LOG_INFO and "HVM_CONTEXT" in m for p, m in logged)
    assert capsys.readouterr().out == ""                 # nothing on stdout with --syslog
    logged.clear()
    src.write_bytes(b"\x01" * 64)
    assert convert_main(["-i", str(src), "-o", str(tmp_path / "o2"), "-w", "32", "-g", "hvm",
                         "--syslog"]) == 1
    assert any(p == syslog.LOG_ERR and "Stream Error" in m for p, m in logged)
    assert "Stream Error" in capsys.readouterr().err     # errors go to stderr as well


def _closed_fd() -> str:
    """A file descriptor number that is not open in this process."""
    fd = os.open(os.devnull, os.O_RDONLY)
    os.close(fd)
    return str(fd)


@pytest.mark.parametrize("what", ["directory", "closed fd", "negative fd", "missing"])
def test_unopenable_inputs_exit_1_as_upstream(tmp_path, capsys, what: str) -> None:
    """Upstream opens -i/-o outside its error handling: an open error is an uncaught
    exception, exit 1, in both scripts (legacy-facts.md 2.10 and section 4)."""
    fin = {"directory": str(tmp_path), "closed fd": _closed_fd(), "negative fd": "-2",
           "missing": str(tmp_path / "nothing")}[what]
    assert verify_main(["-i", fin]) == 1
    assert convert_main(["-i", fin, "-o", str(tmp_path / "out"), "-w", "64",
                         "-g", "hvm"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("Stream Error: ") for line in err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [["-f", "raw"], ["--bogus"], ["-i"]])
def test_verify_option_errors_exit_2(argv) -> None:
    with pytest.raises(SystemExit) as exc:
        verify_main(argv)
    assert exc.value.code == 2


def test_documented_exit_codes_match_the_scripts() -> None:
    """docs/formats.md states the codes the tests above check."""
    text = " ".join((Path(__file__).parents[1] / "docs" / "formats.md").read_text().split())
    assert "an input or output that cannot be opened" in text
    assert "exit 0 valid; 1 stream error, or an input that cannot be opened or read" in text
    assert "stream error, 2 anything else." not in text


def test_documented_conversion_differences() -> None:
    """README and converter no longer claim an exact copy of upstream's output."""
    root = Path(__file__).parents[1]
    readme = " ".join((root / "README.md").read_text().split())
    assert "exactly as Xen's own" not in readme
    assert "byte-identical to what Xen's own `convert-legacy-stream` writes, apart from the " \
           "documented differences" in readme
    for difference in ("`xen_minor`", "count-0 PAGE_DATA", "Remus compression"):
        assert difference in readme
    source = (root / "plugins" / "xenmig_legacy" / "convert.py").read_text()
    assert "byte for byte" not in source.splitlines()[0]
