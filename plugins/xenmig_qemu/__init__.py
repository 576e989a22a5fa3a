"""Plugin: QEMU's device state inside libxl's EMULATOR_CONTEXT record.

Written as a third party would: a spec (``specs/qemu.yaml``, an ``extends: libxl`` file
with QEMU's section type codes, the layouts of its headers, a state value and a report
entry) and one hook, ``xenmig_payload_scanner``, whose scanner walks the record's payload
as it streams by (``device_state.py``). ``xenmig dump`` shows what it found in the record's
``device_state`` value; ``xenmig verify --json`` reports it as ``emulator_device_state``.
"""

from __future__ import annotations

from xenmig_core.plugins import hookimpl, package_file

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any


@hookimpl
def xenmig_spec_files() -> list[Any]:
    return [package_file("xenmig_specs", "qemu.yaml")]


@hookimpl
def xenmig_payload_scanner(format_name: str, name: str) -> Any:
    if (format_name, name) == ("libxl", "EMULATOR_CONTEXT"):
        from xenmig_qemu.device_state import scanner_for
        return scanner_for
    return None
