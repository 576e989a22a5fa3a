"""Start-up: what a command imports, how modules import one another, plugin discovery, and
the short form of repeated warnings.

Timings live in benchmarks/; these tests pin the structure that makes start-up cheap: the
modules a command does not use are not imported, xenmig_core's modules import one another
without a cycle, and the entry-point scan finds what importlib.metadata finds.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

from conftest import ROOT

from xenmig_core.plugins import ENTRY_POINT_GROUP, find_entry_points
from xenmig_libxc.samples import Step, assemble, page_data, pv_sample

CORE = ROOT / "src" / "xenmig_core"
#: Modules only some commands need: never imported by the CLI module, nor by ``verify -q``.
NOT_FOR_VERIFY = ("yaml", "rich", "jsonschema",
                  "xenmig_core.dump", "xenmig_core.build", "xenmig_core.convert",
                  "xenmig_core.render.text", "xenmig_core.render.yaml",
                  "xenmig_core.render.json", "xenmig_core.render.verbose",
                  "xenmig_core.spec.loader", "xenmig_core.spec.yamlsrc", "xenmig_core.sink")


def modules_after(code: str) -> set[str]:
    """The modules loaded once *code* ran in a fresh interpreter (the suite's environment,
    so the suite's cache folder)."""
    code = textwrap.dedent(code) + "\nprint('\\n'.join(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", "import sys\n" + code], capture_output=True,
                          text=True, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_importing_the_cli_loads_no_command_module() -> None:
    loaded = modules_after("import xenmig_core.cli")
    assert not loaded & {*NOT_FOR_VERIFY, "xenmig_core.verifier", "xenmig_core.registry",
                         "xenmig_core.engine", "json"}


def test_verify_quiet_loads_only_what_it_uses() -> None:
    stream = ROOT / "examples" / "hvm-v3.libxc"
    run = f"""
        from xenmig_core.cli import app
        for _ in range(2):     # the first run may fill the cache
            try:
                app(["verify", "-q", {str(stream)!r}])
            except SystemExit as exc:
                assert exc.code == 0, exc.code
    """
    loaded = modules_after(run)
    assert "xenmig_core.engine" in loaded and "xenmig_libxc" in loaded
    warm = modules_after(run.replace("range(2)", "range(1)"))
    assert not warm & set(NOT_FOR_VERIFY), sorted(warm & set(NOT_FOR_VERIFY))


def test_console_script_verify_loads_neither_typer_nor_the_api() -> None:
    """The console script runs a plain ``verify`` without typer, click or the Python API's
    module (the typer app runs the same function: tests/test_cli_fastpath.py)."""
    stream = ROOT / "examples" / "hvm-v3.libxc"
    run = f"""
        from xenmig_core.entry import main
        for _ in range(1):
            try:
                main(["verify", "-q", {str(stream)!r}])
            except SystemExit as exc:
                assert exc.code == 0, exc.code
    """
    modules_after(run)     # the first run may fill the cache (run alone, the suite's is cold)
    loaded = modules_after(run)
    assert "xenmig_core.engine" in loaded
    assert not loaded & {"typer", "click", "xenmig_core.cli", "xenmig_core.api",
                         *NOT_FOR_VERIFY}, sorted(loaded & {"typer", "click", "xenmig_core.api"})
    # nor the handler modules of formats the stream does not have
    assert not loaded & {"xenmig_legacy.handlers", "xenmig_legacy.walker", "xenmig_xl.config",
                         "xenmig_xl.libvirt", "xenmig_xenserver.xenops",
                         "xenmig_xenstore.checks", "importlib.resources"}
    # nor pathlib (and urllib.parse with it), unless the interpreter had it before (an
    # editable install's import finder loads it)
    if "pathlib" not in modules_after("pass"):
        assert "pathlib" not in loaded
    # nor typing, pluggy (its hook tables are replayed from the cache: test_recorded.py),
    # inspect or dataclasses: modules import typing's names under TYPE_CHECKING only
    # nor ast (expressions come from the cache compiled) nor the account consumer (-q)
    heavy = {"typing", "pluggy", "inspect", "dataclasses", "ast",
             "xenmig_core.render.account"} - modules_after("pass")
    assert not loaded & heavy, sorted(loaded & heavy)


