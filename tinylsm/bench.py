"""Compare tinylsm with its peers on the same generated data, in one run.

``python -m tinylsm.bench`` (or ``tinylsm bench``) generates N random
distinct keys and values, runs every workload on tinylsm, a plain ``dict``,
``sqlite3`` and ``lmdb`` (when installed), and prints one table of rates with
tinylsm's ratio to each peer.  Files go to a temporary directory, removed
afterwards (``--dir`` chooses where it is made, hence the file system).

Rules that keep the comparison fair:

* every write workload ends with one durable commit: tinylsm ``flush()``,
  sqlite3 ``COMMIT`` (WAL journal, ``synchronous=FULL``), lmdb's write
  transaction commit (``sync=True``); ``dict`` has none;
* ``sync`` makes every single insert durable (insert + flush, autocommit,
  one transaction per put) and compares with the disk's own rate: append one
  log-frame-sized record to a file and fsync it;
* ``group-commit`` runs the same durable insert in 8 threads at once
  (GROUP_THREADS) on one store (tinylsm: one ``Lsm``; sqlite3: one
  connection per thread; lmdb: one write transaction per insert; disk: one
  file), taking turns with a single thread on the same store: the baseline
  its speed-up is measured against, in the same run;
* ``latency`` times each insert of one thread (``perf_counter_ns``) while
  ``compact()`` merges several sstables of overwritten data in another
  thread, and shows p50, p99 and max in microseconds (tinylsm only);
* ``reopen`` is the time until the store answers: tinylsm recovers every key
  into memory, sqlite3 and lmdb open their file and read one key;
* ``memory`` is the resident memory (RSS) per key that holding every key
  and value adds, measured in a fresh process (sqlite3 and lmdb keep their
  data in files and the page cache: not comparable, not shown).
"""
from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import math
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from itertools import islice
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import tinylsm

from . import _progress
from ._backend import codec
from .cli import size_arg

try:  # optional peer
    import lmdb  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    lmdb = None

#: Threads of the ``group-commit`` workload.
GROUP_THREADS = 8

#: workload -> (label, unit, higher is better)
WORKLOADS: Dict[str, Tuple[str, str, bool]] = {
    "insert": ("insert one by one", "ops/s", True),
    "batch": ("write_batch of N items", "items/s", True),
    "get": ("get, random order", "ops/s", True),
    "scan": ("full ordered scan", "items/s", True),
    "range": ("range queries", "queries/s", True),
    "reopen-log": ("reopen, data in log", "s", False),
    "reopen-sst": ("reopen, data in sstables", "s", False),
    "sync": ("insert + flush (fsync)", "ops/s", True),
    "group-commit": (f"group commit, {GROUP_THREADS} threads", "ops/s", True),
    "latency": ("insert during compact(), p99", "us", False),
    "memory": ("memory per key", "B/key", False),
    "disk": ("disk per key", "B/key", False),
}

#: Rows a workload shows besides its own ("" stands for its own), in order.
SUBROWS: Dict[str, Tuple[str, ...]] = {
    "group-commit": ("", "group-commit-1", "group-commit-x"),
    "latency": ("latency-p50", "", "latency-max", "latency-count"),
}

#: row -> (label, unit, higher is better), for the rows of SUBROWS
ROWS: Dict[str, Tuple[str, str, bool]] = {
    "group-commit-1": ("group commit, 1 thread (baseline)", "ops/s", True),
    "group-commit-x": (f"group commit, {GROUP_THREADS} threads / 1 thread", "x", True),
    "latency-p50": ("insert during compact(), p50", "us", False),
    "latency-max": ("insert during compact(), max", "us", False),
    "latency-count": ("inserts timed during compact()", "inserts", True),
}

#: Units shown without ratios: each engine's own figure (a speed-up, or
#: latencies of a workload that only tinylsm runs).
NO_RATIO_UNITS = ("us", "x", "inserts")

ENGINES = ("tinylsm", "dict", "sqlite3", "lmdb", "disk")

#: Seconds the ``sync`` workload may run per engine, whatever --sync-count
#: says; ``group-commit`` too (its 8-thread and 1-thread turns together).
SYNC_SECONDS = 0.5

#: The ``group-commit`` target: this many times the one-thread rate.
GROUP_TARGET = 3.0

#: The ``latency`` target: p99 below this many microseconds.
LATENCY_TARGET_US = 1000.0

#: ``latency`` writes every key this many times before compacting ...
LATENCY_PASSES = 3

#: ... through a log that becomes an sstable this many times per pass.
LATENCY_TABLES_PER_PASS = 4

EPILOG = """\
examples:
  %(prog)s                        1,000,000 keys of 8 bytes, values of 8 bytes
  %(prog)s -n 20000               a quick run (a few seconds)
  %(prog)s -n 100000 --key-size 16 --value-size 100 --workloads insert,get,scan
  %(prog)s --dir /mnt/ssd         put the files on another file system

workloads: """ + ", ".join(WORKLOADS) + """
ratios: (2.50x) after a peer's figure means tinylsm does 2.5 times better
(faster, or fewer bytes); below 1, the peer does better.
"""


