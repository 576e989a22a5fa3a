"""``python -m xenmig_core``: the same as the ``xenmig`` console script."""

from xenmig_core.entry import main

main()
