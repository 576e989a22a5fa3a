"""The example third-party plugin package (examples/plugin-example) installs with pip into a
fresh virtual environment and works there: ``xenmig plugins`` and ``xenmig specs list`` show
it, a stream using its record verifies, and its own tests pass.

The environment sees this project's installed packages through a ``.pth`` file (no network,
no second install of xenmig); the plugin is installed from a copy, so that building it
leaves nothing in the source tree. About 5 seconds; marked ``venv`` (CI runs it)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import ROOT

from xenmig_core.session import open_registry
from xenmig_libxc.samples import Step, assemble, pv_sample

EXAMPLE = ROOT / "examples" / "plugin-example"
TYPE_ID = 0x8000F001

pytestmark = pytest.mark.venv


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, Path]:
    """A virtual environment with the example plugin pip-installed into it, and the copy
    of the plugin's source it was installed from."""
    base = tmp_path_factory.mktemp("plugin-venv")
    env = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    lines = [f"import site; site.addsitedir({path!r})" for path in sorted(ours)]
    lines += [str(ROOT / "src"), str(ROOT / "plugins")]     # a non-installed checkout too
    (Path(purelib) / "xenmig-parent.pth").write_text("\n".join(lines) + "\n")
    copy = base / "plugin-example"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                 "__pycache__"))
    # without build isolation when the setuptools here can build a wheel (quick, offline)
    isolation = ["--no-build-isolation"] if _can_build_wheels() else []
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "-q", "--no-deps", *isolation, str(copy)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return env, copy


def _can_build_wheels() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def run(venv: tuple[Path, Path], *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv[0] / "bin" / "python"), *args], capture_output=True,
                          text=True, **kwargs)


def test_plugins_and_specs_list_show_it(venv) -> None:
    plugins = run(venv, "-m", "xenmig_core", "plugins", "--json")
    assert plugins.returncode == 0, plugins.stderr
    found = {p["name"]: p for p in json.loads(plugins.stdout)}
    assert found["example"]["module"] == "xenmig_example"
    assert set(found["example"]["hooks"]) == {"xenmig_spec_files", "xenmig_record_handler"}
    specs = run(venv, "-m", "xenmig_core", "specs", "list")
    assert specs.returncode == 0, specs.stderr
    assert any("0x8000f001" in line and "EXAMPLE_NOTE" in line
               for line in specs.stdout.splitlines())


def test_a_stream_with_its_record_verifies(venv, tmp_path) -> None:
    sample = pv_sample()
    body = (1).to_bytes(4, "little") + bytes(4) + b"saved by the nightly job"
    sample.steps.insert(sample.index("X86_TSC_INFO"),
                        Step("END", overrides={"type_id": TYPE_ID, "body": body}))
    stream = tmp_path / "noted.libxc"
    stream.write_bytes(assemble(open_registry(autoload=False).specs["libxc"], sample))
    done = run(venv, "-m", "xenmig_core", "verify", "--json", str(stream))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] and report["records"]["libxc.EXAMPLE_NOTE"] == 1
    assert report["stats"]["example_notes"] == {"version 1": 1} and not report["diagnostics"]
    # here, without the plugin, the record is an unknown optional one: a warning
    without = subprocess.run([sys.executable, "-m", "xenmig_core", "verify", "--json",
                              str(stream)], capture_output=True, text=True)
    assert "libxc.EXAMPLE_NOTE" not in json.loads(without.stdout)["records"]


def test_its_own_tests_pass(venv) -> None:
    done = run(venv, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", cwd=venv[1])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 passed" in done.stdout
