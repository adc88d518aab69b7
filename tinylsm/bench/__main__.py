"""``python -m tinylsm.bench``: the same command as ``tinylsm bench``."""
import sys

from .command import main

sys.exit(main(prog="python -m tinylsm.bench"))
