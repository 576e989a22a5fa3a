"""pluggy's hook tables recorded in the cache and replayed (xenmig_core.recorded): a replay
calls exactly what pluggy's manager would, a run with a recording imports no pluggy, and a
plugin whose hook implementations change (with no new version) is not served the old
tables."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pluggy
import pytest
from conftest import ROOT, run_xenmig
from test_plugins import env_with

from xenmig_core import hookspecs
from xenmig_core.pluggy_manager import XenmigPluginManager
from xenmig_core.plugins import get_plugin_manager, hookimpl, load_plugins
from xenmig_core.recorded import RecordedHooks

STREAM = ROOT / "examples" / "pv64-2vcpu-v3.libxc"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("XENMIG_CACHE_DIR", str(path))
    return path


def _tables(pm) -> dict[str, list[tuple[str, object, tuple[str, ...]]]]:
    """What call_each reads of every hook: (plugin, function, argnames) in call order."""
    if isinstance(pm, RecordedHooks):
        return {name: pm.hookimpls(name) for name in _hook_names()}
    return {name: [(i.plugin_name, i.function, tuple(i.argnames))
                   for i in reversed(getattr(pm.hook, name).get_hookimpls())]
            for name in _hook_names()}


def _hook_names() -> list[str]:
    return [name for name in dir(hookspecs) if name.startswith("xenmig_")]


@pytest.mark.parametrize("options", [{}, {"tryfirst": True}, {"trylast": True},
                                     {"hookwrapper": True}, {"wrapper": True},
                                     {"optionalhook": True}, {"specname": "xenmig_walker"}])
def test_marker_sets_what_pluggys_sets(options) -> None:
    ours, theirs = (marker(**options)(lambda: None) if options else marker(lambda: None)
                    for marker in (hookimpl, pluggy.HookimplMarker("xenmig")))
    assert ours.xenmig_impl == theirs.xenmig_impl


def test_replayed_tables_are_pluggys(folder) -> None:
    first = load_plugins()
    assert isinstance(first, XenmigPluginManager)         # nothing recorded yet
    assert any(p.name.startswith("hooks-") for p in folder.iterdir())
    replayed = load_plugins()
    assert isinstance(replayed, RecordedHooks)
    pluggys = get_plugin_manager()
    tables = _tables(replayed)
    assert tables == _tables(pluggys)
    assert len(tables["xenmig_spec_files"]) >= 7 and tables["xenmig_detect_format"]
    assert replayed.origins == pluggys.origins
    assert [n for n, _ in replayed.list_name_plugin()] == \
        [n for n, _ in pluggys.list_name_plugin()]
    with pytest.raises(AttributeError):
        replayed.hookimpls("xenmig_no_such_hook")


def test_damaged_recording_is_ignored_and_replaced(folder) -> None:
    load_plugins()
    (path,) = [p for p in folder.iterdir() if p.name.startswith("hooks-")]
    data = path.read_bytes()
    for damaged in (data[:len(data) // 2], data[:-40] + bytes(40), b"nothing"):
        path.write_bytes(damaged)
        assert isinstance(load_plugins(), XenmigPluginManager)
        assert isinstance(load_plugins(), RecordedHooks)   # (written again)


def test_plugins_given_by_hand_get_pluggys_manager(folder) -> None:
    import xenmig_testnote

    load_plugins()
    assert isinstance(load_plugins([xenmig_testnote]), XenmigPluginManager)


def test_verify_with_a_recording_imports_no_pluggy() -> None:
    code = textwrap.dedent(f"""
        import sys
        from xenmig_core.entry import main
        try:
            main(["verify", "-q", {str(STREAM)!r}])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        print(" ".join(sorted(sys.modules)))
    """)
    for _ in range(2):      # the first run may record the tables
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=dict(os.environ))
        assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "xenmig_core.engine" in loaded
    assert not loaded & {"pluggy", "inspect", "dataclasses"}, loaded & {"pluggy", "inspect"}


PLUGIN_V1 = '''
from xenmig_core.plugins import hookimpl

@hookimpl
def xenmig_spec_files():
    return []
'''
PLUGIN_V2 = PLUGIN_V1 + '''
@hookimpl
def xenmig_stream_end(ctx):
    return ["the changed plugin refuses every stream"]
'''


def test_plugin_changed_without_a_new_version_is_not_served_old_tables(tmp_path) -> None:
    """A plugin that gains a hook implementation, its distribution's version unchanged (an
    editable install being worked on), is seen at once: the recording is of what its
    marked functions were, and they are no longer that."""
    site = tmp_path / "site"
    info = site / "xenmig_testchange-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "entry_points.txt").write_text("[xenmig.plugins]\nchange = xenmig_testchange\n")
    module = site / "xenmig_testchange.py"
    module.write_text(PLUGIN_V1)
    env = env_with(site, XENMIG_CACHE_DIR=str(tmp_path / "cache"))
    for _ in range(2):      # records, then replays
        done = run_xenmig("verify", str(STREAM), env=env)
        assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "cache").glob("hooks-*.cache"))) == 1
    module.write_text(PLUGIN_V2)
    for _ in range(2):      # records again, then replays the new tables
        done = run_xenmig("verify", str(STREAM), env=env)
        assert done.returncode == 1
        assert b"the changed plugin refuses every stream" in done.stderr
    module.write_text(PLUGIN_V1)
    done = run_xenmig("verify", str(STREAM), env=env)
    assert done.returncode == 0, done.stderr


def test_unusable_cache_folder_gives_pluggys_manager(tmp_path, monkeypatch) -> None:
    """A cache folder that cannot be made (a file is in the way) or is writable by others:
    nothing is recorded nor replayed, and the run has pluggy's manager, which works."""
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    for folder in (blocked, shared):
        monkeypatch.setenv("XENMIG_CACHE_DIR", str(folder))
        for _ in range(2):
            pm = load_plugins()
            assert isinstance(pm, XenmigPluginManager)
            assert _tables(pm) == _tables(get_plugin_manager())
    assert not list(shared.glob("hooks-*"))