def test_dump_loads_only_the_renderer_it_writes() -> None:
    stream = ROOT / "examples" / "hvm-v3.libxc"
    loaded = modules_after(f"""
        import io, sys
        from xenmig_core.cli import app
        sys.stdout = io.StringIO()
        try:
            app(["dump", "-q", "-t", "jsonl", {str(stream)!r}])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        sys.stdout = sys.__stdout__
    """)
    assert "xenmig_core.render.json" in loaded
    assert not loaded & {"xenmig_core.render.yaml", "xenmig_core.render.text"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """xenmig_core modules *path* imports, at module level or in a function (a deferred
    import is still a dependency); not those under ``if TYPE_CHECKING:``."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for sub in ast.walk(node):
            if isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names)
            elif isinstance(sub, ast.ImportFrom) and sub.module and sub.level == 0:
                found.add(sub.module)
                found.update(f"{sub.module}.{a.name}" for a in sub.names)
    return {m for m in found if m.startswith("xenmig_core")}


def test_core_modules_import_one_another_without_a_cycle() -> None:
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = {m for m in _imports(path) if m in modules}
        # importing a.b.c runs a/__init__ and a/b/__init__ first (the importer's own
        # packages are already being imported: no edge back to them)
        own = {name.rsplit(".", i)[0] for i in range(1, name.count(".") + 1)}
        deps |= {".".join(d.split(".")[:i]) for d in deps
                 for i in range(2, d.count(".") + 1)} - own
        graph[name] = {d for d in deps if d in modules and d != name}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*path[path.index(dep):], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2
    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert (CORE / "spec" / "__init__.py").exists()


def test_entry_point_scan_finds_what_importlib_finds(tmp_path) -> None:
    expected = {(ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert {(ep.name, ep.value) for ep in find_entry_points()} == expected
    assert {"libxc", "libxl", "xl", "legacy"} <= {name for name, _value in expected}
    site = tmp_path / "site"
    info = site / "xenmig_other-2.5.dist-info"
    info.mkdir(parents=True)
    (info / "entry_points.txt").write_text(
        "# a comment\n[console_scripts]\nnot-this = x:y\n\n"
        "[xenmig.plugins]\nother = xenmig_other.plugin:hooks [extra]\n")
    shadowed = site / "later" / "xenmig_other-1.0.dist-info"
    shadowed.mkdir(parents=True)
    (shadowed / "entry_points.txt").write_text("[xenmig.plugins]\nold = xenmig_other\n")
    (found,) = find_entry_points(path=[str(site), str(site / "later")])
    assert (found.name, found.value, found.dist, found.version) == \
        ("other", "xenmig_other.plugin:hooks", "xenmig_other", "2.5")


def test_repeated_warning_is_printed_once_with_a_count(tmp_path, libxc, cli) -> None:
    """A bare libxc stream with a CHECKPOINT in each of its checkpoints: the same warning
    1,000 times (the engine keeps 20) is one line and a count, unless -v."""
    sample = pv_sample()
    end = sample.index("END")
    steps: list[Step] = []
    for _ in range(999):
        steps += [Step("CHECKPOINT"), page_data([(1, 0)])]
    sample.steps[end:] = [*steps, Step("CHECKPOINT")]    # it ends after a checkpoint
    stream = tmp_path / "checkpoints.libxc"
    stream.write_bytes(assemble(libxc, sample))
    result = cli("verify", str(stream))
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("xenmig: warning: record ") and "CHECKPOINT in a bare" in lines[0]
    assert lines[1] == "xenmig: warning: ... and 999 more like it"
    verbose = cli("verify", "-v", str(stream))
    assert verbose.stdout.count("WARNING: ") == 21     # 20 kept, then "... 980 more like this"
    assert "... 980 more like this: WARNING" in verbose.stdout


def test_help_still_lists_the_commands(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("verify", "dump", "build", "convert", "specs", "plugins"):
        assert command in result.stdout


def test_console_script_verify_keeps_start_up_out_of_the_collector() -> None:
    """The fast path makes its start-up (modules, compiled formats) without the garbage
    collector and then freezes it (gc.freeze): the walk's collections never scan it, and
    the collector is on again for the walk."""
    stream = ROOT / "examples" / "hvm-v3.libxc"
    code = textwrap.dedent(f"""
        import gc
        from xenmig_core.entry import main
        runs = []
        gc.callbacks.append(lambda phase, info: runs.append(info["generation"])
                            if phase == "start" else None)
        for _ in range(2):     # the first run may fill the cache
            try:
                main(["verify", "-q", {str(stream)!r}])
            except SystemExit as exc:
                assert exc.code == 0, exc.code
        print(gc.isenabled(), gc.get_freeze_count(), max(runs, default=-1))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    enabled, frozen, deepest = done.stdout.split()
    assert enabled == "True" and int(frozen) > 10_000
    assert int(deepest) < 2, "a full collection ran during a short verify"


def test_console_script_convert_loads_no_more_than_it_uses(tmp_path) -> None:
    """A plain legacy-to-xl ``convert`` runs without typer, and its read-back verification
    without an account: neither typing, dataclasses (nor inspect with them), pluggy, the
    account consumer nor the memory plugin's export preview are loaded."""
    stream = ROOT / "examples" / "hvm64-legacy.xl"
    output = tmp_path / "out.xl"
    run = f"""
        import os
        from xenmig_core.entry import main
        if os.path.exists({str(output)!r}):
            os.unlink({str(output)!r})
        try:
            main(["convert", "-q", {str(stream)!r}, "-o", {str(output)!r}, "--to", "xl"])
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
    """
    modules_after(run)     # the first run may fill the cache
    loaded = modules_after(run)
    assert output.stat().st_size > stream.stat().st_size // 2
    assert "xenmig_core.convert" in loaded and "xenmig_legacy.convert" in loaded
    heavy = {"typer", "click", "typing", "dataclasses", "inspect", "pluggy",
             "xenmig_core.render.account", "xenmig_memory.preview"} - modules_after("pass")
    assert not loaded & heavy, sorted(loaded & heavy)
