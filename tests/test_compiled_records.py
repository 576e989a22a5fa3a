"""The compiled record functions (engine/compiled.py) against the general dispatch.

Every stream here is walked twice, once with the generated per-type code and once with the
general dispatch only (``Engine.compile_records = False``); everything a consumer sees
(records, fields, summaries, payload positions, diagnostics in order, the contexts' state,
marks and counts at the end) must be the same. Hypothesis adds mutated streams (bit flips,
length fields, truncation), read from a file and from a pipe.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from streams import all_streams
from test_property_mutations import EXAMPLES, Unseekable, mutated

from xenmig_core.engine import Consumer, Engine
from xenmig_core.errors import SpecError
from xenmig_core.source import ByteSource
from xenmig_core.verifier import choose_format


class Trace(Consumer):
    """Writes down everything the engine tells a consumer, as plain values."""

    def __init__(self, summaries: bool) -> None:
        self.wants_summaries = summaries
        self.events: list[Any] = []

    def on_record(self, record: Any) -> None:
        self.events.append(("record", record.index, record.offset, record.type_id,
                            record.name, record.length, record.optional, record.decoded,
                            _plain(record.fields), record.payload_length, record.summary))

    def wants_payload(self, record: Any) -> bool:
        return record.index % 2 == 0       # some payloads read, some skipped

    def on_payload(self, record: Any, offset: int, chunk: memoryview) -> None:
        self.events.append(("payload", record.index, offset, bytes(chunk)))

    def on_record_end(self, record: Any) -> None:
        self.events.append(("end", record.index, record.payload_offset, record.padding,
                            record.summary, _plain(record.fields)))

    def on_diagnostic(self, diagnostic: Any) -> None:
        self.events.append(("diagnostic", diagnostic.to_dict()))

    def on_context_end(self, ctx: Any) -> None:
        self.events.append(("context", ctx.name, _plain(ctx.state), sorted(ctx.marks),
                            dict(ctx.counts), _plain(ctx.stats), ctx.finished))


class Outcome(Consumer):
    """Hears only diagnostics and context ends: its per-record callbacks are the base
    consumer's no-ops, which generated code leaves out (verify -q's case)."""

    def __init__(self, summaries: bool) -> None:
        self.wants_summaries = summaries
        self.events: list[Any] = []

    on_diagnostic = Trace.on_diagnostic
    on_context_end = Trace.on_context_end


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return ("array", value.typecode, value.tolist())
    if callable(value):
        return "<callable>"
    return value


def walk(registry: Any, data: bytes, *, compiled: bool, pipe: bool = False,
         summaries: bool = False, after: int = 1, consumer: type[Consumer] = Trace) -> Any:
    """Everything one walk of *data* showed (to a *consumer*), or the spec error it
    raised."""
    trace = consumer(summaries)
    source = ByteSource(Unseekable(data) if pipe else io.BytesIO(data), "<test>")
    try:
        fmt = choose_format(registry, source, "auto")
    except Exception as exc:  # unrecognised: the same for both
        return ("unrecognised", str(exc))
    engine = Engine(registry, source, trace)
    engine.compile_records = compiled
    engine.compile_after = after      # (1: every record of a type goes through its function)
    try:
        result = engine.run(fmt)
    except SpecError as exc:
        return ("spec error", str(exc), trace.events)
    return (trace.events, result.records, result.end_offset, result.eof_note,
            [d.to_dict() for d in result.diagnostics], dict(result.dropped))


def same_walks(registry: Any, data: bytes, **how: Any) -> None:
    general = walk(registry, data, compiled=False, **how)
    assert walk(registry, data, compiled=True, **how) == general


@pytest.mark.parametrize(("summaries", "after"), [(False, 1), (True, 1), (False, 3)])
def test_sample_streams_walk_the_same(registry: Any, libxc: Any, summaries: bool,
                                      after: int) -> None:
    streams = dict(all_streams(libxc))
    streams.update({p.name: p.read_bytes() for p in EXAMPLES})
    for name, data in streams.items():
        for pipe in (False, True):
            general = walk(registry, data, compiled=False, pipe=pipe, summaries=summaries)
            assert walk(registry, data, compiled=True, pipe=pipe, summaries=summaries,
                        after=after) == general, name


def test_a_consumer_without_record_callbacks_sees_the_same(registry: Any,
                                                          libxc: Any) -> None:
    streams = dict(all_streams(libxc))
    streams.update({p.name: p.read_bytes() for p in EXAMPLES})
    for name, data in streams.items():
        general = walk(registry, data, compiled=False, consumer=Outcome)
        assert walk(registry, data, compiled=True, consumer=Outcome) == general, name


def test_a_record_callback_set_on_the_consumer_is_called(registry: Any) -> None:
    """Only the base consumer's own no-ops are left out: a callback set on an instance
    hears every record, compiled or not."""
    data = (Path(__file__).resolve().parent.parent / "examples" / "pv64-2vcpu-v3.libxc"
            ).read_bytes()
    heard: dict[bool, list[Any]] = {}
    for compiled in (False, True):
        consumer = Consumer()
        seen = heard[compiled] = []
        consumer.on_record = lambda record, seen=seen: seen.append(("record", record.index))
        consumer.on_record_end = lambda record, seen=seen: seen.append(("end", record.index))
        source = ByteSource(io.BytesIO(data), "<test>")
        engine = Engine(registry, source, consumer)
        engine.compile_records = compiled
        engine.compile_after = 1
        result = engine.run(choose_format(registry, source, "auto"))
    assert len(heard[True]) == 2 * result.records > 20
    assert heard[True] == heard[False]


def test_compiled_functions_take_the_records_of_a_valid_stream(
        registry: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid libxc stream's records go through generated code, but for the types whose
    layout has arrays of structs (the differential tests above would pass with no
    compiled code at all)."""
    general = []
    original = Engine._read_record

    def read_record(self: Engine, ctx: Any, align: int) -> Any:
        buf, lo, _have = self.source.buffered(4)
        general.append(ctx.format.spec.records[int.from_bytes(buf[lo:lo + 4], "little")].name)
        return original(self, ctx, align)

    monkeypatch.setattr(Engine, "_read_record", read_record)
    data = (Path(__file__).resolve().parent.parent / "examples" / "pv64-2vcpu-v3.libxc"
            ).read_bytes()
    events = walk(registry, data, compiled=True)[0]
    assert len([e for e in events if e[0] == "record"]) > 10
    assert general == ["X86_CPUID_POLICY", "X86_MSR_POLICY"]


