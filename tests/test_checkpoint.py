"""Checkpointed streams (Remus, COLO) and the COLO back channel."""

from __future__ import annotations

import pytest
from libxl_support import build, errors, verify, walk, warnings

from xenmig_libxc.samples import Step
from xenmig_libxl.samples import (
    assemble_back_channel,
    back_channel_steps,
    checkpointed_sample,
    hvm_libxl_sample,
)


@pytest.fixture(scope="module")
def remus(registry) -> bytes:
    return build(registry, checkpointed_sample(3, pages=8))


def test_remus_stream_ends_after_its_last_checkpoint(registry, remus) -> None:
    report = verify(registry, remus)
    assert report.valid, errors(report)
    assert report.result.eof_note == "ended after checkpoint 3, as at a failover"
    assert "3 complete checkpoints" in report.summary()
    assert report.to_dict()["checkpoints"] == 3


def test_pv_remus_has_no_emulator_records(registry) -> None:
    sample = checkpointed_sample(2, hvm=False, pages=8)
    report = verify(registry, build(registry, sample))
    assert report.valid, errors(report)
    assert report.contexts[0].records == {"LIBXC_CONTEXT": 1, "CHECKPOINT_END": 2}


def test_pv_checkpoint_starting_with_a_type_5_record_stays_libxc(registry) -> None:
    """Type 5 after CHECKPOINT_END is COLO's CHECKPOINT_STATE only for HVM guests; in a PV
    stream it is libxc's X86_PV_VCPU_EXTENDED."""
    sample = checkpointed_sample(2, hvm=False, pages=8)
    first = sample.index("libxl", "CHECKPOINT_END")
    second = sample.index("libxc", "CHECKPOINT", 1)
    sample.parts[first + 1:second] = [("libxc", Step("X86_PV_VCPU_EXTENDED",
                                                     {"vcpu_id": 0}, bytes(24)))]
    report = verify(registry, build(registry, sample))
    assert report.valid, errors(report)
    assert report.contexts[1].records["X86_PV_VCPU_EXTENDED"] == 3


def _cuts(registry, data):
    """Each record boundary of *data* (but its end) with the record that ends there."""
    report, log = walk(registry, data)
    assert report.valid
    return [(r.end, r) for r in log.records[:-1]]


def test_cut_at_every_record_boundary(registry, remus) -> None:
    """Valid exactly after a CHECKPOINT_END; otherwise the error names the last complete
    checkpoint (or says the first one must be complete)."""
    done = 0
    in_libxc = False
    valid_cuts = []
    for cut, record in _cuts(registry, remus):
        if record.name == "CHECKPOINT_END":
            done += 1
        if record.format == "libxc" and record.name == "CHECKPOINT":
            in_libxc = False
        elif record.format == "libxc":
            in_libxc = True
        report = verify(registry, remus[:cut])
        found = errors(report)
        if record.name == "CHECKPOINT_END":
            assert report.valid, (cut, found)
            assert report.result.eof_note == f"ended after checkpoint {done}, as at a failover"
            valid_cuts.append(cut)
            continue
        assert len(found) == 1, (cut, record, found)
        if done == 0 and not in_libxc and record.name != "LIBXC_CONTEXT":
            assert "the first checkpoint must be complete" in found[0], found
        elif done:
            assert f"the last complete checkpoint is {done}" in found[0], found
            assert f"inside checkpoint {done + 1}" in found[0]
    assert len(valid_cuts) == 2    # and the whole stream: three in all


def test_cut_inside_the_first_checkpoint(registry) -> None:
    sample = checkpointed_sample(3, pages=8)
    sample.parts = sample.parts[:sample.index("libxl", "CHECKPOINT_END")]
    found = errors(verify(registry, build(registry, sample)))
    assert found == [found[0]]
    assert "stream ended inside checkpoint 1, before its CHECKPOINT_END: the first " \
           "checkpoint must be complete" in found[0]


def test_cut_mid_record_in_a_checkpoint(registry, remus) -> None:
    cuts = _cuts(registry, remus)
    second = next(c for c, r in cuts if r.name == "CHECKPOINT_END")
    found = errors(verify(registry, remus[:second + 100]))
    assert len(found) == 1 and "truncated" in found[0]
    assert found[0].endswith("(inside checkpoint 2: the last complete checkpoint is 1)")


def test_cut_inside_every_record_names_the_checkpoint(registry, remus) -> None:
    done = 0
    for end, record in _cuts(registry, remus):
        found = errors(verify(registry, remus[:end - 1]))
        assert len(found) == 1 and "truncated" in found[0], found
        checkpointed = (record.format == "libxl" and record.name != "LIBXC_CONTEXT") or done
        if not checkpointed:
            assert "checkpoint" not in found[0], found
        elif done == 0:
            assert found[0].endswith("(inside checkpoint 1: the first checkpoint must be "
                                     "complete)"), found
        else:
            assert found[0].endswith(f"(inside checkpoint {done + 1}: the last complete "
                                     f"checkpoint is {done})"), (record, found)
        if record.name == "CHECKPOINT_END":
            done += 1


def test_colo_stream_with_checkpoint_state_new(registry) -> None:
    data = build(registry, checkpointed_sample(2, colo=True, pages=8))
    report = verify(registry, data)
    assert report.valid, errors(report)
    assert report.contexts[0].records["CHECKPOINT_STATE"] == 2
    assert report.result.eof_note == "ended after checkpoint 2, as at a failover"
    # cut between CHECKPOINT_END and CHECKPOINT_STATE: also a clean failover point
    cuts = _cuts(registry, data)
    after_end = next(c for c, r in cuts if r.name == "CHECKPOINT_END")
    assert verify(registry, data[:after_end]).valid


