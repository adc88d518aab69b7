"""How a figure is taken: time one call, check the store's answers, keep a
peer's failure from hiding the other figures, and a percentile."""
from __future__ import annotations

import gc
import math
import os
import time
from typing import Callable, List, Sequence, Tuple, TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> Tuple[float, T]:
    """(seconds, result) of ``fn()``, after a garbage collection so that
    the previous workload's garbage is not collected on this one's time."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def expect(what: str, got: object, want: object) -> None:
    """Raise unless ``got == want``: a benchmark of a store that returns
    wrong answers measures nothing."""
    if got != want:
        raise RuntimeError(f"{what}: expected {want!r}, got {got!r}")


def checked_rate(what: str, fn: Callable[[], object], want: object, count: int) -> float:
    """``count`` per second of ``fn()``, whose result must be ``want``."""
    t, got = timed(fn)
    expect(what, got, want)
    return count / t


def tolerate(engine: str, what: str, exc: Exception, notes: List[str]) -> None:
    """Called while handling ``exc``, which ``engine`` raised doing ``what``:
    a peer's failure becomes a note, so that it does not hide the other
    figures; tinylsm's own failure is raised, since it is the one measured."""
    if engine == "tinylsm":
        raise exc
    notes.append(f"{engine} {what}: failed: {exc!r}")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of sorted values."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def dir_bytes(path: str) -> int:
    """Bytes of every file below ``path``."""
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
    return total