def test_a_type_is_compiled_from_its_eighth_record(registry: Any) -> None:
    """A short stream pays for no generated code: a type's first seven records take the
    general path; a type seen often enough gets its function."""
    data = (Path(__file__).resolve().parent.parent / "examples" / "pv64-2vcpu-v3.libxc"
            ).read_bytes()
    source = ByteSource(io.BytesIO(data), "<test>")
    engine = Engine(registry, source)
    result = engine.run(choose_format(registry, source, "auto"))
    ctx = result.contexts[0]
    pending = {ctx.format.spec.records[type_id].name: value
               for type_id, value in ctx.compiled["<"].items()}
    assert all(not hasattr(value, "source") and 0 < value.seen < 8      # (not generated)
               for value in pending.values())
    assert pending["PAGE_DATA"].seen == ctx.counts["PAGE_DATA"] < 8
    source = ByteSource(io.BytesIO(data), "<test>")
    engine = Engine(registry, source)
    engine.compile_after = 2
    ctx = engine.run(choose_format(registry, source, "auto")).contexts[0]
    made = {ctx.format.spec.records[type_id].name: value
            for type_id, value in ctx.compiled["<"].items()}
    assert ctx.counts["PAGE_DATA"] >= 2 and hasattr(made["PAGE_DATA"], "source")
    assert all(hasattr(made[name], "source") for name, seen in ctx.counts.items()
               if seen >= 2 and name not in ("X86_CPUID_POLICY", "X86_MSR_POLICY"))


@settings(max_examples=150, deadline=5000, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=mutated(), pipe=...)
def test_mutated_streams_walk_the_same(registry: Any, data: bytes, pipe: bool) -> None:
    same_walks(registry, data, pipe=pipe, summaries=True)


@pytest.mark.parametrize("compiled", [False, True])
def test_a_handler_raising_in_generated_code_is_the_same_plugin_error(compiled: bool) -> None:
    """Generated code calls a plugin handler inside the registry's guard, inline: a plain
    exception is the PluginError naming the plugin that the general dispatch raises, and
    the project's own errors (and OSError) pass through unchanged."""
    import xenmig_testbroken

    from xenmig_core.errors import PluginError, StreamError
    from xenmig_core.session import open_registry
    data = (Path(__file__).resolve().parent.parent / "examples" / "pv64-2vcpu-v3.libxc"
            ).read_bytes()

    def run(registry: Any) -> Any:
        source = ByteSource(io.BytesIO(data), "<test>")
        engine = Engine(registry, source)
        engine.compile_records = compiled
        engine.compile_after = 1
        return engine.run(choose_format(registry, source, "auto"))

    registry = open_registry(plugins=[xenmig_testbroken], autoload=False)
    with pytest.raises(PluginError) as info:
        run(registry)
    assert str(info.value).startswith("plugin 'xenmig_testbroken': handler for libxc "
                                      "X86_TSC_INFO raised ValueError: cannot cope with record")
    assert isinstance(info.value.__cause__, ValueError)

    def stream_error(record: Any, ctx: Any) -> None:
        raise StreamError("the handler's own verdict", offset=record.offset)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(xenmig_testbroken, "explode", stream_error)
        registry = open_registry(plugins=[xenmig_testbroken], autoload=False)
        result = run(registry)
    assert any("the handler's own verdict" in d.message for d in result.diagnostics)


def test_counts_and_stats_stay_counters(registry: Any) -> None:
    """Counts and statistics are updated record by record through dict's own item
    assignment (engine.Tally), and remain Counters to the plugins reading them: a missing
    key counts 0, ``+=`` and arithmetic work as for any Counter."""
    from collections import Counter
    data = (Path(__file__).resolve().parent.parent / "examples" / "pv64-2vcpu-v3.libxc"
            ).read_bytes()
    source = ByteSource(io.BytesIO(data), "<test>")
    engine = Engine(registry, source)
    engine.compile_after = 1
    ctx = engine.run(choose_format(registry, source, "auto")).contexts[0]
    pages = ctx.stats["pages"]
    for counter in (ctx.counts, pages):
        assert isinstance(counter, Counter) and counter["NO_SUCH_KEY"] == 0
    assert ctx.counts["PAGE_DATA"] > 1 and pages["with data"] > 1
    assert (ctx.counts + Counter(PAGE_DATA=1))["PAGE_DATA"] == ctx.counts["PAGE_DATA"] + 1
    ctx.stat("pages", "with data", 2)
    assert ctx.stats["pages"] is pages and pages["with data"] > 3
