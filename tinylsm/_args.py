"""Command-line pieces shared by ``tinylsm`` (cli.py) and ``tinylsm bench``.

They live here, apart from both, so that the benchmark runner can use them
without importing the CLI, which imports the runner (lazily) in turn.
"""
from __future__ import annotations

import argparse
from typing import NoReturn

#: Exit status of a usage error, the same for every tinylsm command
#: (``cli.EXIT_USAGE``).
EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """Reports a usage error on one line (not argparse's usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def size_arg(text: str) -> int:
    """argparse type for a size in bytes: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value
