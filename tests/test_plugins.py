"""Plugins: one defined in the tests adds a record type with a handler; a broken one is
named in a clean error. Registered both directly (``open_registry(plugins=...)``) and as
a third-party distribution through the ``xenmig.plugins`` entry-point group."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pluggy
import pytest
import xenmig_testbroken
import xenmig_testnote
from conftest import ROOT, run_xenmig, verify_bytes

from xenmig_core import hookspecs
from xenmig_core.errors import PluginError
from xenmig_core.plugins import get_plugin_manager, hookimpl
from xenmig_core.registry import Registry
from xenmig_core.session import open_registry
from xenmig_libxc.samples import Step, assemble, pv_sample

PLUGINS = ROOT / "tests" / "plugins"


def mark_stream(libxc, *levels: int, text: bytes = b"checkpoint here") -> bytes:
    sample = pv_sample()
    at = sample.index("X86_TSC_INFO")
    for level in reversed(levels):
        body = level.to_bytes(4, "little") + bytes(4) + text
        sample.steps.insert(at, Step("END", overrides={"type_id": 0x42, "body": body}))
    return assemble(libxc, sample)


@pytest.fixture(scope="module")
def with_note() -> Registry:
    return open_registry(plugins=[xenmig_testnote], autoload=False)


def test_plugin_adds_a_record_type(with_note, libxc) -> None:
    report = verify_bytes(with_note, mark_stream(libxc, 1, 2, 1))
    assert report.valid and not report.diagnostics
    root = report.contexts[0]
    assert root.records["XENMIG_TEST_MARK"] == 3
    assert root.stats["marks"] == {"level 1": 2, "level 2": 1}


def test_plugin_handler_reports_errors(with_note, libxc) -> None:
    data = mark_stream(libxc, 1, 5, text=b"bell\x07")
    report = verify_bytes(with_note, data)
    errors = [d for d in report.diagnostics if d.is_error]
    warnings = [d for d in report.diagnostics if not d.is_error]
    assert [(d.record_index, d.record_type, d.field, d.message) for d in errors] == [
        (8, "XENMIG_TEST_MARK", "level", "level 5 is above 3")]
    assert {(d.record_index, d.field) for d in warnings} == {(7, "text"), (8, "text")}
    # record 8 starts right after record 7 (8-byte header + 8 + 5 text bytes + 3 padding)
    assert errors[0].offset == warnings[0].offset + 24
    assert data[errors[0].offset:errors[0].offset + 12] == bytes.fromhex("420000000d00000005000000")


def test_plugin_spec_checks_still_apply(with_note, libxc) -> None:
    """The spec part of the plugin (reserved field, minimum length) works with the handler."""
    sample = pv_sample()
    sample.steps.insert(5, Step("END", overrides={"type_id": 0x42, "body": bytes(4)}))
    report = verify_bytes(with_note, assemble(libxc, sample))
    (diag,) = [d for d in report.diagnostics if d.is_error]
    assert (diag.record_index, diag.record_type) == (5, "XENMIG_TEST_MARK")


def test_without_the_plugin_the_record_is_unknown(registry, libxc) -> None:
    report = verify_bytes(registry, mark_stream(libxc, 1))
    assert not report.valid
    assert "unknown record type 0x00000042" in report.diagnostics[0].message


def test_plugin_via_get_plugin_manager(libxc) -> None:
    pm = get_plugin_manager(extra_plugins=[xenmig_testnote], autoload=False)
    assert pm.has_plugin("xenmig_testnote")
    registry = Registry(pm)
    assert registry.specs["libxc"].record_by_name("XENMIG_TEST_MARK").id == 0x42
    assert verify_bytes(registry, mark_stream(libxc, 3)).valid


def test_handler_raising_is_a_plugin_error_naming_it(libxc) -> None:
    registry = open_registry(plugins=[xenmig_testbroken], autoload=False)
    with pytest.raises(PluginError) as info:
        verify_bytes(registry, assemble(libxc, pv_sample()))
    message = str(info.value)
    assert "'xenmig_testbroken'" in message and "X86_TSC_INFO" in message
    assert "ValueError: cannot cope with record 7" in message
    assert "\n" not in message


def test_hook_raising_is_a_plugin_error_naming_it(libxc) -> None:
    class EndChecker:
        @staticmethod
        @hookimpl
        def xenmig_stream_end(ctx):
            raise KeyError("no such thing")

    registry = open_registry(plugins=[EndChecker], autoload=False)
    with pytest.raises(PluginError, match="'EndChecker' failed in xenmig_stream_end: KeyError"):
        verify_bytes(registry, assemble(libxc, pv_sample()))


def test_plugin_with_a_bad_hook_signature_is_refused() -> None:
    class WrongSignature:
        @staticmethod
        @hookimpl
        def xenmig_record_handler(format, record_name):
            return None

    with pytest.raises(PluginError, match="plugin 'WrongSignature' cannot be registered") as info:
        get_plugin_manager(extra_plugins=[WrongSignature], autoload=False)
    assert "\n" not in str(info.value)


def test_plugin_with_an_unknown_hook_is_refused() -> None:
    class TypoPlugin:
        @staticmethod
        @hookimpl
        def xenmig_record_handlr(format_name, name):
            return None

    expected = "plugin 'TypoPlugin': unknown hook 'xenmig_record_handlr'"
    with pytest.raises(PluginError, match=expected):
        get_plugin_manager(extra_plugins=[TypoPlugin], autoload=False)


def test_every_hook_is_documented() -> None:
    specs = [name for name in dir(hookspecs) if name.startswith("xenmig_")]
    assert len(specs) >= 7
    for name in specs:
        doc = getattr(hookspecs, name).__doc__ or ""
        assert len(doc.split()) > 15, f"{name} has no real contract"
    assert isinstance(hookspecs.hookspec, pluggy.HookspecMarker)


# -- as an installed third-party distribution (entry points), through the real CLI ---------
def install_fake_distribution(site: Path, name: str, module: str) -> None:
    """Make *site* hold a distribution *name* whose xenmig.plugins entry point is *module*."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[xenmig.plugins]\n{name} = {module}\n")


