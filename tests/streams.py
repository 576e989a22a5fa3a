"""Every stream the dump/build tests make: samples in both byte orders and broken variants.

``all_streams(spec)`` returns name -> bytes. The broken ones cover what a dump must
preserve for ``build`` to give the same bytes back: non-zero padding, wrong lengths, unknown
records, bodies the layout cannot decode, truncation, trailing bytes, broken framing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from xenmig_core.spec.model import FormatSpec
from xenmig_libxc.samples import Sample, Step, assemble, hvm_sample, page_data, pv_sample


def _edit(make: Callable[[], Sample], change: Callable[[Sample], None]) -> Callable[[], Sample]:
    def build() -> Sample:
        sample = make()
        change(sample)
        return sample
    return build


def _set(name: str, **overrides: object) -> Callable[[Sample], None]:
    def change(sample: Sample) -> None:
        sample.steps[sample.index(name)].overrides.update(overrides)
    return change


def _insert(before: str, step: Step) -> Callable[[Sample], None]:
    def change(sample: Sample) -> None:
        sample.steps.insert(sample.index(before), step)
    return change


def _drop(name: str) -> Callable[[Sample], None]:
    def change(sample: Sample) -> None:
        del sample.steps[sample.index(name)]
    return change


def _fields(name: str, **fields: object) -> Callable[[Sample], None]:
    def change(sample: Sample) -> None:
        sample.steps[sample.index(name)].fields.update(fields)
    return change


def _short_extended(sample: Sample) -> None:
    """vcpu 0's extended context cut to 20 bytes (so the record needs 4 bytes of padding),
    and non-zero padding."""
    step = sample.steps[sample.index("X86_PV_VCPU_EXTENDED")]
    step.payload = step.payload[:20]
    step.overrides["padding"] = b"\x00\x00\x00\x07"


def _checkpointed(sample: Sample) -> None:
    """END replaced by two checkpoints with memory in between (a Remus-style stream)."""
    end = sample.index("END")
    sample.steps[end:] = [Step("CHECKPOINT"), page_data([(1, 0), (2, 0)]), Step("CHECKPOINT")]


SAMPLES: dict[str, Callable[[], Sample]] = {
    "pv64-v3": lambda: pv_sample(version=3, width=8, vcpus=2),
    "pv64-v2-1vcpu": lambda: pv_sample(version=2, width=8, vcpus=1, pages=40),
    "pv32-v3": lambda: pv_sample(version=3, width=4, vcpus=1, pages=40),
    "hvm-v3": lambda: hvm_sample(version=3),
    "hvm-v2-4vcpu": lambda: hvm_sample(version=2, vcpus=4, pages=16),
}

VARIANTS: dict[str, Callable[[], Sample]] = {
    "hvm-length-covers-padding": _edit(SAMPLES["hvm-v3"], _set(
        "X86_TSC_INFO", length=24, body=bytes(20), padding=b"\x00\x00\x00\x09")),
    "pv-bad-padding": _edit(SAMPLES["pv64-v3"], _short_extended),
    "hvm-unknown-optional": _edit(SAMPLES["hvm-v3"], _insert("END", Step(
        "END", overrides={"type_id": 0x80001234, "body": b"optional body!"}))),
    "hvm-unknown-mandatory": _edit(SAMPLES["hvm-v3"], _insert("END", Step(
        "END", overrides={"type_id": 0x77, "body": bytes(range(20))}))),
    "pv-short-pv-info": _edit(SAMPLES["pv64-v3"], _set("X86_PV_INFO", body=b"\x08\x04\x00\x00")),
    "hvm-long-tsc-info": _edit(SAMPLES["hvm-v3"], _set(
        "X86_TSC_INFO", body=struct.pack("<IIQII", 0, 1000, 5, 1, 0) + b"extra!!!")),
    "hvm-toolstack": _edit(SAMPLES["hvm-v3"], _insert("END", Step(
        "TOOLSTACK", overrides={"body": b"legacy toolstack data"}))),
    "hvm-bad-page-type": _edit(SAMPLES["hvm-v3"], _insert("X86_TSC_INFO", Step(
        "PAGE_DATA", {"count": 2, "pfn": [(6 << 60) | 70, 71]}, payload=bytes(4096)))),
    "hvm-page-data-short": _edit(SAMPLES["hvm-v3"], _insert("X86_TSC_INFO", Step(
        "PAGE_DATA", {"count": 3, "pfn": [80, 81, 82]}, payload=b"\xaa" * 4096))),
    "hvm-params-count-mismatch": _edit(SAMPLES["hvm-v3"], _fields("HVM_PARAMS", count=9)),
    "hvm-bad-context": _edit(SAMPLES["hvm-v3"], _fields("HVM_CONTEXT", context=b"\x02\x00" * 9)),
    "pv-no-end": _edit(SAMPLES["pv64-v3"], _drop("END")),
    "pv-checkpointed": _edit(SAMPLES["pv64-v3"], _checkpointed),
    "hvm-length-too-big": _edit(SAMPLES["hvm-v3"], _set("HVM_PARAMS", length=0x7FFFFFF0)),
    "hvm-length-wrong": _edit(SAMPLES["hvm-v3"], _set("X86_TSC_INFO", length=20)),
    # empty bodies of records that have fields: a length rule stops the decoding
    "hvm-empty-context": _edit(SAMPLES["hvm-v3"], _set("HVM_CONTEXT", body=b"")),
    "pv-empty-cpuid-policy": _edit(SAMPLES["pv64-v3"], _set("X86_CPUID_POLICY", body=b"")),
}


def all_streams(spec: FormatSpec) -> dict[str, bytes]:
    """name -> stream bytes, for every sample (little- and big-endian) and variant, plus
    truncated and trailing-garbage forms."""
    out: dict[str, bytes] = {}
    for name, make in SAMPLES.items():
        out[name] = assemble(spec, make())
        out[name + "-be"] = assemble(spec, make(), "big")
    for name, make in VARIANTS.items():
        out[name] = assemble(spec, make())
    out["pv-be-bad-padding"] = assemble(spec, VARIANTS["pv-bad-padding"](), "big")
    hvm = out["hvm-v3"]
    out["hvm-truncated-in-payload"] = hvm[:1000]
    out["hvm-truncated-in-header"] = hvm[:30]
    out["hvm-truncated-in-record-header"] = hvm[:len(hvm) - 4]
    out["hvm-trailing-garbage"] = hvm + b"garbage after END" * 3
    out["hvm-trailing-zeros"] = hvm + bytes(5000)
    return out
