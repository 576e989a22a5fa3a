"""Many streams in one call: ``xenmig verify A B C`` (one line or JSON document per stream,
the worst exit status, a summary), ``-j N`` in worker processes, ``dump -t jsonl A B``."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, run_xenmig

from xenmig_core.batch import summary_line
from xenmig_libxc.samples import assemble, pv_sample

PV = ROOT / "examples" / "pv64-2vcpu-v3.libxc"
XL = ROOT / "examples" / "hvm-guest.xl"
LEGACY = ROOT / "examples" / "pv32-legacy.img"


@pytest.fixture
def streams(tmp_path, libxc) -> list[str]:
    """valid, invalid, missing, valid."""
    sample = pv_sample()
    sample.steps[7].fields["reserved"] = 1
    bad = tmp_path / "bad.libxc"
    bad.write_bytes(assemble(libxc, sample))
    return [str(PV), str(bad), str(tmp_path / "missing"), str(XL)]


def test_one_line_per_stream_and_the_worst_status(cli, streams) -> None:
    done = cli("verify", *streams)
    assert done.exit_code == 2
    lines = done.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0] == cli("verify", streams[0]).stdout.strip()
    assert lines[1].startswith(f"{streams[1]}: INVALID: record 7 (")
    assert lines[2].startswith(f"{streams[2]}: error: ") and "cannot open" in lines[2]
    assert lines[3] == cli("verify", streams[3]).stdout.strip()
    assert done.stderr.splitlines() == ["xenmig: 4 streams: 2 valid, 1 invalid, 1 error"]
    assert cli("verify", streams[0], streams[1]).exit_code == 1
    assert cli("verify", streams[0], streams[3]).exit_code == 0


def test_json_one_document_per_line(cli, streams) -> None:
    done = cli("verify", "--json", *streams)
    docs = [json.loads(line) for line in done.stdout.splitlines()]
    assert [d["valid"] for d in docs] == [True, False, False, True]
    assert docs[0] == json.loads(cli("verify", "--json", streams[0]).stdout)
    assert docs[2]["exit_code"] == 2 and "cannot open" in docs[2]["error"]
    assert done.exit_code == 2


def test_quiet_prints_nothing(cli, streams) -> None:
    done = cli("verify", "-q", *streams)
    assert (done.exit_code, done.stdout, done.stderr) == (2, "", "")


def test_parallel_jobs_give_the_same_output_in_order(streams) -> None:
    """In worker processes (a real subprocess: the pool needs a real interpreter); stdin
    is read by the calling process, in its place."""
    serial = run_xenmig("verify", *streams, "-", input=PV.read_bytes())
    parallel = run_xenmig("verify", "-j", "3", *streams, "-", input=PV.read_bytes())
    assert parallel.returncode == serial.returncode == 2
    assert parallel.stdout == serial.stdout and parallel.stderr == serial.stderr
    assert parallel.stdout.decode().splitlines()[-1].startswith("<stdin>: valid: ")


def test_parameters_reach_every_stream(cli) -> None:
    done = cli("verify", "--json", "--param", "width=32", str(LEGACY), str(LEGACY))
    assert [json.loads(line)["width_from"] for line in done.stdout.splitlines()] == \
        ["option", "option"]


def test_verbose_takes_one_stream(cli) -> None:
    done = cli("verify", "-v", str(PV), str(XL))
    assert done.exit_code == 2 and "one stream at a time" in done.stderr


def test_dump_jsonl_of_several_streams(cli, streams) -> None:
    done = cli("dump", "-t", "jsonl", streams[0], streams[1], streams[3])
    assert done.exit_code == 1
    items = [json.loads(line) for line in done.stdout.splitlines()]
    starts = [i["source"] for i in items if i["kind"] == "dump"]
    ends = [i["valid"] for i in items if i["kind"] == "end"]
    assert starts == [streams[0], streams[1], streams[3]] and ends == [True, False, True]
    assert done.stderr.strip() == "xenmig: 3 streams: 2 valid, 1 invalid"
    single = cli("dump", "-t", "jsonl", streams[0]).stdout.splitlines()
    assert done.stdout.splitlines()[:len(single)] == single


def test_dump_of_several_streams_needs_jsonl(cli) -> None:
    done = cli("dump", str(PV), str(XL))
    assert done.exit_code == 2 and "-t jsonl" in done.stderr


def test_dump_goes_on_after_an_unreadable_stream(cli, streams) -> None:
    done = cli("dump", "-t", "jsonl", streams[2], streams[0])
    assert done.exit_code == 2
    assert "cannot open" in done.stderr
    assert [json.loads(line)["kind"] for line in done.stdout.splitlines()][-1] == "end"


def test_summary_line() -> None:
    assert summary_line([0, 0]) == "2 streams: 2 valid"
    assert summary_line([0, 1, 2, 3]) == "4 streams: 1 valid, 1 invalid, 2 errors"
