"""The bundled sample streams: reproducible, small, and what the README promises."""

from __future__ import annotations

import importlib.util

from conftest import ROOT, verify_bytes


def load_make_examples():
    spec = importlib.util.spec_from_file_location("make_examples",
                                                  ROOT / "examples" / "make_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_are_reproducible_and_small(registry) -> None:
    made = load_make_examples().samples()
    assert {"pv64-2vcpu-v3.libxc", "hvm-v3.libxc"} <= set(made)
    for name, make in made.items():
        data = make()
        assert data == (ROOT / "examples" / name).read_bytes(), f"{name} is stale"
        assert len(data) < 1 << 20
        report = verify_bytes(registry, data)
        assert report.valid and not report.diagnostics


def test_pv_example_has_two_vcpus(registry) -> None:
    report = verify_bytes(registry, (ROOT / "examples" / "pv64-2vcpu-v3.libxc").read_bytes())
    records = report.contexts[0].records
    assert records["X86_PV_VCPU_BASIC"] == 2 and report.to_dict()["guest_width"] == 64