class Data:
    """The generated keys and values, shared by every engine."""

    def __init__(self, n: int, key_size: int, value_size: int, seed: int,
                 range_queries: int, range_length: int, sync_count: int) -> None:
        rng = random.Random(seed)
        self.n, self.key_size, self.value_size = n, key_size, value_size
        self.keys = _distinct_keys(rng, n, key_size)
        blob = _randbytes(rng, value_size * n)
        self.values = [blob[i * value_size:(i + 1) * value_size] for i in range(n)]
        self.items = list(zip(self.keys, self.values))
        self.get_order = self.keys[:]
        rng.shuffle(self.get_order)
        self.range_starts = [rng.choice(self.keys) for _ in range(range_queries)]
        self.range_length = range_length
        self.sorted_keys = sorted(self.keys)
        self.range_items = sum(
            len(self.sorted_keys[i:i + range_length])
            for i in (bisect.bisect_left(self.sorted_keys, s) for s in self.range_starts)
        )
        self.sync_items = self.items[:sync_count]
        self.frame_size = codec.frame_size(key_size, value_size)


def _randbytes(rng: random.Random, n: int) -> bytes:
    """``rng.randbytes(n)`` for any n: one call is limited to 2**31 bits."""
    chunk = 1 << 26
    return b"".join(rng.randbytes(min(chunk, n - i)) for i in range(0, n, chunk))


def _distinct_keys(rng: random.Random, n: int, k: int) -> List[bytes]:
    space = 256 ** k
    if n > space:
        raise ValueError(f"-n {n}: only {space} distinct keys of {k} bytes exist")
    if space <= 4 * n:
        return [i.to_bytes(k, "big") for i in rng.sample(range(space), n)]
    seen: Dict[bytes, None] = {}
    while len(seen) < n:
        need = n - len(seen)
        blob = _randbytes(rng, k * need)
        for i in range(need):
            seen[blob[i * k:(i + 1) * k]] = None
    return list(seen)


def _timed(fn: Callable[[], object]) -> Tuple[float, object]:
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _expect(what: str, got: object, want: object) -> None:
    """A benchmark of a store that returns wrong answers measures nothing."""
    if got != want:
        raise RuntimeError(f"{what}: expected {want!r}, got {got!r}")


def _subscript_gets(name: str, store: Mapping[bytes, bytes], data: "Data") -> float:
    """ops/s of ``store[k]`` for every key, in the shared random order."""

    def run() -> int:
        found = 0
        for k in data.get_order:
            found += store[k] is not None
        return found

    t, found = _timed(run)
    _expect(f"{name} gets found", found, data.n)
    return data.n / t


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _, names in os.walk(path):
        for name in names:
            total += os.path.getsize(os.path.join(root, name))
    return total


#: What an engine's ``sync_open`` returns: a durable insert, and a close.
SyncPair = Tuple[Callable[[bytes, bytes], None], Callable[[], None]]