def test_misplaced_checkpoint_end_in_a_plain_stream(registry) -> None:
    sample = hvm_libxl_sample(pages=4)
    sample.parts.insert(-1, ("libxl", Step("CHECKPOINT_END")))
    found = errors(verify(registry, build(registry, sample)))
    assert len(found) == 1
    assert "(CHECKPOINT_END)" in found[0] and "outside a checkpoint" in found[0]


def test_checkpoint_end_before_libxc_context(registry) -> None:
    sample = hvm_libxl_sample(pages=4)
    sample.parts.insert(0, ("libxl", Step("CHECKPOINT_END")))
    found = errors(verify(registry, build(registry, sample)))
    assert len(found) == 1 and "outside a checkpoint" in found[0]


def test_end_inside_a_checkpoint(registry) -> None:
    sample = checkpointed_sample(2, pages=8)
    i = sample.index("libxl", "CHECKPOINT_END", 1)
    sample.parts[i] = ("libxl", Step("END"))
    found = errors(verify(registry, build(registry, sample)))
    assert any("END inside checkpoint 2" in e for e in found), found


def test_libxc_end_after_a_checkpoint_is_a_failover(registry) -> None:
    sample = checkpointed_sample(2, pages=8)
    sample.parts.append(("libxc", Step("END")))
    report = verify(registry, build(registry, sample))
    assert report.valid, errors(report)
    assert report.result.eof_note.startswith("libxc END after checkpoint 2")


@pytest.mark.parametrize(("control_id", "expected"), [
    (2, "CHECKPOINT_STATE SVM_READY on a forward stream"),
    (9, "unknown checkpoint control id"),
])
def test_wrong_checkpoint_state_on_the_forward_stream(registry, control_id, expected) -> None:
    sample = checkpointed_sample(2, colo=True, pages=8)
    sample.parts[sample.index("libxl", "CHECKPOINT_STATE")][1].fields["control_id"] = \
        control_id
    found = errors(verify(registry, build(registry, sample)))
    assert any(expected in e for e in found), found


def test_checkpoint_state_inside_a_checkpoint(registry) -> None:
    sample = checkpointed_sample(2, colo=True, pages=8)
    state = sample.parts.pop(sample.index("libxl", "CHECKPOINT_STATE", 1))
    sample.parts.insert(sample.index("libxl", "CHECKPOINT_END", 1), state)
    found = errors(verify(registry, build(registry, sample)))
    assert any("CHECKPOINT_STATE out of place" in e for e in found), found


def test_second_checkpoint_state_after_one_checkpoint(registry) -> None:
    sample = checkpointed_sample(1, colo=True, pages=8)
    sample.parts.append(sample.parts[-1])
    data = build(registry, sample)
    found = errors(verify(registry, data))
    # the second NEW is read by the resumed libxc stream, as its type 5 (a PV vcpu record)
    assert found[0].startswith("record 14 (X86_PV_VCPU_EXTENDED)"), found


def test_dirty_pfn_list_and_checkpoint_state_are_refused_in_a_saved_image(registry) -> None:
    sample = hvm_libxl_sample(pages=4)
    sample.parts.insert(sample.index("libxc", "END"), ("libxc", Step(
        "CHECKPOINT_DIRTY_PFN_LIST", {"pfn": [1, 2]})))
    sample.parts.insert(-1, ("libxl", Step("CHECKPOINT_STATE", {"control_id": 1})))
    found = errors(verify(registry, build(registry, sample)))
    assert len(found) == 3, found
    assert "never in a saved image" in found[0]
    assert "on a forward stream" in found[1] and "no complete checkpoint" in found[2]


# -- the COLO back channel -----------------------------------------------------------------
def _channel(registry, steps) -> bytes:
    return assemble_back_channel(registry.specs["colo-back-channel"], steps)


def test_back_channel_is_valid(registry) -> None:
    report = verify(registry, _channel(registry, back_channel_steps(2)), "colo-back-channel")
    assert report.valid and not warnings(report), errors(report)
    assert report.result.eof_note == "back channel closed after 2 dirty pfn lists"
    assert report.summary().startswith("COLO back channel, 2 dirty pfn lists; 8 records")


def test_back_channel_needs_an_explicit_format(registry) -> None:
    report = verify(registry, _channel(registry, back_channel_steps(1)))
    assert errors(report)[0].startswith("@0x0: unrecognised stream")


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda s: s.__setitem__(0, Step("CHECKPOINT_STATE", {"control_id": 0})),
     "CHECKPOINT_STATE NEW on a back channel"),
    (lambda s: s.pop(2), "not right after CHECKPOINT_STATE SVM_SUSPENDED"),
    (lambda s: s.insert(1, Step("CHECKPOINT_END")), "CHECKPOINT_END on a COLO back channel"),
    (lambda s: s.insert(0, Step("END")), "END on a COLO back channel"),
    (lambda s: s.insert(0, Step("EMULATOR_CONTEXT", {"emulator_id": 2})),
     "emulator record on a COLO back channel"),
])
def test_back_channel_errors(registry, edit, expected) -> None:
    steps = back_channel_steps(2)
    edit(steps)
    found = errors(verify(registry, _channel(registry, steps), "colo-back-channel"))
    assert any(expected in e for e in found), found


def test_empty_back_channel(registry) -> None:
    found = errors(verify(registry, b"", "colo-back-channel"))
    assert found == ["colo-back-channel end of stream @0x0: empty back channel: not a single "
                     "record"]
