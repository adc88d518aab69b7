"""The ``sustained`` workload: many inserts one by one, each timed, into a
new store opened with the default ``Config()``, long enough for its log to
become an sstable (a rollover, in the background) several times; the
figures include whatever the inserts waited for meanwhile (a rollover's
switch, a write stall, the map growing).

The items are made here, CHUNK at a time between timed loops: distinct keys
in a scattered order (``(a * i + b) mod 256**K`` for i = 0, 1, ..., ``a``
odd and ``a``, ``b`` drawn from the run's seed: a bijection, so that no
key repeats) and the generated values, reused in turn.
"""
from __future__ import annotations

import gc
import math
import random
import time
from array import array
from collections import Counter
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Tuple


from .data import Data

#: An insert that takes longer than this is counted as a stall.
SLOW_NS = 10_000_000

#: Items made at a time, untimed, between timed loops.
CHUNK = 1 << 16

#: ``put(key, value)``: one insert, as the workload times it.
Put = Callable[[bytes, bytes], object]


class Sustained(NamedTuple):
    """What the timed inserts took."""

    rate: float  # inserts per second, the stalls included
    p50_us: float
    p99_us: float
    p999_us: float
    max_us: float
    slow: int  # inserts that took more than SLOW_NS
    inserts: int
    rollovers: Optional[int] = None  # tinylsm: times the log became an sstable
    sstables: Optional[int] = None  # tinylsm: sstables at the end
    merges: Optional[int] = None  # tinylsm: background merges done
    stalls: Optional[int] = None  # tinylsm: writes that waited for a rollover


#: The rows below the workload's own (throughput) row, each with the
#: ``Sustained`` field it shows.
SUBROW_FIELDS = (("sustained-p50", "p50_us"), ("sustained-p99", "p99_us"),
                 ("sustained-p999", "p999_us"), ("sustained-max", "max_us"),
                 ("sustained-slow", "slow"))


def chunks(data: Data, size: int = CHUNK) -> Iterator[List[Tuple[bytes, bytes]]]:
    """The workload's ``data.sustained_count`` items, ``size`` at a time."""
    k, values, n = data.key_size, data.values, data.n
    mask = 256 ** k - 1
    rng = random.Random(data.seed)
    a, b = rng.getrandbits(8 * k) | 1, rng.getrandbits(8 * k)
    for lo in range(0, data.sustained_count, size):
        hi = min(lo + size, data.sustained_count)
        yield [(((a * i + b) & mask).to_bytes(k, "big"), values[i % n]) for i in range(lo, hi)]


def _timed_loop(put: Put, items: Sequence[Tuple[bytes, bytes]], lat: "array[int]") -> int:
    """Nanoseconds of inserting ``items`` one by one, each insert's own
    time appended to ``lat``."""
    clock = time.perf_counter_ns
    append = lat.append
    start = clock()
    for k, v in items:
        t0 = clock()
        put(k, v)
        append(clock() - t0)
    return clock() - start


def quantiles(ns: "array[int]", qs: Sequence[float]) -> List[int]:
    """The nearest-rank ``qs`` quantiles of ``ns`` (as ``measure.percentile``),
    counted instead of sorted: millions of timings have few distinct values."""
    counts = Counter(ns)
    ranks = [max(1, math.ceil(q * len(ns))) for q in qs]
    out: List[int] = []
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        while len(out) < len(ranks) and seen >= ranks[len(out)]:
            out.append(value)
    return out


def measure(put: Put, data: Data) -> Sustained:
    """Time each of ``data.sustained_count`` inserts by ``put``."""
    lat = array("q")
    took = 0
    gc.collect()
    for items in chunks(data):
        took += _timed_loop(put, items, lat)
    p50, p99, p999, top = quantiles(lat, (0.50, 0.99, 0.999, 1.0))
    slow = sum(1 for t in lat if t > SLOW_NS)
    return Sustained(len(lat) / (took / 1e9), p50 / 1000, p99 / 1000, p999 / 1000,
                     top / 1000, slow, len(lat))