def rss() -> int:
    """This process's resident memory in bytes (Linux: ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _rss_per_key(code: str, n: int) -> Optional[float]:
    """Resident memory per key that ``code`` adds, measured in a fresh
    process (so nothing this run allocated counts): the RSS growth it prints,
    divided by ``n``.  None where /proc/self/statm does not exist."""
    if not os.path.exists("/proc/self/statm"):
        return None
    prelude = "from tinylsm.bench import rss\n"
    out = subprocess.run([sys.executable, "-c", prelude + code], check=True,
                         capture_output=True, text=True).stdout.split()
    _expect("keys held while measuring memory", int(out[1]), n)
    return int(out[0]) / n


def sync_interleaved(openers: Dict[str, Callable[[], SyncPair]],
                     items: Sequence[Tuple[bytes, bytes]]) -> Dict[str, float]:
    """ops/s of each engine's durable insert over ``items``.

    The engines take turns, a slice of the items each, so that they share
    the same moments of a disk whose speed drifts (other processes, the
    file system's own flushing): their ratios stay fair.  Stops after
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


#: What an engine's ``group_open(threads)`` returns: one durable insert per
#: thread (thread i calls only the i-th), and a close.
GroupOpen = Tuple[List[Callable[[bytes, bytes], None]], Callable[[], None]]


def group_phase(fns: Sequence[Callable[[bytes, bytes], None]],
                items: Sequence[Tuple[bytes, bytes]], count: int,
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


def group_interleaved(openers: Dict[str, Callable[[int], GroupOpen]],
                      items: Sequence[Tuple[bytes, bytes]], threads: int = GROUP_THREADS,
                      rounds: int = 5) -> Tuple[Dict[str, Tuple[float, float]], List[str]]:
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
            if name == "tinylsm":
                raise
            notes.append(f"{name} group-commit: failed: {exc!r}")
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
                    if name == "tinylsm":
                        raise
                    notes.append(f"{name} group-commit: failed: {exc!r}")
                    opened.pop(name)[1]()
                    del ops[name], spent[name]
    finally:
        for _, close in opened.values():
            close()
    rates = {name: (ops[name][0] / spent[name][0], ops[name][1] / spent[name][1])
             for name in ops if spent[name][0] > 0 and spent[name][1] > 0}
    return rates, notes


class Latency(NamedTuple):
    """Insert latencies of one thread while ``compact()`` ran in another."""

    p50_us: float
    p99_us: float
    max_us: float
    inserts: int  # inserts timed while the compaction ran
    compact_seconds: float  # how long compact() took
    sstables: int  # sstables it merged (the log's own flush included)
    records: int  # records they held


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of sorted values."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


# -- engines -----------------------------------------------------------------------
#
# Each engine has one method per workload it supports, returning the figure
# in the workload's unit; a missing method shows as "-".


class TinyLsmEngine:
    name = "tinylsm"

    def __init__(self, data: Data, root: str) -> None:
        self.d = data
        self.root = root
        self.loaded: Optional[tinylsm.Lsm] = None
        self.big_log = tinylsm.Config(max_log_length=(1 << 63) - 1)

    def _path(self, sub: str) -> str:
        return os.path.join(self.root, "tinylsm-" + sub)

    def _open(self, sub: str, config: Optional[tinylsm.Config] = None, **kw) -> tinylsm.Lsm:
        return tinylsm.open(self._path(sub), key_size=self.d.key_size,
                            value_size=self.d.value_size, config=config, **kw)

    def _store(self) -> tinylsm.Lsm:
        if self.loaded is None:
            db = self._open("loaded")
            db.write_batch(self.d.items)
            db.flush()
            self.loaded = db
        return self.loaded

    def _log_dir(self) -> str:
        """A closed store of all items, every one of them in the log."""
        path = self._path("log")
        if not os.path.exists(path):
            with self._open("log", self.big_log) as db:
                db.write_batch(self.d.items)
        return path

    def insert(self) -> float:
        db = self._open("insert")

        def run() -> None:
            for k, v in self.d.items:
                db[k] = v
            db.flush()

        t, _ = _timed(run)
        _expect("tinylsm keys after insert", len(db), self.d.n)
        if self.loaded is None:
            self.loaded = db
        else:
            db.close()
        return self.d.n / t

    def batch(self) -> float:
        if os.path.exists(self._path("log")):
            shutil.rmtree(self._path("log"))
        db = self._open("log", self.big_log)

        def run() -> None:
            db.write_batch(self.d.items)
            db.flush()

        t, _ = _timed(run)
        _expect("tinylsm keys after write_batch", len(db), self.d.n)
        db.close()
        return self.d.n / t

    def get(self) -> float:
        return _subscript_gets("tinylsm", self._store(), self.d)

    def scan(self) -> float:
        db = self._store()
        t, count = _timed(lambda: sum(1 for _ in db.items()))
        _expect("tinylsm scan items", count, self.d.n)
        return self.d.n / t

    def range(self) -> float:
        db = self._store()
        length = self.d.range_length

        def run() -> int:
            got = 0
            for start in self.d.range_starts:
                for _ in islice(db.range(start), length):
                    got += 1
            return got

        t, got = _timed(run)
        _expect("tinylsm range items", got, self.d.range_items)
        return len(self.d.range_starts) / t

    def reopen_log(self) -> float:
        path = self._log_dir()
        t, db = _timed(lambda: tinylsm.open(path, config=self.big_log))
        _expect("tinylsm keys after reopen", len(db), self.d.n)  # type: ignore[arg-type]
        db.close()  # type: ignore[union-attr]
        return t

    def _sst_dir(self) -> str:
        path = self._path("sst")
        if not os.path.exists(path):
            with self._open("sst") as db:
                db.write_batch(self.d.items)
                db.compact()  # the log becomes an sstable, merged into one
                _expect("tinylsm log after compact", db.stats().log_bytes, 0)
        return path

    def reopen_sst(self) -> float:
        path = self._sst_dir()
        t, db = _timed(lambda: tinylsm.open(path))
        _expect("tinylsm keys after reopen", len(db), self.d.n)  # type: ignore[arg-type]
        db.close()  # type: ignore[union-attr]
        return t

    def sync_open(self) -> SyncPair:
        db = self._open("sync")

        def one(k: bytes, v: bytes) -> None:
            db[k] = v
            db.flush()

        return one, db.close

    def group_open(self, threads: int) -> GroupOpen:
        db = self._open("group")  # one store, shared by every thread

        def one(k: bytes, v: bytes) -> None:
            db[k] = v
            db.flush()  # durable when it returns; concurrent flushes share fsyncs

        return [one] * threads, db.close

    #: ``latency``: no background merges, so that only compact() merges.
    NO_MERGE = {"max_space_amp": 255, "merge_window": 255}

    def _latency_dir(self) -> str:
        """A closed store that holds every key LATENCY_PASSES times over
        in about LATENCY_PASSES * LATENCY_TABLES_PER_PASS sstables (the last
        pass has the data's values), and a remainder in the log."""
        path = self._path("latency")
        shutil.rmtree(path, ignore_errors=True)
        d = self.d
        fill = tinylsm.Config(
            max_log_length=max(1, d.n * d.frame_size // LATENCY_TABLES_PER_PASS),
            **self.NO_MERGE)
        chunk = max(1, d.n // (5 * LATENCY_TABLES_PER_PASS))
        with self._open("latency", fill) as db:
            for p in range(LATENCY_PASSES):
                shift = LATENCY_PASSES - 1 - p  # 0: the data's own values
                values = d.values[shift:] + d.values[:shift]
                items = list(zip(d.keys, values))
                for i in range(0, d.n, chunk):
                    db.write_batch(items[i:i + chunk])
            _expect("tinylsm keys after the latency fill", len(db), d.n)
        return path

    def latency_during_compaction(self) -> Latency:
        """Times each insert of this thread while compact() runs in another
        (on a store refilled for each call), and reports the percentiles."""
        path = self._latency_dir()
        # no merge but the one compact() does, and no log flush but its own
        # (an insert that takes the log past max_log_length writes an
        # sstable itself: a stall of its own, not the compaction's)
        db = tinylsm.open(path, config=tinylsm.Config(
            max_log_length=self.big_log.max_log_length, **self.NO_MERGE))
        try:
            before = db.stats()
            items = self.d.items
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
            _expect("tinylsm keys after compact()", len(db), self.d.n)
        finally:
            db.close()
        ns = sorted(lat)
        log_table = 1 if before.log_bytes else 0
        return Latency(percentile(ns, 0.50) / 1000, percentile(ns, 0.99) / 1000,
                       ns[-1] / 1000, len(ns), took[0], before.sstables + log_table,
                       LATENCY_PASSES * self.d.n)

    def latency(self) -> float:
        """p99 in microseconds; the other figures go to ``last_latency``."""
        self.last_latency = self.latency_during_compaction()
        return self.last_latency.p99_us

    def memory(self) -> Optional[float]:
        path = self._log_dir()
        return _rss_per_key(
            "import tinylsm\n"
            "base = rss()\n"
            f"db = tinylsm.open({path!r}, readonly=True)\n"
            "print(rss() - base, len(db))\n",
            self.d.n,
        )

    def disk(self) -> float:
        return _dir_bytes(self._sst_dir()) / self.d.n

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None


class DictEngine:
    name = "dict"

    def __init__(self, data: Data, root: str) -> None:
        self.d = data
        self.loaded: Optional[dict] = None

    def _store(self) -> dict:
        if self.loaded is None:
            self.loaded = dict(self.d.items)
        return self.loaded

    def insert(self) -> float:
        store: dict = {}

        def run() -> None:
            for k, v in self.d.items:
                store[k] = v

        t, _ = _timed(run)
        self.loaded = store
        return self.d.n / t

    def batch(self) -> float:
        store: dict = {}
        t, _ = _timed(lambda: store.update(self.d.items))
        _expect("dict keys", len(store), self.d.n)
        return self.d.n / t

    def get(self) -> float:
        return _subscript_gets("dict", self._store(), self.d)

    def scan(self) -> float:
        store = self._store()
        t, count = _timed(lambda: sum(1 for k in sorted(store) if store[k] is not None))
        _expect("dict scan items", count, self.d.n)
        return self.d.n / t

    def range(self) -> float:
        store = self._store()
        keys = sorted(store)  # built beforehand, not timed
        length = self.d.range_length

        def run() -> int:
            got = 0
            for start in self.d.range_starts:
                i = bisect.bisect_left(keys, start)
                for k in keys[i:i + length]:
                    got += store[k] is not None
            return got

        t, got = _timed(run)
        _expect("dict range items", got, self.d.range_items)
        return len(self.d.range_starts) / t

    def memory(self) -> Optional[float]:
        k, v, n = self.d.key_size, self.d.value_size, self.d.n
        # fresh key and value objects, as a store that owns its data has
        return _rss_per_key(
            "import random\n"
            "rng = random.Random(1)\n"
            "base = rss()\n"
            "d = {}\n"
            f"while len(d) < {n}:\n"
            f"    d[rng.randbytes({k})] = rng.randbytes({v})\n"
            "print(rss() - base, len(d))\n",
            n,
        )

    def close(self) -> None:
        self.loaded = None


class SqliteEngine:
    name = "sqlite3"
    SELECT = "SELECT v FROM kv WHERE k = ?"

    def __init__(self, data: Data, root: str) -> None:
        self.d = data
        self.root = root
        self.loaded: Optional[sqlite3.Connection] = None

    def _path(self, sub: str) -> str:
        return os.path.join(self.root, f"sqlite-{sub}.db")

    def _connect(self, sub: str, **kw) -> sqlite3.Connection:
        con = sqlite3.connect(self._path(sub), isolation_level=None, **kw)  # explicit BEGIN
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB NOT NULL)"
                    " WITHOUT ROWID")
        return con

    def _fill(self, con: sqlite3.Connection) -> None:
        con.execute("BEGIN")
        con.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", self.d.items)
        con.execute("COMMIT")

    def _store(self) -> sqlite3.Connection:
        if self.loaded is None:
            self.loaded = self._connect("loaded")
            self._fill(self.loaded)
        return self.loaded

    def _full_file(self) -> str:
        path = self._path("batch")
        if not os.path.exists(path):
            con = self._connect("batch")
            self._fill(con)
            con.close()
        return path

    def insert(self) -> float:
        con = self._connect("insert")

        def run() -> None:
            execute = con.execute
            execute("BEGIN")
            for item in self.d.items:
                execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", item)
            execute("COMMIT")

        t, _ = _timed(run)
        if self.loaded is None:
            self.loaded = con
        else:
            con.close()
        return self.d.n / t

    def batch(self) -> float:
        path = self._path("batch")
        if os.path.exists(path):
            os.unlink(path)
        con = self._connect("batch")
        t, _ = _timed(lambda: self._fill(con))
        _expect("sqlite3 rows", con.execute("SELECT count(*) FROM kv").fetchone()[0], self.d.n)
        con.close()
        return self.d.n / t

    def get(self) -> float:
        con = self._store()

        def run() -> int:
            execute = con.execute
            found = 0
            for k in self.d.get_order:
                found += execute(self.SELECT, (k,)).fetchone() is not None
            return found

        t, found = _timed(run)
        _expect("sqlite3 gets found", found, self.d.n)
        return self.d.n / t

    def scan(self) -> float:
        con = self._store()
        t, count = _timed(
            lambda: sum(1 for _ in con.execute("SELECT k, v FROM kv ORDER BY k")))
        _expect("sqlite3 scan rows", count, self.d.n)
        return self.d.n / t

    def range(self) -> float:
        con = self._store()
        sql = "SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?"
        length = self.d.range_length

        def run() -> int:
            execute = con.execute
            return sum(len(execute(sql, (s, length)).fetchall()) for s in self.d.range_starts)

        t, got = _timed(run)
        _expect("sqlite3 range rows", got, self.d.range_items)
        return len(self.d.range_starts) / t

    def _reopen(self) -> float:
        path = self._full_file()
        key = self.d.keys[0]

        def run() -> sqlite3.Connection:
            con = sqlite3.connect(path, isolation_level=None)
            _expect("sqlite3 get after reopen", con.execute(self.SELECT, (key,)).fetchone(),
                    (self.d.values[0],))
            return con

        t, con = _timed(run)
        con.close()  # type: ignore[union-attr]
        return t

    reopen_log = reopen_sst = _reopen

    def sync_open(self) -> SyncPair:
        con = self._connect("sync")  # autocommit: every INSERT commits and fsyncs

        def one(k: bytes, v: bytes) -> None:
            con.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (k, v))

        return one, con.close

    def group_open(self, threads: int) -> GroupOpen:
        # the first creates the table before the others connect
        cons = [self._connect("group", check_same_thread=False, timeout=60)]
        for _ in range(threads - 1):
            con = sqlite3.connect(self._path("group"), isolation_level=None,
                                  check_same_thread=False, timeout=60)
            con.execute("PRAGMA synchronous=FULL")  # per connection; WAL is per file
            cons.append(con)
        sql = "INSERT OR REPLACE INTO kv VALUES (?, ?)"

        def for_thread(con: sqlite3.Connection) -> Callable[[bytes, bytes], None]:
            def one(k: bytes, v: bytes) -> None:
                con.execute(sql, (k, v))  # autocommit: each INSERT commits and fsyncs
            return one

        def close() -> None:
            for con in cons:
                con.close()

        return [for_thread(con) for con in cons], close

    def disk(self) -> float:
        path = self._full_file()
        size = sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))
        return size / self.d.n

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None


