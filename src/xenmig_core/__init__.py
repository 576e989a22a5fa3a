"""xenmig: verify, dump and convert Xen save images and migration streams.

The engine in this package knows framing, dispatch, state and diagnostics; every Xen format
is contributed by a plugin (see :mod:`xenmig_core.hookspecs`) and described by a YAML spec.
"""

__version__ = "0.1.0"
