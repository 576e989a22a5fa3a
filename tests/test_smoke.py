"""The bundled samples verify, from the library, the CLI and a real subprocess."""

from __future__ import annotations

import json

from conftest import ROOT, run_xenmig


def test_samples_verify_as_subprocess() -> None:
    for name in ("pv64-2vcpu-v3.libxc", "hvm-v3.libxc"):
        done = run_xenmig("verify", str(ROOT / "examples" / name))
        assert done.returncode == 0, done.stderr
        assert b"valid: libxc stream v3" in done.stdout


def test_json_report(cli) -> None:
    result = cli("verify", "--json", str(ROOT / "examples" / "pv64-2vcpu-v3.libxc"))
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert report["guest_type"] == "x86 PV"
    assert report["streams"][0]["records"]["X86_PV_VCPU_BASIC"] == 2
