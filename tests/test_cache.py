"""The compiled-spec cache: used when it is current and trusted, ignored (and the specs
compiled again) when a spec file changed, a plugin came or went, the file is corrupt, the
folder cannot be written, or the folder or file could have been written by someone else.

Each test works in its own cache folder (``tmp_path``), through the library as the CLI
uses it; the suite's own cache folder (conftest) is a temporary one as well.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import xenmig_testnote
from conftest import ROOT, verify_bytes
from test_spec_language import NOTE_SPEC, note_stream

from xenmig_core.errors import SpecError
from xenmig_core.plugins import call_each, get_plugin_manager
from xenmig_core.registry import Registry
from xenmig_core.spec import cache
from xenmig_core.spec.cache import CACHE_DIR_ENV, load_formats_status, read_cache, write_cache
from xenmig_core.spec.expr import EVAL_ERRORS, Expression, Names

EXAMPLES = sorted((ROOT / "examples").glob("*.*[!y]"))   # the streams, not the script


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder of this test, also what the registry uses."""
    where = tmp_path / "cache"
    monkeypatch.setenv(CACHE_DIR_ENV, str(where))
    return where


def builtin_sources() -> tuple[list, dict[str, str]]:
    pm = get_plugin_manager(autoload=False)
    return [f for _plugin, files in call_each(pm, "xenmig_spec_files") for f in files], \
        pm.origins


def cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("specs-*.cache"))


def status(folder: Path, extra: list[Path] = ()) -> str:
    sources, origins = builtin_sources()
    return load_formats_status([*sources, *extra], origins, directory=folder)[1]


def plant(folder: Path, title: str = "PLANTED") -> Path:
    """Make the current cache file hold a libxc format whose title is *title*: a file that
    would change what a run prints if it were used."""
    assert status(folder) in ("written", "hit")
    (path,) = cache_files(folder)
    key = path.name[len("specs-"):-len(".cache")]
    specs = read_cache(folder, key)
    specs["libxc"].title = title
    assert write_cache(folder, key, specs)
    return path


def libxc_title(folder: Path) -> str:
    sources, origins = builtin_sources()
    specs, _ = load_formats_status(sources, origins, directory=folder)
    return specs["libxc"].title


def test_cache_dir_from_the_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "x"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "x"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert cache.cache_dir() == tmp_path / "xdg" / "xenmig"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "xenmig"


def test_second_run_reads_the_cache_and_verifies_alike(folder) -> None:
    first = Registry(get_plugin_manager(autoload=False))
    assert len(cache_files(folder)) == 1
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(cache_files(folder)[0].stat().st_mode) == 0o600
    assert status(folder) == "hit"
    second = Registry(get_plugin_manager(autoload=False))
    for example in EXAMPLES:
        data = example.read_bytes()
        compiled, cached = verify_bytes(first, data), verify_bytes(second, data)
        assert cached.to_dict() == compiled.to_dict(), example.name
        assert cached.valid, example.name


