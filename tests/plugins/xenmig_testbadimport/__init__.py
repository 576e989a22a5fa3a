"""A plugin defined by the tests that fails to import (a missing dependency)."""

import xenmig_no_such_dependency  # noqa: F401
