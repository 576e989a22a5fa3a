"""Shared fixtures: a registry, the libxc spec, sample streams and a CLI runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xenmig_core.cli import app
from xenmig_core.registry import Registry
from xenmig_core.session import open_registry
from xenmig_core.spec.model import FormatSpec
from xenmig_libxc.samples import Sample, assemble, hvm_sample, pv_sample

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def registry() -> Registry:
    return open_registry(autoload=False)


@pytest.fixture(scope="session")
def libxc(registry: Registry) -> FormatSpec:
    return registry.specs["libxc"]


@pytest.fixture
def build(libxc: FormatSpec):
    """build(sample, byte_order='little') -> bytes of a libxc stream."""
    def _build(sample: Sample, byte_order: str = "little") -> bytes:
        return assemble(libxc, sample, byte_order)
    return _build


@pytest.fixture
def pv() -> Sample:
    return pv_sample()


@pytest.fixture
def hvm() -> Sample:
    return hvm_sample()


@pytest.fixture
def cli():
    """cli(*args, input=bytes) -> click Result, through typer's CliRunner."""
    runner = CliRunner()

    def _run(*args: str, input: bytes | None = None):
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)
    return _run


def run_xenmig(*args: str, input: bytes | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m xenmig_core`` as a real subprocess."""
    return subprocess.run([sys.executable, "-m", "xenmig_core", *args], input=input,
                          capture_output=True, **kwargs)