def _expressions(value, seen=None):
    """Every Expression reachable from *value* (through containers and model objects)."""
    seen = set() if seen is None else seen
    if id(value) in seen or isinstance(value, str | bytes | int | float | type(None)):
        return
    seen.add(id(value))
    if isinstance(value, Expression):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _expressions(item, seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _expressions(item, seen)
    elif type(value).__module__.startswith("xenmig_core.spec."):
        names = [*getattr(value, "__dict__", {}),
                 *(n for k in type(value).__mro__ for n in getattr(k, "__slots__", ()))]
        for name in names:
            yield from _expressions(getattr(value, name, None), seen)


def test_cached_expressions_are_stored_compiled(folder, monkeypatch) -> None:
    """A warm run compiles no spec expression: the cache holds each one's code (loaded on
    first evaluation), and evaluating them works without compiling."""
    sources, origins = builtin_sources()
    assert load_formats_status(sources, origins, directory=folder)[1] == "written"
    specs, how = load_formats_status(sources, origins, directory=folder)
    assert how == "hit"
    found = list(_expressions({name: spec.restore() for name, spec in specs.items()}))
    assert len(found) > 200
    assert all(e._stored is not None and e._fn is None and e._code is None for e in found)

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled an expression on a warm run")
    monkeypatch.setattr("builtins.compile", no_compiling)
    names = Names({"x": 5, "items": [1, 2, 3]}, ({"bits": lambda v, lo, n: v},))
    for expr in found[:60]:
        with contextlib.suppress(*EVAL_ERRORS):
            expr.evaluate(names)
        assert (expr._code if expr.scoped else expr._fn) is not None


def test_planted_file_in_a_private_folder_is_what_a_run_uses(folder) -> None:
    """The other tests' premise: a file under the right key is used, so a run that ignores
    one shows the real title."""
    plant(folder)
    assert libxc_title(folder) == "PLANTED"


def test_changed_spec_file_is_compiled_again(tmp_path, folder, libxc) -> None:
    spec = tmp_path / "note.yaml"
    spec.write_text(NOTE_SPEC)
    stream = note_stream(libxc, level=2)
    registry = Registry(get_plugin_manager(autoload=False), [spec])
    assert verify_bytes(registry, stream).valid
    assert status(folder, [spec]) == "hit"
    spec.write_text(NOTE_SPEC.replace("max: 3", "max: 1"))
    assert status(folder, [spec]) == "written"
    report = verify_bytes(Registry(get_plugin_manager(autoload=False), [spec]), stream)
    assert [d.message for d in report.diagnostics] == ["level too high (found 2)"]
    spec.unlink()             # a spec file that went away: the run says so, as uncached
    with pytest.raises(SpecError, match=r"note\.yaml"):
        Registry(get_plugin_manager(autoload=False), [spec])


def test_new_plugin_is_not_served_from_the_cache(folder, libxc) -> None:
    stream = note_stream(libxc)
    without = Registry(get_plugin_manager(autoload=False))
    assert not verify_bytes(without, stream).valid
    with_plugin = Registry(get_plugin_manager([xenmig_testnote], autoload=False))
    assert "XENMIG_TEST_MARK" in {r.name for r in with_plugin.specs["libxc"].records.values()}
    assert len(cache_files(folder)) == 2
    again = Registry(get_plugin_manager(autoload=False))   # and gone again
    assert "XENMIG_TEST_MARK" not in {r.name for r in again.specs["libxc"].records.values()}


def test_plugin_set_is_part_of_the_key() -> None:
    sources = [("a.yaml", b"xenmig_spec: 1\n")]
    keys = {cache.cache_key(sources, plugins) for plugins in (
        {}, {"libxc": "xenmig==0.1.0"}, {"libxc": "xenmig==0.1.1"}, {"other": "x==1"})}
    assert len(keys) == 4


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "wrong key"])
def test_corrupt_file_is_ignored_and_replaced(folder, damage) -> None:
    assert status(folder) == "written"
    (path,) = cache_files(folder)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[:len(data) // 2], "garbage": os.urandom(4096),
                      "empty": b"", "wrong key": data.replace(path.name[6:16].encode(),
                                                              b"0" * 10, 1)}[damage])
    assert libxc_title(folder) != "PLANTED"
    assert status(folder) == "hit"          # rebuilt over the bad one
    assert read_cache(folder, path.name[len("specs-"):-len(".cache")]) is not None


def test_file_naming_other_code_is_not_run(folder, tmp_path) -> None:
    """Even in a trusted folder, unpickling builds only the spec model's classes."""
    assert status(folder) == "written"
    (path,) = cache_files(folder)
    header = path.read_bytes().split(b"\n", 2)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)
    path.write_bytes(header[0] + b"\n" + header[1] + b"\n" + pickle.dumps(Evil()))
    assert status(folder) == "written"
    assert not marker.exists()


def test_unwritable_cache_folder_still_gives_correct_results(tmp_path, monkeypatch,
                                                             libxc) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(CACHE_DIR_ENV, str(blocker / "cache"))
    assert status(blocker / "cache") == "compiled"
    registry = Registry(get_plugin_manager(autoload=False))
    assert verify_bytes(registry, (ROOT / "examples" / "hvm-v3.libxc").read_bytes()).valid
    done = subprocess.run([sys.executable, "-m", "xenmig_core", "verify",
                           str(ROOT / "examples" / "hvm-v3.libxc")],
                          capture_output=True, env=dict(os.environ))
    assert done.returncode == 0 and done.stderr == b"", done.stderr


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_folder_writable_by_others_is_not_trusted(folder, mode) -> None:
    plant(folder)
    folder.chmod(mode)
    assert libxc_title(folder) != "PLANTED"
    assert status(folder) == "compiled"     # nor written there
    folder.chmod(0o700)
    assert libxc_title(folder) == "PLANTED"


