"""The ``latency`` workload (tinylsm only): how long each insert of one
thread takes while ``compact()`` merges several sstables in another."""
from __future__ import annotations

import gc
import shutil
import threading
import time
from array import array
from typing import List, NamedTuple

import tinylsm

from .data import Data
from .measure import expect, percentile

#: The store is refilled with every key this many times over ...
LATENCY_PASSES = 3

#: ... through a log that becomes an sstable this many times per pass.
LATENCY_TABLES_PER_PASS = 4

#: No background merges, so that only compact() merges.
NO_MERGE = {"max_space_amp": 255, "merge_window": 255}


class Latency(NamedTuple):
    """Insert latencies of one thread while ``compact()`` ran in another."""

    p50_us: float
    p99_us: float
    max_us: float
    inserts: int  # inserts timed while the compaction ran
    compact_seconds: float  # how long compact() took
    sstables: int  # sstables it merged (the log's own flush included)
    records: int  # records they held


def fill(path: str, data: Data) -> None:
    """Make at ``path`` (afresh) a closed store that holds every key
    LATENCY_PASSES times over in about LATENCY_PASSES *
    LATENCY_TABLES_PER_PASS sstables (the last pass has the data's values),
    and a remainder in the log."""
    shutil.rmtree(path, ignore_errors=True)
    d = data
    config = tinylsm.Config(
        max_log_length=max(1, d.n * d.frame_size // LATENCY_TABLES_PER_PASS), **NO_MERGE)
    chunk = max(1, d.n // (5 * LATENCY_TABLES_PER_PASS))
    with tinylsm.open(path, key_size=d.key_size, value_size=d.value_size,
                      config=config) as db:
        for p in range(LATENCY_PASSES):
            shift = LATENCY_PASSES - 1 - p  # 0: the data's own values
            values = d.values[shift:] + d.values[:shift]
            items = list(zip(d.keys, values))
            for i in range(0, d.n, chunk):
                db.write_batch(items[i:i + chunk])
        expect("tinylsm keys after the latency fill", len(db), d.n)


def during_compaction(path: str, data: Data, max_log_length: int) -> Latency:
    """Times each insert of this thread into the store ``fill`` made at
    ``path`` while compact() runs in another, and reports the percentiles.
    ``max_log_length`` must keep the log from becoming an sstable during
    the inserts: that would be a stall of its own, not the compaction's."""
    # no merge but the one compact() does, and no log flush but its own
    db = tinylsm.open(path, config=tinylsm.Config(max_log_length=max_log_length, **NO_MERGE))
    try:
        before = db.stats()
        items = data.items
        size = len(items)
        lat = array("q")
        append = lat.append
        clock = time.perf_counter_ns
        took = [0.0]
        failed: List[BaseException] = []

        def compact() -> None:
            t0 = time.perf_counter()
            try:
                db.compact()
            except BaseException as exc:  # raised below
                failed.append(exc)
            took[0] = time.perf_counter() - t0

        compactor = threading.Thread(target=compact, name="bench-compact")
        gc.collect()
        compactor.start()
        i = 0
        while True:  # at least one insert, however short the compaction
            k, v = items[i % size]
            t0 = clock()
            db[k] = v
            append(clock() - t0)
            i += 1
            if not compactor.is_alive():
                break
        compactor.join()
        if failed:
            raise failed[0]
        expect("tinylsm keys after compact()", len(db), data.n)
    finally:
        db.close()
    ns = sorted(lat)
    log_table = 1 if before.log_bytes else 0
    return Latency(percentile(ns, 0.50) / 1000, percentile(ns, 0.99) / 1000,
                   ns[-1] / 1000, len(ns), took[0], before.sstables + log_table,
                   LATENCY_PASSES * data.n)