class LmdbEngine:
    name = "lmdb"

    def __init__(self, data: Data, root: str) -> None:
        self.d = data
        self.root = root
        self.loaded = None
        self.map_size = max(1 << 30, 8 * data.n * (data.key_size + data.value_size + 64))

    def _open(self, sub: str):
        return lmdb.open(os.path.join(self.root, "lmdb-" + sub), map_size=self.map_size,
                         sync=True, metasync=True)

    def _fill(self, env) -> None:
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(self.d.items)

    def _store(self):
        if self.loaded is None:
            self.loaded = self._open("loaded")
            self._fill(self.loaded)
        return self.loaded

    def _full_dir(self) -> str:
        path = os.path.join(self.root, "lmdb-batch")
        if not os.path.exists(path):
            env = self._open("batch")
            self._fill(env)
            env.close()
        return path

    def insert(self) -> float:
        env = self._open("insert")

        def run() -> None:
            with env.begin(write=True) as txn:
                put = txn.put
                for k, v in self.d.items:
                    put(k, v)

        t, _ = _timed(run)
        if self.loaded is None:
            self.loaded = env
        else:
            env.close()
        return self.d.n / t

    def batch(self) -> float:
        shutil.rmtree(os.path.join(self.root, "lmdb-batch"), ignore_errors=True)
        env = self._open("batch")
        t, _ = _timed(lambda: self._fill(env))
        _expect("lmdb entries", env.stat()["entries"], self.d.n)
        env.close()
        return self.d.n / t

    def get(self) -> float:
        env = self._store()

        def run() -> int:
            found = 0
            with env.begin() as txn:
                get = txn.get
                for k in self.d.get_order:
                    found += get(k) is not None
            return found

        t, found = _timed(run)
        _expect("lmdb gets found", found, self.d.n)
        return self.d.n / t

    def scan(self) -> float:
        env = self._store()

        def run() -> int:
            with env.begin() as txn:
                return sum(1 for _ in txn.cursor())

        t, count = _timed(run)
        _expect("lmdb scan items", count, self.d.n)
        return self.d.n / t

    def range(self) -> float:
        env = self._store()
        length = self.d.range_length

        def run() -> int:
            got = 0
            with env.begin() as txn:
                cur = txn.cursor()
                for s in self.d.range_starts:
                    if cur.set_range(s):
                        got += sum(1 for _ in islice(cur.iternext(), length))
            return got

        t, got = _timed(run)
        _expect("lmdb range items", got, self.d.range_items)
        return len(self.d.range_starts) / t

    def _reopen(self) -> float:
        path = self._full_dir()
        key = self.d.keys[0]

        def run():
            env = lmdb.open(path, map_size=self.map_size)
            with env.begin() as txn:
                _expect("lmdb get after reopen", txn.get(key), self.d.values[0])
            return env

        t, env = _timed(run)
        env.close()
        return t

    reopen_log = reopen_sst = _reopen

    def sync_open(self) -> SyncPair:
        env = self._open("sync")

        def one(k: bytes, v: bytes) -> None:
            with env.begin(write=True) as txn:  # the commit fsyncs (sync=True)
                txn.put(k, v)

        return one, env.close

    def group_open(self, threads: int) -> GroupOpen:
        env = self._open("group")

        def one(k: bytes, v: bytes) -> None:
            with env.begin(write=True) as txn:  # one writer at a time; each commit fsyncs
                txn.put(k, v)

        return [one] * threads, env.close

    def disk(self) -> float:
        path = self._full_dir()
        env = lmdb.open(path, map_size=self.map_size, readonly=True)
        try:
            info, stat = env.info(), env.stat()
            used = (info["last_pgno"] + 1) * stat["psize"]
        finally:
            env.close()
        return used / self.d.n

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded.close()
            self.loaded = None


