"""The compiled map against a ``dict`` and its pure-Python twin, at 1M keys.

Run with ``pytest bench/test_map_bench.py`` (``--benchmark-columns=mean,min``
keeps the table narrow); a summary of per-operation costs and ratios follows
the results.  Keys are 1,000,000 random 8-byte keys with 8-byte values, read
in a random order (so every lookup misses the CPU caches, as in real use)
through new key objects of equal value, as an application computes its keys
(the objects inserted would let a ``dict`` compare by identity).  The
``get-many`` group reads through ``StoreCore`` (the store's hot paths, here
on a map alone): a loop of ``core[k]`` against one ``core.get_many(keys)``.

``test_memory_per_key`` measures resident memory per key at 10M keys in
fresh processes (``bench/map_memory.py``; ``TINYLSM_BENCH_MEMORY_N`` changes
N) and checks the targets: <= 48 B/key at 8/8, <= 110 B/key at 32/32.
"""
from __future__ import annotations

import importlib
import os
import random
import sys
from typing import Dict, List, NamedTuple, Tuple

import pytest

N = 1_000_000
K = V = 8
RANGE_QUERIES = 10_000
RANGE_LENGTH = 100

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import map_memory  # noqa: E402


def compiled_map():
    try:
        return importlib.import_module("tinylsm._map").SortedMap
    except ImportError:
        if os.environ.get("TINYLSM_PUREPYTHON", "") not in ("", "0"):
            pytest.skip("compiled map not built (TINYLSM_PUREPYTHON set)")
        raise


def python_map():
    return importlib.import_module("tinylsm._map_py").SortedMap


class Data(NamedTuple):
    pairs: List[Tuple[bytes, bytes]]  # N unique random keys, insertion order
    lookups: List[bytes]  # the keys, shuffled, as new objects
    records: bytes  # packed live records of pairs
    ranges: List[Tuple[bytes, bytes]]  # (start, stop) spanning RANGE_LENGTH keys
    maps: Dict[str, object]  # "dict", "cython", "python", loaded and sorted


@pytest.fixture(scope="module")
def data() -> Data:
    rnd = random.Random(20240601)
    blob = rnd.randbytes(N * (K + V) * 2)
    pairs = {}
    i = 0
    while len(pairs) < N:
        pairs.setdefault(blob[i:i + K], blob[i + K:i + K + V])
        i += K + V
    items = list(pairs.items())
    lookups = [k for k, _ in items]
    rnd.shuffle(lookups)
    lookups = [bytes(memoryview(k)) for k in lookups]
    records = b"".join(b"\0\0\0\0\x01" + k + v for k, v in items)
    ordered = sorted(pairs)
    ranges = []
    for _ in range(RANGE_QUERIES):
        j = rnd.randrange(N - RANGE_LENGTH)
        ranges.append((ordered[j], ordered[j + RANGE_LENGTH]))
    maps: Dict[str, object] = {"dict": dict(items)}
    for name, cls in (("cython", compiled_map()), ("python", python_map())):
        m = cls(K, V)
        m.apply_records(records, K, V)
        m.items(None, b"")  # sort now, not in the first timed round
        maps[name] = m
    return Data(items, lookups, records, ranges, maps)


_RESULTS: Dict[str, Dict[str, float]] = {}


