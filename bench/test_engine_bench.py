"""tinylsm against dict, sqlite3 and lmdb, workload by workload, on the same data.

The workloads are those of ``python -m tinylsm.bench`` (``tinylsm bench``),
run through its own ``Data`` and engine classes (``tinylsm.bench.data``,
``tinylsm.bench.engines``), so both measure exactly the same code: insert one by one; write_batch of N; write_packed of N packed records (tinylsm); get in random order; get_many of
every key, 1,000 keys a call (tinylsm, dict); full ordered scan; full export of packed records (tinylsm, with its ratio to the scan); 10,000 range queries of 100 items; reopen with the data in the
log and in sstables (tinylsm only); insert + flush; group commit (8 threads,
with a 1-thread baseline); memory per key; insert latency while compact()
runs (tinylsm only); sustained inserts, each timed, crossing the default
log limit several times (``TINYLSM_BENCH_SUSTAINED`` inserts, default 6 per
key: 6,000,000; tinylsm, dict, lmdb).  Each benchmark group is one workload, each
parametrized over the engines; a store that cannot run a workload is
skipped with the reason.

Run it once per codec mode, since ``TINYLSM_PUREPYTHON`` picks the codec
and the map when tinylsm is imported (``extra_info["backend"]`` records
which one ran)::

    pytest bench/test_engine_bench.py
    TINYLSM_PUREPYTHON=1 pytest bench/test_engine_bench.py

(or ``pytest bench/`` and ``TINYLSM_PUREPYTHON=1 pytest bench/`` for every
benchmark).  ``TINYLSM_BENCH_N`` sets the number of keys (default
1,000,000; ``TINYLSM_BENCH_N=20000`` is a quick check) and
``TINYLSM_BENCH_ROUNDS`` the rounds per benchmark (default 3), and
``TINYLSM_BENCH_KV`` the key and value sizes (default ``8/8``; the issue's
second batch target is ``TINYLSM_BENCH_KV=32/32 pytest bench/ -k write_batch``).

Most engine methods time their workload themselves and also do some setup
(opening a store, building the files a reopen reads, refilling the store a
compaction runs on).  They are benchmarked whole with
``benchmark.pedantic(..., iterations=1)``, so pytest-benchmark's times
include that setup; the rate the method measured itself, the figure
``tinylsm bench`` prints, goes to ``extra_info`` (``rate`` is the median of
the rounds, ``rates`` every round) and to the summary table at the end.
"""
from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from typing import Callable, List

import pytest

import tinylsm
from tinylsm.bench import durable, rows, sustained
from tinylsm.bench.data import Data
from tinylsm.bench.engines import ENGINE_CLASSES, TinyLsmEngine, lmdb_engine
from tinylsm.bench.latency import Latency

N = int(os.environ.get("TINYLSM_BENCH_N", "1000000").replace("_", "").replace(",", ""))
ROUNDS = int(os.environ.get("TINYLSM_BENCH_ROUNDS", "3"))


def _kv_sizes(text: str) -> tuple:
    """``"K/V"`` from TINYLSM_BENCH_KV as two ints, or a clear error."""
    parts = text.split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"TINYLSM_BENCH_KV: expected key/value sizes like 32/32, got {text!r}")
    return int(parts[0]), int(parts[1])


KEY_SIZE, VALUE_SIZE = _kv_sizes(os.environ.get("TINYLSM_BENCH_KV", "8/8"))
SEED = 1
RANGE_QUERIES = 10_000
RANGE_LENGTH = 100
#: Durable inserts per round of insert + flush, and per round of group
#: commit (shared by its threads; the 1-thread baseline does as many).
SYNC_COUNT = min(2000, N)
#: Seconds a group-commit round may run at most, whatever SYNC_COUNT says.
GROUP_SECONDS = 10.0

# The project's own targets, recorded in extra_info beside the figures (the
# runner, ``tinylsm bench``, reports figures and ratios only).
#: group commit: GROUP_THREADS threads do at least this many times the
#: one-thread rate.
GROUP_TARGET = 3.0
#: insert latency while compact() runs: p99 below this many microseconds.
LATENCY_TARGET_US = 1000.0

ENGINES = [
    "tinylsm",
    "dict",
    "sqlite3",
    pytest.param("lmdb", marks=pytest.mark.skipif(
        lmdb_engine.lmdb is None, reason="lmdb: not installed (pip install lmdb), skipped")),
]


def _group(workload: str) -> str:
    label = rows.WORKLOADS[workload].label
    return label.replace(" of N ", f" of {N:,} ")