def test_file_writable_by_others_is_not_trusted(folder) -> None:
    path = plant(folder)
    path.chmod(0o622)
    assert libxc_title(folder) != "PLANTED"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600    # replaced by a private one


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="giving a file away needs root")
def test_file_or_folder_of_another_user_is_not_trusted(folder) -> None:
    path = plant(folder)
    os.chown(path, 65534, 65534)
    assert libxc_title(folder) != "PLANTED"
    assert path.stat().st_uid == 0          # replaced by a file of this user's
    plant(folder)
    os.chown(folder, 65534, 65534)
    assert libxc_title(folder) != "PLANTED"
    os.chown(folder, 0, 0)
    assert libxc_title(folder) == "PLANTED"


def test_symlinked_file_is_not_followed(folder, tmp_path) -> None:
    path = plant(folder)
    elsewhere = tmp_path / "elsewhere.cache"
    path.rename(elsewhere)
    path.symlink_to(elsewhere)
    assert libxc_title(folder) != "PLANTED"


def test_old_files_are_pruned(folder, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(cache, "KEEP_FILES", 3)       # (each file is a whole compile)
    for i in range(cache.KEEP_FILES + 3):
        spec = tmp_path / "extra.yaml"
        spec.write_text(textwrap.dedent(f"""\
            xenmig_spec: 1
            extends: libxc
            doc: version {i}
            """))
        assert status(folder, [spec]) == "written"
    assert len(cache_files(folder)) == cache.KEEP_FILES


def test_warm_run_loads_neither_yaml_nor_the_loader(folder) -> None:
    """What the cache is for: a run with a current cache never parses YAML."""
    code = textwrap.dedent("""\
        import sys
        from xenmig_core.session import open_registry
        open_registry(autoload=False)
        print(sorted(m for m in sys.modules if m in ("yaml", "xenmig_core.spec.loader")))
        """)
    env = dict(os.environ)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, check=True).stdout.strip() for _ in range(2)]
    assert runs == ["['xenmig_core.spec.loader', 'yaml']", "[]"]


def test_warm_run_restores_only_the_formats_it_walks(folder) -> None:
    """A format read from the cache restores its records, rules and layouts when first
    used: verifying a libxc stream restores libxc, not every installed format."""
    Registry(get_plugin_manager(autoload=False))
    registry = Registry(get_plugin_manager(autoload=False))
    assert all("_deferred" in spec.__dict__ for spec in registry.specs.values())
    report = verify_bytes(registry, (ROOT / "examples" / "hvm-v3.libxc").read_bytes())
    assert report.valid
    restored = {name for name, spec in registry.specs.items()
                if "_deferred" not in spec.__dict__}
    assert "libxc" in restored and not restored & {"legacy", "xenserver", "xenstore"}
    assert registry.specs["legacy"].records and "_deferred" not in \
        registry.specs["legacy"].__dict__          # restored on first use, transparently
    xenserver = registry.specs["xenserver"]
    assert "_deferred" in xenserver.__dict__
    xenserver.end_checks = []                      # a field set before the restore stays
    assert xenserver.records and xenserver.end_checks == []


def test_damaged_deferred_part_refuses_the_file(folder) -> None:
    """A byte changed inside a format's deferred part is found when the file is read (its
    digest), so the run compiles instead of failing later, in the middle of a walk."""
    assert status(folder) == "written"
    (path,) = cache_files(folder)
    key = path.name[len("specs-"):-len(".cache")]
    blob = read_cache(folder, key)["libxc"].__dict__["_deferred"].data
    data = bytearray(path.read_bytes())
    at = data.find(blob) + len(blob) // 2
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
    assert read_cache(folder, key) is None
    assert status(folder) == "written"
    assert read_cache(folder, key)["libxc"].records
