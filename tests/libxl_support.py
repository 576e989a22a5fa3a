"""Helpers shared by the libxl, xl, detection and checkpoint tests (not a test module)."""

from __future__ import annotations

from dataclasses import dataclass

from xenmig_core.engine import Consumer, Record
from xenmig_core.registry import Registry
from xenmig_core.source import ByteSource
from xenmig_core.verifier import VerifyReport, verify_source
from xenmig_libxl.samples import LibxlSample, assemble_libxl


def verify(registry: Registry, data: bytes, fmt: str = "auto",
           consumer: Consumer | None = None) -> VerifyReport:
    """Verify *data* as *fmt* (auto-detected by default)."""
    return verify_source(registry, ByteSource.from_bytes(data), fmt, consumer)


def errors(report: VerifyReport) -> list[str]:
    return [str(d) for d in report.diagnostics if d.is_error]


def warnings(report: VerifyReport) -> list[str]:
    return [str(d) for d in report.diagnostics if not d.is_error]


def build(registry: Registry, sample: LibxlSample, byte_order: str = "little") -> bytes:
    return assemble_libxl(registry.specs, sample, byte_order)


@dataclass
class Seen:
    format: str
    name: str
    index: int
    offset: int
    end: int        # offset just after the record's padding


class RecordLog(Consumer):
    """Collects every record (format, name, offsets) and its decoded fields."""

    def __init__(self) -> None:
        self.records: list[Seen] = []
        self.fields: list[dict] = []

    def on_record(self, record: Record) -> None:
        self.fields.append(dict(record.fields))

    def on_record_end(self, record: Record) -> None:
        end = record.offset + 8 + record.length + (-record.length % 8)
        self.records.append(Seen(record.format, record.name, record.index, record.offset, end))


def walk(registry: Registry, data: bytes, fmt: str = "auto") -> tuple[VerifyReport, RecordLog]:
    log = RecordLog()
    report = verify(registry, data, fmt, log)
    return report, log
