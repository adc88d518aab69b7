"""Resident memory: this process's, what holding every key adds, and the
most that reopening a store adds while it runs, each measured in a fresh
process (the ``memory`` and ``reopen-memory`` workloads' children)."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import List, NamedTuple, Optional

from .measure import expect

_STATM = "/proc/self/statm"
_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def rss() -> int:
    """This process's resident memory in bytes (Linux: ``/proc/self/statm``)."""
    with open(_STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """The most resident memory this process has had, in bytes (Linux:
    ``VmHWM`` of ``/proc/self/status``, the figure ``ru_maxrss`` gives)."""
    with open(_STATUS) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"{_STATUS} has no VmHWM")


def reset_peak() -> bool:
    """Make the peak start again from the present resident memory (Linux
    4.0 and later: writing 5 to ``/proc/self/clear_refs``); False where it
    cannot, and the peak then also counts the imports' own."""
    try:
        with open(_CLEAR_REFS, "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _child(code: str) -> List[str]:
    """What ``code`` prints, run in a fresh interpreter after ``from
    tinylsm.bench.memory import peak_rss, reset_peak, rss``."""
    prelude = "from tinylsm.bench.memory import peak_rss, reset_peak, rss\n"
    return subprocess.run([sys.executable, "-c", prelude + code], check=True,
                          capture_output=True, text=True).stdout.split()


def rss_per_key(code: str, n: int) -> Optional[float]:
    """Resident memory per key that ``code`` adds, measured in a fresh
    process (so nothing this run allocated counts): ``code`` may call
    ``rss()``, and prints its RSS growth and the keys it holds; returns the
    growth divided by ``n``.  None where /proc/self/statm does not exist."""
    if not os.path.exists(_STATM):
        return None
    out = _child(code)
    expect("keys held while measuring memory", int(out[1]), n)
    return int(out[0]) / n


class Reopen(NamedTuple):
    """One open of a store in a fresh process."""

    seconds: float  # the open() call
    peak: float  # bytes per key: the most the open added, while it ran
    held: float  # bytes per key: what the open store holds, once collected

    @property
    def ratio(self) -> float:
        """The peak over what the open store holds."""
        return self.peak / self.held


def reopen_in_child(path: str, n: int) -> Optional[Reopen]:
    """Open the store at ``path`` (the default Config) in a fresh process
    that has imported tinylsm: the time of ``open()``, and the resident
    memory it added at its peak and after a collection, over the
    interpreter's after its imports.  None where /proc has neither figure."""
    if not (os.path.exists(_STATM) and os.path.exists(_STATUS)):
        return None
    out = _child(
        "import gc, time\n"
        "import tinylsm\n"
        "gc.collect()\n"
        "reset_peak()\n"
        "base = rss()\n"
        "t0 = time.perf_counter()\n"
        f"db = tinylsm.open({path!r})\n"
        "seconds = time.perf_counter() - t0\n"
        "peak = peak_rss() - base\n"
        "gc.collect()\n"
        "print(seconds, peak, rss() - base, len(db))\n"
        "db.close()\n")
    expect("keys after reopening in a fresh process", int(out[3]), n)
    return Reopen(float(out[0]), int(out[1]) / n, int(out[2]) / n)
