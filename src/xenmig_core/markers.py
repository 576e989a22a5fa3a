"""The pluggy marker a plugin decorates its hook implementations with.

``from xenmig_core.plugins import hookimpl`` is the documented spelling (it re-exports this
one); the marker lives here so that modules implementing hooks (the spec detector) need not
import the plugin manager's module, which imports them.
"""

from __future__ import annotations

import pluggy

#: pluggy project name of xenmig's hooks
PROJECT = "xenmig"
hookimpl = pluggy.HookimplMarker(PROJECT)
