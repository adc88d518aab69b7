"""The durable-write workloads, ``sync`` and ``group-commit``: every engine's
durable insert, the engines taking turns so that they share the same
moments of a disk whose speed drifts (other processes, the file system's own
flushing), which keeps their ratios fair.
"""
from __future__ import annotations

import gc
import itertools
import math
import threading
import time
from typing import Callable, Dict, List, Sequence, Tuple

from .measure import tolerate

#: Threads of the ``group-commit`` workload.
GROUP_THREADS = 8

#: Seconds the ``sync`` workload may run per engine, whatever --sync-count
#: says; ``group-commit`` too (its 8-thread and 1-thread turns together).
SYNC_SECONDS = 0.5

#: One durable insert: it returns once the item is on disk.
Insert = Callable[[bytes, bytes], None]

#: What an engine's ``sync_open`` returns: a durable insert, and a close.
SyncPair = Tuple[Insert, Callable[[], None]]

#: What an engine's ``group_open(threads)`` returns: one durable insert per
#: thread (thread i calls only the i-th), and a close.
GroupOpen = Tuple[List[Insert], Callable[[], None]]

Items = Sequence[Tuple[bytes, bytes]]


def sync_interleaved(openers: Dict[str, Callable[[], SyncPair]],
                     items: Items) -> Dict[str, float]:
    """ops/s of each engine's durable insert over ``items``.

    The engines take turns, a slice of the items each; stops after
    SYNC_SECONDS per engine in total.
    """
    pairs = {name: opener() for name, opener in openers.items()}
    spent = dict.fromkeys(pairs, 0.0)
    done = dict.fromkeys(pairs, 0)
    chunk = max(1, len(items) // 20)
    budget = SYNC_SECONDS * len(pairs)
    gc.collect()
    try:
        for start in range(0, len(items), chunk):
            part = items[start:start + chunk]
            for name, (one, _) in pairs.items():
                t0 = time.perf_counter()
                for k, v in part:
                    one(k, v)
                spent[name] += time.perf_counter() - t0
                done[name] += len(part)
            if sum(spent.values()) > budget:
                break
    finally:
        for _, close in pairs.values():
            close()
    return {name: done[name] / spent[name] for name in pairs if spent[name] > 0}


def group_phase(fns: Sequence[Insert], items: Items, count: int,
                seconds: float, start: int = 0) -> Tuple[int, float]:
    """Run ``len(fns)`` threads at once, thread i calling ``fns[i](k, v)``;
    together they take ``count`` items from ``items[start:]`` (wrapping
    around), and stop early after ``seconds``.  Returns (inserts done,
    seconds from the common start until the last thread finished).  The
    first error of any thread is raised once all have stopped."""
    nxt = itertools.count(start)  # shared: next() is atomic under the GIL
    end = start + count
    size = len(items)
    done = [0] * len(fns)
    errors: List[BaseException] = []
    barrier = threading.Barrier(len(fns) + 1)
    deadline = [0.0]

    def work(i: int) -> None:
        one, n = fns[i], 0
        try:
            barrier.wait()
            stop = deadline[0]
            clock = time.perf_counter
            while True:
                j = next(nxt)
                if j >= end or clock() > stop:
                    break
                k, v = items[j % size]
                one(k, v)
                n += 1
        except BaseException as exc:  # raised by the caller
            errors.append(exc)
            barrier.abort()
        done[i] = n

    workers = [threading.Thread(target=work, args=(i,), name=f"bench-group-{i}")
               for i in range(len(fns))]
    for w in workers:
        w.start()
    deadline[0] = time.perf_counter() + seconds
    try:
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return sum(done), elapsed


def group_interleaved(openers: Dict[str, Callable[[int], GroupOpen]], items: Items,
                      threads: int = GROUP_THREADS, rounds: int = 5,
                      ) -> Tuple[Dict[str, Tuple[float, float]], List[str]]:
    """ops/s of each engine's durable insert run by ``threads`` threads at
    once on one store, and by one thread on the same store: returns
    ({engine: (threads rate, one-thread rate)}, notes of failed peers).

    Each engine does ``rounds`` turns of (one thread, then ``threads``
    threads), each turn over ``len(items) / rounds`` inserts per thread at
    most and SYNC_SECONDS / (2 * rounds) seconds at most, and the engines
    take turns too (see sync_interleaved).  Failures of tinylsm raise; a
    peer's failure leaves it out and is noted.
    """
    notes: List[str] = []
    opened: Dict[str, GroupOpen] = {}
    for name, opener in openers.items():
        try:
            opened[name] = opener(threads)
        except Exception as exc:
            tolerate(name, "group-commit", exc, notes)
    per_thread = max(1, math.ceil(len(items) / rounds))
    turn_seconds = SYNC_SECONDS / (2 * rounds)
    ops = {name: [0, 0] for name in opened}  # [threads, one thread]
    spent = {name: [0.0, 0.0] for name in opened}
    gc.collect()
    try:
        for r in range(rounds):
            for name in list(opened):
                fns, _ = opened[name]
                try:
                    for mode, use in ((1, fns[:1]), (0, fns)):
                        count = per_thread * len(use)
                        n, t = group_phase(use, items, count, turn_seconds, r * count)
                        ops[name][mode] += n
                        spent[name][mode] += t
                except Exception as exc:
                    tolerate(name, "group-commit", exc, notes)
                    opened.pop(name)[1]()
                    del ops[name], spent[name]
    finally:
        for _, close in opened.values():
            close()
    rates = {name: (ops[name][0] / spent[name][0], ops[name][1] / spent[name][1])
             for name in ops if spent[name][0] > 0 and spent[name][1] > 0}
    return rates, notes