class DiskEngine:
    """The file system itself: append one log frame and fsync, nothing else."""

    name = "disk"

    def __init__(self, data: Data, root: str) -> None:
        self.d = data
        self.root = root

    def sync_open(self) -> SyncPair:
        path = os.path.join(self.root, "disk-append")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        record = bytes(self.d.frame_size)

        def one(k: bytes, v: bytes) -> None:
            os.write(fd, record)
            os.fsync(fd)

        return one, lambda: os.close(fd)

    def group_open(self, threads: int) -> GroupOpen:
        """Every thread appends to one file and fsyncs it: what the kernel
        alone makes of concurrent fsyncs."""
        path = os.path.join(self.root, "disk-group")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        record = bytes(self.d.frame_size)

        def one(k: bytes, v: bytes) -> None:
            os.write(fd, record)
            os.fsync(fd)

        return [one] * threads, lambda: os.close(fd)

    def close(self) -> None:
        pass


ENGINE_CLASSES = {"tinylsm": TinyLsmEngine, "dict": DictEngine, "sqlite3": SqliteEngine,
                  "lmdb": LmdbEngine, "disk": DiskEngine}


# -- the table ---------------------------------------------------------------------------


def _fmt(value: Optional[float], unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "B/key":
        return f"{value:.1f} B"
    if unit == "us":
        return f"{value:,.1f}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "inserts":
        return f"{value:,.0f}"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _fmt_ratio(r: float) -> str:
    if r >= 100:
        return f"{r:.0f}x"
    return f"{r:.2f}x" if r >= 1 else f"{r:#.2g}x"


def ratio(tiny: float, peer: float, higher_is_better: bool) -> float:
    """How many times better tinylsm does than ``peer`` (above 1: better)."""
    if higher_is_better:
        return tiny / peer if peer else float("inf")
    return peer / tiny if tiny else float("inf")


def render(results: Dict[str, Dict[str, Optional[float]]], engines: Sequence[str],
           labels: Dict[str, str]) -> List[str]:
    """The table: one row per workload, tinylsm first, then each peer with
    tinylsm's ratio to it."""
    head = ["workload", "unit", *engines]
    rows = [head]
    for name in results:
        if name in ROWS:
            continue  # shown with its workload
        for sub in SUBROWS.get(name, ("",)):
            key = sub or name
            per_engine = results.get(key, {})
            label, unit, higher = ROWS[key] if sub else WORKLOADS[name]
            row = [labels.get(key, label), unit]
            tiny = per_engine.get("tinylsm")
            for engine in engines:
                value = per_engine.get(engine)
                cell = _fmt(value, unit)
                if (engine != "tinylsm" and value is not None and tiny is not None
                        and unit not in NO_RATIO_UNITS):
                    cell += f" ({_fmt_ratio(ratio(tiny, value, higher))})"
                row.append(cell)
            rows.append(row)
    return layout(rows)


def layout(rows: Sequence[Sequence[str]]) -> List[str]:
    """Text lines of a table whose first row is the header: the first two
    columns (workload, unit) left-aligned, the figures right-aligned, a rule
    under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [c.rjust(w) for c, w in zip(row[2:], widths[2:])]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def _file_system(path: str) -> str:
    """The type of the file system holding ``path`` (Linux), or ''."""
    try:
        with open("/proc/mounts") as f:
            mounts = [line.split()[1:3] for line in f]
    except OSError:
        return ""
    path = os.path.realpath(path)
    best = ("", "")
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best[0]):
            best = (point, fstype)
    return best[1]


# -- command line ------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _names(choices: Sequence[str], what: str) -> Callable[[str], List[str]]:
    def parse(text: str) -> List[str]:
        names = [w.strip() for w in text.split(",") if w.strip()]
        if names == ["all"]:
            return list(choices)
        bad = [w for w in names if w not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad) or repr(text)}; choose from {', '.join(choices)}")
        return names
    return parse


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    from .cli import ArgumentParser  # one-line usage errors, as the tinylsm command

    p = ArgumentParser(
        prog=prog,
        description="Run tinylsm and its peers (dict, sqlite3, and lmdb when installed) "
                    "on the same generated data and print rates and ratios.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-n", "--count", type=_positive, default=1_000_000, metavar="N",
                   help="number of keys (default 1,000,000)")
    p.add_argument("--key-size", type=_positive, default=8, metavar="K",
                   help="key size in bytes (default 8)")
    p.add_argument("--value-size", type=size_arg, default=8, metavar="V",
                   help="value size in bytes (default 8)")
    p.add_argument("--workloads", type=_names(list(WORKLOADS), "workload"),
                   default=list(WORKLOADS), metavar="LIST",
                   help="comma-separated workloads to run (default all)")
    p.add_argument("--engines", type=_names(ENGINES, "engine"), default=list(ENGINES),
                   metavar="LIST",
                   help="comma-separated stores to run: " + ", ".join(ENGINES)
                   + " (default all; tinylsm always runs)")
    p.add_argument("--dir", metavar="DIR",
                   help="make the temporary directory inside DIR (default: the system's)")
    p.add_argument("--range-queries", type=_positive, default=10_000, metavar="Q",
                   help="range queries to run (default 10,000)")
    p.add_argument("--range-length", type=_positive, default=100, metavar="L",
                   help="items per range query (default 100)")
    p.add_argument("--sync-count", type=_positive, default=2000, metavar="S",
                   help="inserts in the insert+flush workload (default 2000; it stops "
                        f"after {SYNC_SECONDS:g} s per store anyway)")
    p.add_argument("--seed", type=int, default=1, help="seed of the generated data")
    return p


def run(args: argparse.Namespace, out=None) -> int:
    out = out or sys.stdout
    engines = ["tinylsm"] + [e for e in args.engines if e != "tinylsm"]
    notes: List[str] = []
    if "lmdb" in engines and lmdb is None:
        engines.remove("lmdb")
        notes.append("lmdb: not installed (pip install lmdb), skipped")
    workloads = list(args.workloads)
    if "disk" in engines and not {"sync", "group-commit"} & set(workloads):
        engines.remove("disk")

    root = tempfile.mkdtemp(prefix="tinylsm-bench-", dir=args.dir)
    try:
        bar = _progress.bar(desc="generating data", unit="step")
        data = Data(args.count, args.key_size, args.value_size, args.seed,
                    args.range_queries, args.range_length, min(args.sync_count, args.count))
        if "lmdb" in engines:
            probe = lmdb.open(os.path.join(root, "lmdb-probe"))
            lmdb_max = probe.max_key_size()
            probe.close()
            if args.key_size > lmdb_max:
                engines.remove("lmdb")
                notes.append(f"lmdb: keys of {args.key_size} bytes exceed its limit "
                             f"of {lmdb_max}, skipped")
        fs = _file_system(root)
        print(f"tinylsm {tinylsm.__version__} (codec: {tinylsm.BACKEND}) on Python "
              f"{platform.python_version()}, {platform.system()} {platform.machine()}",
              file=out)
        print(f"{args.count:,} keys of {args.key_size} B, values of {args.value_size} B, "
              f"in {root}" + (f" ({fs})" if fs else ""), file=out)
        print(file=out)

        instances = {e: ENGINE_CLASSES[e](data, root) for e in engines}
        steps: List[Tuple[str, str]] = []
        for w in workloads:
            if w in ("sync", "group-commit"):  # all engines together, see sync_interleaved
                steps.append((w, "all"))
            else:
                steps += [(w, e) for e in engines if hasattr(instances[e], w.replace("-", "_"))]
        bar.close()
        bar = _progress.bar(total=len(steps), desc="bench", unit="step")
        results: Dict[str, Dict[str, Optional[float]]] = {w: {} for w in workloads}
        try:
            for workload, engine in steps:
                bar.set_description_str(f"{workload} {engine}")
                if workload == "sync":
                    openers = {e: inst.sync_open for e, inst in instances.items()
                               if hasattr(inst, "sync_open")}
                    results["sync"] = dict(sync_interleaved(openers, data.sync_items))
                    bar.update()
                    continue
                if workload == "group-commit":
                    openers = {e: inst.group_open for e, inst in instances.items()
                               if hasattr(inst, "group_open")}
                    rates, failed = group_interleaved(openers, data.sync_items)
                    notes.extend(failed)
                    results["group-commit"] = {e: r[0] for e, r in rates.items()}
                    results["group-commit-1"] = {e: r[1] for e, r in rates.items()}
                    results["group-commit-x"] = {e: r[0] / r[1] for e, r in rates.items()}
                    bar.update()
                    continue
                method = getattr(instances[engine], workload.replace("-", "_"))
                if engine == "tinylsm":
                    results[workload][engine] = method()
                    if workload == "latency":
                        lat = instances[engine].last_latency
                        results["latency-p50"] = {engine: lat.p50_us}
                        results["latency-max"] = {engine: lat.max_us}
                        results["latency-count"] = {engine: lat.inserts}
                else:
                    try:
                        results[workload][engine] = method()
                    except Exception as exc:  # a peer's failure must not hide the rest
                        notes.append(f"{engine} {workload}: failed: {exc!r}")
                bar.update()
        finally:
            bar.close()
            for inst in instances.values():
                inst.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    labels = {
        "batch": f"write_batch of {args.count:,}",
        "range": f"range queries ({args.range_length} items)",
    }
    shown = [e for e in engines if any(e in r for r in results.values())]
    for line in render(results, shown, labels):
        print(line, file=out)
    print(file=out)
    present = set(results) - set(ROWS)
    print("(N.NNx) after a peer's figure: tinylsm's ratio to it, above 1 when tinylsm "
          "is faster or smaller.", file=out)
    commits = {"tinylsm": "tinylsm flush()", "sqlite3": "sqlite3 COMMIT (WAL, "
               "synchronous=FULL)", "lmdb": "lmdb commit (sync=True)"}
    if present & {"insert", "batch"}:
        print("writes end with one fsynced commit: "
              + ", ".join(commits[e] for e in shown if e in commits) + ".", file=out)
    if "dict" in shown and present & {"scan", "range"}:
        print("dict: scan sorts the keys; range bisects a key list sorted beforehand "
              "(not timed).", file=out)
    if present & {"reopen-log", "reopen-sst"}:
        peers = [e for e in shown if e in ("sqlite3", "lmdb")]
        print("reopen: tinylsm recovers every key into memory"
              + (f"; {' and '.join(peers)} open the file and read one key." if peers
                 else "."), file=out)
    if "sync" in present:
        print(f"sync: the stores take turns over {len(data.sync_items):,} inserts at most "
              f"({SYNC_SECONDS:g} s per store at most); disk = os.write + os.fsync of one "
              f"{data.frame_size}-byte frame.", file=out)
    if "group-commit" in present:
        print(f"group commit: {GROUP_THREADS} threads insert + commit durably at once on one "
              "store (sqlite3: a connection each; lmdb: a write transaction per insert; "
              "disk: os.write + os.fsync on one file), taking turns with 1 thread on the same "
              f"store, {len(data.sync_items):,} inserts per thread at most ({SYNC_SECONDS:g} s "
              "per store at most).", file=out)
        scaling = results.get("group-commit-x", {}).get("tinylsm")
        if scaling is not None:
            verdict = "met" if scaling >= GROUP_TARGET else "MISSED"
            print(f"group commit: tinylsm with {GROUP_THREADS} threads does {scaling:.2f}x its "
                  f"1-thread rate (target >= {GROUP_TARGET:g}x: {verdict}).", file=out)
    if "latency" in present and hasattr(instances.get("tinylsm"), "last_latency"):
        lat = instances["tinylsm"].last_latency
        verdict = "met" if lat.p99_us < LATENCY_TARGET_US else "MISSED"
        print(f"latency: one thread timed each insert (perf_counter_ns) while compact() merged "
              f"{lat.sstables} sstables of {lat.records:,} records ({args.count:,} keys written "
              f"{LATENCY_PASSES} times) in another thread, for {lat.compact_seconds:.2f} s; "
              f"p99 {lat.p99_us:,.1f} us (target < {LATENCY_TARGET_US / 1000:g} ms: {verdict}).",
              file=out)
    if "memory" in present:
        print("memory: resident memory (RSS) per key added by holding every key and "
              "value, measured in a fresh process.", file=out)
    if "disk" in present:
        print("disk: file bytes per key after loading (tinylsm: after compact()).",
              file=out)
    for note in notes:
        print(note, file=out)
    return 0


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Run the comparison; returns the exit status (2 for bad arguments)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
        if args.count > 256 ** args.key_size:
            parser.error(f"-n {args.count}: only {256 ** args.key_size:,} distinct keys of "
                         f"{args.key_size} bytes exist")
        if args.dir is not None and not os.path.isdir(args.dir):
            parser.error(f"--dir {args.dir}: no such directory")
        codec.frame_size(args.key_size, args.value_size)
    except ValueError as exc:  # sizes tinylsm refuses
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, or a usage error (status 2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return run(args)
    except (ValueError, OSError, tinylsm.Error) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main(prog="python -m tinylsm.bench"))