def say(config, lines: List[str]) -> None:
    """Write to the terminal even while output is captured."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        for line in lines:
            reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        for line in lines:
            reporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    """After the module: per-operation costs and ratios against the first
    row of each group (the baseline)."""
    yield
    if not _RESULTS:
        return
    lines = ["", f"map benchmarks, N={N:,} random {K}/{V} keys (best round)"]
    for group, rows in _RESULTS.items():
        first = next(iter(rows))
        for name, seconds in rows.items():
            unit = RANGE_QUERIES if group == "range" else N
            what = "queries/s" if group == "range" else "ops/s"
            lines.append(
                f"  {group:8} {name:30} {seconds / unit * 1e9:8.1f} ns/op "
                f"{unit / seconds / 1e6:7.2f} M {what:9}  speed x{rows[first] / seconds:5.2f} "
                f"of {first}")
    say(request.config, lines)


def run(benchmark, group: str, name: str, fn, *args, rounds: int = 5, setup=None):
    if setup is not None:
        benchmark.pedantic(fn, setup=setup, rounds=rounds)
    else:
        benchmark.pedantic(fn, args=args, rounds=rounds, warmup_rounds=1)
    benchmark.extra_info["group"] = group
    if benchmark.stats is not None:  # None under --benchmark-disable
        _RESULTS.setdefault(group, {})[name] = benchmark.stats.stats.min


# -- point reads ---------------------------------------------------------------


def _subscript(m, keys):
    for k in keys:
        m[k]


def _get(m, keys):
    get = m.get
    for k in keys:
        get(k)


def _method_get(m, keys):
    for k in keys:
        m.get(k)


@pytest.mark.benchmark(group="get")
@pytest.mark.parametrize("impl,how", [
    ("dict", "d[k]"), ("cython", "m[k]"), ("cython", "m.get(k)"), ("cython", "get = m.get; get(k)"),
    ("python", "m.get(k)"), ("python", "m[k]"),
])
def test_get(benchmark, data, impl, how):
    fn = {"d[k]": _subscript, "m[k]": _subscript, "m.get(k)": _method_get,
          "get = m.get; get(k)": _get}[how]
    run(benchmark, "get", f"{impl} {how}", fn, data.maps[impl], data.lookups)


def _contains(m, keys):
    for k in keys:
        k in m  # noqa: B015


def _core(impl, m):
    """A StoreCore of ``impl`` holding map ``m`` (no log: reads only)."""
    cls = importlib.import_module("tinylsm._map" if impl == "cython" else "tinylsm._map_py")
    core = cls.StoreCore()
    core._attach(m, bytearray(), 0)
    return core


def _get_many(core, keys):
    core.get_many(keys)


def _dict_get_many(d, keys):
    list(map(d.get, keys))


@pytest.mark.benchmark(group="get-many")
@pytest.mark.parametrize("impl,how", [
    ("cython", "core[k] loop"), ("cython", "core.get_many(keys)"),
    ("dict", "list(map(d.get, keys))"), ("python", "core.get_many(keys)"),
])
def test_get_many(benchmark, data, impl, how):
    """Every key at once, against the loop of single lookups."""
    if impl == "dict":
        run(benchmark, "get-many", f"dict {how}", _dict_get_many, data.maps["dict"], data.lookups)
        return
    if impl == "cython":
        compiled_map()
    core = _core(impl, data.maps[impl])
    fn = _subscript if how == "core[k] loop" else _get_many
    run(benchmark, "get-many", f"{impl} {how}", fn, core, data.lookups)


@pytest.mark.benchmark(group="contains")
@pytest.mark.parametrize("impl", ["dict", "cython", "python"])
def test_contains(benchmark, data, impl):
    run(benchmark, "contains", impl, _contains, data.maps[impl], data.lookups)


# -- ordered reads ---------------------------------------------------------------


def _scan(m):
    for k, v in m.items():
        pass


def _scan_dict(d):
    for k, v in d.items():
        pass


@pytest.mark.benchmark(group="scan")
@pytest.mark.parametrize("impl", ["dict", "cython", "python"])
def test_scan(benchmark, data, impl):
    """A full ordered scan (``dict``: its unordered ``items()``, for scale)."""
    fn = _scan_dict if impl == "dict" else _scan
    run(benchmark, "scan", f"{impl} items()", fn, data.maps[impl])


def _ranges(m, ranges):
    items = m.items
    for start, stop in ranges:
        for k, v in items(start, stop):
            pass


@pytest.mark.benchmark(group="range")
@pytest.mark.parametrize("impl", ["cython", "python"])
def test_range_queries(benchmark, data, impl):
    """10k range queries of 100 items each."""
    run(benchmark, "range", f"{impl} items(a, b)", _ranges, data.maps[impl], data.ranges)


# -- writes ----------------------------------------------------------------------


def _fresh(cls):
    def setup():
        return (cls(K, V),), {}
    return setup


@pytest.mark.benchmark(group="bulk")
@pytest.mark.parametrize("impl,sort", [("cython", False), ("cython", True), ("python", False)])
def test_bulk_load(benchmark, data, impl, sort):
    """``apply_records`` of 1M records into an empty map (with ``sort``: and
    the first ordered read, which sorts the index)."""
    cls = compiled_map() if impl == "cython" else python_map()
    records = data.records

    def load(m):
        m.apply_records(records, K, V)
        if sort:
            m.items(None, b"")

    name = f"{impl} apply_records" + (" + sort" if sort else "")
    run(benchmark, "bulk", name, load, setup=_fresh(cls), rounds=3 if impl == "python" else 5)


@pytest.mark.benchmark(group="bulk-chunks")
@pytest.mark.parametrize("impl,reserve", [("cython", False), ("cython", True),
                                          ("python", False), ("python", True)])
def test_bulk_load_in_chunks(benchmark, data, impl, reserve):
    """``apply_records`` of 1M records into an empty map 512 KiB at a time,
    as recovery reads files: after ``reserve(N)`` the table is made once at
    its final size, without it the table grows (and migrates) step by step
    from the first chunk's size (the pure twin's reserve only checks N)."""
    cls = compiled_map() if impl == "cython" else python_map()
    rsize = 5 + K + V
    chunk = (1 << 19) // rsize * rsize
    records = data.records
    pieces = [records[i:i + chunk] for i in range(0, len(records), chunk)]

    def load(m):
        if reserve:
            m.reserve(N)
        for piece in pieces:
            m.apply_records(piece, K, V)

    name = f"{impl} 512 KiB chunks" + (" after reserve(N)" if reserve else "")
    run(benchmark, "bulk-chunks", name, load, setup=_fresh(cls),
        rounds=3 if impl == "python" else 5)


def _set_all(m, pairs):
    s = m.set
    for k, v in pairs:
        s(k, v)


def _dict_set_all(d, pairs):
    for k, v in pairs:
        d[k] = v


@pytest.mark.benchmark(group="set")
@pytest.mark.parametrize("impl", ["dict", "cython", "python"])
def test_set_one_by_one(benchmark, data, impl):
    """1M ``set`` calls into an empty map."""
    pairs = data.pairs
    if impl == "dict":
        run(benchmark, "set", "dict d[k] = v", lambda d: _dict_set_all(d, pairs),
            setup=lambda: (({},), {}))
        return
    cls = compiled_map() if impl == "cython" else python_map()
    run(benchmark, "set", f"{impl} m.set(k, v)", lambda m: _set_all(m, pairs), setup=_fresh(cls))


# -- memory ----------------------------------------------------------------------


def test_memory_per_key(request):
    """Resident bytes per key at 10M keys (compiled) and 1M (dict), 8/8 and 32/32."""
    compiled_map()
    n = int(os.environ.get("TINYLSM_BENCH_MEMORY_N", 10_000_000))
    rows = []
    for k, v, limit in [(8, 8, 48), (32, 32, 110)]:
        ours = map_memory.run_one("cython", k, v, n)
        base = map_memory.run_one("dict", k, v, min(n, 1_000_000))
        rows.append((k, v, limit, ours, base))
    say(request.config, [
        f"memory {k}/{v}: compiled map {ours['rss_per_key']:.1f} B/key resident "
        f"(peak {ours['peak_per_key'] or float('nan'):.1f}) at {ours['n']:,} keys; "
        f"dict of bytes {base['rss_per_key']:.1f} B/key at {base['n']:,}; target <= {limit}"
        for k, v, limit, ours, base in rows
    ])
    for k, v, limit, ours, base in rows:
        assert ours["rss_per_key"] <= limit, (k, v, ours)
