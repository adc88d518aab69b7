"""``python -m tinylsm``: the ``tinylsm`` command (see ``tinylsm.cli``)."""
import sys

from .cli import main

sys.exit(main())
