"""Opt-in pytest plugin: round-trip every stream the whole test suite writes.

    pytest -p roundtrip_capture

Every non-empty ``StreamWriter`` output to a ``BytesIO`` during a test is kept (once per
distinct content); when the session ends each is dumped (``-t yaml --pages ref``) and built
again, and must come back byte for byte. Streams no detector recognises are tried with each
format. The session fails when one does not. Slow (the suite plus one dump and build per
stream), so not part of the default run; tests/test_build.py covers the same ground by name.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import tempfile
from typing import Any

import pytest

from xenmig_core import writer as writer_module

_CAPTURED: dict[str, tuple[str, bytes]] = {}
_OUTPUTS: list[io.BytesIO] = []
_original_init = writer_module.StreamWriter.__init__


def _capturing_init(self: Any, out: Any, *args: Any, **kwargs: Any) -> None:
    _original_init(self, out, *args, **kwargs)
    if isinstance(out, io.BytesIO):
        _OUTPUTS.append(out)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    writer_module.StreamWriter.__init__ = _capturing_init  # type: ignore[method-assign]
    try:
        yield
    finally:
        writer_module.StreamWriter.__init__ = _original_init  # type: ignore[method-assign]
        for out in _OUTPUTS:
            try:
                data = out.getvalue()
            except ValueError:          # closed
                continue
            if data:
                _CAPTURED.setdefault(hashlib.sha256(data).hexdigest(), (item.nodeid, data))
        _OUTPUTS.clear()


def _round_trip(registry: Any, path: str, data: bytes) -> str | None:
    from xenmig_core.build import build_stream
    from xenmig_core.dump import DumpOptions, dump_source
    from xenmig_core.errors import XenmigError
    from xenmig_core.render.yaml import YamlRenderer
    from xenmig_core.source import ByteSource
    problem = None
    for fmt in ["auto", *sorted(registry.formats)]:
        out = io.StringIO()
        try:
            with ByteSource.open(path) as source:
                dump_source(registry, source, YamlRenderer(out), DumpOptions(pages="ref"),
                            fmt)
            with open(path + ".yaml", "w", encoding="utf-8") as description:
                description.write(out.getvalue())
            build_stream(registry, path + ".yaml", path + ".built", verify=False)
        except XenmigError as exc:
            problem = problem or f"{type(exc).__name__}: {exc}"
            continue
        with open(path + ".built", "rb") as built:
            return None if built.read() == data else f"differs (dumped as {fmt})"
    return problem


def pytest_sessionfinish(session: pytest.Session) -> None:
    from xenmig_core.session import open_registry
    registry = open_registry(autoload=False)
    folder = tempfile.mkdtemp(prefix="xenmig-roundtrip-")
    failures = []
    for digest, (nodeid, data) in _CAPTURED.items():
        path = os.path.join(folder, digest[:16])
        with open(path, "wb") as out:
            out.write(data)
        problem = _round_trip(registry, path, data)
        if problem is not None:
            failures.append(f"{nodeid}: {problem}")
    print(f"\nround trip: {len(_CAPTURED)} distinct streams written by the tests, "
          f"{len(_CAPTURED) - len(failures)} rebuilt byte for byte", file=sys.stderr)
    for failure in failures:
        print(f"  NOT REBUILT {failure}", file=sys.stderr)
    if failures:
        session.exitstatus = 1