def env_with(site: Path, **extra: str) -> dict[str, str]:
    paths = [str(site), str(PLUGINS), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, paths)), **extra)
    env.pop("XENMIG_DISABLE_PLUGIN_AUTOLOAD", None)
    env.update(extra)
    return env


def test_entry_point_plugin_adds_its_record(tmp_path, libxc) -> None:
    site = tmp_path / "site"
    install_fake_distribution(site, "xenmig-testnote", "xenmig_testnote")
    stream = tmp_path / "marks.libxc"
    stream.write_bytes(mark_stream(libxc, 2))
    done = run_xenmig("verify", "-v", str(stream), env=env_with(site))
    assert done.returncode == 0, done.stderr
    assert b"XENMIG_TEST_MARK (23 bytes): level 2: 'checkpoint here'" in done.stdout
    listing = run_xenmig("plugins", env=env_with(site))
    assert b"xenmig-testnote: xenmig_testnote (xenmig_record_handler, xenmig_spec_files)" \
        in listing.stdout
    # operators can switch third-party plugins off
    done = run_xenmig("verify", str(stream),
                      env=env_with(site, XENMIG_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert done.returncode == 1 and b"unknown record type 0x00000042" in done.stderr


def test_entry_point_plugin_raising_exits_3_with_one_line(tmp_path) -> None:
    site = tmp_path / "site"
    install_fake_distribution(site, "xenmig-testbroken", "xenmig_testbroken")
    done = run_xenmig("verify", str(ROOT / "examples" / "pv64-2vcpu-v3.libxc"),
                      env=env_with(site))
    assert done.returncode == 3
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("xenmig: error: plugin 'xenmig-testbroken': handler for libxc "
                               "X86_TSC_INFO raised ValueError"), lines


def test_entry_point_plugin_failing_to_import_exits_3(tmp_path) -> None:
    site = tmp_path / "site"
    install_fake_distribution(site, "xenmig-testbadimport", "xenmig_testbadimport")
    done = run_xenmig("verify", str(ROOT / "examples" / "hvm-v3.libxc"), env=env_with(site))
    assert done.returncode == 3
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "plugin 'xenmig-testbadimport' (xenmig_testbadimport) failed to load: " \
        "ModuleNotFoundError" in lines[0]
    assert sys.executable  # the subprocess used this interpreter


def test_hooks_found_are_those_pluggy_finds() -> None:
    """The manager's short cuts past a module's unmarked names find every hook (and hook
    spec) pluggy's own look-up finds, for each built-in plugin and a third-party one."""
    from xenmig_core.markers import PROJECT
    pm = get_plugin_manager([xenmig_testnote], autoload=False)
    plain = pluggy.PluginManager(PROJECT)
    plain.add_hookspecs(hookspecs)
    found = {}
    for name, plugin in pm.list_name_plugin():
        plain.register(plugin, name=name)
        found[name] = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
    assert {name: sorted(h.name for h in plain.get_hookcallers(plugin) or [])
            for name, plugin in plain.list_name_plugin()} == found
    assert "xenmig_record_handler" in found["libxc"] and len(found) >= 9

    def specified(manager: pluggy.PluginManager) -> set[str]:
        return {name for name, caller in vars(manager.hook).items() if caller.has_spec()}
    assert specified(pm) == specified(plain) and "xenmig_walker" in specified(pm)


def test_handlers_are_asked_for_once_when_first_needed() -> None:
    """The registry asks a plugin for a unit's handler when the engine first looks it up,
    once, and only for units of the format (a variant falls back to its base format's)."""
    asked: list[tuple[str, str]] = []

    class Counting:
        @staticmethod
        @hookimpl
        def xenmig_record_handler(format_name, name):
            asked.append((format_name, name))

    registry = open_registry(plugins=[Counting], autoload=False)
    assert asked == []
    handlers = registry.get("libxc").handlers
    assert "PAGE_DATA" in handlers and handlers.get("NO_SUCH_RECORD") is None
    assert handlers.get("PAGE_DATA") is handlers["PAGE_DATA"]
    assert asked == [("libxc", "PAGE_DATA")]
    assert registry.get("colo-back-channel").handlers.get("END") is None
    assert asked[1:] == [("colo-back-channel", "END"), ("libxl", "END")]
