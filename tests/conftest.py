"""Shared fixtures: a registry, the libxc spec, sample streams and a CLI runner."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from xenmig_core.cli import app
from xenmig_core.diagnostics import Diagnostic
from xenmig_core.registry import Registry
from xenmig_core.render.verbose import VerboseConsumer
from xenmig_core.session import open_registry
from xenmig_core.source import ByteSource
from xenmig_core.spec.model import FormatSpec
from xenmig_core.verifier import VerifyReport, verify_source
from xenmig_libxc.samples import Sample, assemble, assemble_with_offsets, hvm_sample, pv_sample

ROOT = Path(__file__).resolve().parent.parent

# The compiled-spec cache of the whole suite (subprocesses included, through the environment)
# lives in a private temporary folder, never in the user's cache directory.
_CACHE = tempfile.TemporaryDirectory(prefix="xenmig-test-cache-")
os.environ["XENMIG_CACHE_DIR"] = _CACHE.name


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
def check(registry: Registry, libxc: FormatSpec):
    """check(sample, byte_order='little', fmt='auto') -> Outcome of verifying the sample."""
    def _check(sample: Sample, byte_order: str = "little", fmt: str = "auto") -> Outcome:
        data, offsets = assemble_with_offsets(libxc, sample, byte_order)
        return Outcome(verify_bytes(registry, data, fmt), offsets, data)
    return _check


def verify_bytes(registry: Registry, data: bytes, fmt: str = "auto",
                 consumer=None) -> VerifyReport:
    """Verify an in-memory stream through the library."""
    with ByteSource.from_bytes(data) as source:
        return verify_source(registry, source, fmt, consumer)


def verbose_account(data: bytes, registry: Registry | None = None) -> list[str]:
    """The ``verify -v`` lines for *data*, through the library's VerboseConsumer."""
    out = io.StringIO()
    consumer = VerboseConsumer(out)
    verify_bytes(registry or open_registry(autoload=False), data, "auto", consumer)
    consumer.close()
    return out.getvalue().splitlines()


class Outcome:
    """A verified sample: the report, each step's record offset, and the stream bytes."""

    def __init__(self, report: VerifyReport, offsets: list[int], data: bytes) -> None:
        self.report = report
        self.offsets = offsets
        self.data = data

    @property
    def valid(self) -> bool:
        return self.report.valid

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.report.diagnostics if d.is_error]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.report.diagnostics if not d.is_error]

    def error(self, contains: str = "") -> Diagnostic:
        """The only error (whose text contains *contains*); fails otherwise."""
        found = [d for d in self.errors if contains in str(d)]
        assert len(found) == 1 and len(self.errors) == 1, \
            f"expected one error with {contains!r}, got {[str(d) for d in self.errors]}"
        return found[0]

    def warning(self, contains: str = "") -> Diagnostic:
        """The one warning whose text contains *contains*; fails otherwise."""
        found = [d for d in self.warnings if contains in str(d)]
        assert len(found) == 1, \
            f"expected one warning with {contains!r}, got {[str(d) for d in self.warnings]}"
        return found[0]

    def at_step(self, diag: Diagnostic, step: int, record_type: str,
                field: str | None = None) -> None:
        """Assert that *diag* names the record of step *step*: index, name, offset, field."""
        assert diag.record_index == step, str(diag)
        assert diag.record_type == record_type, str(diag)
        assert diag.offset == self.offsets[step], str(diag)
        if field is not None:
            assert diag.field == field, str(diag)


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
