"""xenmig: verify, dump and convert Xen save images and migration streams.

The engine in this package knows framing, dispatch, state and diagnostics; every Xen format
is contributed by a plugin (see :mod:`xenmig_core.hookspecs`) and described by a YAML spec.

The public Python API (``docs/api.md``) is re-exported here from :mod:`xenmig_core.api`:
``verify``, ``records``, ``Forwarder``, ``open_registry`` and the types they return. They
are imported on first use, so that ``import xenmig_core`` (and the CLI's start-up) stays cheap.
"""

from __future__ import annotations

from xenmig_core.version import __version__

TYPE_CHECKING = False   # (typing.TYPE_CHECKING, without importing typing)
if TYPE_CHECKING:
    from typing import Any

    from xenmig_core.api import (
        Records,
        Report,
        Source,
        StreamRecord,
        open_registry,
        open_source,
        records,
        verify,
    )
    from xenmig_core.push import Forwarder

__all__ = ["Forwarder", "Records", "Report", "Source", "StreamRecord", "__version__",
           "open_registry", "open_source", "records", "verify"]


def __getattr__(name: str) -> Any:
    if name == "Forwarder":   # the push-style verifier (docs/api.md)
        from xenmig_core.push import Forwarder
        return Forwarder
    if name in __all__ and name != "__version__":
        from xenmig_core import api
        return getattr(api, name)
    raise AttributeError(f"module 'xenmig_core' has no attribute {name!r}")
