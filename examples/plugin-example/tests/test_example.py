"""The example plugin's own tests: streams with EXAMPLE_NOTE records, built with xenmig's
sample writer, verified through xenmig's public API with the plugin loaded."""

from __future__ import annotations

import pytest
import xenmig_example
from xenmig_example import TYPE_ID, note_body

import xenmig_core
from xenmig_libxc.samples import Step, assemble, pv_sample


@pytest.fixture(scope="module")
def registry():
    # the plugin as an object (works installed or not); installed, it is also auto-loaded
    return xenmig_core.open_registry(plugins=[xenmig_example])


def stream_with_notes(registry, *bodies: bytes) -> bytes:
    """A valid libxc PV stream with an EXAMPLE_NOTE record per body, before X86_TSC_INFO."""
    sample = pv_sample()
    at = sample.index("X86_TSC_INFO")
    for body in reversed(bodies):
        sample.steps.insert(at, Step("END", overrides={"type_id": TYPE_ID, "body": body}))
    return assemble(registry.specs["libxc"], sample)


def test_notes_verify_and_are_counted(registry) -> None:
    data = stream_with_notes(registry, note_body("saved by the nightly job"), note_body("again"))
    report = xenmig_core.verify(data, registry=registry)
    assert report.valid and not report.diagnostics
    doc = report.to_dict()
    assert doc["records"]["libxc.EXAMPLE_NOTE"] == 2
    assert doc["stats"]["example_notes"] == {"version 1": 2}


def test_records_show_the_decoded_note(registry) -> None:
    data = stream_with_notes(registry, note_body("hello"))
    notes = [r for r in xenmig_core.records(data, registry=registry) if r.name == "EXAMPLE_NOTE"]
    assert len(notes) == 1
    assert notes[0].type_id == TYPE_ID and notes[0].summary == "version 1"
    assert notes[0].fields["text"] == b"hello".hex()


def test_the_handler_checks_version_and_text(registry) -> None:
    data = stream_with_notes(registry, note_body("x", version=2), b"\1\0\0\0\0\0\0\0\xff")
    report = xenmig_core.verify(data, registry=registry)
    assert [(d.severity, d.record, d.field) for d in report.diagnostics] == [
        ("error", "EXAMPLE_NOTE", "version"), ("warning", "EXAMPLE_NOTE", "text")]
    assert not report.valid


def test_the_spec_checks_apply(registry) -> None:
    report = xenmig_core.verify(stream_with_notes(registry, bytes(4)), registry=registry)
    assert not report.valid and report.errors[0].record == "EXAMPLE_NOTE"
