#!/usr/bin/env python3
"""Write the sample streams in this folder, deterministically.

    python examples/make_examples.py [OUTDIR]

Each sample is built by the plugins' sample builders through xenmig's own stream writer,
so running this again gives byte-identical files (tests check that the committed files
match).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from xenmig_core.session import open_registry
from xenmig_core.sink import atomic_output
from xenmig_legacy.samples import hvm_image, pv_image, xl_header
from xenmig_libxc.samples import assemble, hvm_sample, pv_sample
from xenmig_libxl.samples import assemble_libxl, checkpointed_sample
from xenmig_xenserver.samples import hvm_image as xenserver_hvm_image
from xenmig_xenstore.samples import assemble_xenstore, live_update_records
from xenmig_xl.samples import (
    hvm_config,
    hvm_guest_sample,
    json_config_bytes,
    libvirt_file,
    xl_file,
)


def samples() -> dict[str, Callable[[], bytes]]:
    """File name -> function producing its bytes."""
    specs = open_registry(autoload=False).specs
    libxc = specs["libxc"]

    def hvm_libxl() -> bytes:
        return assemble_libxl(specs, hvm_guest_sample())

    return {
        "pv64-2vcpu-v3.libxc": lambda: assemble(libxc, pv_sample(version=3, width=8, vcpus=2)),
        "hvm-v3.libxc": lambda: assemble(libxc, hvm_sample(version=3)),
        # xl save of an HVM guest: JSON config, libxl v2, xenstore data, emulator context
        # (a QEMU device state with the sections of a Xen HVM guest's device model)
        "hvm-guest.xl": lambda: xl_file(specs["xl"], hvm_libxl(),
                                        config=json_config_bytes(hvm_config())),
        # the same guest saved by libvirt's libxl driver
        "hvm-guest.libvirt": lambda: libvirt_file(specs["libvirt"], hvm_libxl()),
        # a Remus stream (bare libxl, as on the wire) that stops after three checkpoints
        "remus-3-checkpoints.libxl": lambda: assemble_libxl(specs, checkpointed_sample(3)),
        # legacy (Xen <= 4.5) images, for xenmig convert: a 32-bit toolstack's PV guest
        # with xsave state, and a 64-bit toolstack's HVM guest saved by xl (legacy header)
        "pv32-legacy.img": lambda: pv_image(width=32, guest_width=4, xsave=576,
                                            pages=24).data,
        "hvm64-legacy.xl": lambda: xl_header(mandatory=0, config=b"builder='hvm'\n\0")
        + hvm_image(width=64, pages=24).data,
        # XenServer/XCP-ng suspend image of a UEFI HVM guest: Xenops metadata, libxc
        # stream, UEFI variables, vTPM, qemu state
        "uefi-guest.xenserver": lambda: xenserver_hvm_image(specs),
        # xenstored live-update state: connections, watches, a transaction, the node tree
        "live-update.xenstore": lambda: assemble_xenstore(specs["xenstore"],
                                                          live_update_records()),
    }


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent
    for name, make in samples().items():
        with atomic_output(outdir / name) as out:
            out.write(make())
        print(f"wrote {outdir / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
