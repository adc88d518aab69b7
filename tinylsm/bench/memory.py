"""Resident memory: this process's, and what holding every key adds,
measured in a fresh process (the ``memory`` workload's child)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

from .measure import expect

_STATM = "/proc/self/statm"


def rss() -> int:
    """This process's resident memory in bytes (Linux: ``/proc/self/statm``)."""
    with open(_STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_per_key(code: str, n: int) -> Optional[float]:
    """Resident memory per key that ``code`` adds, measured in a fresh
    process (so nothing this run allocated counts): ``code`` may call
    ``rss()``, and prints its RSS growth and the keys it holds; returns the
    growth divided by ``n``.  None where /proc/self/statm does not exist."""
    if not os.path.exists(_STATM):
        return None
    prelude = "from tinylsm.bench.memory import rss\n"
    out = subprocess.run([sys.executable, "-c", prelude + code], check=True,
                         capture_output=True, text=True).stdout.split()
    expect("keys held while measuring memory", int(out[1]), n)
    return int(out[0]) / n