@pytest.fixture(scope="module")
def data() -> Data:
    """One set of keys and values for every store and workload."""
    return Data(N, KEY_SIZE, VALUE_SIZE, SEED, RANGE_QUERIES, RANGE_LENGTH, SYNC_COUNT)


@pytest.fixture(scope="module", params=ENGINES)
def engine_name(request) -> str:
    return request.param


@pytest.fixture
def workdir():
    """A fresh directory for the files of one benchmark, removed afterwards
    (pytest's tmp_path keeps them, and at 1M keys they are large)."""
    path = tempfile.mkdtemp(prefix="tinylsm-engine-bench-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def loaded(engine_name, data):
    """One engine per store for the read workloads, which load their store
    on first use (in the untimed warm-up round)."""
    path = tempfile.mkdtemp(prefix=f"tinylsm-engine-bench-{engine_name}-")
    engine = ENGINE_CLASSES[engine_name](data, path)
    yield engine
    engine.close()
    shutil.rmtree(path, ignore_errors=True)


def _record(benchmark, engine_rates, workload: str, engine: str, rates: List[float],
            **extra) -> None:
    """Put the method's own figures in extra_info and in the summary."""
    unit = rows.WORKLOADS[workload].unit
    rate = statistics.median(rates)
    benchmark.extra_info.update(
        backend=tinylsm.BACKEND, engine=engine, workload=workload, n=N,
        key_size=KEY_SIZE, value_size=VALUE_SIZE, unit=unit, rate=rate, rates=rates, **extra)
    engine_rates(workload, _group(workload), unit, engine, rate)


def _extra_row(engine_rates, row: str, engine: str, value: float) -> None:
    """A row the table shows below its workload's (see rows.SUBROWS)."""
    label, unit, _ = rows.ROWS[row]
    engine_rates(row, label, unit, engine, value)


def _skip_unless(engine, name: str, why: str) -> None:
    if not hasattr(engine, name):
        pytest.skip(f"{engine.name}: {why}")


# -- workloads whose engine method opens its own store: a fresh engine per round


def _fresh_rounds(benchmark, name: str, data, root: str, method: str,
                  rounds: int = ROUNDS) -> List[float]:
    """Benchmark ``method`` of a new engine in a new directory each round
    (so that every round starts from an empty store); returns the rates
    the method measured."""
    cls = ENGINE_CLASSES[name]
    made: List = []
    rates: List[float] = []

    def cleanup() -> None:
        while made:
            engine, path = made.pop()
            engine.close()
            shutil.rmtree(path, ignore_errors=True)

    def setup():
        cleanup()
        path = tempfile.mkdtemp(dir=root)
        engine = cls(data, path)
        made.append((engine, path))
        return (engine,), {}

    def target(engine) -> None:
        rates.append(getattr(engine, method)())

    try:
        benchmark.pedantic(target, setup=setup, rounds=rounds, iterations=1)
    finally:
        cleanup()
    return rates


@pytest.mark.benchmark(group=_group("insert"))
def test_insert(benchmark, engine_rates, engine_name, data, workdir):
    rates = _fresh_rounds(benchmark, engine_name, data, workdir, "insert")
    _record(benchmark, engine_rates, "insert", engine_name, rates)


@pytest.mark.benchmark(group=_group("batch"))
def test_write_batch(benchmark, engine_rates, engine_name, data, workdir):
    rates = _fresh_rounds(benchmark, engine_name, data, workdir, "batch")
    _record(benchmark, engine_rates, "batch", engine_name, rates)


@pytest.mark.benchmark(group=_group("import"))
def test_write_packed(benchmark, engine_rates, data, workdir):
    """write_packed of every item, packed in one bytes object, into a new
    store with the default Config, timed to its return (tinylsm only)."""
    rates = _fresh_rounds(benchmark, "tinylsm", data, workdir, "import_packed")
    _record(benchmark, engine_rates, "import", "tinylsm", rates)


# -- read workloads: one loaded store per engine


def _read_rounds(benchmark, engine, method: str) -> List[float]:
    rates: List[float] = []
    fn: Callable[[], float] = getattr(engine, method)
    fn()  # a first, unrecorded run loads the store
    benchmark.pedantic(lambda: rates.append(fn()), rounds=ROUNDS, iterations=1)
    return rates


@pytest.mark.benchmark(group=_group("get"))
def test_get_random_order(benchmark, engine_rates, loaded, data):
    rates = _read_rounds(benchmark, loaded, "get")
    _record(benchmark, engine_rates, "get", loaded.name, rates)


@pytest.mark.benchmark(group=_group("get-many"))
def test_get_many(benchmark, engine_rates, loaded, data):
    """Batch reads of every key, 1,000 keys a call (tinylsm's get_many;
    dict's ``list(map(d.get, keys))``); the other stores have no batch form
    here."""
    _skip_unless(loaded, "get_many", "no batch read in this benchmark")
    rates = _read_rounds(benchmark, loaded, "get_many")
    _record(benchmark, engine_rates, "get-many", loaded.name, rates)


@pytest.mark.benchmark(group=_group("scan"))
def test_full_scan(benchmark, engine_rates, loaded, data):
    rates = _read_rounds(benchmark, loaded, "scan")
    _record(benchmark, engine_rates, "scan", loaded.name, rates)


@pytest.mark.benchmark(group=_group("export"))
def test_export(benchmark, engine_rates, loaded, data):
    """Every record, packed, in chunks (tinylsm's export); the ratio to the
    same store's per-item scan, measured just before, goes beside it."""
    _skip_unless(loaded, "export", "no bulk export of packed records")
    scans = [loaded.scan() for _ in range(ROUNDS)]  # the baseline, not benchmarked
    rates = _read_rounds(benchmark, loaded, "export")
    ratio = statistics.median(rates) / statistics.median(scans)
    _record(benchmark, engine_rates, "export", loaded.name, rates,
            scan_rate=statistics.median(scans), export_over_scan=ratio)
    _extra_row(engine_rates, "export-x", loaded.name, ratio)


@pytest.mark.benchmark(group=_group("range"))
def test_range_queries(benchmark, engine_rates, loaded, data):
    rates = _read_rounds(benchmark, loaded, "range")
    _record(benchmark, engine_rates, "range", loaded.name, rates,
            queries=RANGE_QUERIES, items_per_query=RANGE_LENGTH)


# -- reopen (tinylsm only: the peers' reopen reads one key from a file)


@pytest.mark.parametrize("workload", ["reopen-log", "reopen-sst"])
def test_reopen(benchmark, engine_rates, data, workdir, workload):
    benchmark.group = _group(workload)
    engine = TinyLsmEngine(data, workdir)
    fn = getattr(engine, workload.replace("-", "_"))
    seconds: List[float] = []
    try:
        fn()  # a first, unrecorded run writes the store it reopens
        benchmark.pedantic(lambda: seconds.append(fn()), rounds=ROUNDS, iterations=1)
    finally:
        engine.close()
    _record(benchmark, engine_rates, workload, "tinylsm", seconds)


# -- durable writes


@pytest.mark.benchmark(group=_group("sync"))
def test_insert_flush(benchmark, engine_rates, engine_name, data, workdir):
    """Every insert durable on its own: tinylsm insert + flush(), sqlite3
    autocommit, lmdb one synced write transaction per insert."""
    engine = ENGINE_CLASSES[engine_name](data, workdir)
    _skip_unless(engine, "sync_open", "no durable commit, no insert + flush")
    one, close = engine.sync_open()
    items = data.sync_items
    rates: List[float] = []

    def run() -> None:
        t0 = time.perf_counter()
        for k, v in items:
            one(k, v)
        rates.append(len(items) / (time.perf_counter() - t0))

    try:
        benchmark.pedantic(run, rounds=ROUNDS, iterations=1)
    finally:
        close()
        engine.close()
    _record(benchmark, engine_rates, "sync", engine_name, rates, inserts_per_round=len(items))


@pytest.mark.benchmark(group=_group("group-commit"))
def test_group_commit(benchmark, engine_rates, engine_name, data, workdir):
    """GROUP_THREADS threads do durable inserts at once on one store; before
    each timed round, one thread does as many on the same store (untimed by
    pytest-benchmark): the baseline of the speed-up in extra_info."""
    engine = ENGINE_CLASSES[engine_name](data, workdir)
    _skip_unless(engine, "group_open", "no durable commit, no group commit")
    threads = durable.GROUP_THREADS
    fns, close = engine.group_open(threads)
    items = data.sync_items
    many: List[float] = []
    one: List[float] = []
    start = [0]

    def phase(use, rates: List[float]) -> None:
        n, t = durable.group_phase(use, items, len(items), GROUP_SECONDS, start[0])
        start[0] += n
        rates.append(n / t)

    def setup():
        phase(fns[:1], one)  # the baseline, right before the timed round

    try:
        benchmark.pedantic(lambda: phase(fns, many), setup=setup, rounds=ROUNDS, iterations=1)
    finally:
        close()
        engine.close()
    scaling = statistics.median(many) / statistics.median(one)
    _record(benchmark, engine_rates, "group-commit", engine_name, many, threads=threads,
            rate_1_thread=statistics.median(one), rates_1_thread=one, scaling=scaling,
            scaling_target=GROUP_TARGET)
    _extra_row(engine_rates, "group-commit-1", engine_name, statistics.median(one))
    _extra_row(engine_rates, "group-commit-x", engine_name, scaling)


# -- memory and latency


@pytest.mark.benchmark(group=_group("memory"))
def test_memory_per_key(benchmark, engine_rates, engine_name, data, workdir):
    """RSS growth per key in a fresh process (one round: the time is that
    of building the files and starting the process, nothing to compare)."""
    engine = ENGINE_CLASSES[engine_name](data, workdir)
    _skip_unless(engine, "memory", "keeps its data in files and the page cache, "
                 "resident memory per key is not comparable")
    values: List[float] = []
    try:
        benchmark.pedantic(lambda: values.append(engine.memory()), rounds=1, iterations=1)
    finally:
        engine.close()
    if values[0] is None:
        pytest.skip("no /proc/self/statm here: resident memory is not measured")
    _record(benchmark, engine_rates, "memory", engine_name, values)


@pytest.mark.benchmark(group=_group("latency"))
def test_latency_during_compaction(benchmark, engine_rates, data, workdir):
    """Each round refills a store (every key written 3 times, in about 12
    sstables), then times each insert of this thread while compact() runs
    in another; p50/p99/max are in extra_info (microseconds)."""
    engine = TinyLsmEngine(data, workdir)
    runs: List[Latency] = []
    try:
        benchmark.pedantic(lambda: runs.append(engine.latency_during_compaction()),
                           rounds=ROUNDS, iterations=1)
    finally:
        engine.close()
    p99s = [r.p99_us for r in runs]
    _record(benchmark, engine_rates, "latency", "tinylsm", p99s,
            p50_us=[r.p50_us for r in runs], p99_us=p99s, max_us=[r.max_us for r in runs],
            inserts=[r.inserts for r in runs],
            compact_seconds=[r.compact_seconds for r in runs],
            sstables=[r.sstables for r in runs], p99_target_us=LATENCY_TARGET_US)
    _extra_row(engine_rates, "latency-p50", "tinylsm", statistics.median(r.p50_us for r in runs))
    _extra_row(engine_rates, "latency-max", "tinylsm", max(r.max_us for r in runs))
    _extra_row(engine_rates, "latency-count", "tinylsm",
               statistics.median(r.inserts for r in runs))


SUSTAINED = os.environ.get("TINYLSM_BENCH_SUSTAINED")
# The targets for the sustained workload (recorded, not asserted).
SUSTAINED_TARGETS = dict(max_us_target=10_000.0, p999_us_target=100.0, slow_target=0,
                         lmdb_ratio_target=1.6)


@pytest.fixture(scope="module")
def sustained_data(data) -> Data:
    count = None if SUSTAINED is None else int(SUSTAINED.replace("_", "").replace(",", ""))
    return Data(N, KEY_SIZE, VALUE_SIZE, SEED, RANGE_QUERIES, RANGE_LENGTH, SYNC_COUNT,
                sustained_count=count)


@pytest.mark.benchmark(group=_group("sustained"))
def test_sustained_insert(benchmark, engine_rates, engine_name, sustained_data, workdir):
    """Inserts one by one into a new store with the default Config, each
    timed, long enough for several log rollovers; p50/p99/p99.9/max latency
    and the inserts over 10 ms go to extra_info and the summary."""
    engine = ENGINE_CLASSES[engine_name](sustained_data, workdir)
    _skip_unless(engine, "sustained", "an insert per transaction fsyncs each one "
                 "(that is the insert + flush workload)")
    runs: List = []
    try:
        benchmark.pedantic(lambda: runs.append(engine.sustained()), rounds=1, iterations=1)
    finally:
        engine.close()
    got = runs[0]
    _record(benchmark, engine_rates, "sustained", engine_name, [got.rate],
            inserts=got.inserts, p50_us=got.p50_us, p99_us=got.p99_us, p999_us=got.p999_us,
            max_us=got.max_us, slow=got.slow, rollovers=got.rollovers, stalls=got.stalls,
            **SUSTAINED_TARGETS)
    for row, field in sustained.SUBROW_FIELDS:
        _extra_row(engine_rates, row, engine_name, getattr(got, field))
